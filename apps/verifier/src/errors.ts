/**
 * Every error class of the verifier, each on {@link MoatError}: a stable `code` and a message
 * that says what was expected and what came.
 */
import { MoatError } from '@moat/protocol/support';

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
 * status. Its `code` is `ERR_API_` and the type in capitals (`ERR_API_INVALID_REQUEST_ERROR`);
 * `detail` is the message the client reads (`message` starts with the code, as every
 * {@link MoatError}'s does).
 */
export class ApiError extends MoatError<`ERR_API_${Uppercase<ApiErrorType>}`> {
  override readonly name = 'ApiError';
  readonly status: number;
  readonly type: ApiErrorType;
  readonly detail: string;
  /** Seconds after which the client may retry (sent as `retry-after`). */
  readonly retryAfterSec: number | undefined;
  constructor(status: number, type: ApiErrorType, detail: string, options?: ErrorOptions & { retryAfterSec?: number }) {
    super(`ERR_API_${type.toUpperCase() as Uppercase<ApiErrorType>}`, detail, options);
    this.status = status;
    this.type = type;
    this.detail = detail;
    this.retryAfterSec = options?.retryAfterSec;
  }

  body(): { type: 'error'; error: { type: ApiErrorType; message: string } } {
    return { type: 'error', error: { type: this.type, message: this.detail } };
  }
}

/**
 * `503 overloaded_error` with `retry-after: 1`: a dependency (`what`) cannot be used right now,
 * so the request is refused, retryably, rather than served unchecked or unrecorded.
 */
export function unavailable(what: string, cause?: unknown): ApiError {
  return new ApiError(503, 'overloaded_error', `${what} is unavailable; retry shortly`, { retryAfterSec: 1, cause });
}

/** A configuration problem: what was expected and what came, by setting. */
export class VerifierConfigError extends MoatError<'ERR_VERIFIER_CONFIG'> {
  override readonly name = 'VerifierConfigError';
  /** The setting at fault (`port`, `attestationKeys[0].kid`, `config file`). */
  readonly setting: string;
  constructor(setting: string, expected: string, received: string) {
    super('ERR_VERIFIER_CONFIG', `${setting}: expected ${expected}, got ${received}`);
    this.setting = setting;
  }
}

/** A row of one of the verifier's tables (routes, signals, record columns) that cannot work. */
export class VerifierTableError extends MoatError<'ERR_VERIFIER_TABLE'> {
  override readonly name = 'VerifierTableError';
}

/**
 * A record was taken by neither the store nor (where allowed) the spool: the request must not
 * be answered as if it had been.
 */
export class RecordStoreError extends MoatError<'ERR_RECORD_STORE'> {
  override readonly name = 'RecordStoreError';
}

/** The replay cache lost its data after this stamp was made: it cannot say whether the nonce was seen. */
export class ReplayCacheResetError extends MoatError<'ERR_REPLAY_CACHE_RESET'> {
  override readonly name = 'ReplayCacheResetError';
}

/** The spool is full or its file cannot be written. */
export class SpoolError extends MoatError<'ERR_SPOOL'> {
  override readonly name = 'SpoolError';
}

/** Why a request body is not strict JSON. */
export type JsonBodyErrorCode =
  | 'ERR_JSON_UTF8'
  | 'ERR_JSON_SYNTAX'
  | 'ERR_JSON_DEPTH'
  | 'ERR_JSON_DUPLICATE_KEY'
  | 'ERR_JSON_MEMBER_CASE'
  | 'ERR_JSON_NOT_OBJECT';

/** A body that is not strict JSON; `path` names where (dotted, `""` for the whole body). */
export class JsonBodyError extends MoatError<JsonBodyErrorCode> {
  override readonly name = 'JsonBodyError';
  readonly path: string;
  constructor(code: JsonBodyErrorCode, path: string, message: string) {
    super(code, message);
    this.path = path;
  }
}
