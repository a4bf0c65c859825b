/**
 * The base of every package's named error: a stable `code`, a message that starts with it
 * and says what was expected and what came, and the `cause` kept when there is one.
 *
 * @example
 * ```ts
 * export class AttestError extends MoatError<'ERR_ATTESTATION_KEY'> {
 *   override readonly name = 'AttestError';
 * }
 * throw new AttestError('ERR_ATTESTATION_KEY', 'expected 32 bytes, got 8');
 * ```
 */
export class MoatError<Code extends string = string> extends Error {
  override readonly name: string = 'MoatError';
  readonly code: Code;

  constructor(code: Code, message: string, options?: ErrorOptions) {
    super(`${code}: ${message}`, options);
    this.code = code;
  }
}
