import { MoatError } from '@moat/protocol/support';

/** Error codes of this package. */
export type DistillGuardErrorCode =
  /** A signing key, seed or secret that cannot be used (too short, wrong length, not in the keyring). */
  | 'ERR_SIGNING_KEY'
  /** A decoy secret shorter than 32 bytes. */
  | 'ERR_DECOY_SECRET'
  /** A decoy rotation period outside 0..65535 (weeks since 1970: good until the year 3226). */
  | 'ERR_DECOY_PERIOD';

/**
 * A typed error with a stable code, saying what was expected and what came. Key material
 * never appears in the message.
 *
 * @example
 * ```ts
 * try { new BlockKeyring([{ kid: 'k', alg: 'hs256', secret: new Uint8Array(8) }], 'k'); }
 * catch (e) { if (e instanceof DistillGuardError) console.log(e.code); } // ERR_SIGNING_KEY
 * ```
 */
export class DistillGuardError extends MoatError<DistillGuardErrorCode> {
  override readonly name = 'DistillGuardError';
}
