import { MoatError } from '@moat/protocol/support';

/** Error codes of this package. */
export type FingerprintErrorCode = 'ERR_STATS_OPTIONS' | 'ERR_STATS_FORMAT';

/** Error raised for invalid options or a malformed serialized state: `ERR_…: expected X, got Y`. */
export class FingerprintStatsError extends MoatError<FingerprintErrorCode> {
  override readonly name = 'FingerprintStatsError';
  constructor(code: FingerprintErrorCode, expected: string, received: string) {
    super(code, `expected ${expected}, got ${received}`);
  }
}
