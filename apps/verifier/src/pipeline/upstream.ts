import type { IncomingHttpHeaders } from 'node:http';
import { pipeline, type Readable, type Transform } from 'node:stream';
import * as zlib from 'node:zlib';
import { Agent, type Dispatcher } from 'undici';
import { ApiError } from '../errors.js';
import { connectionNamed, HOP_BY_HOP } from '../http.js';
import { canonicalTarget } from '../target.js';

/**
 * Headers by which frameworks and gateways route a request elsewhere than its target or
 * method (IIS and Symfony, nginx, Traefik, Spring, Envoy, method override): an upstream that
 * honours one would serve another route than the canonical target the verifier checked.
 */
export const ROUTING_OVERRIDES: ReadonlySet<string> = new Set([
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
  'x-original-path',
  'x-forwarded-uri',
  'x-forwarded-path',
  'x-forwarded-prefix',
  'x-envoy-original-path',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
]);

/** Request headers of the client that never go upstream: hop-by-hop, routing overrides, the client's credentials, Moat's own, and what undici sets. */
const NOT_FORWARDED = new Set([
  ...HOP_BY_HOP,
  ...ROUTING_OVERRIDES,
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

/** Content codings the verifier decodes before it reads an answer (zstd where the runtime has it). */
const DECODERS: Readonly<Record<string, () => Transform>> = {
  gzip: () => zlib.createGunzip(),
  'x-gzip': () => zlib.createGunzip(),
  // RFC 9110's deflate is zlib-wrapped; some servers send it raw: `createUnzip` would not take that, this does.
  deflate: () => zlib.createInflate(),
  br: () => zlib.createBrotliDecompress(),
  ...(typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress === 'function'
    ? { zstd: () => (zlib as unknown as { createZstdDecompress: () => Transform }).createZstdDecompress() }
    : {}),
};

/** The content codings {@link Upstream} decodes, in the order it tries them. */
export const DECODED_ENCODINGS: readonly string[] = Object.keys(DECODERS);

/** An answer's body as the stages read it: a stream, or all of it as text, JSON or bytes. */
export type UpstreamBody = Dispatcher.ResponseData['body'];

/**
 * The body with its content codings undone (listed in the order applied, so undone last to
 * first), with the reading methods of undici's body. An unknown coding is a 502: an answer
 * that cannot be read is not passed on as if it could.
 */
function decodeBody(body: UpstreamBody, contentEncoding: string): UpstreamBody {
  const codings = contentEncoding
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  if (codings.length === 0) return body;
  const unknown = codings.find((c) => DECODERS[c] === undefined);
  if (unknown !== undefined) {
    // Not read: dropped (undici reports the abort as an error, which nobody else would hear).
    body.on('error', () => {});
    body.destroy();
    throw new ApiError(502, 'api_error', `upstream answered in a content encoding the verifier cannot decode (${unknown.slice(0, 40)})`);
  }
  const decoders = codings.reverse().map((c) => (DECODERS[c] as () => Transform)());
  const decoded = pipeline(body, ...(decoders as [Transform, ...Transform[]]), () => {
    // Errors surface to whoever reads the decoded stream.
  }) as unknown as Readable;
  const bytes = async () => {
    const parts: Buffer[] = [];
    for await (const part of decoded) parts.push(part as Buffer);
    return Buffer.concat(parts);
  };
  return Object.assign(decoded, {
    arrayBuffer: async () => {
      const b = await bytes();
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    },
    bytes: async () => new Uint8Array(await bytes()),
    text: async () => (await bytes()).toString('utf8'),
    json: async () => JSON.parse((await bytes()).toString('utf8')) as unknown,
  }) as unknown as UpstreamBody;
}

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
  readonly body: UpstreamBody;
}

/** Timeouts of the upstream calls, in milliseconds. */
export interface UpstreamTimeouts {
  readonly connectMs: number;
  /** Until the response headers arrive. */
  readonly headersMs: number;
  /** Between two chunks of the body. */
  readonly bodyIdleMs: number;
  /** Waiting for a free connection when all are busy (default 10 s). */
  readonly queueMs?: number;
  /** Quiet for this long while requests wait for its connection, a call is ended (default 120 s). */
  readonly stallMs?: number;
}

/** How busy the upstream connections are. */
export interface UpstreamLoad {
  /** Calls in flight (each holds a connection until its answer is read or dropped). */
  readonly active: number;
  /** Calls waiting for a connection. */
  readonly waiting: number;
  readonly limit: number;
}

/**
 * The headers a request goes upstream with: the client's, bar hop-by-hop ones, its own
 * credentials (replaced by `key`, the verifier's, when there is one) and Moat's; `identity`
 * asked for unless the request relays bytes (`raw`).
 */
export function forwardedHeaders(request: UpstreamRequest, key: string | undefined): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  const named = connectionNamed(request.headers);
  for (const [name, value] of Object.entries(request.headers)) {
    if (value === undefined || NOT_FORWARDED.has(name) || named.has(name)) continue;
    headers[name] = value;
  }
  if (key !== undefined) headers['x-api-key'] = key;
  if (request.raw !== true) headers['accept-encoding'] = 'identity';
  if (Buffer.isBuffer(request.body)) headers['content-length'] = String(request.body.length);
  else if (request.body !== undefined && typeof request.headers['content-length'] === 'string')
    headers['content-length'] = request.headers['content-length'];
  return headers;
}

