/**
 * A small enrollment server for tests (protocol 1.2), on 127.0.0.1: discovery (with or
 * without `install_keys`), the challenge and enroll routes, and `/v1/messages` checking each
 * stamp as a verifier does — r1 with the release key, i1 with K_i derived on the verifier's
 * side by `deriveInstallKey` from its own private key and the install's public key.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readDevKey } from '@moat/native/dev-key';
import {
  deriveInstallKey,
  ENROLLMENT_CHALLENGE_PATH,
  ENROLLMENT_PATH,
  locateEnvelope,
  parseEnrollmentRequest,
  receivedRequestComponents,
  verifyStamp,
} from '@moat/protocol';

/** What the server saw of one Messages request: its stamp's scheme, and whether the stamp verified. */
export interface SeenStamp {
  readonly scheme: 'v1' | 'r1' | 'i1' | 'none';
  readonly kid: string;
  readonly valid: boolean;
}

export interface EnrollServer {
  readonly url: string;
  /** Discovery advertises `install_keys` (default true). */
  advertise: boolean;
  /** Status the enrollment route answers with instead of enrolling (e.g. 429), or undefined. */
  refuseEnroll: number | undefined;
  /** How long the challenge route waits before it answers, ms (a slow verifier). */
  challengeDelayMs: number;
  /** Stamps of Messages requests, in order. */
  readonly stamps: SeenStamp[];
  /** Enrollments made (install ids), and telemetry bodies received. */
  readonly enrolled: string[];
  readonly telemetry: string[];
  /** Counts of challenge and enroll requests. */
  readonly counts: { challenge: number; enroll: number };
  /** Forgets an install (the verifier's view: it is unknown from now on). */
  drop(installId: string): void;
  close(): Promise<void>;
}

const EKID = 'e2026t';

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Starts the server. */
export async function startEnrollServer(): Promise<EnrollServer> {
  const dev = readDevKey() as { kid: string; key: string };
  const release = Buffer.from(dev.key, 'hex');
  const pair = generateKeyPairSync('x25519');
  const verifierPrivate = Buffer.from(pair.privateKey.export({ format: 'jwk' }).d as string, 'base64url');
  const verifierPublic = pair.publicKey.export({ format: 'jwk' }).x as string;
  const installs = new Map<string, Uint8Array>();
  const challenges = new Set<string>();
  const state: Omit<EnrollServer, 'url' | 'drop' | 'close'> = {
    advertise: true,
    refuseEnroll: undefined,
    challengeDelayMs: 0,
    stamps: [],
    enrolled: [],
    telemetry: [],
    counts: { challenge: 0, enroll: 0 },
  };

  /** The stamp of a received body, checked: r1 with the release key, i1 with the install's K_i. */
  const check = (body: Buffer, req: IncomingMessage): SeenStamp => {
    const where = locateEnvelope(new Uint8Array(body));
    if (where.status !== 'found') return { scheme: 'none', kid: '', valid: false };
    const { binding, kid } = where.envelope;
    const scheme = binding === 'install' ? 'i1' : binding === 'request' ? 'r1' : 'v1';
    const key = scheme === 'i1' ? installs.get(kid) : kid === dev.kid ? release : undefined;
    const request = receivedRequestComponents({
      method: req.method ?? '',
      target: req.url ?? '',
      headers: req.headers,
    });
    const valid =
      key !== undefined &&
      verifyStamp(key, new Uint8Array(body), where.stampStart, where.stampEnd, scheme === 'v1' ? undefined : request);
    return { scheme, kid, valid };
  };

  const enroll = (body: Buffer, req: IncomingMessage): { status: number; answer: unknown } => {
    const stamp = check(body, req);
    if (stamp.scheme !== 'r1' || !stamp.valid) return { status: 401, answer: { error: { code: 'invalid' } } };
    const parsed = parseEnrollmentRequest(JSON.parse(body.toString('utf8')));
    if (!challenges.delete(parsed.challenge))
      return { status: 409, answer: { error: { code: 'ERR_ENROLL_CHALLENGE' } } };
    const installId = `i${randomBytes(12).toString('hex')}`;
    installs.set(
      installId,
      deriveInstallKey({
        privateKey: verifierPrivate,
        peerPublicKey: Buffer.from(parsed.installKey, 'base64url'),
        challenge: Buffer.from(parsed.challenge, 'base64url'),
        installId,
        ekid: parsed.ekid,
        installPublicKey: parsed.installKey,
      }),
    );
    state.enrolled.push(installId);
    return { status: 201, answer: { install_id: installId, ekid: parsed.ekid } };
  };

  const server: Server = createServer(async (req, res) => {
    const body = await readAll(req);
    const json = (status: number, value: unknown, headers: Record<string, string> = {}) =>
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(value));
    if (req.url === '/v1/moat') {
      const features = ['attestation', 'request_binding', 'telemetry', ...(state.advertise ? ['install_keys'] : [])];
      const enrollment = {
        challenge: ENROLLMENT_CHALLENGE_PATH,
        enroll: ENROLLMENT_PATH,
        kid: EKID,
        key: verifierPublic,
      };
      return json(200, { moat: { versions: [1], features, ...(state.advertise ? { enrollment } : {}) } });
    }
    if (req.url === ENROLLMENT_CHALLENGE_PATH) {
      state.counts.challenge += 1;
      if (state.challengeDelayMs > 0) await new Promise((r) => setTimeout(r, state.challengeDelayMs));
      const challenge = randomBytes(32).toString('base64url');
      challenges.add(challenge);
      return json(200, { challenge, expires_in: 60 });
    }
    if (req.url === ENROLLMENT_PATH) {
      state.counts.enroll += 1;
      if (state.refuseEnroll !== undefined)
        return json(state.refuseEnroll, { error: { code: 'ERR_ENROLL_LIMIT' } }, { 'retry-after': '30' });
      const { status, answer } = enroll(body, req);
      return json(status, answer);
    }
    if (req.url === '/v1/telemetry') {
      state.telemetry.push(body.toString('utf8'));
      return json(202, {});
    }
    const stamp = check(body, req);
    state.stamps.push(stamp);
    if (stamp.scheme === 'i1' && !installs.has(stamp.kid))
      return json(403, {
        type: 'error',
        error: { type: 'permission_error', message: 'request blocked by policy (block:attestation=unknown_key)' },
      });
    return json(200, {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'm',
      content: [{ type: 'text', text: 'ok' }],
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return Object.assign(state, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    drop: (installId: string) => {
      installs.delete(installId);
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  });
}
