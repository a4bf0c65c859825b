/**
 * A client of per-install keys in a few lines, for tests: stamps bodies `r1` (release key) or
 * `i1` (install key) with `@moat/protocol`, and enrolls an install as the native layer does.
 */
import { randomBytes } from 'node:crypto';
import {
  appendEnvelope,
  computeStamp,
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

/** A stamping key: a release's (`r1`) or an install's (`i1`). */
export interface StampKey {
  readonly scheme: 'r1' | 'i1';
  readonly kid: string;
  readonly key: Uint8Array;
}

/** `json` with an envelope stamped for `POST url+path` under `apiKey`; `ts` defaults to now. */
export function stampBody(
  json: string,
  stamp: StampKey,
  url: string,
  path: string,
  apiKey: string,
  ts?: number,
): Buffer {
  const binding = stamp.scheme === 'r1' ? ('request' as const) : ('install' as const);
  const body = appendEnvelope(
    json,
    placeholderEnvelope({
      kid: stamp.kid,
      ts: ts ?? Math.floor(Date.now() / 1000),
      nonce: randomBytes(8).toString('hex'),
      binding,
    }),
  );
  const bytes = utf8(body);
  const where = locateEnvelope(bytes);
  if (where.status !== 'found') throw new Error('no envelope');
  const request = { method: 'POST', authority: new URL(url).host, path, credential: apiKey };
  bytes.set(utf8(computeStamp(stamp.key, bytes, where.stampStart, where.stampEnd, request)), where.stampStart);
  return Buffer.from(bytes);
}

/** A JSON answer, read loosely by tests. */
// biome-ignore lint/suspicious/noExplicitAny: tests read answers of every shape
export type Answer = any;

/** POSTs bytes with `x-api-key`; the status and the parsed JSON answer. */
export async function post(
  url: string,
  apiKey: string,
  body: Buffer | string,
): Promise<{ status: number; json: Answer; headers: Headers }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
    body,
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? undefined : JSON.parse(text), headers: res.headers };
}

/** What an install holds after enrolling. */
export interface Enrolled {
  readonly status: number;
  readonly iid?: string;
  /** `K_i`, as the install derives it. */
  readonly key?: Uint8Array;
  readonly answer: Answer;
  readonly headers: Headers;
  /** The enrollment request's bytes as sent (to replay them). */
  readonly sent: Buffer;
}

/** Options of {@link enroll}: a different install key, challenge or ekid than the honest ones. */
export interface EnrollOptions {
  readonly installPrivate?: Uint8Array;
  readonly installKey?: string;
  readonly challenge?: string;
  readonly ekid?: string;
}

/** Enrolls one install at `base` under `apiKey`, stamped by `release`; derives its key on success. */
export async function enroll(
  base: string,
  apiKey: string,
  release: StampKey,
  options: EnrollOptions = {},
): Promise<Enrolled> {
  const discovery = parseDiscovery(await (await fetch(`${base}/v1/moat`)).json());
  const enrollment = discovery.enrollment;
  if (enrollment === undefined) throw new Error('the verifier does not advertise install_keys');
  const challenge = options.challenge ?? (await post(`${base}${ENROLLMENT_CHALLENGE_PATH}`, apiKey, '')).json.challenge;
  const installPrivate = options.installPrivate ?? randomBytes(32);
  const installKey = options.installKey ?? x25519PublicKey(installPrivate);
  const ekid = options.ekid ?? enrollment.kid;
  const json = enrollmentRequestBody({ installKey, challenge, ekid });
  const sent = stampBody(json, release, base, ENROLLMENT_PATH, apiKey);
  const answer = await post(`${base}${ENROLLMENT_PATH}`, apiKey, sent);
  if (answer.status !== 201) return { status: answer.status, answer: answer.json, headers: answer.headers, sent };
  const iid = answer.json.install_id as string;
  const key = deriveInstallKey({
    privateKey: installPrivate,
    peerPublicKey: Buffer.from(enrollment.key, 'base64url'),
    challenge: Buffer.from(challenge, 'base64url'),
    installId: iid,
    ekid,
    installPublicKey: installKey,
  });
  return { status: 201, iid, key, answer: answer.json, headers: answer.headers, sent };
}

/** A small Messages body. */
export function messagesBody(text: string): string {
  return JSON.stringify({ model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: text }] });
}