/**
 * The upstream's answer as the stages get it: headers bar hop-by-hop ones (and, unless `raw`,
 * length and coding), the body decoded when it came encoded anyway.
 *
 * @throws {ApiError} 502 for a content coding the verifier cannot decode.
 */
export function upstreamAnswer(
  status: number,
  received: Readonly<Record<string, string | string[] | undefined>>,
  receivedBody: UpstreamBody,
  raw: boolean,
): UpstreamResponse {
  const out: Record<string, string | string[]> = {};
  const namedBack = connectionNamed(received);
  for (const [name, value] of Object.entries(received)) {
    if (value === undefined || (!raw && NOT_RETURNED.has(name)) || HOP_BY_HOP.has(name) || namedBack.has(name)) continue;
    // Moat's own headers are the verifier's to set: an upstream's `moat-request-id` would point the client at another record.
    if (name.startsWith('moat-')) continue;
    out[name] = value;
  }
  const encoding = received['content-encoding'];
  // Asked for identity, an upstream may compress regardless: what the stages read is decoded first.
  const body =
    raw || encoding === undefined ? receivedBody : decodeBody(receivedBody, Array.isArray(encoding) ? encoding.join(',') : encoding);
  return { status, headers: out, body };
}

/** The most of an upstream answer the verifier reads whole (a message, an error, a batch object), once decoded. */
export const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

/** Drops an upstream body unread: destroyed, and the error that destroying it emits taken. */
export function discardBody(body: UpstreamBody): void {
  body.on('error', () => {});
  body.destroy();
}

/**
 * Reads an upstream body whole, decoded, up to `max` bytes: a compressed answer of a
 * kilobyte can expand to gigabytes, so the limit is on what decoding yields.
 *
 * @throws {ApiError} 502 past `max`.
 */
export async function readAnswer(body: UpstreamBody, max = MAX_ANSWER_BYTES): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      discardBody(body);
      throw new ApiError(502, 'api_error', `upstream answer over the ${max}-byte limit`);
    }
    parts.push(chunk);
  }
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
}

/**
 * {@link readAnswer}, parsed as JSON.
 *
 * @throws {ApiError} 502 past `max`; the `JSON.parse` error for an answer that is not JSON.
 */
export async function readAnswerJson(body: UpstreamBody, max = MAX_ANSWER_BYTES): Promise<unknown> {
  return JSON.parse((await readAnswer(body, max)).toString('utf8')) as unknown;
}

/**
 * What the pipeline and the routes call upstream: an Anthropic-compatible API over HTTP
 * ({@link Upstream}), or the embedding server's own model call in process.
 */
