/** What the native transfer reports, in order: headers once, data as it arrives, then end or error. */
export type NativeEvent = 'headers' | 'data' | 'end' | 'error';

/** Options of {@link NativeBinding.request}. */
export interface NativeRequestOptions {
  readonly method: string;
  readonly url: string;
  /** `Name: value` lines; lines with CR or LF are dropped. */
  readonly headers?: readonly string[];
  /** The body; the addon stamps its own copy's anchored placeholder before sending. */
  readonly body?: Buffer;
  readonly timeoutMs?: number;
  readonly connectTimeoutMs?: number;
  /** libcurl public-key pinning: `sha256//<base64>` (several joined by `;`). */
  readonly pinnedPublicKey?: string;
  /** An extra CA bundle file for TLS verification (verification is always on). */
  readonly caFile?: string;
}

/** The addon's functions. */
export interface NativeBinding {
  /**
   * Stamps and sends a request on a transfer thread. `onEvent('headers', status, rawHeaders,
   * stampResult)`, `onEvent('data', chunk)`, `onEvent('end')` or `onEvent('error', message)`.
   * The first call opens libcurl; throws `ERR_NATIVE_TRANSPORT` when it cannot be opened.
   */
  request(
    options: NativeRequestOptions,
    onEvent: (event: NativeEvent, a?: number | Buffer | string, b?: string, c?: number) => void,
  ): { abort(): void };
  /** Key id of the compiled-in attestation key (the key itself is never exposed). */
  keyId(): string;
  /** `prctl(PR_SET_DUMPABLE, 0)` (macOS: `PT_DENY_ATTACH`): 0, or the errno. */
  setUndumpable(): number;
  /** `prctl(PR_GET_DUMPABLE)`: 1, 0, or a negative errno. */
  getDumpable(): number;
  /** A buffer on mlock'ed pages excluded from core dumps; wiped and unmapped when collected. */
  secureBuffer(size: number): { buffer: Buffer; locked: boolean; dontdump: boolean };
  /** Wipes NAME's value in the original environment block (/proc/self/environ): bytes wiped, or a negative errno. */
  scrubEnvBlock(name: string): number;
}

/** The loaded addon, or `undefined` when it is missing, broken or disabled. */
export declare const native: NativeBinding | undefined;
/** Why the addon is not loaded. */
export declare const loadError: Error | undefined;
/** Stamp outcomes by the code passed with `headers`: 0 stamped, 1 no envelope, … */
export declare const STAMP_RESULTS: readonly ['stamped', 'no_envelope', 'not_placeholder', 'wrong_kid', 'crypto'];
