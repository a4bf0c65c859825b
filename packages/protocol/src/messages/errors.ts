/** Error codes of the Messages model. */
export type MessagesErrorCode =
  /** A request or response body does not have the shape the Messages API defines. */
  | 'ERR_MESSAGES_SHAPE'
  /** A body nests deeper than the documented limit. */
  | 'ERR_MESSAGES_DEPTH'
  /** A stream event came out of order or without the members its type requires. */
  | 'ERR_STREAM_ORDER'
  /** A tool call's streamed input did not join to JSON. */
  | 'ERR_STREAM_TOOL_INPUT';

/**
 * The error every Messages-model function throws. `path` names where in the body the problem
 * is, in the API's own notation (`messages.0.content.1.type`), so a gateway can answer 400
 * `invalid_request_error` naming it.
 *
 * @example
 * ```ts
 * try { parseMessagesRequest({ model: 1, messages: [] }); }
 * catch (e) { if (e instanceof MessagesError) console.log(e.path); } // "model"
 * ```
 */
export class MessagesError extends Error {
  override readonly name = 'MessagesError';
  readonly code: MessagesErrorCode;
  /** Where the problem is: member names and array indices joined by dots; `""` for the whole body. */
  readonly path: string;
  readonly expected: string;
  readonly received: string;

  constructor(code: MessagesErrorCode, path: string, expected: string, received: string, options?: ErrorOptions) {
    super(`${code}: ${path === '' ? 'body' : path}: expected ${expected}, got ${received}`, options);
    this.code = code;
    this.path = path;
    this.expected = expected;
    this.received = received;
  }
}
