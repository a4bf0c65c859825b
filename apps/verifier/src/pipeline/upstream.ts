import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { ApiError } from '../errors.js';
import { connectionNamed, HOP_BY_HOP } from '../http.js';
import { canonicalTarget } from '../target.js';

/** Request headers of the client that never go upstream: hop-by-hop, the client's credentials, Moat's own, and what undici sets. */
const NOT_FORWARDED = new Set([
  ...HOP_BY_HOP,
  'host',
  'content-length',
  'x-api-key',
  'authorization',
  'moat-attestation',
  'moat-version',
  'expect',
]);

/** Response headers of the upstream that never go to the client. */
const NOT_RETURNED = new Set([...HOP_BY_HOP, 'content-length', 'content-encoding']);

/** undici's time-out errors: answered 504. */
const TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** One request to the upstream. */
export interface UpstreamRequest {
  readonly method: string;
  /** Canonical path with the query string as the client sent it (`/v1/messages?beta=true`). */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The body: bytes, or the client's request streamed through (its length header is kept). */
  readonly body?: Buffer | Readable | undefined;
  /** Aborts the upstream call (the client went away). */
  readonly signal?: AbortSignal;
  /**
   * Keep the upstream's content encoding and length (a pass-through that relays bytes); by
   * default the verifier asks for identity so it can read the body.
   */
  readonly raw?: boolean;
}

/** The upstream's answer: status, headers to pass on, and the body as it streams. */
export interface UpstreamResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Dispatcher.ResponseData['body'];
}

/** Timeouts of the upstream calls, in milliseconds. */
export interface UpstreamTimeouts {
  readonly connectMs: number;
  /** Until the response headers arrive. */
  readonly headersMs: number;
  /** Between two chunks of the body. */
  readonly bodyIdleMs: number;
}

/**
 * Stage 7: the upstream, an Anthropic-compatible API (the embedded mock or a real one) over a
 * keep-alive undici agent. Client headers pass except hop-by-hop ones, the client's own
 * credentials (replaced by the verifier's upstream key) and Moat's headers; the answer's
 * headers pass except hop-by-hop ones.
 */
export class Upstream {
  readonly #origin: URL;
  readonly #key: string | undefined;
  readonly #agent: Agent;
  readonly #timeouts: UpstreamTimeouts;

  constructor(baseUrl: string, key: string | undefined, timeouts: UpstreamTimeouts) {
    this.#origin = new URL(baseUrl);
    this.#key = key;
    this.#timeouts = timeouts;
    this.#agent = new Agent({
      connect: { timeout: timeouts.connectMs },
      headersTimeout: timeouts.headersMs,
      bodyTimeout: timeouts.bodyIdleMs,
      keepAliveTimeout: 30_000,
      connections: 128,
    });
  }

  /** The upstream's base URL. */
  get url(): string {
    return this.#origin.href;
  }

  get timeouts(): UpstreamTimeouts {
    return this.#timeouts;
  }

  /**
   * Sends a request upstream and returns its answer as soon as the headers are in.
   *
   * @throws {ApiError} 502 `api_error` when the upstream cannot be reached or times out,
   * 499-style abort errors pass through as they are.
   */
  async send(request: UpstreamRequest): Promise<UpstreamResponse> {
    const headers: Record<string, string | string[]> = {};
    const named = connectionNamed(request.headers);
    for (const [name, value] of Object.entries(request.headers)) {
      if (value === undefined || NOT_FORWARDED.has(name) || named.has(name)) continue;
      headers[name] = value;
    }
    if (this.#key !== undefined) headers['x-api-key'] = this.#key;
    if (request.raw !== true) headers['accept-encoding'] = 'identity';
    if (Buffer.isBuffer(request.body)) headers['content-length'] = String(request.body.length);
    else if (request.body !== undefined && typeof request.headers['content-length'] === 'string')
      headers['content-length'] = request.headers['content-length'];
    const base = this.#origin.pathname.replace(/\/$/, '');
    // Only a canonical path goes out: no dot segment can climb out of the base path.
    const { path, query } = canonicalTarget(request.path);
    let response: Dispatcher.ResponseData;
    try {
      response = await this.#agent.request({
        origin: this.#origin.origin,
        path: `${base}${path}${query}`,
        method: request.method as Dispatcher.HttpMethod,
        headers,
        body: request.body ?? null,
        signal: request.signal ?? null,
      });
    } catch (error) {
      if (request.signal?.aborted === true) throw error;
      const code = (error as { code?: unknown }).code;
      if (typeof code === 'string' && TIMEOUTS.has(code))
        throw new ApiError(504, 'api_error', `upstream timed out (${code})`, { cause: error });
      throw new ApiError(502, 'api_error', `upstream unreachable (${typeof code === 'string' ? code : 'error'})`, { cause: error });
    }
    const out: Record<string, string | string[]> = {};
    const namedBack = connectionNamed(response.headers);
    for (const [name, value] of Object.entries(response.headers)) {
      if (value === undefined || (request.raw !== true && NOT_RETURNED.has(name)) || HOP_BY_HOP.has(name) || namedBack.has(name)) continue;
      out[name] = value;
    }
    return { status: response.statusCode, headers: out, body: response.body };
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}
