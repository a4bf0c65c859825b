import { createSecretKey, type KeyObject } from 'node:crypto';
import {
  type AttestationSignal,
  type BindingSignal,
  KEY_ID_PATTERN,
  locateEnvelope,
  type RequestComponents,
  requestBase,
  verifyStamp,
} from '@moat/protocol';
import { loadNativeAddon, type NativeBinding } from '@moat/protocol/support';
import { AttestError } from './errors.js';

export { AttestError, type AttestErrorCode } from './errors.js';

/** One stamping key: its id, its bytes (≥ 32) and an optional validity interval (Unix seconds). */
export interface AttestationKey {
  readonly kid: string;
  readonly key: Uint8Array;
  readonly notBefore?: number;
  readonly notAfter?: number;
}

/** The addon's stamp check (`@moat/native`), injectable for tests. */
export type NativeStampCheck = Pick<NativeBinding, 'stampKey' | 'stampMatches'>;

/** Options of {@link AttestationKeyring}. */
export interface AttestationKeyringOptions {
  /**
   * Where stamps are checked. Default: `@moat/native` when it loads (OpenSSL with each key's
   * HMAC state set up once: 1.3× node:crypto's throughput on 10 KB bodies), else node:crypto.
   * `null` uses node:crypto only. Both give the same answer for every input.
   */
  readonly native?: NativeStampCheck | null;
}

/**
 * The stamping keys a verifier accepts. Several key ids are active at once (one per
 * release, say), rotation adds a key, and revocation retires one for good: a revoked key id
 * is never `valid` again, even if re-added by mistake. Its material is kept, so a genuine
 * stamp of the revoked release is told apart (`revoked`) from a forgery under its id (`invalid`).
 */
export class AttestationKeyring {
  readonly #keys = new Map<string, AttestationKey>();
  readonly #objects = new Map<string, KeyObject>();
  readonly #handles = new Map<string, unknown>();
  readonly #revoked = new Set<string>();
  #native: NativeStampCheck | undefined;
  readonly #ready: Promise<void>;

