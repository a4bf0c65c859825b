import { createPrivateKey, createPublicKey, diffieHellman, hkdfSync } from 'node:crypto';
import { type ParseResult, ProtocolError, toResult } from './errors.js';
import { decodeBase64url32 } from './internal/base64url.js';
import { describeValue, isRecord } from './internal/describe.js';
import { KEY_ID_PATTERN } from './key-id.js';
import type { AttestationSignal, InstallSignal, PolicyAction } from './signals.js';
import { lengthPrefixed } from './signature.js';

/** First item of the HKDF `info` that derives an install key (§5.4). */
export const INSTALL_KEY_LABEL = 'moat-install/1';
/** Path, relative to an API base URL, where a client asks for an enrollment challenge (§10.2). */
export const ENROLLMENT_CHALLENGE_PATH = '/v1/moat/enroll/challenge';
/** Path, relative to an API base URL, where a client enrolls an install (§10.3). */
export const ENROLLMENT_PATH = '/v1/moat/enroll';
/** An install id: `i` and 24 lowercase hex digits (96 random bits). It is also a valid key id. */
export const INSTALL_ID_PATTERN = /^i[0-9a-f]{24}$/;
/** Bytes of an X25519 key, a challenge and a derived install key. */
export const ENROLLMENT_KEY_BYTES = 32;
/** Longest lifetime of a challenge, in seconds (§10.2); 60 is recommended. */
export const MAX_CHALLENGE_LIFETIME_SECONDS = 300;
/** Recommended lifetime of a challenge, in seconds. */
export const DEFAULT_CHALLENGE_LIFETIME_SECONDS = 60;

/** Whether `value` is an install id ({@link INSTALL_ID_PATTERN}). */
export function isInstallId(value: unknown): value is string {
  return typeof value === 'string' && INSTALL_ID_PATTERN.test(value);
}

/**
 * The 32 bytes of a base64url text (an X25519 public key, a challenge).
 *
 * @throws {ProtocolError} `ERR_ENROLLMENT` for anything but canonical base64url of exactly 32 bytes.
 */
export function decodeEnrollmentBytes(value: unknown, what = 'a value'): Uint8Array {
  const bytes = decodeBase64url32(value);
  if (bytes === undefined) {
    throw new ProtocolError('ERR_ENROLLMENT', `${what} as canonical base64url of 32 bytes`, describeValue(value));
  }
  return bytes;
}

/** A parsed enrollment request body (§10.3), without its envelope. */
export interface EnrollmentRequest {
  readonly v: 1;
  /** The install's X25519 public key, base64url of 32 bytes, exactly as sent. */
  readonly installKey: string;
  /** The challenge the verifier issued, base64url of 32 bytes, exactly as sent. */
  readonly challenge: string;
  /** Key id of the verifier enrollment key the install derives against. */
  readonly ekid: string;
}

/**
 * Parses an enrollment request body (the JSON value, already parsed). Checks, in order: an
 * object; `v` is 1; `install_key` and `challenge` are base64url of 32 bytes; `ekid` is a key
 * id. Unknown members are ignored; `moat_att` is left to the envelope rules (§4, §5).
 *
 * @throws {ProtocolError} `ERR_ENROLLMENT`.
 * @example
 * ```ts
 * parseEnrollmentRequest(JSON.parse(body)); // { v: 1, installKey: '…', challenge: '…', ekid: 'e2026a' }
 * ```
 */
export function parseEnrollmentRequest(body: unknown): EnrollmentRequest {
  if (!isRecord(body)) throw new ProtocolError('ERR_ENROLLMENT', 'an enrollment request object', describeValue(body));
  if (body.v !== 1) throw new ProtocolError('ERR_ENROLLMENT', '"v" as 1', describeValue(body.v));
  decodeEnrollmentBytes(body.install_key, '"install_key"');
  decodeEnrollmentBytes(body.challenge, '"challenge"');
  if (typeof body.ekid !== 'string' || !KEY_ID_PATTERN.test(body.ekid)) {
    throw new ProtocolError(
      'ERR_ENROLLMENT',
      '"ekid" as a key id matching [A-Za-z0-9_-]{1,32}',
      describeValue(body.ekid),
    );
  }
  return { v: 1, installKey: body.install_key as string, challenge: body.challenge as string, ekid: body.ekid };
}

/** Like {@link parseEnrollmentRequest}, but returns a {@link ParseResult} instead of throwing. */
export function tryParseEnrollmentRequest(body: unknown): ParseResult<EnrollmentRequest> {
  return toResult(() => parseEnrollmentRequest(body));
}

