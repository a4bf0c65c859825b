import { MoatError } from '@moat/protocol/support';

/** Error codes of this package. */
export type HardenErrorCode = 'ERR_TOKEN_FILE' | 'ERR_VAULT_DISPOSED';

/** A typed error with a stable code; its message never contains a token. */
export class HardenError extends MoatError<HardenErrorCode> {
  override readonly name = 'HardenError';
}
