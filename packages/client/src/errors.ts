import { MoatError } from '@moat/protocol/support';

/** Why a composition of client layers was refused. */
export type MoatClientErrorCode = 'ERR_LAYER' | 'ERR_LAYER_ORDER' | 'ERR_SETTINGS';

/**
 * A composition of client layers that cannot work: an entry that is not a layer
 * (`ERR_LAYER`), or layers in an order that would tag bytes after the stamp, or two layers
 * of one name (`ERR_LAYER_ORDER`). Thrown when the fetch is created, never per request; and
 * client settings that cannot be read (`ERR_SETTINGS`, from {@link readClientSettings}).
 */
export class MoatClientError extends MoatError<MoatClientErrorCode> {
  override readonly name = 'MoatClientError';
}
