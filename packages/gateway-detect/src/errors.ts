import { MoatError } from '@moat/protocol/support';

/** Error codes of this package. */
export type GatewayDetectErrorCode = 'ERR_GATEWAY_STATS_FORMAT';

/** Raised by `GatewayStats.merge` for a malformed snapshot: `ERR_GATEWAY_STATS_FORMAT: expected X, got Y`. */
export class GatewayStatsError extends MoatError<GatewayDetectErrorCode> {
  override readonly name = 'GatewayStatsError';
  constructor(expected: string, received: string) {
    super('ERR_GATEWAY_STATS_FORMAT', `expected ${expected}, got ${received}`);
  }
}
