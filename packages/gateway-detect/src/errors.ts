import { MoatError } from '@moat/protocol/support';

/**
 * Error codes of this package: `ERR_GATEWAY_STATS_FORMAT` for a malformed snapshot,
 * `ERR_GATEWAY_STATS_OVERFLOW` for a merge whose counts would pass `Number.MAX_SAFE_INTEGER`.
 */
export type GatewayDetectErrorCode = 'ERR_GATEWAY_STATS_FORMAT' | 'ERR_GATEWAY_STATS_OVERFLOW';

/** Raised by `GatewayStats.merge` for a snapshot it refuses: `ERR_GATEWAY_STATS_FORMAT: expected X, got Y`. */
export class GatewayStatsError extends MoatError<GatewayDetectErrorCode> {
  override readonly name = 'GatewayStatsError';
  constructor(expected: string, received: string, code: GatewayDetectErrorCode = 'ERR_GATEWAY_STATS_FORMAT') {
    super(code, `expected ${expected}, got ${received}`);
  }
}