export interface UpstreamClient {
  /** Where the upstream is (a base URL; `in-process:` for a function). */
  readonly url: string;
  /**
   * Sends a request upstream and returns its answer as soon as the headers are in.
   *
   * @throws {ApiError} 502/504 when the upstream cannot answer; abort errors pass through.
   */
  send(request: UpstreamRequest): Promise<UpstreamResponse>;
  /** How busy its connections are, where it has a bounded number. */
  load?(): UpstreamLoad;
  close(): Promise<void>;
}

/** A held upstream connection: given back once, kept alive by every byte the upstream sends. */
interface Slot {
  /** Gives the connection back (once, whoever calls it). */
  release(): void;
  /** Says the upstream just sent something on it. */
  touch(): void;
  /** Aborts when the slot is taken back from a call that stalled while others waited. */
  readonly signal: AbortSignal;
}

/** One call holding a connection: when its upstream last sent anything, and how to end it. */
interface Holder {
  last: number;
  readonly controller: AbortController;
}

/**
 * At most `limit` upstream calls at once; the rest wait in order, each for `waitMs` at most,
 * then get `503 overloaded_error` (nothing was sent). While some wait, a call whose upstream
 * has sent nothing for `stallMs` — no headers yet, or a body gone quiet — is ended (`504`,
 * an SSE error mid-stream) and its connection goes to the first in line: a pool held by
 * calls that hang never keeps later requests out once the upstream answers again.
 */
class ConnectionSlots {
  readonly #limit: number;
  readonly #waitMs: number;
  readonly #stallMs: number;
  readonly #waiting: Array<{ grant: () => void }> = [];
  readonly #holders = new Set<Holder>();
  #sweep: NodeJS.Timeout | undefined;

  constructor(limit: number, waitMs: number, stallMs: number) {
    this.#limit = limit;
    this.#waitMs = waitMs;
    this.#stallMs = stallMs;
  }

  get load(): UpstreamLoad {
    return { active: this.#holders.size, waiting: this.#waiting.length, limit: this.#limit };
  }

  /**
   * Waits for a slot.
   *
   * @throws {ApiError} 503 when none came free in time; the signal's reason when it aborts first.
   */
  acquire(signal?: AbortSignal): Promise<Slot> {
    if (this.#holders.size < this.#limit) return Promise.resolve(this.#hold());
    return new Promise((resolve, reject) => {
      const entry = {
        grant: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolve(this.#hold());
        },
      };
      const leave = () => {
        const at = this.#waiting.indexOf(entry);
        if (at >= 0) this.#waiting.splice(at, 1);
      };
      const onAbort = () => {
        clearTimeout(timer);
        leave();
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        leave();
        reject(
          new ApiError(503, 'overloaded_error', `all ${this.#limit} upstream connections busy for ${this.#waitMs} ms; retry shortly`, {
            retryAfterSec: 1,
          }),
        );
      }, this.#waitMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(entry);
      this.#takeBackStalled();
      this.#sweep ??= setInterval(() => this.#takeBackStalled(), Math.max(50, Math.min(1_000, this.#stallMs / 4))).unref();
    });
  }

  #hold(): Slot {
    const holder: Holder = { last: performance.now(), controller: new AbortController() };
    this.#holders.add(holder);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#holders.delete(holder);
        this.#waiting.shift()?.grant();
        if (this.#waiting.length === 0 && this.#sweep !== undefined) {
          clearInterval(this.#sweep);
          this.#sweep = undefined;
        }
      },
      touch: () => {
        holder.last = performance.now();
      },
      signal: holder.controller.signal,
    };
  }

