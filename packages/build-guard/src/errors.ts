import { MoatError } from '@moat/protocol/support';

/** Error codes of `@moat/build-guard`. */
export type BuildGuardErrorCode =
  | 'ERR_UNKNOWN_FLAG'
  | 'ERR_NON_LITERAL_FLAG'
  | 'ERR_REGISTRY'
  | 'ERR_VARIANT'
  | 'ERR_PARSE'
  | 'ERR_SCAN_INPUT'
  | 'ERR_SCAN_CONFIG'
  | 'ERR_USAGE';

/**
 * The error every part of this package throws: a stable `code`, and a message that says
 * what was expected and what came, with the file position when there is one.
 */
export class BuildGuardError extends MoatError<BuildGuardErrorCode> {
  override readonly name = 'BuildGuardError';
}
