/** Stamp outcomes the addon reports with the response headers, by code: 0 stamped, 1 no envelope, … */
export const STAMP_RESULTS = ['stamped', 'no_envelope', 'not_placeholder', 'wrong_kid', 'crypto', 'no_request'] as const;

/** What the native transfer reports, in order: headers once, data as it arrives, then end or error. */
export type NativeEvent = 'headers' | 'data' | 'end' | 'error';

/** Options of {@link NativeBinding.request}. */
export interface NativeRequestOptions {
  readonly method: string;
  readonly url: string;
  /** `Name: value` lines; lines with CR or LF are dropped. */
  readonly headers?: readonly string[];
  /**
   * The body; the addon stamps its own copy's anchored placeholder before sending. A string
   * (where {@link NativeBinding.appendsEnvelope}) is encoded as UTF-8 straight into that copy.
   */
  readonly body?: Buffer | string;
  /**
   * An envelope value (`[vr]1.<kid>.<ts>.<nonce>.<000…>`) for the addon to append to its copy
   * of `body` as `appendEnvelope` would (SPEC §4.3), where {@link NativeBinding.appendsEnvelope}.
   * A body that is not a JSON object text in UTF-8 without a `moat_att` member makes `request`
   * throw `ERR_NATIVE_ENVELOPE_BODY` before anything is sent: the caller appends it its own way.
   */
  readonly envelope?: string;
  readonly timeoutMs?: number;
  readonly connectTimeoutMs?: number;
  /** libcurl public-key pinning: `sha256//<base64>` (several joined by `;`). */
  readonly pinnedPublicKey?: string;
  /** An extra CA bundle file for TLS verification (verification is always on). */
  readonly caFile?: string;
  /**
   * The proxy the request goes through (`http://host:port`, `https://…`, `socks5h://…`, with
   * credentials in the URL if it wants them). Without it: the environment's proxy
   * (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`) where `NODE_USE_ENV_PROXY=1`, else none.
   */
  readonly proxy?: string;
  /**
   * An origin whose enrolled install stamps this request (protocol 1.2, SPEC §5.4): the
   * envelope is then `i1.<install id>.…` and the addon MACs it with that install's key
   * instead of the release key. `request` throws `ERR_NATIVE_INSTALL_UNKNOWN` when no enrolled
   * install is open for the origin (see {@link NativeBinding.installOpen}).
   */
  readonly install?: string;
}

/** What {@link NativeBinding.installOpen} tells about an install: public facts only. */
export interface NativeInstall {
  /** The install's X25519 public key, base64url of 32 bytes (sent in the enrollment request). */
  readonly publicKey: string;
  /** Whether the state holds an enrollment (then the install stamps `i1` at once). */
  readonly enrolled: boolean;
  /** The install id, once enrolled. */
  readonly installId?: string;
  /** The enrollment key id it was derived against, once enrolled. */
  readonly ekid?: string;
  /**
   * What seals the private key in the state file: the kernel's persistent keyring (Linux),
   * the Keychain (macOS), or the file's permissions alone (no keystore answered, or `keystore: 'file'`).
   */
  readonly sealed: 'keyring' | 'keychain' | 'file';
}

/** Options of {@link NativeBinding.installOpen}. */
export interface NativeInstallOpenOptions {
  /** Make a key pair (and the directory) when there is no state (default true); `false` answers `null` then. */
  readonly create?: boolean;
  /** `auto` (default): seal with the OS keystore where one answers; `file`: never ask one. */
  readonly keystore?: 'auto' | 'file';
}

/**
 * The functions of the `@moat/native` addon: the one declaration the addon's typings and the
 * layers that use it (`@moat/attest`, `@moat/harden`) share.
 */
