import { PROTOCOL_VERSION } from './attribution.js';
import { type ParseResult, ProtocolError, toResult } from './errors.js';
import { decodeBase64url32 } from './internal/base64url.js';
import { describeValue, isRecord } from './internal/describe.js';
import { isSpaceOrTab, trimWhere } from './internal/trim.js';
import { KEY_ID_PATTERN } from './key-id.js';

/** Path, relative to an API base URL, of the discovery document. */
export const DISCOVERY_PATH = '/v1/moat';

/** Response header a Moat-aware endpoint sets on every response: the versions it speaks. */
export const VERSION_HEADER = 'moat-version';

/** Features an endpoint may advertise. Unknown features are ignored by clients. */
export const FEATURES = [
  'attribution',
  'attestation',
  'fingerprint',
  'anti_distillation',
  'signed_blocks',
  'telemetry',
  'request_binding',
  'install_keys',
] as const;
export type Feature = (typeof FEATURES)[number];

/** The discovery document served at `GET {base}/v1/moat`. */
export interface Discovery {
  /** Protocol major versions the endpoint accepts. */
  readonly versions: readonly number[];
  /** Advertised features; unknown names are dropped when parsing. */
  readonly features: readonly Feature[];
  /** Path of the telemetry endpoint, relative to the base URL. */
  readonly telemetry?: string;
  /** Path of the GrowthBook features endpoint serving remote flags, relative to the base URL. */
  readonly flags?: string;
  /** Where and with which verifier key an install enrolls (§10.1); present exactly when `features` lists `install_keys`. */
  readonly enrollment?: DiscoveryEnrollment;
}

/** The `enrollment` member of a discovery document that advertises `install_keys` (§10.1). */
export interface DiscoveryEnrollment {
  /** Path of the challenge endpoint, relative to the base URL (normally {@link ENROLLMENT_CHALLENGE_PATH}). */
  readonly challenge: string;
  /** Path of the enrollment endpoint, relative to the base URL (normally {@link ENROLLMENT_PATH}). */
  readonly enroll: string;
  /** Key id of the verifier's enrollment key; the enrollment request names it as `ekid`. */
  readonly kid: string;
  /** The verifier's X25519 public key: base64url without padding of exactly 32 bytes. */
  readonly key: string;
}

/** An absolute path, and not `//…`: resolved against the base URL that would name another host (a network-path reference). */
const PATH_RE = /^\/(?!\/)[A-Za-z0-9._~/-]{0,255}$/;

/**
 * Parses a discovery document `{"moat":{"versions":[1],"features":[…],…}}`.
 *
 * @throws {ProtocolError} `ERR_DISCOVERY`.
 */
export function parseDiscovery(input: unknown): Discovery {
  const root = typeof input === 'object' && input !== null ? (input as Record<string, unknown>).moat : undefined;
  if (typeof root !== 'object' || root === null || Array.isArray(root)) {
    throw new ProtocolError('ERR_DISCOVERY', 'an object with a "moat" object member', describeValue(input));
  }
  const doc = root as Record<string, unknown>;
  const versions = doc.versions;
  if (
    !Array.isArray(versions) ||
    versions.length === 0 ||
    versions.length > 16 ||
    !versions.every((v) => Number.isSafeInteger(v) && v > 0)
  ) {
    throw new ProtocolError('ERR_DISCOVERY', '"versions" as a non-empty array of positive integers', describeValue(versions));
  }
  // Absent is []; a present null is not an array (§10: an optional member given as null is present).
  const features = doc.features === undefined ? [] : doc.features;
  if (!Array.isArray(features) || features.length > 64 || !features.every((f) => typeof f === 'string')) {
    throw new ProtocolError('ERR_DISCOVERY', '"features" as an array of strings', describeValue(features));
  }
  const out: { versions: number[]; features: Feature[]; telemetry?: string; flags?: string; enrollment?: DiscoveryEnrollment } = {
    versions: versions as number[],
    features: (features as string[]).filter((f): f is Feature => (FEATURES as readonly string[]).includes(f)),
  };
  for (const member of ['telemetry', 'flags'] as const) {
    const value = doc[member];
    if (value === undefined) continue;
    if (typeof value !== 'string' || !PATH_RE.test(value)) {
      throw new ProtocolError('ERR_DISCOVERY', `"${member}" as an absolute path not starting with //`, describeValue(value));
    }
    out[member] = value;
  }
  // Without the feature the member means nothing and is dropped; with it, it must be whole.
  if (out.features.includes('install_keys')) out.enrollment = parseDiscoveryEnrollment(doc.enrollment);
  return out;
}