  constructor(keys: Iterable<AttestationKey> = [], options: AttestationKeyringOptions = {}) {
    for (const key of keys) this.add(key);
    if (options.native === null) this.#ready = Promise.resolve();
    else if (options.native !== undefined) {
      this.#ready = Promise.resolve();
      this.#useNative(options.native);
    } else {
      // Stamps are checked with node:crypto until the addon has loaded (or for good without it).
      this.#ready = loadNativeAddon<NativeStampCheck>(() => import('@moat/native')).then(({ native }) => {
        if (native !== undefined && typeof native.stampKey === 'function') this.#useNative(native);
      });
    }
  }

  #useNative(native: NativeStampCheck): void {
    this.#native = native;
    for (const key of this.#keys.values()) this.#setUpHandle(key);
  }

  #setUpHandle(key: AttestationKey): void {
    this.#handles.delete(key.kid);
    if (this.#native === undefined) return;
    try {
      this.#handles.set(key.kid, this.#native.stampKey(key.key));
    } catch {
      // A key the addon will not take (over 1 KB, say) is checked by node:crypto.
    }
  }

  /** Settles once the native stamp check is in use, or known to be unavailable. */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** Where stamps by `kid` are checked now: `native` (`@moat/native`) or `node:crypto`. */
  backend(kid: string): 'native' | 'node:crypto' {
    return this.#handles.has(kid) ? 'native' : 'node:crypto';
  }

  /**
   * Whether the stamp in `body[stampStart, stampEnd)` was made with key `kid` (§5.2; with
   * `request`, an r1 stamp, §5.3), compared in constant time. Callers look the key up with
   * {@link get} first: this does not check validity or revocation.
   *
   * @throws {ProtocolError} for a region outside the stamp grammar or request components
   *   outside theirs; a native `ERR_NATIVE_STAMP_REGION` for the same region errors.
   */
  stampMatches(kid: string, body: Uint8Array, stampStart: number, stampEnd: number, request?: RequestComponents): boolean {
    const handle = this.#handles.get(kid);
    if (handle !== undefined && this.#native !== undefined)
      return this.#native.stampMatches(handle, request === undefined ? null : requestBase(request), body, stampStart, stampEnd);
    const key = this.#objects.get(kid);
    if (key === undefined) return false;
    return verifyStamp(key, body, stampStart, stampEnd, request);
  }

  /** Adds or replaces a key. */
  add(key: AttestationKey): void {
    if (!KEY_ID_PATTERN.test(key.kid))
      throw new AttestError('ERR_ATTESTATION_KEY', `expected a key id of [A-Za-z0-9_-]{1,32}, got ${JSON.stringify(key.kid)}`);
    if (key.key.length < 32)
      throw new AttestError('ERR_ATTESTATION_KEY', `expected a stamping key of at least 32 bytes for ${key.kid}, got ${key.key.length}`);
    this.#keys.set(key.kid, key);
    this.#objects.set(key.kid, createSecretKey(key.key));
    this.#setUpHandle(key);
  }

  /**
   * Revokes a key id for good (extracted keys, retired releases). The key's material stays
   * for {@link stampMatches}: a stamp under a revoked id is still checked before it is scored.
   */
  revoke(kid: string): void {
    this.#revoked.add(kid);
  }

  /** Whether the key material of `kid` is held (accepted or revoked). */
  hasMaterial(kid: string): boolean {
    return this.#objects.has(kid);
  }

  /** The key for `kid` valid at `now`, if any. */
  get(kid: string, now: number): AttestationKey | undefined {
    if (this.#revoked.has(kid)) return undefined;
    const key = this.#keys.get(kid);
    if (key === undefined) return undefined;
    if ((key.notBefore !== undefined && now < key.notBefore) || (key.notAfter !== undefined && now > key.notAfter)) return undefined;
    return key;
  }

  /** The key as a node:crypto `KeyObject` (set up once: HMAC with a raw key re-imports it on every call). */
  keyObject(kid: string): KeyObject | undefined {
    return this.#objects.get(kid);
  }

  /** Whether `kid` was revoked. */
  isRevoked(kid: string): boolean {
    return this.#revoked.has(kid);
  }

  /** Key ids revoked so far. */
  revokedKids(): string[] {
    return [...this.#revoked];
  }

  /** Key ids currently accepted (revoked ones left out). */
  kids(): string[] {
    return [...this.#keys.keys()].filter((kid) => !this.#revoked.has(kid));
  }
}

/**
 * Remembers nonces for the replay check. `add` returns false when the nonce was seen (or can
 * no longer be vouched for), and keeps it at least until the end of the second `expiresAt`
 * (Unix seconds): the last instant a stamp with that nonce could be accepted. `madeAt` is the
 * stamp's own time (Unix seconds, as signed): a store that lost its data refuses every stamp
 * made before the loss (SPEC §5.2, R5.2-5), which `expiresAt` cannot tell, since it counts
 * from the time of the check for a stamp from the past. It throws when the store cannot be
 * reached; the caller must then refuse, never accept.
 */
export interface NonceStore {
  add(kid: string, nonce: string, expiresAt: number, madeAt?: number): boolean | Promise<boolean>;
}

/**
 * An in-memory nonce store with expiry and a size bound; the verifier has SQLite and Redis
 * ones for several replicas. When full, it refuses new nonces (reported as replayed) rather
 * than forgetting live ones, which would reopen the replay window.
 */
export class MemoryNonceStore implements NonceStore {
  readonly #seen = new Map<string, number>();
  readonly #max: number;
  constructor(options: { maxEntries?: number } = {}) {
    this.#max = options.maxEntries ?? 1_000_000;
  }
  get size(): number {
    return this.#seen.size;
  }
  /** `madeAt` is not needed here: this store never loses its nonces while it lives. `now` is for tests. */
  add(kid: string, nonce: string, expiresAt: number, _madeAt?: number, now = Math.floor(Date.now() / 1000)): boolean {
    const key = `${kid}.${nonce}`;
    const until = this.#seen.get(key);
    if (until !== undefined && until >= now) return false;
    if (this.#seen.size >= this.#max) this.sweep(now);
    if (this.#seen.size >= this.#max) return false;
    this.#seen.set(key, expiresAt);
    return true;
  }
  /** Forgets expired nonces. */
  sweep(now = Math.floor(Date.now() / 1000)): void {
    for (const [key, until] of this.#seen) if (until < now) this.#seen.delete(key);
  }
}

/** Options of {@link verifyAttestation}. */
export interface VerifyAttestationOptions {
  readonly keyring: AttestationKeyring;
  /** Replay cache; without one, replays are not detected. */
  readonly nonceStore?: NonceStore;
  /** Unix seconds (default: now). */
  readonly now?: number;
  /** Accepted clock difference in seconds, both ways (default 300). */
  readonly windowSec?: number;
  /** The client said it could not attest (the `moat-attestation: unavailable` header). */
  readonly clientUnavailable?: boolean;
  /**
   * The request the body came in, as received (`receivedRequestComponents`): an `r1` stamp
   * is checked against it (§5.3), so bytes re-sent under another key, to another host or
   * path do not verify. Several candidates (one per public authority the verifier answers
   * for) verify when any one matches. Without it an `r1` stamp is `invalid`.
   */
  readonly request?: RequestComponents | readonly RequestComponents[];
  /** Install keys for `i1` stamps (protocol 1.2); without a resolver an `i1` stamp is `unknown_key`. */
  readonly installs?: InstallKeyResolver;
}

/** An install's stamping key as {@link InstallKeyResolver} gives it (protocol 1.2, `i1` stamps). */
export interface InstallKey {
  /** `K_i`, 32 bytes (or a node:crypto secret key of them). */
  readonly key: KeyObject | Uint8Array;
  /** Revoked by an operator: a stamp that verifies under it is `revoked`, never `valid`. */
  readonly revoked: boolean;
}

/**
 * Looks an install id up: its key, or `undefined` when it is not enrolled (`unknown_key`).
 * It may reject when its store cannot answer; {@link verifyAttestation} then rejects too.
 */
export type InstallKeyResolver = (iid: string) => InstallKey | undefined | Promise<InstallKey | undefined>;

/** Outcome of {@link verifyAttestation}: a protocol signal and what was learned on the way. */
export interface AttestationResult {
  readonly signal: AttestationSignal;
  readonly kid?: string;
  readonly ts?: number;
  readonly nonce?: string;
  /** What a `valid` stamp covers: `install` (i1), `request` (r1) or `body` (v1); `none` otherwise. */
  readonly binding: BindingSignal;
  /** Why, in words, for records (never the key or the expected stamp). */
  readonly reason?: string;
}

const isPlaceholder = (stamp: string) => /^0+$/.test(stamp);

/**
 * Verifies the attestation stamp over the raw request bytes exactly as received — never
 * re-serialized JSON: the anchored envelope, its key id in the keyring, the MAC compared in
 * constant time, the nonce (recorded for every genuine stamp, in the window or not), then the
 * timestamp window. Never throws on any input; rejects only when the nonce store fails.
 *
 * @example
 * ```ts
 * const result = await verifyAttestation(rawBody, { keyring, nonceStore });
 * result.signal; // 'valid' | 'invalid' | 'missing' | 'replayed' | 'stale' | 'unknown_key' | 'unavailable' | 'revoked'
 * ```
 */
export async function verifyAttestation(rawBody: Uint8Array, options: VerifyAttestationOptions): Promise<AttestationResult> {
  const now = options.now ?? Math.floor(Date.now() / 1000);
  const window = options.windowSec ?? 300;
  let location: ReturnType<typeof locateEnvelope>;
  try {
    location = locateEnvelope(rawBody);
  } catch {
    return { signal: 'invalid', reason: 'unreadable body', binding: 'none' };
  }
  if (location.status === 'missing') return { signal: options.clientUnavailable ? 'unavailable' : 'missing', binding: 'none' };
  if (location.status !== 'found') return { signal: 'invalid', reason: location.error.code, binding: 'none' };
  const { kid, ts, nonce, stamp } = location.envelope;
  if (isPlaceholder(stamp)) {
    return options.clientUnavailable
      ? { signal: 'unavailable', kid, ts, nonce, binding: 'none' }
      : { signal: 'invalid', kid, ts, nonce, reason: 'unstamped placeholder', binding: 'none' };
  }
  if (location.envelope.binding === 'install') return verifyInstallStamp(rawBody, location, options, now, window);
  const revoked = options.keyring.isRevoked(kid);
  // A revoked id is scored only after its MAC: forgeries under it are invalid, not hidden
  // among the old release's traffic. Without its material it cannot be told apart: unknown.
  if (revoked && !options.keyring.hasMaterial(kid))
    return { signal: 'unknown_key', kid, ts, nonce, reason: 'revoked key id without key material', binding: 'none' };
  if (!revoked && options.keyring.get(kid, now) === undefined) return { signal: 'unknown_key', kid, ts, nonce, binding: 'none' };
  const bound = location.envelope.binding === 'request';
  const candidates: ReadonlyArray<RequestComponents | undefined> = !bound
    ? [undefined]
    : options.request === undefined
      ? []
      : Array.isArray(options.request)
        ? options.request
        : [options.request as RequestComponents];
  if (candidates.length === 0) return { signal: 'invalid', kid, ts, nonce, reason: 'request not known', binding: 'none' };
  let matches = false;
  try {
    for (const request of candidates) {
      if (options.keyring.stampMatches(kid, rawBody, location.stampStart, location.stampEnd, request)) {
        matches = true;
        break;
      }
    }
  } catch {
    return { signal: 'invalid', kid, ts, nonce, reason: bound ? 'stamp region or request' : 'stamp region', binding: 'none' };
  }
  // For r1 a mismatch may be other bytes or another sender (key, host, path): both are invalid.
  if (!matches)
    return { signal: 'invalid', kid, ts, nonce, reason: bound ? 'MAC mismatch (body or request)' : 'MAC mismatch', binding: 'none' };
  if (revoked) return { signal: 'revoked', kid, ts, nonce, binding: 'none' };
  const stale = Math.abs(now - ts) > window;
  // A genuine stamp's nonce is spent even when its time is off, so the same bytes are never
  // served twice; a stamp from the future is kept until it would leave the window too.
  if (options.nonceStore !== undefined && !(await options.nonceStore.add(kid, nonce, Math.max(ts, now) + window, ts)))
    return { signal: 'replayed', kid, ts, nonce, binding: 'none' };
  if (stale) return { signal: 'stale', kid, ts, nonce, reason: `timestamp ${now - ts} s from now`, binding: 'none' };
  return { signal: 'valid', kid, ts, nonce, binding: bound ? 'request' : 'body' };
}

/** The request candidates an `r1` or `i1` stamp is checked against. */
function requestCandidates(options: VerifyAttestationOptions): readonly RequestComponents[] {
  if (options.request === undefined) return [];
  return Array.isArray(options.request) ? options.request : [options.request as RequestComponents];
}

/**
 * An `i1` stamp (§5.4): the install's key from the resolver, the MAC over the request and the
 * body like `r1`, then revocation, the nonce (under the install id) and the window.
 */
async function verifyInstallStamp(
  rawBody: Uint8Array,
  location: Extract<ReturnType<typeof locateEnvelope>, { status: 'found' }>,
  options: VerifyAttestationOptions,
  now: number,
  window: number,
): Promise<AttestationResult> {
  const { kid, ts, nonce } = location.envelope;
  const install = options.installs === undefined ? undefined : await options.installs(kid);
  if (install === undefined) return { signal: 'unknown_key', kid, ts, nonce, reason: 'install not enrolled', binding: 'none' };
  const key = install.key instanceof Uint8Array ? createSecretKey(install.key) : install.key;
  const candidates = requestCandidates(options);
  if (candidates.length === 0) return { signal: 'invalid', kid, ts, nonce, reason: 'request not known', binding: 'none' };
  let matches: boolean;
  try {
    matches = candidates.some((request) => verifyStamp(key, rawBody, location.stampStart, location.stampEnd, request));
  } catch {
    return { signal: 'invalid', kid, ts, nonce, reason: 'stamp region or request', binding: 'none' };
  }
  if (!matches) return { signal: 'invalid', kid, ts, nonce, reason: 'MAC mismatch (body or request)', binding: 'none' };
  if (install.revoked) return { signal: 'revoked', kid, ts, nonce, reason: 'install revoked', binding: 'none' };
  if (options.nonceStore !== undefined && !(await options.nonceStore.add(kid, nonce, Math.max(ts, now) + window, ts)))
    return { signal: 'replayed', kid, ts, nonce, binding: 'none' };
  if (Math.abs(now - ts) > window) return { signal: 'stale', kid, ts, nonce, reason: `timestamp ${now - ts} s from now`, binding: 'none' };
  return { signal: 'valid', kid, ts, nonce, binding: 'install' };
}
