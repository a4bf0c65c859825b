/**
 * Per-install keys (protocol 1.2) under attack. The attacker holds the release key extracted
 * from the shipped binary and uses `@moat/protocol`'s own functions with it — computeStamp,
 * deriveInstallKey — as a third-party tool would: it can enroll, visibly and only as fast as
 * the operator allows, and each install key it holds is one revocable install.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { readDevKey } from '@moat/native/dev-key';
import {
  appendEnvelope,
  computeStamp,
  type DiscoveryEnrollment,
  deriveInstallKey,
  ENROLLMENT_CHALLENGE_PATH,
  ENROLLMENT_PATH,
  enrollmentRequestBody,
  locateEnvelope,
  parseDiscovery,
  placeholderEnvelope,
  utf8,
  x25519PublicKey,
} from '@moat/protocol';
import { admin, newKey, type RecordRow, type RedteamContext, records, type Scenario, skip } from './scenarios.js';

/** A stamping key: the extracted release key (`r1`) or an install's key (`i1`). */
interface StampKey {
  readonly scheme: 'r1' | 'i1';
  readonly kid: string;
  readonly key: Uint8Array;
}

/** What the tool sent and got back. */
interface Sent {
  readonly status: number;
  readonly body: string;
}

/** A POST with `x-api-key`, from `localAddress` when given (any address of 127.0.0.0/8 is this host on Linux). */
function send(base: string, path: string, apiKey: string, body: Buffer | string, localAddress?: string): Promise<Sent> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        headers: { 'x-api-key': apiKey, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        ...(localAddress === undefined ? {} : { localAddress }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** `json` with an envelope stamped as the native layer would, for `POST base+path` under `apiKey`. */
function stamp(json: string, key: StampKey, base: string, path: string, apiKey: string): Buffer {
  const binding = key.scheme === 'r1' ? ('request' as const) : ('install' as const);
  const nonce = randomBytes(8).toString('hex');
  const bytes = utf8(
    appendEnvelope(json, placeholderEnvelope({ kid: key.kid, ts: Math.floor(Date.now() / 1000), nonce, binding })),
  );
  const where = locateEnvelope(bytes);
  if (where.status !== 'found') throw new Error('no envelope');
  const request = { method: 'POST', authority: new URL(base).host, path, credential: apiKey };
  bytes.set(utf8(computeStamp(key.key, bytes, where.stampStart, where.stampEnd, request)), where.stampStart);
  return Buffer.from(bytes);
}

/** One enrollment attempt's outcome; an install's id and key when it was made. */
interface Enrollment {
  readonly status: number;
  readonly code?: string;
  readonly install?: StampKey;
  readonly sent: Buffer;
}

/**
 * The third-party tool: the release key extracted from the binary, an API key, and the
 * verifier's advertised enrollment key. Each install gets a fresh X25519 key pair.
 */
class ExtractedKeyTool {
  constructor(
    readonly base: string,
    readonly apiKey: string,
    readonly release: StampKey,
    readonly enrollment: DiscoveryEnrollment,
  ) {}

  static async open(ctx: RedteamContext, apiKey: string, release: StampKey): Promise<ExtractedKeyTool | undefined> {
    const doc = parseDiscovery(await (await fetch(new URL('/v1/moat', ctx.baseUrl))).json());
    return doc.enrollment === undefined
      ? undefined
      : new ExtractedKeyTool(ctx.baseUrl, apiKey, release, doc.enrollment);
  }

  async challenge(): Promise<string> {
    return (
      JSON.parse((await send(this.base, ENROLLMENT_CHALLENGE_PATH, this.apiKey, '')).body) as { challenge: string }
    ).challenge;
  }

  /** Enrolls one install (with `challenge`, or a fresh one). */
  async enroll(challenge?: string): Promise<Enrollment> {
    const c = challenge ?? (await this.challenge());
    const installPrivate = randomBytes(32);
    const installKey = x25519PublicKey(installPrivate);
    const sent = stamp(
      enrollmentRequestBody({ installKey, challenge: c, ekid: this.enrollment.kid }),
      this.release,
      this.base,
      ENROLLMENT_PATH,
      this.apiKey,
    );
    return this.#answer(await send(this.base, ENROLLMENT_PATH, this.apiKey, sent), sent, (iid) => ({
      scheme: 'i1',
      kid: iid,
      key: deriveInstallKey({
        privateKey: installPrivate,
        peerPublicKey: Buffer.from(this.enrollment.key, 'base64url'),
        challenge: Buffer.from(c, 'base64url'),
        installId: iid,
        ekid: this.enrollment.kid,
        installPublicKey: installKey,
      }),
    }));
  }

  /** Sends captured enrollment bytes again, unchanged. */
  async replay(sent: Buffer): Promise<Enrollment> {
    return this.#answer(await send(this.base, ENROLLMENT_PATH, this.apiKey, sent), sent, undefined);
  }

  #answer(res: Sent, sent: Buffer, install: ((iid: string) => StampKey) | undefined): Enrollment {
    const json = JSON.parse(res.body) as { install_id?: string; error?: { code?: string } };
    if (res.status === 201 && json.install_id !== undefined && install !== undefined)
      return { status: res.status, install: install(json.install_id), sent };
    return { status: res.status, ...(json.error?.code === undefined ? {} : { code: json.error.code }), sent };
  }

  /** A Messages request stamped with `key`, from `localAddress`. */
  message(key: StampKey, text: string, localAddress?: string): Promise<Sent> {
    const json = JSON.stringify({ model: 'claude-mock', max_tokens: 32, messages: [{ role: 'user', content: text }] });
    return send(
      this.base,
      '/v1/messages',
      this.apiKey,
      stamp(json, key, this.base, '/v1/messages', this.apiKey),
      localAddress,
    );
  }
}