/**
 * The enrollment request body a client sends, before its envelope: compact JSON with the
 * members in the order of §10.3. Append an `r1` placeholder with `appendEnvelope` and have it
 * stamped with the release key.
 *
 * @throws {ProtocolError} `ERR_ENROLLMENT` for a member outside its grammar.
 * @example
 * ```ts
 * appendEnvelope(enrollmentRequestBody({ installKey, challenge, ekid: 'e2026a' }), placeholder);
 * ```
 */
export function enrollmentRequestBody(request: Omit<EnrollmentRequest, 'v'>): string {
  const parsed = parseEnrollmentRequest({
    v: 1,
    install_key: request.installKey,
    challenge: request.challenge,
    ekid: request.ekid,
  });
  return `{"v":1,"install_key":"${parsed.installKey}","challenge":"${parsed.challenge}","ekid":"${parsed.ekid}"}`;
}

/** A parsed `201` answer to an enrollment: `{"install_id":"i…","ekid":"…"}`. */
export interface EnrollmentAnswer {
  /** The install id: the key id of this install's `i1` envelopes. */
  readonly installId: string;
  /** Key id of the verifier enrollment key the install key is derived against. */
  readonly ekid: string;
}

/**
 * Parses the verifier's answer to an enrollment. Unknown members are ignored.
 *
 * @throws {ProtocolError} `ERR_ENROLLMENT`.
 */
export function parseEnrollmentAnswer(body: unknown): EnrollmentAnswer {
  if (!isRecord(body)) throw new ProtocolError('ERR_ENROLLMENT', 'an enrollment answer object', describeValue(body));
  if (!isInstallId(body.install_id)) {
    throw new ProtocolError(
      'ERR_ENROLLMENT',
      '"install_id" as "i" and 24 lowercase hex digits',
      describeValue(body.install_id),
    );
  }
  if (typeof body.ekid !== 'string' || !KEY_ID_PATTERN.test(body.ekid)) {
    throw new ProtocolError(
      'ERR_ENROLLMENT',
      '"ekid" as a key id matching [A-Za-z0-9_-]{1,32}',
      describeValue(body.ekid),
    );
  }
  return { installId: body.install_id, ekid: body.ekid };
}

/** A parsed challenge answer: `{"challenge":"<base64url of 32 bytes>","expires_in":60}`. */
export interface ChallengeAnswer {
  /** The challenge, base64url of 32 bytes, as the verifier wrote it. */
  readonly challenge: string;
  /** Seconds the challenge stays good for, 1 to {@link MAX_CHALLENGE_LIFETIME_SECONDS}. */
  readonly expiresIn: number;
}

/**
 * Parses the verifier's answer to a challenge request. Unknown members are ignored.
 *
 * @throws {ProtocolError} `ERR_ENROLLMENT`.
 */
export function parseChallengeAnswer(body: unknown): ChallengeAnswer {
  if (!isRecord(body)) throw new ProtocolError('ERR_ENROLLMENT', 'a challenge answer object', describeValue(body));
  decodeEnrollmentBytes(body.challenge, '"challenge"');
  const expiresIn = body.expires_in;
  if (
    !Number.isSafeInteger(expiresIn) ||
    (expiresIn as number) < 1 ||
    (expiresIn as number) > MAX_CHALLENGE_LIFETIME_SECONDS
  ) {
    throw new ProtocolError(
      'ERR_ENROLLMENT',
      `"expires_in" as an integer from 1 to ${MAX_CHALLENGE_LIFETIME_SECONDS}`,
      describeValue(expiresIn),
    );
  }
  return { challenge: body.challenge as string, expiresIn: expiresIn as number };
}

/** Input to {@link deriveInstallKey}: one side's private key and the other side's public key. */
export interface InstallKeyInput {
  /** 32-byte X25519 private key: the install's (client) or the verifier's enrollment key (verifier). */
  readonly privateKey: Uint8Array;
  /** 32-byte X25519 public key of the other side. */
  readonly peerPublicKey: Uint8Array;
  /** The challenge's 32 bytes (base64url-decoded): the HKDF salt. */
  readonly challenge: Uint8Array;
  /** The install id the verifier assigned. */
  readonly installId: string;
  /** Key id of the verifier's enrollment key. */
  readonly ekid: string;
  /** The install's public key as the base64url text sent in the enrollment request. */
  readonly installPublicKey: string;
}

// DER headers of an X25519 key (RFC 8410), so node:crypto (OpenSSL) takes raw 32-byte keys.
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

