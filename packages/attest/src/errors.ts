import { MoatError } from '@moat/protocol/support';

/** Error codes of this package. */
export type AttestErrorCode = 'ERR_ATTESTATION_KEY';

/** A typed error with a stable code; key bytes never appear in its message. */
export class AttestError extends MoatError<AttestErrorCode> {
  override readonly name = 'AttestError';
}
