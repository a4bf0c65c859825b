import { createHash } from 'node:crypto';
import { firstUserText } from './request.js';
import { codePointAt, toHex, utf8 } from './text.js';

/** Code-point indices the v1 fingerprint samples. */
export const FINGERPRINT_INDICES = [4, 7, 20] as const;

/** Stands in for a sampled character the text is too short to have. */
export const FINGERPRINT_MISSING_CHAR = '0';

/** Inputs of fingerprint v1 besides the text. */
export interface FingerprintOptions {
  /** Deployment constant shared by the client build and the verifier. */
  readonly salt: string;
  /** Client version, exactly as sent in the attribution block's `cv`. */
  readonly version: string;
}

/**
 * The sampled characters: the code points at indices 4, 7 and 20 of `text` (Unicode code
 * points, not UTF-16 units; an unpaired surrogate reads as U+FFFD), `"0"` for each one past
 * the end.
 */
export function fingerprintChars(text: string): string {
  // Unpaired surrogates (possible in JSON text) become U+FFFD first, as SPEC.md §6 requires.
  // Code point 20 lies within the first 42 UTF-16 units, and a pair cut at unit 42 starts
  // at code point 21 or later, so the prefix is enough and long messages cost nothing.
  const scalars = text.slice(0, 42).toWellFormed();
  let chars = '';
  for (const index of FINGERPRINT_INDICES) chars += codePointAt(scalars, index) ?? FINGERPRINT_MISSING_CHAR;
  return chars;
}

/**
 * Fingerprint v1 of a first user message:
 * `hex(SHA-256(utf8(salt + chars + version)))[0..3]`, lowercase.
 *
 * @example
 * ```ts
 * fingerprint('Hello, world', { salt: 's', version: '1.0.0' }); // three hex digits
 * ```
 */
export function fingerprint(text: string, options: FingerprintOptions): string {
  // node:crypto: 1.3× the throughput of @noble/hashes for this call (bench/protocol.bench.ts).
  const digest = createHash('sha256')
    .update(utf8(options.salt + fingerprintChars(text) + options.version))
    .digest();
  return toHex(digest.subarray(0, 2)).slice(0, 3);
}

/** Fingerprint v1 of a Messages request: {@link fingerprint} of its first user text. */
export function fingerprintRequest(request: unknown, options: FingerprintOptions): string {
  return fingerprint(firstUserText(request), options);
}