  /** Ends, for each request waiting, the call whose upstream has been quiet longest, if for `stallMs` or more. */
  #takeBackStalled(): void {
    const now = performance.now();
    const stalled = [...this.#holders]
      .filter((h) => !h.controller.signal.aborted && now - h.last >= this.#stallMs)
      .sort((a, b) => a.last - b.last)
      .slice(0, this.#waiting.length);
    for (const holder of stalled)
      holder.controller.abort(
        new ApiError(
          504,
          'api_error',
          `upstream stalled: nothing for ${Math.round(now - holder.last)} ms while requests waited for its connection`,
        ),
      );
  }

  close(): void {
    if (this.#sweep !== undefined) clearInterval(this.#sweep);
  }
}

/** Per request (its options object), what the activity interceptor tells. */
const ACTIVITY = new WeakMap<object, () => void>();

/** An undici interceptor that tells each request's slot when its upstream sends headers or body bytes. */
const watchActivity: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (opts, handler) => {
  const touch = ACTIVITY.get(opts);
  if (touch === undefined) return dispatch(opts, handler);
  return dispatch(opts, {
    onRequestStart: (...args) => handler.onRequestStart?.(...args),
    onRequestUpgrade: (...args) => handler.onRequestUpgrade?.(...args),
    onResponseStart: (...args) => {
      touch();
      return handler.onResponseStart?.(...args);
    },
    onResponseData: (...args) => {
      touch();
      return handler.onResponseData?.(...args);
    },
    onResponseEnd: (...args) => handler.onResponseEnd?.(...args),
    onResponseError: (...args) => handler.onResponseError?.(...args),
  });
};

/**
 * Stage 7: the upstream, an Anthropic-compatible API (the embedded mock or a real one) over a
 * keep-alive undici agent. Client headers pass except hop-by-hop ones, the client's own
 * credentials (replaced by the verifier's upstream key) and Moat's headers; the answer's
 * headers pass except hop-by-hop ones. The verifier asks for `identity`; an answer encoded
 * anyway (gzip, deflate, br, zstd where the runtime has it) is decoded before it is read, and
 * one in another coding is a 502.
 */
export class Upstream implements UpstreamClient {
  readonly #origin: URL;
  readonly #key: string | undefined;
  readonly #agent: Agent;
  readonly #dispatcher: Dispatcher;
  readonly #timeouts: UpstreamTimeouts;
  readonly #slots: ConnectionSlots;

  /** `connections`: upstream calls in flight at once, at most (default 4,096); more wait up to `timeouts.queueMs`. */
  constructor(baseUrl: string, key: string | undefined, timeouts: UpstreamTimeouts, connections = 4096) {
    this.#origin = new URL(baseUrl);
    this.#key = key;
    this.#timeouts = timeouts;
    this.#slots = new ConnectionSlots(connections, timeouts.queueMs ?? 10_000, timeouts.stallMs ?? 120_000);
    this.#agent = new Agent({
      connect: { timeout: timeouts.connectMs },
      headersTimeout: timeouts.headersMs,
      bodyTimeout: timeouts.bodyIdleMs,
      keepAliveTimeout: 30_000,
      connections,
    });
    this.#dispatcher = this.#agent.compose(watchActivity);
  }

  load(): UpstreamLoad {
    return this.#slots.load;
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
    const headers = forwardedHeaders(request, this.#key);
    const base = this.#origin.pathname.replace(/\/$/, '');
    // Only a canonical path goes out: no dot segment can climb out of the base path.
    const { path, query } = canonicalTarget(request.path);
    // A connection is held from here until the answer's body is read or dropped.
    const slot = await this.#slots.acquire(request.signal);
    const options = {
      origin: this.#origin.origin,
      path: `${base}${path}${query}`,
      method: request.method as Dispatcher.HttpMethod,
      headers,
      body: request.body ?? null,
      signal: request.signal === undefined ? slot.signal : AbortSignal.any([request.signal, slot.signal]),
    };
    ACTIVITY.set(options, slot.touch);
    let response: Dispatcher.ResponseData;
    try {
      response = await this.#dispatcher.request(options);
    } catch (error) {
      slot.release();
      if (request.signal?.aborted === true) throw error;
      if (slot.signal.aborted) throw slot.signal.reason;
      const code = (error as { code?: unknown }).code;
      if (typeof code === 'string' && TIMEOUTS.has(code))
        throw new ApiError(504, 'api_error', `upstream timed out (${code})`, { cause: error });
      throw new ApiError(502, 'api_error', `upstream unreachable (${typeof code === 'string' ? code : 'error'})`, { cause: error });
    }
    response.body.once('close', slot.release);
    return upstreamAnswer(response.statusCode, response.headers, response.body, request.raw === true);
  }

  close(): Promise<void> {
    this.#slots.close();
    return this.#agent.close();
  }
}
