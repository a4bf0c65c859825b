/**
 * A web-standard `Request` as the `node:http` request the routes read, and a `node:http`
 * response the routes write that becomes a web-standard `Response` — so the one pipeline
 * serves `(Request) => Promise<Response>` too. Only what `node:http` gives a handler and the
 * routes use is there: method, target, headers, the peer's address, the body as a stream;
 * status, headers, `writeHead`, `write` with backpressure, `end`, and `close` when the reader
 * of the answer goes away.
 */
import type {
  IncomingHttpHeaders,
  IncomingMessage,
  OutgoingHttpHeader,
  OutgoingHttpHeaders,
  ServerResponse,
} from 'node:http';
import { Readable, Writable } from 'node:stream';
import { errorMessage } from '@moat/protocol/support';

/** A `Request` read as an `IncomingMessage`: its body streams from the request's reader. */
class WebIncoming extends Readable {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly socket: { readonly remoteAddress: string | undefined };
  readonly #body: ReadableStream<Uint8Array> | null;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;

  constructor(request: Request, remoteAddress: string | undefined) {
    super();
    // A body that breaks off fails whoever reads it; unread (a refused request), it must not end the process.
    this.on('error', () => {});
    const url = new URL(request.url);
    this.method = request.method;
    this.url = `${url.pathname}${url.search}`;
    const headers: IncomingHttpHeaders = {};
    for (const [name, value] of request.headers) headers[name] = value;
    // A runtime may keep the authority in the URL alone: the stamp's binding covers it.
    headers.host ??= url.host;
    this.headers = headers;
    this.socket = { remoteAddress };
    this.#body = request.body;
  }

  override _read(): void {
    if (this.#body === null) {
      this.push(null);
      return;
    }
    this.#reader ??= this.#body.getReader();
    this.#reader.read().then(
      ({ done, value }) => this.push(done ? null : Buffer.from(value.buffer, value.byteOffset, value.byteLength)),
      (error: unknown) => this.destroy(error instanceof Error ? error : new Error(errorMessage(error))),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#reader?.cancel(error ?? undefined).catch(() => {});
    callback(error);
  }
}

/** Chunks the answer's reader may hold before `write` asks the writer to wait. */
const HIGH_WATER_CHUNKS = 16;

/**
 * A `ServerResponse` that becomes a `Response`: {@link WebOutgoing.response} settles when the
 * head is known and the body has begun (or, for a body written at once, ended), so a JSON
 * answer is one buffer and a stream is a `ReadableStream` that the routes fill as they write.
 */
class WebOutgoing extends Writable {
  /** Set when the request's client went away: an answer cut short before its head is then a 499, not a 502. */
  clientGone = false;
  statusCode = 200;
  statusMessage = '';
  headersSent = false;
  readonly response: Promise<Response>;
  readonly #headers = new Map<string, OutgoingHttpHeader>();
  #resolve!: (response: Response) => void;
  #settled = false;
  #chunks: Buffer[] = [];
  #controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  #waiting: (() => void) | undefined;
  #ending = false;