export interface NativeBinding {
  /**
   * Stamps and sends a request: on the event loop through libcurl's multi interface where
   * libuv is there (Node), else on a thread of its own (Bun, or `MOAT_NATIVE_TRANSPORT=thread`).
   * `onEvent('headers', status, rawHeaders, stampResult)`, `onEvent('data', chunk)` (the
   * chunk's memory handed over, not copied), `onEvent('end')` or `onEvent('error', message)`.
   * The first call opens libcurl; throws `ERR_NATIVE_TRANSPORT` when it cannot be opened.
   */
  request(
    options: NativeRequestOptions,
    onEvent: (event: NativeEvent, a?: number | Buffer | string, b?: string, c?: number) => void,
  ): { abort(): void };
  /** Key id of the compiled-in attestation key (the key itself is never exposed). */
  keyId(): string;
  /**
   * Loads the install state of `origin` from directory `path` (0700; the file 0600, written
   * atomically), or makes an X25519 key pair and writes it. The private key never leaves the
   * addon. Throws `ERR_NATIVE_INSTALL_PERMISSIONS` (a directory or file others can open, or
   * a symbolic link), `ERR_NATIVE_INSTALL_STATE` (a file that is not a valid state, edited or
   * corrupted), `ERR_NATIVE_INSTALL_SEALED` (the keystore key that sealed it is gone),
   * `ERR_NATIVE_INSTALL_IO`, `ERR_NATIVE_OPTIONS`. Absent in addons before protocol 1.2.
   */
  installOpen?(path: string, origin: string, options?: NativeInstallOpenOptions): NativeInstall | null;
  /**
   * Derives the install key K_i of the install waiting at `origin` (X25519 with the verifier's
   * enrollment key, HKDF-SHA-256 salted with the challenge, SPEC §5.4), writes the enrolled
   * state and stamps `options.install` requests with it from now on. Throws
   * `ERR_NATIVE_INSTALL_KEY` for a verifier key giving an all-zero secret,
   * `ERR_NATIVE_INSTALL_UNKNOWN` when no install waits at `origin`.
   */
  installActivate?(origin: string, installId: string, ekid: string, verifierPublicKey: string, challenge: string): void;
  /** Drops the install of `origin`: its key from memory, its state file (under `path`, or the open one's), its keystore key. */
  installForget?(origin: string, path?: string): void;
  /** Whether `request` takes `options.envelope` (absent in addons before it). */
  readonly appendsEnvelope?: boolean;
  /**
   * The check behind `options.envelope`: 0 for a JSON object text in strict UTF-8 with
   * members, none named `moat_att` (after unescaping); 1 for one without members; 2 for
   * anything else (malformed, another JSON value, whitespace around it, an envelope there,
   * nesting deeper than 512).
   */
  jsonObject(bytes: Uint8Array): 0 | 1 | 2;
  /** `prctl(PR_SET_DUMPABLE, 0)` (macOS: `PT_DENY_ATTACH`): 0, or the errno. */
  setUndumpable(): number;
  /** `prctl(PR_GET_DUMPABLE)`: 1, 0, or a negative errno. */
  getDumpable(): number;
  /** A buffer on mlock'ed pages excluded from core dumps; wiped and unmapped when collected. */
  secureBuffer(size: number): { buffer: Buffer; locked: boolean; dontdump: boolean };
  /** Wipes NAME's value in the original environment block (/proc/self/environ): bytes wiped, or a negative errno. */
  scrubEnvBlock(name: string): number;
  /**
   * Compiles literals (bytes; `caseless[i]` folds ASCII case) into one libhs database, opened
   * with dlopen on first use; throws `ERR_NATIVE_SCAN` when libhs is missing or refuses them.
   */
  literalsCompile(patterns: readonly Buffer[], caseless: readonly boolean[], serialized?: Buffer): unknown;
  /** Every occurrence of every literal in `bytes`: (literal index, start offset) pairs, by start then index. */
  literalsScan(handle: unknown, bytes: Uint8Array): Int32Array;
  /** Compiles regular expressions (libhs syntax); `literalsScan` on the handle gives (index, leftmost start, end) triples by start. */
  regexCompile(patterns: readonly string[]): unknown;
  /**
   * `regexCompile` on libuv's thread pool (absent in addons before it): bad arguments throw at
   * once; a pattern libhs refuses rejects with `ERR_NATIVE_SCAN`.
   */
  regexCompileAsync?(patterns: readonly string[]): Promise<unknown>;
  /** The compiled database as bytes, for a cache; `literalsCompile(…, serialized)` loads them back. */
  literalsSerialize(handle: unknown): Buffer;
  /** libhs's version string, or `undefined` when it cannot be loaded. */
  literalsVersion(): string | undefined;
  /**
   * `literalsCompile` with the literals back to back in `packed`, `lengths` apart (`caseless`:
   * 1 folds ASCII case). `direct`: no libhs database, a set built in linear time and searched
   * with a prefix filter (literals of at least 4 bytes; it cannot be serialized).
   */
  literalsCompilePacked(packed: Buffer, lengths: Uint32Array, caseless: Uint8Array, serialized?: Buffer, direct?: boolean): unknown;
  /**
   * The stride a direct set of literals of these lengths is probed with: every position (1),
   * or every 2nd to 4th for a small set of long enough literals, which is then built and
   * searched faster than libhs compiles it (absent in addons before it).
   */
  literalsDirectStride?(lengths: Uint32Array): number;
  /**
   * SHA-256 of `data` with the libcrypto the addon links (absent in addons before it): what
   * moat-scan names its cache files by, without starting `node:crypto` in a cold process.
   */
  sha256?(data: Uint8Array): Buffer;
  /**
   * moat-scan's needle forms of codenames (its `needleForms`: same bytes, order and
   * deduplication per codename) derived natively, as its literal set: `units` holds UTF-16
   * strings back to back, `lengths` apart; codename c has `spellings[c]` of them (itself
   * first, then the other spellings whose encoded forms count). `flags`: 1 plain and UTF-16
   * forms fold case, 2 the plain form alone. The set: the unique plain and case-folding forms
   * (`sources` of them), longest first, then every other form in order, back to back, with
   * each literal's length, offset, codename index and kind (its index in moat-scan's
   * encodings, | 0x80 when it folds case); `regex`: per plain or case-folding form, in order,
   * (source index, codename index, kind).
   */
  literalsForms(
    units: Uint16Array,
    lengths: Uint32Array,
    spellings: Uint32Array,
    flags: number,
  ): {
    packed: Buffer;
    lengths: Uint32Array;
    offsets: Uint32Array;
    owners: Uint32Array;
    kinds: Uint8Array;
    sources: number;
    maxLength: number;
    regex: Uint32Array;
  };
  /**
   * moat-scan's whole-file prefilter on native threads (see `@moat/native`'s README): per
   * file what it may hold, the errno that kept it unread, its size, and the audit's matches.
   */
  prefilterFiles(
    literals: unknown,
    triggers: unknown,
    audit: unknown,
    paths: string[],
    chunk: number,
    maxLength: number,
    auditCarry: number,
    threads: number,
  ): Promise<{
    flags: Uint8Array;
    errors: Int32Array;
    sizes: Float64Array;
    events: Float64Array;
    eventStarts: Float64Array;
    /** The listed windows that may hold a split literal are listed again, as pattern 0xfffe (absent: an older addon). */
    splitWindows?: boolean;
  }>;
  /** Which transport `request` uses in this environment: `loop` (libcurl on libuv's poll) or `thread`. */
  transportMode(): 'loop' | 'thread';
  /**
   * A verifier's stamping key (32-1024 bytes) set up once as a keyed HMAC-SHA-256 state, for
   * {@link NativeBinding.stampMatches}; the handle keeps no copy of the bytes outside OpenSSL.
   */
  stampKey(key: Uint8Array): unknown;
  /**
   * Whether the stamp in `body[stampStart, stampEnd)` is the one SPEC §5.2 computes with the
   * key (`base`: the r1 request base, or `null`), compared in constant time. Throws
   * `ERR_NATIVE_STAMP_REGION` for a region that is not 32-64 even hex digits inside the body.
   */
  stampMatches(key: unknown, base: Uint8Array | null, body: Uint8Array, stampStart: number, stampEnd: number): boolean;
}