/** The release key the attacker extracted from the binary (the development build's key here). */
function extractedReleaseKey(): StampKey | undefined {
  const key = readDevKey();
  return key === undefined ? undefined : { scheme: 'r1', kid: key.kid, key: Buffer.from(key.key, 'hex') };
}

/** The tool for a new API key, or why the scenario cannot run. */
async function toolFor(ctx: RedteamContext, label: string): Promise<{ tool: ExtractedKeyTool; id: string } | string> {
  const release = extractedReleaseKey();
  if (release === undefined) return 'no release key to extract (a release build of @moat/native)';
  const { id, key } = await newKey(ctx, label);
  const tool = await ExtractedKeyTool.open(ctx, key, release);
  return tool === undefined ? 'the verifier does not advertise install_keys' : { tool, id };
}

const last = async (ctx: RedteamContext, keyId: string): Promise<RecordRow | undefined> =>
  (await records(ctx, keyId, 1))[0];

interface InstallListing {
  installs: Array<{ installId: string; revoked: boolean; addresses: number }>;
}

export const INSTALL_SCENARIOS: readonly Scenario[] = [
  {
    id: 'install-farm',
    title: 'a third-party tool with the extracted release key enrolls 1,000 installs under one API key',
    expected: 'enrolls up to the limit only; the rest refused (429) and every attempt listed for the operator',
    async run(ctx) {
      const t = await toolFor(ctx, 'install-farm');
      if (typeof t === 'string') return skip(t);
      const outcomes = new Map<number, number>();
      for (let i = 0; i < 1000; i++) {
        const { status } = await t.tool.enroll();
        outcomes.set(status, (outcomes.get(status) ?? 0) + 1);
      }
      const created = outcomes.get(201) ?? 0;
      const limited = outcomes.get(429) ?? 0;
      const listed = await admin<{ keys: Array<{ keyId: string; installs: number }> }>(
        ctx,
        '/admin/installs?limit=1000',
      );
      const installs = listed.keys.find((k) => k.keyId === t.id)?.installs ?? 0;
      const refused = await admin<{ enrollments: unknown[] }>(
        ctx,
        `/admin/enrollments?key=${t.id}&outcome=limited&limit=1000`,
      );
      return {
        observed:
          `${created} enrolled, ${limited} refused 429; ` +
          `admin: ${installs} installs, ${refused.enrollments.length} refused enrollments`,
        verdict: limited > 0 ? 'block' : 'allow',
        pass:
          created > 0 &&
          created <= 100 &&
          limited === 1000 - created &&
          installs === created &&
          refused.enrollments.length === limited,
      };
    },
  },
  {
    id: 'install-fan-in',
    title: 'one copied install key used from 50 addresses',
    expected: 'flagged: address fan-in on the install (gateway address_fan_in)',
    async run(ctx) {
      const t = await toolFor(ctx, 'install-fan-in');
      if (typeof t === 'string') return skip(t);
      const { install } = await t.tool.enroll();
      if (install === undefined) return { observed: 'enrollment refused', verdict: '-', pass: false };
      const statuses: number[] = [];
      for (let i = 0; i < 50; i++)
        statuses.push((await t.tool.message(install, `request ${i}`, `127.0.0.${10 + i}`)).status);
      const rec = await last(ctx, t.id);
      const listing = await admin<InstallListing>(ctx, `/admin/installs?key=${t.id}`);
      const addresses = listing.installs.find((i) => i.installId === install.kid)?.addresses ?? 0;
      return {
        observed:
          `install=${rec?.install} relay=${(rec?.relay ?? []).join(',') || '-'} → ${rec?.verdict}; ` +
          `the install seen from ${addresses} addresses`,
        verdict: rec?.verdict ?? '-',
        pass:
          statuses.every((s) => s === 200) &&
          rec?.verdict === 'flag' &&
          rec.relay?.includes('address_fan_in') === true &&
          addresses >= 8,
      };
    },
  },
  {
    id: 'enroll-replay',
    title: 'a captured enrollment replayed, and re-stamped with its spent challenge',
    expected: 'both refused (409 replayed, 409 ERR_ENROLL_CHALLENGE), no install made',
    async run(ctx) {
      const t = await toolFor(ctx, 'enroll-replay');
      if (typeof t === 'string') return skip(t);
      const challenge = await t.tool.challenge();
      const first = await t.tool.enroll(challenge);
      const replayed = await t.tool.replay(first.sent);
      const restamped = await t.tool.enroll(challenge);
      const listing = await admin<InstallListing>(ctx, `/admin/installs?key=${t.id}`);
      return {
        observed:
          `first ${first.status}; replayed ${replayed.status} ${replayed.code}; ` +
          `re-stamped ${restamped.status} ${restamped.code}; ${listing.installs.length} install(s)`,
        verdict: 'block',
        pass:
          first.status === 201 &&
          replayed.status === 409 &&
          replayed.code === 'replayed' &&
          restamped.status === 409 &&
          restamped.code === 'ERR_ENROLL_CHALLENGE' &&
          listing.installs.length === 1,
      };
    },
  },
  {
    id: 'install-revoked',
    title: "an install revoked mid-session, while the user's other install keeps working",
    expected: 'its next request scored install revoked (flagged); the other install allowed',
    async run(ctx) {
      const t = await toolFor(ctx, 'install-revoked');
      if (typeof t === 'string') return skip(t);
      const [a, b] = [(await t.tool.enroll()).install, (await t.tool.enroll()).install];
      if (a === undefined || b === undefined) return { observed: 'enrollment refused', verdict: '-', pass: false };
      const before = (await t.tool.message(a, 'before the revocation')).status;
      await admin(ctx, '/admin/installs/revoke', { method: 'POST', body: JSON.stringify({ install_id: a.kid }) });
      await t.tool.message(a, 'after the revocation');
      const revoked = await last(ctx, t.id);
      await t.tool.message(b, 'the other install');
      const other = await last(ctx, t.id);
      return {
        observed:
          `before: ${before}; revoked install: attestation=${revoked?.attestation} install=${revoked?.install} ` +
          `→ ${revoked?.verdict}; other: install=${other?.install} → ${other?.verdict}`,
        verdict: revoked?.verdict ?? '-',
        pass:
          before === 200 &&
          revoked?.install === 'revoked' &&
          revoked.attestation === 'revoked' &&
          revoked.verdict !== 'allow' &&
          (other?.install === 'new' || other?.install === 'known') &&
          other.verdict === 'allow',
      };
    },
  },
];