  constructor() {
    super();
    // A failure reaches the reader as the answer's stream erroring; nobody else listens.
    this.on('error', () => {});
    this.response = new Promise((resolve) => {
      this.#resolve = (response) => {
        this.#settled = true;
        resolve(response);
      };
    });
  }

  setHeader(name: string, value: OutgoingHttpHeader): this {
    this.#headers.set(name.toLowerCase(), value);
    return this;
  }

  getHeader(name: string): OutgoingHttpHeader | undefined {
    return this.#headers.get(name.toLowerCase());
  }

  hasHeader(name: string): boolean {
    return this.#headers.has(name.toLowerCase());
  }

  removeHeader(name: string): void {
    this.#headers.delete(name.toLowerCase());
  }

  getHeaders(): OutgoingHttpHeaders {
    return Object.fromEntries(this.#headers);
  }

  writeHead(status: number, headers?: OutgoingHttpHeaders | readonly string[]): this {
    this.statusCode = status;
    if (headers !== undefined && !Array.isArray(headers))
      for (const [name, value] of Object.entries(headers)) if (value !== undefined) this.setHeader(name, value);
    this.headersSent = true;
    return this;
  }

  override end(chunk?: unknown, encoding?: unknown, callback?: unknown): this {
    // A body given to `end` is the last: kept, not streamed.
    this.#ending = true;
    return (super.end as (...args: unknown[]) => this)(chunk, encoding, callback);
  }

  /** Settles the answer; one the runtime refuses (a status or header it does not take) is an empty 502. */
  #answer(body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null): void {
    this.headersSent = true;
    try {
      const headers = new Headers();
      for (const [name, value] of this.#headers)
        if (Array.isArray(value)) for (const v of value) headers.append(name, v);
        else headers.set(name, String(value));
      const empty = this.statusCode === 204 || this.statusCode === 304;
      this.#resolve(new Response(empty ? null : body, { status: this.statusCode, headers }));
    } catch {
      this.#resolve(new Response(null, { status: 502 }));
      this.destroy();
    }
  }

  /** Starts the streamed answer with what was written so far. */
  #stream(): void {
    const pending = this.#chunks;
    this.#chunks = [];
    const body = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.#controller = controller;
          for (const chunk of pending) controller.enqueue(chunk);
        },
        pull: () => {
          const waiting = this.#waiting;
          this.#waiting = undefined;
          waiting?.();
        },
        // The reader went away: the routes see the connection close, as with a client that hangs up.
        cancel: () => {
          this.#controller = undefined;
          this.destroy();
        },
      },
      { highWaterMark: HIGH_WATER_CHUNKS },
    );
    this.#answer(body);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#controller === undefined) {
      this.#chunks.push(chunk);
      if (this.#ending) {
        callback();
        return;
      }
      this.#stream();
    } else this.#controller.enqueue(chunk);
    if ((this.#controller?.desiredSize ?? 1) > 0) callback();
    else this.#waiting = () => callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.#controller !== undefined) {
      this.#controller.close();
      this.#controller = undefined;
    } else {
      const chunks = this.#chunks;
      this.#chunks = [];
      const body = chunks.length === 0 ? null : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      this.#answer((body ?? null) as Uint8Array<ArrayBuffer> | null);
    }
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#controller !== undefined) {
      try {
        this.#controller.error(error ?? new Error('the answer was cut short'));
      } catch {
        // Already closed.
      }
      this.#controller = undefined;
    }
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
    // Settled after the handler's first synchronous steps, so the answer carries the request's id.
    if (!this.#settled) process.nextTick(() => this.#cutShort());
    callback(error);
  }

  /** The empty answer of a request cut short before its head: 499 when its client went away, else 502. */
  #cutShort(): void {
    if (this.#settled) return;
    const headers = new Headers();
    const id = this.#headers.get('moat-request-id');
    if (typeof id === 'string') headers.set('moat-request-id', id);
    this.#resolve(new Response(null, { status: this.clientGone ? 499 : 502, headers }));
  }
}

/**
 * Runs a `node:http` handler for a web-standard request and settles with its answer as a
 * `Response`. The request's `signal` (the client went away) closes the answer as a socket
 * would; an answer destroyed before its head was written settles as an empty `499` when the
 * client went away, else `502`, with the request's `moat-request-id`.
 */
export function runForWeb(
  request: Request,
  remoteAddress: string | undefined,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<Response> {
  const req = new WebIncoming(request, remoteAddress);
  const res = new WebOutgoing();
  const gone = () => {
    res.clientGone = true;
    res.destroy();
  };
  if (request.signal.aborted) gone();
  else request.signal.addEventListener('abort', gone, { once: true });
  handler(req as unknown as IncomingMessage, res as unknown as ServerResponse);
  return res.response;
}
