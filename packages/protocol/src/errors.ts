/**
 * Every error code the protocol defines. Codes are part of the wire contract: the test
 * vectors name them, and every implementation (TypeScript, Python, a partner's) must report
 * the same code for the same input.
 */
export const PROTOCOL_ERROR_CODES = [
  'ERR_ATTRIBUTION_TYPE',
  'ERR_ATTRIBUTION_TOO_LONG',
  'ERR_ATTRIBUTION_PREFIX',
  'ERR_ATTRIBUTION_SYNTAX',
  'ERR_ATTRIBUTION_DUPLICATE_FIELD',
  'ERR_ATTRIBUTION_FIELD_ORDER',
  'ERR_ATTRIBUTION_MISSING_FIELD',
  'ERR_ATTRIBUTION_FIELD_VALUE',
  'ERR_UNSUPPORTED_VERSION',
  'ERR_ENVELOPE_TYPE',
  'ERR_ENVELOPE_SYNTAX',
  'ERR_ENVELOPE_KID',
  'ERR_ENVELOPE_TIMESTAMP',
  'ERR_ENVELOPE_NONCE',
  'ERR_ENVELOPE_STAMP',
  'ERR_ENVELOPE_NOT_LAST',
  'ERR_BODY_NOT_OBJECT',
  'ERR_BODY_HAS_ENVELOPE',
  'ERR_STAMP_KEY',
  'ERR_STAMP_REQUEST',
  'ERR_ENVELOPE_MISSING',
  'ERR_SIGNATURE_TYPE',
  'ERR_SIGNATURE_SYNTAX',
  'ERR_SIGNATURE_ALGORITHM',
  'ERR_SIGNATURE_KID',
  'ERR_SIGNATURE_SCOPE',
  'ERR_SIGNATURE_ENCODING',
  'ERR_SIGNATURE_LENGTH',
  'ERR_BLOCK_TYPE',
  'ERR_BLOCK_CONTENT',
  'ERR_GATEWAY_RULES',
  'ERR_DISCOVERY',
  'ERR_TELEMETRY',
  'ERR_STREAM_EVENT',
  'ERR_ENROLLMENT',
  'ERR_ENROLL_CHALLENGE',
  'ERR_ENROLL_LIMIT',
] as const;

/** A protocol error code, e.g. `ERR_ATTRIBUTION_SYNTAX`. */
export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[number];

/**
 * The one error type every parser and validator in this package throws. It always says what
 * was expected and what came, and carries a stable {@link ProtocolErrorCode}.
 *
 * @example
 * ```ts
 * try { parseAttribution('x-moat v=1;'); }
 * catch (e) { if (e instanceof ProtocolError) console.log(e.code); } // ERR_ATTRIBUTION_PREFIX
 * ```
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly code: ProtocolErrorCode;
  /** What the parser expected at the failure point. */
  readonly expected: string;
  /** A short, printable description of what it found instead. */
  readonly received: string;

  constructor(code: ProtocolErrorCode, expected: string, received: string) {
    super(`${code}: expected ${expected}, got ${received}`);
    this.code = code;
    this.expected = expected;
    this.received = received;
  }
}

/** Result of a `tryParse*` function: the value, or the typed error. Never throws. */
export type ParseResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: ProtocolError };

/** Runs `parse`, turning a thrown {@link ProtocolError} into a result; other errors propagate. */
export function toResult<T>(parse: () => T): ParseResult<T> {
  try {
    return { ok: true, value: parse() };
  } catch (error) {
    if (error instanceof ProtocolError) return { ok: false, error };
    throw error;
  }
}
