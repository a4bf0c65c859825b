import type { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { formatStreamEvent, type StreamEvent } from '@moat/protocol/messages';
import { errorMessage } from '@moat/protocol/support';
import { ApiError } from './errors.js';
import { jsonKind } from './json-body.js';

/** Sends a JSON answer with its length. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Sends an error in Anthropic's shape; `retry-after` when the error says when to come back. */
export function sendError(res: ServerResponse, error: ApiError): void {
  sendJson(res, error.status, error.body(), error.retryAfterSec === undefined ? {} : { 'retry-after': String(error.retryAfterSec) });
}

/** Per connection, the end of the last answer begun there: a request pipelined behind it waits for it. */
const answering = new WeakMap<Socket, Promise<void>>();

/**
 * Runs `handle` once every answer before this request's on its connection has ended. Node
 * parses a pipelined request while the one before it is still answered; handled at once, it
 * could be forwarded (and paid for upstream) although its answer can never go out — the
 * answer before it closes the connection (HTTP/1.0, `connection: close`). One at a time, a
 * request whose connection is gone by its turn finds its answer closed: it is recorded `499`
 * and never forwarded. Requests that do not come over a socket (the web handler's) run at once.
 */
export function inConnectionOrder(req: IncomingMessage, res: ServerResponse, handle: () => void): void {
  const socket = req.socket;
  if (!(socket instanceof Socket)) {
    handle();
    return;
  }
  lastParsed.set(socket, { req, res });
  const before = answering.get(socket);
  answering.set(socket, new Promise<void>((resolve) => res.once('close', () => resolve())));
  if (before === undefined) {
    handle();
    return;
  }
  void before.then(() => {
    if (socket.destroyed || socket.writableEnded) res.destroy();
    handle();
  });
}

/** Per connection, the request Node parsed last and its answer: a parse error while its body is read is its own. */
const lastParsed = new WeakMap<Socket, { readonly req: IncomingMessage; readonly res: ServerResponse }>();

/** Why an answer was cut: its own body did not parse (Node's parser code), or broke off half way. */
class MalformedBody {
  constructor(readonly code: string) {}
}
const malformedBodies = new WeakMap<ServerResponse, MalformedBody>();

// Answers the verifier itself cuts: a shutdown whose grace period ran out.
const cutAtShutdown = new WeakSet<ServerResponse>();
const SHUTDOWN_CUT = Symbol('shutdown cut');
// Each answer's abort, so a shutdown can end its handler while its connection is still open.
const aborts = new WeakMap<ServerResponse, () => void>();

/**
 * Cuts an answer in flight at shutdown: its handler is aborted now, with a reason
 * {@link endedBy} tells apart, while its connection is still open — so its client gets a `503`
 * with `retry-after` (or an SSE `error` event mid-stream) and its record says `shutdown_cut`.
 */
export function markCutAtShutdown(res: ServerResponse): void {
  cutAtShutdown.add(res);
  aborts.get(res)?.();
}

/** Whether an answer was aborted by the shutdown (its client is still there to be told). */
export function cutByShutdown(signal: AbortSignal): boolean {
  return signal.reason === SHUTDOWN_CUT;
}

/** Whether an aborted answer's client is still there to be told why: a shutdown cut, or its own malformed body. */
export function clientToBeTold(signal: AbortSignal): boolean {
  return signal.reason === SHUTDOWN_CUT || signal.reason instanceof MalformedBody;
}

/**
 * Why an aborted answer ended, for its record and (where {@link clientToBeTold}) its client:
 * the client went away (`499 client_disconnected`), the verifier cut it at shutdown (`503
 * shutdown_cut`), or its body did not parse or broke off half way (`400 malformed_body`).
 */
export function endedBy(signal: AbortSignal): {
  readonly status: number;
  readonly type: 'api_error' | 'overloaded_error' | 'invalid_request_error';
  readonly reason: string;
  readonly detail: string;
} {
  if (signal.reason instanceof MalformedBody) {
    const [status, message] = PARSER_ERRORS[signal.reason.code] ?? [400, undefined];
    return {
      status,
      type: 'invalid_request_error',
      reason: status === 408 ? 'body_timeout' : 'malformed_body',
      detail:
        message === undefined
          ? `malformed request body (${signal.reason.code}): it did not parse, or ended before its declared length`
          : `${message} before the request body ended`,
    };
  }
  return cutByShutdown(signal)
    ? { status: 503, type: 'overloaded_error', reason: 'shutdown_cut', detail: 'the verifier shut down before the answer ended' }
    : { status: 499, type: 'api_error', reason: 'client_disconnected', detail: 'client closed the connection' };
}

/**
 * Aborts when the client goes away before its answer ended: the response closed unfinished,
 * also when it closed before the handler began (a web `Request` whose signal was already
 * aborted), so no upstream is called for a client that is gone. An answer cut at shutdown
 * ({@link markCutAtShutdown}) aborts with a reason {@link endedBy} tells apart.
 */
export function abortWhenClientGone(res: ServerResponse): AbortController {
  const abort = new AbortController();
  const gone = () => abort.abort(cutAtShutdown.has(res) ? SHUTDOWN_CUT : malformedBodies.get(res));
  aborts.set(res, gone);
  if ((res.destroyed && !res.writableFinished) || malformedBodies.has(res)) gone();
  else
    res.on('close', () => {
      if (!res.writableFinished) gone();
    });
  return abort;
}

/** Writes one server-sent event. */
export function writeEvent(res: ServerResponse, ev: StreamEvent<unknown>): void {
  res.write(formatStreamEvent(ev));
}

/**
 * Refuses a coded request body (`Content-Encoding` other than `identity`), draining it: what
 * the verifier reads is checked as it is, and a coded body would be one thing to Moat and
 * another upstream (a streamed upload too: its trace would read the compressed bytes).
 *
 * @throws {ApiError} 415 `invalid_request_error` naming the coding.
 */
export function assertUncoded(req: IncomingMessage): void {
  const coding = String(req.headers['content-encoding'] ?? '').trim();
  if (coding === '' || coding.toLowerCase() === 'identity') return;
  req.resume();
  throw new ApiError(
    415,
    'invalid_request_error',
    `expected an uncompressed request body (no Content-Encoding), got Content-Encoding: ${JSON.stringify(coding.slice(0, 40))}`,
  );
}

/**
 * Reads a request body up to `max` bytes. A larger declared or actual length is `413
 * request_too_large`; the rest of the upload is drained so the answer still gets through.
 */
export async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  assertUncoded(req);
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) {
    req.resume();
    throw new ApiError(413, 'request_too_large', `request body of ${declared} bytes exceeds the ${max}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > max) {
        req.resume();
        throw new ApiError(413, 'request_too_large', `request body exceeds the ${max}-byte limit`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (error instanceof ApiError) throw error;
    // The body broke off (a reset connection, a web request's stream that errored): the client's side.
    throw new ApiError(400, 'invalid_request_error', `the request body could not be read (${errorMessage(error).slice(0, 120)})`, {
      cause: error,
    });
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
}

/**
 * Reads a small JSON object body (the admin and operator routes): an empty body is `empty`
 * when given. Anything but a JSON object (`null`, an array, a number, broken JSON) is refused.
 *
 * @throws {ApiError} 400 `body: expected JSON <shape>, got …`; 413 over `max` bytes.
 */
export async function readJsonObject(
  req: IncomingMessage,
  max: number,
  shape: string,
  empty?: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const text = (await readBody(req, max)).toString('utf8');
  if (text === '' && empty !== undefined) return empty;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ApiError(400, 'invalid_request_error', `body: expected JSON ${shape}, got ${errorMessage(error).slice(0, 120)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new ApiError(400, 'invalid_request_error', `body: expected JSON ${shape}, got ${jsonKind(value)}`);
  return value as Record<string, unknown>;
}

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the fields it names, `Proxy-Connection`,
 * `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`; and the proxy credentials), never
 * forwarded in either direction. {@link connectionNamed} adds the ones a message names.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * The header names a message's `Connection` (and `Proxy-Connection`) fields list: hop-by-hop
 * for that message alone (RFC 9110 §7.6.1), lowercased; empty when there are none.
 */
export function connectionNamed(headers: Readonly<Record<string, string | readonly string[] | undefined>>): ReadonlySet<string> {
  const names = new Set<string>();
  for (const field of ['connection', 'proxy-connection']) {
    const value = headers[field];
    if (value === undefined) continue;
    for (const line of typeof value === 'string' ? [value] : value)
      for (const token of line.split(',')) {
        const name = token.trim().toLowerCase();
        if (name !== '') names.add(name);
      }
  }
  return names;
}

const PARSER_ERRORS: Readonly<Record<string, [number, string]>> = {
  HPE_HEADER_OVERFLOW: [431, 'request headers too large'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, 'chunk extensions too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request timed out'],
};

/**
 * Records a request Node's HTTP parser refused, before it is answered; resolves to the
 * record's id, or `undefined` when it could not be written (the refusal still goes out).
 */
export type ParserRefusalRecorder = (status: number, message: string) => Promise<string | undefined>;

/** Connections whose parser refusal is under way. */
const refusing = new WeakSet<Socket>();

/** A connection gone before its request could be read: nobody to answer, nothing requested. */
const GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/**
 * Answers a request Node's HTTP parser refused (bad request line, oversized headers, a
 * malformed chunk, an invalid header token, a duplicate `Content-Length`) in Anthropic's
 * error shape, then closes the connection. With `record`, the refusal is recorded first and
 * its id sent as `moat-request-id`, as every other refusal is; a connection that is gone
 * (reset, not writable) is closed unanswered and unrecorded. Resolves once it is answered.
 */
export async function answerClientError(error: Error & { code?: string }, socket: Socket, record?: ParserRefusalRecorder): Promise<void> {
  // One refusal per connection: the parser may report more while the first is being recorded.
  if (refusing.has(socket)) return;
  refusing.add(socket);
  // The error is in the body of the request being read (a bad chunk, the connection half closed
  // before the declared length): that request is cut — its upstream call aborted, its record
  // `400 malformed_body` — and its 400 goes out as its own answer, the connection closed after.
  const last = lastParsed.get(socket);
  if (last !== undefined && !last.req.complete && !last.res.writableEnded && !GONE.has(error.code ?? '')) {
    malformedBodies.set(last.res, new MalformedBody(error.code ?? 'parse error'));
    last.res.shouldKeepAlive = false;
    aborts.get(last.res)?.();
    // The body ends here, short: a handler reading it goes on to its failure (no more bytes
    // will come). Marked complete first, or Node would take the early end for an abort and
    // destroy the connection the 400 is to go out on.
    if (!last.req.readableEnded) {
      last.req.complete = true;
      last.req.push(null);
    }
    return;
  }
  // Bytes that do not parse behind a request still being answered: that answer goes out first.
  const before = answering.get(socket);
  if (before !== undefined) await before;
  if (!socket.writable || GONE.has(error.code ?? '')) {
    socket.destroy();
    return;
  }
  const [status, message] = PARSER_ERRORS[error.code ?? ''] ?? [400, `malformed HTTP request (${error.code ?? 'parse error'})`];
  const id = record === undefined ? undefined : await record(status, message).catch(() => undefined);
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const reason =
    status === 431
      ? 'Request Header Fields Too Large'
      : status === 413
        ? 'Content Too Large'
        : status === 408
          ? 'Request Timeout'
          : 'Bad Request';
  endWithError(socket, `${status} ${reason}`, status === 413 ? 'request_too_large' : 'invalid_request_error', message, id);
}

/** Writes an error in Anthropic's shape straight to a connection no `ServerResponse` owns, with its record's id, and closes it. */
function endWithError(socket: Socket, statusLine: string, type: string, message: string, id: string | undefined, extra = ''): void {
  const body = JSON.stringify({ type: 'error', error: { type, message } });
  socket.end(
    `HTTP/1.1 ${statusLine}\r\n${extra}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `${id === undefined ? '' : `moat-request-id: ${id}\r\n`}connection: close\r\n\r\n${body}`,
  );
}

/** Answers `CONNECT` (the verifier is no forward proxy) in Anthropic's error shape; with `record`, recorded first. */
export async function answerConnect(socket: Socket, record?: ParserRefusalRecorder): Promise<void> {
  const message = 'CONNECT is not supported: this is an API, not a proxy';
  const id = record === undefined ? undefined : await record(405, message).catch(() => undefined);
  endWithError(socket, '405 Method Not Allowed', 'invalid_request_error', message, id, 'allow: GET, POST\r\n');
}