/** The addon, or why there is none. */
export type NativeLoad<T = NativeBinding> =
  | { readonly native: T; readonly reason: undefined }
  | { readonly native: undefined; readonly reason: string };

let loaded: Promise<NativeLoad<unknown>> | undefined;

/**
 * Loads the `@moat/native` addon once per process, failing open: a package that is not
 * installed, an addon that does not load, or `MOAT_NATIVE_DISABLE=1` give `native: undefined`
 * and the reason. `importer` is the caller's own `() => import('@moat/native')`, so the
 * package resolves from the layer that declares the optional dependency.
 *
 * @example
 * ```ts
 * const { native, reason } = await loadNativeAddon(() => import('@moat/native'));
 * if (native === undefined) warn(`no native addon: ${reason}`);
 * ```
 */
export function loadNativeAddon<T = NativeBinding>(
  importer: () => Promise<{ native?: unknown; loadError?: unknown }>,
): Promise<NativeLoad<T>> {
  loaded ??= importer().then(
    (mod): NativeLoad<unknown> =>
      mod.native === undefined || mod.native === null
        ? { native: undefined, reason: mod.loadError instanceof Error ? mod.loadError.message : 'the native addon did not load' }
        : { native: mod.native, reason: undefined },
    (error: unknown): NativeLoad<unknown> => ({
      native: undefined,
      reason: `@moat/native is not installed (${error instanceof Error ? error.message : String(error)})`,
    }),
  );
  return loaded as Promise<NativeLoad<T>>;
}
