import { type FingerprintSignal, findAttribution, fingerprintRequest, tryParseAttribution } from '@moat/protocol';

export * from './errors.js';
export * from './stats.js';

/** Options of {@link checkFingerprint}. */
export interface CheckFingerprintOptions {
  /** The deployment salt. */
  readonly salt: string;
  /** Salts of earlier deployments still accepted during a rotation. */
  readonly previousSalts?: readonly string[];
}

/** Outcome of {@link checkFingerprint}. */
export interface FingerprintCheck {
  readonly signal: FingerprintSignal;
  /** `fp` as received, when there was one. */
  readonly received?: string;
  /** `fp` recomputed with the current salt, when the block had a `cv`. */
  readonly expected?: string;
  /** Client version from the block. */
  readonly clientVersion?: string;
  /** Entry point (`ep`) from the block, when it names one. */
  readonly entrypoint?: string;
  /** Why the signal is `missing`: no block, an unparsable one (with its error code), or no `fp`. */
  readonly reason?: 'no_block' | 'no_fp' | string;
}

/**
 * Recomputes fingerprint v1 of a received request (parsed JSON) from its first user
 * message and the client version in its attribution block, and compares it with the
 * block's `fp`: `match`, `mismatch`, or `missing` when there is no block, the block does not
 * parse (the reason is its error code) or carries no `fp`. Never throws.
 *
 * One mismatch is weak evidence (12 bits; clients and proxies differ): feed the signal into
 * {@link FingerprintStats} and judge keys, not requests.
 *
 * @example
 * ```ts
 * checkFingerprint(JSON.parse(body), { salt: 'deployment-salt' }).signal; // 'match'
 * ```
 */
export function checkFingerprint(request: unknown, options: CheckFingerprintOptions): FingerprintCheck {
  const located = findAttribution(request);
  if (located.status === 'absent') return { signal: 'missing', reason: 'no_block' };
  const parsed = tryParseAttribution(located.text);
  if (!parsed.ok) return { signal: 'missing', reason: parsed.error.code };
  const { cv, fp, ep } = parsed.value;
  const client = { clientVersion: cv, ...(ep === undefined ? {} : { entrypoint: ep }) };
  if (fp === undefined) return { signal: 'missing', ...client, reason: 'no_fp' };
  const expected = fingerprintRequest(request, { salt: options.salt, version: cv });
  if (expected === fp) return { signal: 'match', received: fp, expected, ...client };
  for (const salt of options.previousSalts ?? []) {
    if (fingerprintRequest(request, { salt, version: cv }) === fp) return { signal: 'match', received: fp, expected, ...client };
  }
  return { signal: 'mismatch', received: fp, expected, ...client };
}
