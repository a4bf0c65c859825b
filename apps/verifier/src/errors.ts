/** Anthropic's error types, by HTTP status. */
export type ApiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'request_too_large'
  | 'rate_limit_error'
  | 'api_error'
  | 'overloaded_error';

/** The HTTP status the API answers with for each error type (for errors that arrive inside a stream). */
export const STATUS_OF_ERROR_TYPE: Readonly<Record<ApiErrorType, number>> = {
  invalid_request_error: 400,
  authentication_error: 401,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  overloaded_error: 529,
};

/**
 * An error in Anthropic's shape, `{ type: 'error', error: { type, message } }`, with its
 * status. Its `code` is `ERR_API_` and the type in capitals (`ERR_API_INVALID_REQUEST_ERROR`).
 */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly code: `ERR_API_${Uppercase<ApiErrorType>}`;
  /** Seconds after which the client may retry (sent as `retry-after`). */
  readonly retryAfterSec: number | undefined;
  constructor(
    readonly status: number,
    readonly type: ApiErrorType,
    message: string,
    options?: ErrorOptions & { retryAfterSec?: number },
  ) {
    super(message, options);
    this.retryAfterSec = options?.retryAfterSec;
    this.code = `ERR_API_${type.toUpperCase() as Uppercase<ApiErrorType>}`;
  }

  body(): { type: 'error'; error: { type: ApiErrorType; message: string } } {
    return { type: 'error', error: { type: this.type, message: this.message } };
  }
}

/**
 * `503 overloaded_error` with `retry-after: 1`: a dependency (`what`) cannot be used right now,
 * so the request is refused, retryably, rather than served unchecked or unrecorded.
 */
export function unavailable(what: string, cause?: unknown): ApiError {
  return new ApiError(503, 'overloaded_error', `${what} is unavailable; retry shortly`, {
    retryAfterSec: 1,
    ...(cause === undefined ? {} : { cause }),
  });
}

/** A configuration problem: what was expected and what came, by setting. */
export class VerifierConfigError extends Error {
  override readonly name = 'VerifierConfigError';
  readonly code = 'ERR_VERIFIER_CONFIG';
  constructor(setting: string, expected: string, received: string) {
    super(`ERR_VERIFIER_CONFIG: ${setting}: expected ${expected}, got ${received}`);
  }
}
