import { MoatError } from '@moat/protocol/support';

/** Why a turn failed. */
export type ChatErrorCode = 'ERR_HTTP' | 'ERR_STREAM' | 'ERR_OVERLOADED' | 'ERR_NETWORK' | 'ERR_TIMEOUT';

/** A turn that did not complete: the verifier or the model refused it, or its stream broke off. */
export class ChatError extends MoatError<ChatErrorCode> {
  override readonly name = 'ChatError';
}