function parseDiscoveryEnrollment(value: unknown): DiscoveryEnrollment {
  if (!isRecord(value)) {
    throw new ProtocolError('ERR_DISCOVERY', '"enrollment" as an object, since "install_keys" is listed', describeValue(value));
  }
  const { challenge, enroll, kid, key } = value;
  for (const [name, path] of [
    ['challenge', challenge],
    ['enroll', enroll],
  ] as const) {
    if (typeof path !== 'string' || !PATH_RE.test(path)) {
      throw new ProtocolError('ERR_DISCOVERY', `"enrollment.${name}" as an absolute path not starting with //`, describeValue(path));
    }
  }
  if (typeof kid !== 'string' || !KEY_ID_PATTERN.test(kid)) {
    throw new ProtocolError('ERR_DISCOVERY', '"enrollment.kid" as a key id matching [A-Za-z0-9_-]{1,32}', describeValue(kid));
  }
  if (decodeBase64url32(key) === undefined) {
    throw new ProtocolError('ERR_DISCOVERY', '"enrollment.key" as canonical base64url of 32 bytes', describeValue(key));
  }
  return { challenge: challenge as string, enroll: enroll as string, kid, key: key as string };
}

/** Like {@link parseDiscovery}, but returns a {@link ParseResult} instead of throwing. */
export function tryParseDiscovery(input: unknown): ParseResult<Discovery> {
  return toResult(() => parseDiscovery(input));
}

/**
 * The highest protocol version both sides speak, or `undefined`: then the client must send
 * no Moat tags at all (a strict API would reject unknown members).
 */
export function negotiateVersion(
  serverVersions: readonly number[],
  clientVersions: readonly number[] = [PROTOCOL_VERSION],
): number | undefined {
  let best: number | undefined;
  for (const v of clientVersions) if (serverVersions.includes(v) && (best === undefined || v > best)) best = v;
  return best;
}

/**
 * Parses a `moat-version` header value (`1` or `1, 2`) into versions; malformed → empty,
 * and so is a value that is not a string (a header repeated as an array, say).
 * Parts are trimmed of spaces and tabs only (HTTP's optional whitespace), nothing else.
 */
export function parseVersionHeader(value: string | null | undefined): number[] {
  if (typeof value !== 'string') return [];
  const versions: number[] = [];
  for (const part of value.split(',')) {
    const t = trimWhere(part, isSpaceOrTab);
    if (/^[1-9][0-9]{0,3}$/.test(t)) versions.push(Number(t));
    else return [];
  }
  return versions;
}

/** What a client knows of one origin when it chooses the envelope to send (§10.4). */
export interface SchemeChoice {
  /** The features the origin's discovery document lists now (unknown ones are ignored). */
  readonly features: readonly string[];
  /** Features this origin advertised before and the client pinned: `request_binding`, `install_keys`. */
  readonly pinned?: readonly string[];
  /** Whether this install holds an install id enrolled at this origin. */
  readonly enrolled?: boolean;
}

/**
 * The envelope scheme a client stamps for an origin, or `undefined` for no envelope (§10.4):
 * none unless the origin advertises `attestation` (§4.4); then `i1` once this install enrolled
 * there — whatever the document lists besides, so an edited one cannot downgrade it to a
 * release-key stamp; else `r1` when the origin advertises (or once advertised) `request_binding`;
 * else `v1`.
 *
 * @example
 * ```ts
 * envelopeSchemeFor({ features: ['attestation'], pinned: ['install_keys'], enrolled: true }); // 'i1'
 * ```
 */
export function envelopeSchemeFor(choice: SchemeChoice): 'v1' | 'r1' | 'i1' | undefined {
  // No `attestation`, no envelope (§4.4): the verifier then sees `missing`, never a weaker stamp.
  if (!choice.features.includes('attestation')) return undefined;
  if (choice.enrolled === true) return 'i1';
  const pinned = choice.pinned ?? [];
  return choice.features.includes('request_binding') || pinned.includes('request_binding') ? 'r1' : 'v1';
}
