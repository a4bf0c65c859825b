import { Readable } from 'node:stream';
import { errorMessage, waitAtMost } from '@moat/protocol/support';
import type { Logger } from 'pino';
import { ApiError } from '../errors.js';
import {
  forwardedHeaders,
  type UpstreamBody,
  type UpstreamClient,
  type UpstreamRequest,
  type UpstreamResponse,
  upstreamAnswer,
} from './upstream.js';

/**
 * A model call in process: the web-standard handler signature (hono, Bun, Deno, Workers). It
 * gets the request exactly as the pipeline would send it over HTTP (Moat's members, headers
 * and the client's credentials taken out, decoys in) and answers as the Messages API would.
 */
export type UpstreamFunction = (request: Request) => Promise<Response>;

/** The origin of the requests an {@link UpstreamFunction} gets when the client named no host (or no valid one). */
const DEFAULT_ORIGIN = 'http://localhost';
/** A host and an optional port, as `Host` carries them: nothing else may shape the URL the function gets. */
const AUTHORITY = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * A web `Response` body with the reading methods of undici's body, so the stages read it as
 * they read an answer over HTTP. Read whole (`text`, `json`, `arrayBuffer`, `bytes`), it is
 * taken from the `Response` in one piece; iterated or piped, it streams from its reader.
 */
class ResponseBody extends Readable {
  readonly #response: Response;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;

  constructor(response: Response) {
    super();
    this.#response = response;
  }

  override _read(): void {
    if (this.#response.body === null) {
      this.push(null);
      return;
    }
    this.#reader ??= this.#response.body.getReader();
    this.#reader.read().then(
      ({ done, value }) => this.push(done ? null : Buffer.from(value.buffer, value.byteOffset, value.byteLength)),
      (error: unknown) => this.destroy(error instanceof Error ? error : new Error(errorMessage(error))),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const body = this.#response.body;
    const cancelled =
      this.#reader?.cancel(error ?? undefined) ?? (body !== null && !body.locked ? body.cancel() : undefined);
    cancelled?.catch(() => {});
    callback(error);
  }

  /** The whole body at once; from the stream when reading it has begun. */
  async #whole(): Promise<ArrayBuffer> {
    if (this.#reader === undefined && !this.destroyed) return this.#response.arrayBuffer();
    const parts: Buffer[] = [];
    for await (const part of this) parts.push(part as Buffer);
    const b = Buffer.concat(parts);
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    return this.#whole();
  }

  async bytes(): Promise<Uint8Array> {
    return new Uint8Array(await this.#whole());
  }

  async text(): Promise<string> {
    return Buffer.from(await this.#whole()).toString('utf8');
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text()) as unknown;
  }
}

/** Response headers as the stages read them: lowercase names, `set-cookie` a list. */
function headersOf(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of headers) if (name !== 'set-cookie') out[name] = value;
  const cookies = headers.getSetCookie();
  if (cookies.length > 0) out['set-cookie'] = cookies;
  return out;
}

/**
 * The function's answer, or its client's abort, whichever comes first: a function that does
 * not listen to `request.signal` must not keep a request whose client is gone open (its
 * record would wait for it, or say it was answered). An answer that comes after the abort is
 * cancelled unread.
 */
function untilAborted(answer: Promise<Response>, signal: AbortSignal | undefined): Promise<Response> {
  if (signal === undefined) return answer;
  void answer.then(
    (response) => {
      if (signal.aborted && response instanceof Response && response.body !== null && !response.body.locked)
        response.body.cancel().catch(() => {});
    },
    () => {},
  );
  return waitAtMost(answer, undefined, signal) as Promise<Response>;
}

/**
 * Stage 7 in process: the embedding server's own model call, given what would go over HTTP
 * (the same headers, bar the client's credentials and Moat's own, the same canonical path,
 * the same body). Its answer is read as an upstream's: headers filtered, content codings
 * undone. The function owns its time-outs; a client that goes away aborts `request.signal`.
 */
export class FunctionUpstream implements UpstreamClient {
  readonly url = 'in-process:';
  readonly #call: UpstreamFunction;
  readonly #log: Logger | undefined;

  constructor(call: UpstreamFunction, log?: Logger) {
    this.#call = call;
    this.#log = log;
  }

  /**
   * Calls the function with the request and returns its answer.
   *
   * @throws {ApiError} 502 `api_error` when the function throws or answers something that is
   * not a `Response`; abort errors pass through.
   */
  async send(request: UpstreamRequest): Promise<UpstreamResponse> {
    // The callers pass the canonical target that was routed; a function has no base path to climb out of.
    const target = request.path.startsWith('/') ? request.path : `/${request.path}`;
    const host = request.headers.host;
    const origin = typeof host === 'string' && AUTHORITY.test(host) ? `http://${host}` : DEFAULT_ORIGIN;
    let response: Response;
    try {
      // As `fetch` does: a request whose client is already gone is not made at all.
      request.signal?.throwIfAborted();
      const body =
        request.body === undefined || Buffer.isBuffer(request.body) ? request.body : Readable.toWeb(request.body);
      // A list header is one field of comma-separated values (RFC 9110 §5.3); the runtime sets the length.
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(forwardedHeaders(request, undefined)))
        if (name !== 'content-length') headers[name] = Array.isArray(value) ? value.join(', ') : value;
      const init: RequestInit & { duplex?: 'half' } = {
        method: request.method,
        headers,
        ...(body === undefined ? {} : { body: body as NonNullable<RequestInit['body']>, duplex: 'half' }),
        ...(request.signal === undefined ? {} : { signal: request.signal }),
      };
      response = await untilAborted(this.#call(new Request(`${origin}${target}`, init)), request.signal);
    } catch (error) {
      if (request.signal?.aborted === true) throw error;
      this.#log?.error({ err: errorMessage(error) }, 'the upstream function failed');
      throw new ApiError(502, 'api_error', 'upstream failed', { cause: error });
    }
    if (!(response instanceof Response)) {
      this.#log?.error({ got: typeof response }, 'the upstream function answered no Response');
      throw new ApiError(502, 'api_error', 'upstream answered no response');
    }
    if (response.bodyUsed || response.body?.locked === true) {
      this.#log?.error('the upstream function answered a Response whose body was already read');
      throw new ApiError(502, 'api_error', 'upstream answered a body already read');
    }
    const body = new ResponseBody(response) as unknown as UpstreamBody;
    return upstreamAnswer(response.status, headersOf(response.headers), body, request.raw === true);
  }

  async close(): Promise<void> {}
}