function x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | undefined {
  try {
    const shared = diffieHellman({
      privateKey: createPrivateKey({ key: Buffer.concat([PKCS8_X25519, privateKey]), format: 'der', type: 'pkcs8' }),
      publicKey: createPublicKey({ key: Buffer.concat([SPKI_X25519, publicKey]), format: 'der', type: 'spki' }),
    });
    return new Uint8Array(shared);
  } catch {
    // OpenSSL refuses an all-zero shared secret (a low-order point) itself; the check below covers other back ends.
    return undefined;
  }
}

function checkBytes(value: unknown, what: string): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length !== ENROLLMENT_KEY_BYTES) {
    const got = value instanceof Uint8Array ? `${value.length} bytes` : describeValue(value);
    throw new ProtocolError('ERR_ENROLLMENT', `${what} of ${ENROLLMENT_KEY_BYTES} bytes`, got);
  }
  return value;
}

/**
 * Derives an install's stamping key `K_i` (§5.4):
 * `Z = X25519(privateKey, peerPublicKey)`, then
 * `K_i = HKDF-SHA-256(IKM = Z, salt = challenge, info = lp(["moat-install/1", iid, ekid, install_key]), L = 32)`.
 * Both sides get the same key: the install from its private key and the verifier's public key,
 * the verifier from its enrollment private key and the install's public key. An all-zero `Z`
 * (the peer sent a low-order point, RFC 7748 §6.1) is refused.
 *
 * @throws {ProtocolError} `ERR_ENROLLMENT` for a key or challenge that is not 32 bytes, an install
 *   id or key id outside its grammar, a public key text that is not base64url of 32 bytes, or an all-zero `Z`.
 * @example
 * ```ts
 * const input = { privateKey, peerPublicKey, challenge, installId: 'i0123…', ekid: 'e2026a', installPublicKey };
 * const k = deriveInstallKey(input);
 * computeStamp(k, body, loc.stampStart, loc.stampEnd, request); // for an i1 envelope
 * ```
 */
export function deriveInstallKey(input: InstallKeyInput): Uint8Array {
  const privateKey = checkBytes(input.privateKey, 'a private key');
  const peerPublicKey = checkBytes(input.peerPublicKey, 'a peer public key');
  const challenge = checkBytes(input.challenge, 'a challenge');
  if (!isInstallId(input.installId)) {
    throw new ProtocolError(
      'ERR_ENROLLMENT',
      'an install id of "i" and 24 lowercase hex digits',
      describeValue(input.installId),
    );
  }
  if (typeof input.ekid !== 'string' || !KEY_ID_PATTERN.test(input.ekid)) {
    throw new ProtocolError('ERR_ENROLLMENT', 'an ekid matching [A-Za-z0-9_-]{1,32}', describeValue(input.ekid));
  }
  decodeEnrollmentBytes(input.installPublicKey, 'the install public key');
  const z = x25519(privateKey, peerPublicKey);
  if (z === undefined || z.every((b) => b === 0)) {
    throw new ProtocolError(
      'ERR_ENROLLMENT',
      'a public key of full order (non-zero X25519 shared secret)',
      'a low-order point',
    );
  }
  const info = lengthPrefixed([INSTALL_KEY_LABEL, input.installId, input.ekid, input.installPublicKey]);
  const key = new Uint8Array(hkdfSync('sha256', z, challenge, info, ENROLLMENT_KEY_BYTES));
  z.fill(0);
  return key;
}

/**
 * The X25519 public key of a 32-byte private key, as base64url text (what an install sends as
 * `install_key`, what a verifier publishes as `enrollment.key`).
 *
 * @throws {ProtocolError} `ERR_ENROLLMENT` for a key that is not 32 bytes.
 */
export function x25519PublicKey(privateKey: Uint8Array): string {
  const key = createPrivateKey({
    key: Buffer.concat([PKCS8_X25519, checkBytes(privateKey, 'a private key')]),
    format: 'der',
    type: 'pkcs8',
  });
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
  return spki.subarray(SPKI_X25519.length).toString('base64url');
}

/** What a verifier knows about one enrollment attempt, in the order it checks it (§10.3). */
export interface EnrollmentFacts {
  /** Step 1: the body is JSON and {@link parseEnrollmentRequest} accepts it. */
  readonly request: 'valid' | 'invalid';
  /** Step 2: the scheme of the envelope found (`none`: no envelope, or a malformed one). */
  readonly scheme: 'v1' | 'r1' | 'i1' | 'none';
  /** Step 2: the attestation signal of that envelope's stamp under the release keys (§5.2). */
  readonly attestation: AttestationSignal;
  /** Step 3: whether `ekid` names an active enrollment key. */
  readonly ekid: 'active' | 'unknown';
  /** Step 4: the challenge, as the verifier's store finds it when consuming it. */
  readonly challenge: 'fresh' | 'unknown' | 'expired' | 'used' | 'other_credential';
  /** Step 5: whether the install key is a low-order point (an all-zero shared secret). */
  readonly lowOrder: boolean;
  /** Step 6: whether this enrollment would pass a limit of the API key. */
  readonly limit: 'within' | 'over';
  /** Step 6: the policy for an enrollment over a limit; absent, `block` (§10.3's default). */
  readonly limitAction?: PolicyAction | undefined;
}

