import { createPrivateKey, createPublicKey, diffieHellman, hkdfSync } from 'node:crypto';
import { type ParseResult, ProtocolError, toResult } from './errors.js';
import { decodeBase64url32 } from './internal/base64url.js';
import { describeValue, isRecord } from './internal/describe.js';
import { KEY_ID_PATTERN } from './key-id.js';
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
    throw new ProtocolError('ERR_ENROLLMENT', '"ekid" as a key id matching [A-Za-z0-9_-]{1,32}', describeValue(body.ekid));
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
  const parsed = parseEnrollmentRequest({ v: 1, install_key: request.installKey, challenge: request.challenge, ekid: request.ekid });
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
    throw new ProtocolError('ERR_ENROLLMENT', '"install_id" as "i" and 24 lowercase hex digits', describeValue(body.install_id));
  }
  if (typeof body.ekid !== 'string' || !KEY_ID_PATTERN.test(body.ekid)) {
    throw new ProtocolError('ERR_ENROLLMENT', '"ekid" as a key id matching [A-Za-z0-9_-]{1,32}', describeValue(body.ekid));
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
  if (!Number.isSafeInteger(expiresIn) || (expiresIn as number) < 1 || (expiresIn as number) > MAX_CHALLENGE_LIFETIME_SECONDS) {
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
 * const k = deriveInstallKey({ privateKey, peerPublicKey, challenge, installId: 'i0123…', ekid: 'e2026a', installPublicKey });
 * computeStamp(k, body, loc.stampStart, loc.stampEnd, request); // for an i1 envelope
 * ```
 */
export function deriveInstallKey(input: InstallKeyInput): Uint8Array {
  const privateKey = checkBytes(input.privateKey, 'a private key');
  const peerPublicKey = checkBytes(input.peerPublicKey, 'a peer public key');
  const challenge = checkBytes(input.challenge, 'a challenge');
  if (!isInstallId(input.installId)) {
    throw new ProtocolError('ERR_ENROLLMENT', 'an install id of "i" and 24 lowercase hex digits', describeValue(input.installId));
  }
  if (typeof input.ekid !== 'string' || !KEY_ID_PATTERN.test(input.ekid)) {
    throw new ProtocolError('ERR_ENROLLMENT', 'an ekid matching [A-Za-z0-9_-]{1,32}', describeValue(input.ekid));
  }
  decodeEnrollmentBytes(input.installPublicKey, 'the install public key');
  const z = x25519(privateKey, peerPublicKey);
  if (z === undefined || z.every((b) => b === 0)) {
    throw new ProtocolError('ERR_ENROLLMENT', 'a public key of full order (non-zero X25519 shared secret)', 'a low-order point');
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