/**
 * A verifier's answer to an enrollment (§10.3): the HTTP status, the reason its error body
 * names (an error code, or the attestation signal that refused the release stamp), and for
 * `201` whether the install is marked `over_limit`.
 */
export type EnrollmentOutcome =
  | { readonly status: 201; readonly install: 'created' | 'over_limit' }
  | { readonly status: 400 | 401 | 403 | 409 | 429; readonly reason: string };

/**
 * The answer to an enrollment attempt, from the facts the verifier found, checked in the
 * order of §10.3: the body; the release stamp (an `r1` stamp that is `valid` — a revoked
 * release cannot enroll); the enrollment key; the challenge; the install key; the limits.
 * Pure: the verifier finds the facts (consuming the challenge atomically), this decides.
 *
 * @example
 * ```ts
 * enrollmentOutcome({ request: 'valid', scheme: 'r1', attestation: 'replayed', ekid: 'active',
 *   challenge: 'fresh', lowOrder: false, limit: 'within', limitAction: 'block' });
 * // { status: 409, reason: 'replayed' }
 * ```
 */
export function enrollmentOutcome(facts: EnrollmentFacts): EnrollmentOutcome {
  if (facts.request !== 'valid') return { status: 400, reason: 'ERR_ENROLLMENT' };
  if (facts.scheme !== 'r1') return { status: 401, reason: facts.scheme === 'none' ? 'missing' : 'invalid' };
  if (facts.attestation === 'replayed') return { status: 409, reason: 'replayed' };
  if (facts.attestation === 'revoked') return { status: 403, reason: 'revoked' };
  if (facts.attestation !== 'valid') return { status: 401, reason: facts.attestation };
  if (facts.ekid !== 'active') return { status: 400, reason: 'ERR_ENROLLMENT' };
  if (facts.challenge !== 'fresh') return { status: 409, reason: 'ERR_ENROLL_CHALLENGE' };
  if (facts.lowOrder) return { status: 400, reason: 'ERR_ENROLLMENT' };
  if (facts.limit === 'over') {
    // §10.3: block is the default, so a policy that names no action creates nothing.
    const action = facts.limitAction ?? 'block';
    if (action === 'block') return { status: 429, reason: 'ERR_ENROLL_LIMIT' };
    if (action === 'flag') return { status: 201, install: 'over_limit' };
  }
  return { status: 201, install: 'created' };
}

/** What a verifier knows about one request outside enrollment, for its `install` signal (§13). */
export interface InstallFacts {
  /** The scheme of the request's envelope (`none`: no envelope, or one that is not found). */
  readonly scheme: 'v1' | 'r1' | 'i1' | 'none';
  /** Its attestation signal (§5.2): for `i1`, under the install's key. */
  readonly attestation: AttestationSignal;
  /** For `i1`: the install as enrolled — `new` within the verifier's window (24 h by default), else `known`. */
  readonly install?: 'known' | 'new' | 'over_limit' | 'revoked' | 'unknown';
  /** For `r1`/`v1`: whether the release table says the stamping release speaks `install_keys`. */
  readonly releaseSpeaksInstallKeys?: boolean;
}

/**
 * The `install` signal of a request outside enrollment (§13): for a valid `i1` stamp the
 * install's state; `revoked` for a correct MAC under a revoked install; `release_only` for a
 * valid `r1` or `v1` stamp from a release known to speak `install_keys` (a release key alone
 * only enrolls); otherwise `none`.
 */
export function installSignal(facts: InstallFacts): InstallSignal {
  if (facts.scheme === 'i1') {
    if (facts.attestation === 'revoked' || (facts.attestation === 'valid' && facts.install === 'revoked'))
      return 'revoked';
    if (facts.attestation !== 'valid') return 'none';
    const install = facts.install;
    return install === 'known' || install === 'new' || install === 'over_limit' ? install : 'none';
  }
  if (
    (facts.scheme === 'r1' || facts.scheme === 'v1') &&
    facts.attestation === 'valid' &&
    facts.releaseSpeaksInstallKeys === true
  ) {
    return 'release_only';
  }
  return 'none';
}
