import { randomBytes } from 'node:crypto';
import { appendEnvelope, credentialOf, placeholderEnvelopes } from '@moat/protocol';
import {
  createWarner,
  errorMessage,
  loadNativeAddon,
  type NativeBinding,
  type NativeRequestOptions,
  STAMP_RESULTS,
} from '@moat/protocol/support';

/** Options with every member present, `undefined` where not given. */
type Complete<T> = { -readonly [K in keyof T]-?: T[K] | undefined };

/** The native transport's interface (`@moat/native`'s request and key id), injectable for tests. */
export type NativeTransport = Pick<NativeBinding, 'request' | 'keyId' | 'appendsEnvelope'>;

/** Request header that tells the verifier the client could not attest this request. */
export const UNATTESTED_HEADER = 'moat-attestation';

/** Why a request went out unattested. */
export type UnattestedReason = 'addon_missing' | 'addon_failed' | 'unsupported_body' | 'app_dispatcher';

/** Options of {@link createAttestedFetch}. */
export interface AttestedFetchOptions {
  /**
   * The native transport. Default: `@moat/native` when it loads; `null` forces the fallback.
   */
  readonly native?: NativeTransport | null;
  /** Whether a request to `url` gets the envelope: only endpoints that advertise Moat support (default: all). */
  readonly envelopeFor?: (url: URL) => boolean;
  /**
   * Whether the stamp for `url` also covers the request — method, authority, path and API
   * credential, an `r1` envelope (protocol 1.1) — so the bytes cannot be re-sent under
   * another key or to another host. Only for endpoints that advertise `request_binding`
   * (default: all; a 1.0 verifier refuses `r1` envelopes).
   */
  readonly bindRequestFor?: (url: URL) => boolean;
  /**
   * The enrolled install that stamps a request to `url` sent with API key `credential`
   * (protocol 1.2, SPEC §5.4; the credential by §5.3's rule, `""` for none): the name it was
   * opened under in the addon (`installOpen`'s `origin`) and its install id. Such a request
   * gets an `i1` envelope, which the addon MACs with that install's key instead of the release
   * key (the request is bound as for `r1`). `undefined` (default): `r1` or `v1` as above. When
   * the addon has no enrolled install of that name after all, the request goes with `r1`.
   */
  readonly installFor?: (url: URL, credential: string) => { readonly install: string; readonly installId: string } | undefined;
  /** Stamp length in hex digits (32-64, default 32 = 128 bits). */
  readonly stampHexLength?: number;
  readonly timeoutMs?: number;
  readonly connectTimeoutMs?: number;
  /** Public-key pinning for TLS: `sha256//<base64>`. */
  readonly pinnedPublicKey?: string;
  /** Extra CA bundle (TLS verification is always on). */
  readonly caFile?: string;
  /**
   * The proxy attested requests go through (`http://host:port`, `socks5h://…`): the addon
   * sends them, so an undici `dispatcher` (a `ProxyAgent`) cannot carry them. A request whose
   * init has a `dispatcher` while no `proxy` is set goes through that dispatcher unattested
   * (reason `app_dispatcher`), never around it. Default: none, or the environment's with
   * `NODE_USE_ENV_PROXY=1`.
   */
  readonly proxy?: string;
  /** Called once per distinct problem (fallback, unstamped body); never throws. */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Called for every request that goes out unattested (feed it to telemetry). */
  readonly onUnattested?: (reason: UnattestedReason, url: string) => void;
  /** Clock in Unix milliseconds (tests). */
  readonly now?: () => number;
  /**
   * The `fetch` a request that goes out unattested is sent with (default: the global one): the
   * app's own (a proxy agent, mTLS, its auth) when it gave one.
   */
  readonly fetch?: typeof globalThis.fetch | undefined;
}

/** A `fetch`-compatible function whose JSON bodies are stamped and sent below JavaScript. */
export type AttestedFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/** Calls `field(name, value)` for each header of a raw response header block, after its status line. */
function eachHeaderField(block: string, field: (name: string, value: string) => void): void {
  let at = block.indexOf('\r\n');
  while (at !== -1 && at + 2 < block.length) {
    const start = at + 2;
    at = block.indexOf('\r\n', start);
    const line = at === -1 ? block.slice(start) : block.slice(start, at);
    const colon = line.indexOf(':');
    if (colon > 0) field(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
}

function parseHeaderBlock(raw: string): Headers {
  const headers = new Headers();
  eachHeaderField(raw, (name, value) => {
    try {
      headers.append(name, value);
    } catch {
      // A header the WHATWG Headers class refuses is dropped, as fetch would.
    }
  });
  return headers;
}

/** Whether a header value starts or ends with the whitespace `Headers` strips from it. */
function hasEdgeSpace(text: string): boolean {
  if (text.length === 0) return false;
  const first = text.charCodeAt(0);
  const last = text.charCodeAt(text.length - 1);
  return first === 32 || first === 9 || first === 10 || first === 13 || last === 32 || last === 9 || last === 10 || last === 13;
}

/** An HTTP field name (RFC 9110 token). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The request's header lines for the addon (`name: value`, lowercase names, repeated names
 * joined with `, `), with `accept-encoding: identity`: libcurl would not decompress, so the
 * body must be what it says. A plain object is read directly; anything else goes through
 * the WHATWG `Headers` class. Either way a name or value `Headers` refuses throws its
 * `TypeError`, as `fetch` would.
 */
function headerLines(init: ConstructorParameters<typeof Headers>[0] | undefined): string[] {
  const merged = new Map<string, string>();
  if (init !== undefined && init !== null && Object.getPrototypeOf(init) === Object.prototype) {
    for (const name of Object.keys(init)) {
      const raw = (init as Record<string, unknown>)[name];
      if (raw === undefined) continue;
      const text = String(raw);
      const value = hasEdgeSpace(text) ? text.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, '') : text;
      if (!FIELD_NAME.test(name) || /[\0\r\n\u0100-\uffff]/.test(value)) {
        // The same refusal, in the same words, as the Headers class gives.
        new Headers([[name, value]]);
      }
      const lower = name.toLowerCase();
      const prior = merged.get(lower);
      merged.set(lower, prior === undefined ? value : `${prior}, ${value}`);
    }
  } else {
    new Headers(init).forEach((value, name) => {
      merged.set(name, value);
    });
  }
  merged.set('accept-encoding', 'identity');
  const lines: string[] = [];
  for (const [name, value] of merged) lines.push(`${name}: ${value}`);
  return lines;
}

/**
 * Random nonces drawn in batches: one call to the system's generator per 256, kept as hex,
 * so a request only takes the next 16 digits. Each is handed out once: the position only
 * moves forward.
 */
const noncePool = { hex: '', at: 0 };
function nonceHex(): string {
  if (noncePool.at + 16 > noncePool.hex.length) {
    noncePool.hex = randomBytes(2048).toString('hex');
    noncePool.at = 0;
  }
  const hex = noncePool.hex.slice(noncePool.at, noncePool.at + 16);
  noncePool.at += 16;
  return hex;
}

/** The API credential of header lines (`name: value`, lowercase names) by SPEC §5.3's rule. */
function credentialOfLines(lines: readonly string[]): string {
  return credentialOf((name) => {
    const prefix = `${name}: `;
    return lines.find((line) => line.startsWith(prefix))?.slice(prefix.length);
  });
}

/** Whether the body, read as UTF-8 text (a byte-order mark dropped), starts with "{" and ends with "}". */
function bracesAround(bytes: Uint8Array | string): boolean {
  if (typeof bytes === 'string') return bytes.startsWith('{') && bytes.endsWith('}');
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  return bytes.length >= bom + 2 && bytes[bom] === 0x7b && bytes[bytes.length - 1] === 0x7d;
}

/** The bytes as a Buffer over the same memory, for the addon. */
function asBuffer(body: Uint8Array | undefined): Buffer | undefined {
  return body === undefined || Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/** A body the addon can take: text as it is (the addon encodes it), bytes as a view. */
function bodyBytes(body: RequestInit['body'] | null | undefined): Uint8Array | string | undefined | 'unsupported' {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return body;
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  return 'unsupported';
}

/**
 * Creates a `fetch` whose request bodies are stamped and sent by the native addon: a JSON
 * object body gets the attestation envelope (key id, time, nonce, placeholder stamp) as its
 * last member — appended by the addon as it copies the body, or here for an addon from
 * before or a body it leaves to JavaScript — and native code overwrites the placeholder
 * with the keyed MAC in its own copy and sends it over libcurl. The MAC also
 * covers the method, authority, path and credential (`r1`), which the addon takes from the
 * request it sends — the URL as libcurl parses it, the `Host` it sets itself, the
 * `x-api-key` or bearer header it sends — never from separate values JavaScript passes. JavaScript —
 * a patched `fetch`, `http.request`, an undici interceptor — never sees the stamped bytes.
 * The response streams back as it arrives (SSE works).
 *
 * Fails open: without the addon (missing, broken, `MOAT_NATIVE_DISABLE=1`), or for bodies
 * it cannot stamp (streams, form data), the request goes through the global `fetch` with
 * the `moat-attestation: unavailable` header, `onUnattested` is called and a warning is
 * given once.
 *
 * @example
 * ```ts
 * const attestedFetch = createAttestedFetch({ onWarning: console.warn });
 * const res = await attestedFetch('http://127.0.0.1:8787/v1/messages', { method: 'POST', body: JSON.stringify(request) });
 * ```
 */
export function createAttestedFetch(options: AttestedFetchOptions = {}): AttestedFetch {
  const sender = createSender(options);
  return async (input, init = {}) => {
    const request = input instanceof Request ? input : undefined;
    const given = init.body ?? (request !== undefined && request.body !== null ? new Uint8Array(await request.arrayBuffer()) : undefined);
    if (sender.loaded() === undefined) await sender.load();
    const prepared = sender.prepare(
      sender.urlOf(request?.url ?? String(input)),
      (init.method ?? request?.method ?? 'GET').toUpperCase(),
      headerLines(init.headers ?? request?.headers),
      given,
      init.signal ?? request?.signal ?? undefined,
    );
    if (prepared.kind === 'fallback') return sender.fallback(prepared.url.href, init, prepared.body, prepared.reason);
    // The app routes this request itself (a proxy, mTLS): it goes that way, unattested, never around it.
    if ((init as { dispatcher?: unknown }).dispatcher !== undefined && options.proxy === undefined) {
      sender.warnOnce(
        'app_dispatcher',
        'a request with its own dispatcher (a proxy or mTLS agent) goes through it unattested: the addon cannot use a dispatcher; set `proxy` to send it attested through a proxy',
      );
      return sender.fallback(prepared.url.href, init, prepared.body, 'app_dispatcher');
    }
    return new Promise((resolve, reject) => {
      let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
      let settled = false;
      let handle: { abort(): void } | undefined;
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          controller = c;
        },
        cancel() {
          handle?.abort();
        },
      });
      handle = sender.transmit(prepared, {
        headers(status, block) {
          settled = true;
          try {
            resolve(new Response(NULL_BODY_STATUS.has(status) ? null : stream, { status, headers: parseHeaderBlock(block) }));
          } catch (e) {
            reject(e);
          }
        },
        data(chunk) {
          controller?.enqueue(chunk);
        },
        end() {
          try {
            controller?.close();
          } catch {
            // already cancelled by the reader
          }
        },
        error(err) {
          if (!settled) reject(err);
          else controller?.error(err);
        },
        failed(reason) {
          sender.fallback(prepared.url.href, init, sender.withEnvelope(prepared), reason).then(resolve, reject);
        },
      });
    });
  };
}

/** The response of {@link createAttestedRequest}: status, headers and a body read once. */
export interface AttestedResponse {
  readonly statusCode: number;
  /** Lowercase names; repeated headers joined with `, ` (`set-cookie` with `\n`). */
  readonly headers: Record<string, string>;
  readonly body: AttestedBody;
}

/** A response body: read it whole (`arrayBuffer`, `text`, `json`) or chunk by chunk, once. */
export interface AttestedBody extends AsyncIterable<Uint8Array> {
  arrayBuffer(): Promise<ArrayBuffer>;
  text(): Promise<string>;
  json(): Promise<unknown>;
}

/** Request options of {@link createAttestedRequest}. */
export interface AttestedRequestInit {
  readonly method?: string;
  readonly headers?: ConstructorParameters<typeof Headers>[0];
  readonly body?: string | Uint8Array;
  readonly signal?: AbortSignal;
}

/** An attested send shaped like undici's `request`. */
export type AttestedRequest = (url: string | URL, init?: AttestedRequestInit) => Promise<AttestedResponse>;

/** Chunks as they arrive, for one reader: whole or by iteration. */
class ChunkBody implements AttestedBody {
  readonly #chunks: Uint8Array[] = [];
  #ended = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  #used = false;

  push(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.#notify();
  }
  end(): void {
    this.#ended = true;
    this.#notify();
  }
  fail(error: unknown): void {
    this.#error = error;
    this.#ended = true;
    this.#notify();
  }
  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
  #take(): void {
    if (this.#used) throw new TypeError('the body was already read');
    this.#used = true;
  }
  /** Settles at the next chunk, end or failure. */
  #changed(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    this.#take();
    for (;;) {
      const chunk = this.#chunks.shift();
      if (chunk !== undefined) {
        yield chunk;
        continue;
      }
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return;
      await this.#changed();
    }
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    // Read whole: gathered when the body ends, not through the async iterator chunk by chunk.
    try {
      this.#take();
    } catch (e) {
      return Promise.reject(e);
    }
    // A small response has usually ended by the time it is read: no extra promise turns then.
    return this.#ended ? this.#whole() : this.#untilEnded().then(() => this.#whole());
  }
  async #untilEnded(): Promise<void> {
    while (!this.#ended) await this.#changed();
  }
  #whole(): Promise<ArrayBuffer> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    const chunks = this.#chunks.splice(0);
    const only = chunks.length === 1 ? (chunks[0] as Uint8Array) : undefined;
    // One chunk that is all of its memory (the addon hands each chunk's memory over): no copy.
    if (only !== undefined && only.byteOffset === 0 && only.byteLength === only.buffer.byteLength && only.buffer instanceof ArrayBuffer)
      return Promise.resolve(only.buffer);
    let length = 0;
    for (const chunk of chunks) length += chunk.byteLength;
    const out = new Uint8Array(length);
    let at = 0;
    for (const chunk of chunks) {
      out.set(chunk, at);
      at += chunk.byteLength;
    }
    return Promise.resolve(out.buffer);
  }
  async text(): Promise<string> {
    return new TextDecoder().decode(await this.arrayBuffer());
  }
  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }
}

function headerRecord(block: string): Record<string, string> {
  const out: Record<string, string> = {};
  eachHeaderField(block, (field, value) => {
    const name = field.toLowerCase();
    const prior = out[name];
    out[name] = prior === undefined ? value : `${prior}${name === 'set-cookie' ? '\n' : ', '}${value}`;
  });
  return out;
}

/**
 * Creates an attested send shaped like undici's `request` (`statusCode`, `headers`, `body`
 * with `arrayBuffer()`, `text()`, `json()` and async iteration): the same envelope, stamp and
 * fail-open behaviour as {@link createAttestedFetch}, without building a WHATWG `Response`
 * and stream for each request — for callers that do not need a `fetch`.
 *
 * @example
 * ```ts
 * const request = createAttestedRequest();
 * const { statusCode, body } = await request('https://api.example.com/v1/messages', {
 *   method: 'POST',
 *   headers: { 'content-type': 'application/json', 'x-api-key': key },
 *   body: JSON.stringify({ model, max_tokens: 64, messages }),
 * });
 * const answer = await body.json();
 * ```
 */
export function createAttestedRequest(options: AttestedFetchOptions = {}): AttestedRequest {
  const sender = createSender(options);
  const send = (input: string | URL, init: AttestedRequestInit): Promise<AttestedResponse> => {
    const prepared = sender.prepare(
      input instanceof URL ? input : sender.urlOf(input),
      (init.method ?? 'GET').toUpperCase(),
      headerLines(init.headers),
      init.body,
      init.signal,
    );
    const viaFetch = async (reason: UnattestedReason): Promise<AttestedResponse> => {
      const sent = prepared.kind === 'native' ? sender.withEnvelope(prepared) : prepared.body;
      const res = await sender.fallback(prepared.url.href, init as RequestInit, sent, reason);
      const body = new ChunkBody();
      (async () => {
        try {
          if (res.body !== null) for await (const chunk of res.body) body.push(chunk);
          body.end();
        } catch (e) {
          body.fail(e);
        }
      })();
      const headers: Record<string, string> = {};
      res.headers.forEach((value, name) => {
        headers[name] = value;
      });
      return { statusCode: res.status, headers, body };
    };
    if (prepared.kind === 'fallback') return viaFetch(prepared.reason);
    return new Promise((resolve, reject) => {
      const body = new ChunkBody();
      let settled = false;
      sender.transmit(prepared, {
        headers(status, block) {
          settled = true;
          resolve(new NativeResponse(status, block, body));
        },
        data: (chunk) => body.push(chunk),
        end: () => body.end(),
        error(err) {
          if (!settled) reject(err);
          else body.fail(err);
        },
        failed: (reason) => viaFetch(reason).then(resolve, reject),
      });
    });
  };
  // Not an async function: once the addon is loaded, a request takes no extra promise turns.
  return (input, init = {}) => {
    if (sender.loaded() === undefined) return sender.load().then(() => send(input, init));
    try {
      return send(input, init);
    } catch (e) {
      return Promise.reject(e);
    }
  };
}

/** A response from the addon; its header block is parsed when `headers` is first read. */
class NativeResponse implements AttestedResponse {
  readonly statusCode: number;
  readonly body: AttestedBody;
  #block: string;
  #headers: Record<string, string> | undefined;
  constructor(statusCode: number, block: string, body: AttestedBody) {
    this.statusCode = statusCode;
    this.#block = block;
    this.body = body;
  }
  get headers(): Record<string, string> {
    this.#headers ??= headerRecord(this.#block);
    return this.#headers;
  }
}

/** What a send needs once its body carries the envelope. */
interface PreparedSend {
  readonly kind: 'native';
  readonly native: NativeTransport;
  readonly url: URL;
  readonly method: string;
  readonly lines: string[];
  /** The body as given (a string only for an addon that encodes it); with `envelope`, the addon appends that envelope value to its copy. */
  readonly body: Uint8Array | string | undefined;
  readonly envelope: string | undefined;
  /** The origin whose enrolled install stamps the envelope (`i1`), or undefined for the release key. */
  readonly install: string | undefined;
  readonly signal: AbortSignal | undefined;
}

interface TransmitHandlers {
  headers(status: number, block: string): void;
  data(chunk: Uint8Array): void;
  end(): void;
  error(err: unknown): void;
  /** The addon refused the request (it threw): send it unattested instead. */
  failed(reason: UnattestedReason): void;
}

/** Warns once per key. */
type Warn = (key: string, message: string) => void;

/** Sends a request without the addon, marked so the verifier sees why it is unattested. */
async function sendUnattested(
  options: AttestedFetchOptions,
  url: string,
  init: RequestInit,
  body: Uint8Array | undefined,
  reason: UnattestedReason,
): Promise<Response> {
  try {
    options.onUnattested?.(reason, url);
  } catch {
    // telemetry must not break the request
  }
  const headers = new Headers(init.headers);
  headers.set(UNATTESTED_HEADER, `unavailable; reason=${reason}`);
  const sent: RequestInit = { ...init, headers };
  if (body !== undefined) sent.body = body as NonNullable<RequestInit['body']>;
  return (options.fetch ?? fetch)(url, sent);
}

/** The addon and its key id, loaded once: not looked up again per request. */
interface LoadedAddon {
  readonly native: NativeTransport | undefined;
  readonly reason: string | undefined;
  readonly kid: string;
}

/** Loads the addon on first use and keeps it. */
interface AddonLoader {
  load(): Promise<LoadedAddon>;
  loaded(): LoadedAddon | undefined;
}

function addonLoader(options: AttestedFetchOptions): AddonLoader {
  let addon: LoadedAddon | undefined;
  const load = async (): Promise<LoadedAddon> => {
    if (addon !== undefined) return addon;
    const { native, reason } =
      options.native === null
        ? { native: undefined, reason: 'disabled by options' }
        : options.native !== undefined
          ? { native: options.native, reason: undefined }
          : await loadNativeAddon<NativeTransport>(() => import('@moat/native'));
    let kid = 'unattested';
    try {
      if (native !== undefined) kid = native.keyId();
    } catch {
      // an addon that cannot even name its key is treated as missing
    }
    addon ??= { native, reason, kid };
    return addon;
  };
  return { load, loaded: () => addon };
}

/** Appending the envelope in JavaScript, for sends the addon does not append to. */
function envelopeAppender(warn: Warn) {
  /**
   * `body` with the envelope appended as the protocol's `appendEnvelope` does it in JavaScript
   * — a body that is not a JSON object text stays as it is; one that cannot take the envelope
   * stays too, with a warning.
   */
  const appendInJs = (body: Uint8Array | string, envelope: string): Uint8Array => {
    const text = typeof body === 'string' ? body : new TextDecoder().decode(body);
    if (bracesAround(text)) {
      try {
        return Buffer.from(appendEnvelope(text, envelope));
      } catch (e) {
        warn('envelope', `no envelope added (${errorMessage(e)})`);
      }
    }
    return typeof body === 'string' ? Buffer.from(body) : body;
  };

  /** The bytes a send without the addon's append carries: the envelope appended in JavaScript. */
  const withEnvelope = ({ body, envelope }: PreparedSend): Uint8Array | undefined =>
    body === undefined
      ? undefined
      : envelope !== undefined
        ? appendInJs(body, envelope)
        : typeof body === 'string'
          ? Buffer.from(body)
          : body;

  return { appendInJs, withEnvelope };
}

/**
 * The last URL parsed, reused for the same text: a client sends to one endpoint over and
 * over. Only while no callback of the options is handed the URL, which could change it.
 */
function urlParser(options: AttestedFetchOptions): (text: string) => URL {
  const shareUrls = options.envelopeFor === undefined && options.bindRequestFor === undefined && options.installFor === undefined;
  let lastUrl: { text: string; url: URL } | undefined;
  return (text) => {
    if (!shareUrls) return new URL(text);
    if (lastUrl?.text !== text) lastUrl = { text, url: new URL(text) };
    return lastUrl.url;
  };
}

/** What a placeholder binds: nothing (v1), the request (r1), or the request under an install's key (i1, kid = install id). */
type PlaceholderBinding = 'request' | 'install' | undefined;

/** Placeholder makers per key id and binding (the addon's key id for r1 and v1, an install id for i1), made on first use. */
/**
 * The same placeholder envelope (scheme, key or install id, stamp length) with a new time
 * and nonce: what a request sent again needs, since its first copy's nonce may be spent.
 */
function renewedEnvelope(envelope: string, now: () => number): string {
  const parts = envelope.split('.');
  if (parts.length !== 5) throw new Error('expected an envelope of five parts');
  const [scheme, id, , , stamp] = parts as [string, string, string, string, string];
  return `${scheme}.${id}.${Math.floor(now() / 1000)}.${nonceHex()}.${stamp}`;
}

function placeholderMaker(options: AttestedFetchOptions, now: () => number): (kid: string, binding: PlaceholderBinding) => string {
  const makers = new Map<string, (ts: number, nonce: string) => string>();
  const length = options.stampHexLength === undefined ? {} : { stampHexLength: options.stampHexLength };
  return (kid: string, binding: PlaceholderBinding): string => {
    const id = `${binding ?? 'none'}.${kid}`;
    let make = makers.get(id);
    if (make === undefined) {
      make = placeholderEnvelopes({ kid, ...length, ...(binding === undefined ? {} : { binding }) });
      makers.set(id, make);
    }
    return make(Math.floor(now() / 1000), nonceHex());
  };
}

/** Methods a client may send again when their answer was lost (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Hands prepared sends to the addon and turns its events into handler calls. */
function transmitter(
  options: AttestedFetchOptions,
  warn: Warn,
  withEnvelope: (sent: PreparedSend) => Uint8Array | undefined,
  releaseEnvelope: () => string,
) {
  /** Hands the request to the addon; events come back through `on`. Returns the abort handle. */
  const transmit = (prepared: PreparedSend, on: TransmitHandlers): { abort(): void } | undefined => {
    const { native, url, method, lines, envelope, install, signal } = prepared;
    let { body } = prepared;
    let handle: { abort(): void } | undefined;
    const onAbort = () => handle?.abort();
    // One object shape for every request; the addon reads an absent option as undefined.
    const request: Complete<NativeRequestOptions> = {
      method,
      url: url.href,
      headers: lines,
      body: typeof body === 'string' ? body : asBuffer(body),
      envelope,
      timeoutMs: options.timeoutMs,
      connectTimeoutMs: options.connectTimeoutMs,
      pinnedPublicKey: options.pinnedPublicKey,
      caFile: options.caFile,
      proxy: options.proxy,
      install,
    };
    // A reused connection closed after the body went out, before any answer: the server may
    // have read and acted on it. Only an idempotent request goes again (once, freshly
    // stamped), as fetch and undici do; a POST fails, and the app's retry policy (the SDK's
    // `maxRetries`, which counts its retries) decides, so a model never runs twice unasked.
    let resent = false;
    const onEvent: Parameters<NativeTransport['request']>[1] = (event, a, b, c) => {
      if (event === 'error' && !signal?.aborted && String(a ?? '').startsWith('resend:')) {
        if (!resent && IDEMPOTENT.has(method.toUpperCase())) {
          resent = true;
          try {
            // Only an envelope the addon appends can be renewed here; a body that may hold one
            // of its own is never sent twice.
            if (request.envelope !== undefined) request.envelope = renewedEnvelope(request.envelope, options.now ?? Date.now);
            else if (request.body !== undefined) throw new Error('a body without a renewable envelope');
            handle = native.request(request as NativeRequestOptions, onEvent);
            return;
          } catch {
            // The error below is the request's outcome.
          }
        }
        a = `the connection closed after the request went out, before any answer; a ${method} is not sent again (the server may have acted on it)`;
      }
      if (event === 'headers') {
        const stamp = STAMP_RESULTS[c ?? 1] ?? 'no_envelope';
        if (stamp !== 'stamped' && body !== undefined && stamp !== 'no_envelope')
          warn(`stamp_${stamp}`, `the addon did not stamp the body (${stamp})`);
        on.headers(a as number, b ?? '');
      } else if (event === 'data') {
        // The addon hands the chunk's memory over: a view, not a copy.
        const chunk = a as Buffer;
        on.data(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      } else if (event === 'end') {
        signal?.removeEventListener('abort', onAbort);
        on.end();
      } else {
        signal?.removeEventListener('abort', onAbort);
        const message = String(a ?? 'transport error');
        on.error(
          signal?.aborted
            ? (signal.reason ?? new DOMException('This operation was aborted', 'AbortError'))
            : new TypeError(`fetch failed: ${message}`),
        );
      }
    };
    try {
      try {
        handle = native.request(request as NativeRequestOptions, onEvent);
      } catch (e) {
        // The install was forgotten since the envelope was made: the release key stamps it (r1).
        if (install !== undefined && envelope !== undefined && (e as { code?: unknown }).code === 'ERR_NATIVE_INSTALL_UNKNOWN') {
          warn('install_unknown', `no enrolled install for ${install} in the addon; stamped with the release key`);
          request.install = undefined;
          request.envelope = releaseEnvelope();
          handle = native.request(request as NativeRequestOptions, onEvent);
          signal?.addEventListener('abort', onAbort, { once: true });
          return handle;
        }
        // A body the addon cannot append to as it stands (a byte-order mark, bytes that are
        // not UTF-8, an envelope already there): JavaScript decides, as without the addon.
        if (envelope === undefined || (e as { code?: unknown }).code !== 'ERR_NATIVE_ENVELOPE_BODY') throw e;
        body = withEnvelope(prepared);
        request.body = asBuffer(body);
        request.envelope = undefined;
        handle = native.request(request as NativeRequestOptions, onEvent);
      }
    } catch (e) {
      warn('addon_failed', `native transport failed (${errorMessage(e)}); requests go out unattested`);
      on.failed('addon_failed');
      return undefined;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    return handle;
  };

  return transmit;
}

/** The part both attested sends share: the envelope, the fallback, the addon's events. */
function createSender(options: AttestedFetchOptions) {
  const warner = createWarner('attest', options.onWarning);
  const warn: Warn = (key, message) => warner(message, key);
  const addons = addonLoader(options);
  const { appendInJs, withEnvelope } = envelopeAppender(warn);
  const placeholder = placeholderMaker(options, options.now ?? Date.now);

  /** Prepares a send once the addon is loaded (see `loaded` and `load`). */
  const prepare = (
    url: URL,
    method: string,
    lines: string[],
    given: RequestInit['body'] | undefined,
    signal: AbortSignal | undefined,
  ): PreparedSend | { kind: 'fallback'; url: URL; body: Uint8Array | undefined; reason: UnattestedReason } => {
    const addon = addons.loaded();
    if (addon === undefined) throw new Error('the addon is not loaded yet: await load() first');
    const bytes = bodyBytes(given);
    const { native, reason, kid } = addon;
    if (bytes === 'unsupported') {
      warn('unsupported_body', 'a streaming or form body cannot be stamped; sent unattested');
      return { kind: 'fallback', url, body: undefined, reason: 'unsupported_body' };
    }
    // The addon encodes a string body and appends the envelope as it makes its own copy: no
    // JSON parse and no buffer here. Without it (or an addon from before), JavaScript does both.
    const inAddon = native?.appendsEnvelope === true;
    let body: Uint8Array | string | undefined = bytes;
    let envelope: string | undefined;
    let install: string | undefined;
    // Only a body that reads as "{…}" gets the envelope; any other goes as it is, without a warning.
    if (body !== undefined && bracesAround(body) && (options.envelopeFor?.(url) ?? true)) {
      try {
        const enrolled =
          native === undefined || options.installFor === undefined ? undefined : options.installFor(url, credentialOfLines(lines));
        install = enrolled?.install;
        envelope =
          enrolled !== undefined
            ? placeholder(enrolled.installId, 'install')
            : placeholder(kid, (options.bindRequestFor?.(url) ?? true) ? 'request' : undefined);
      } catch (e) {
        warn('envelope', `no envelope added (${errorMessage(e)})`);
      }
      if (envelope !== undefined && !inAddon) {
        body = appendInJs(body, envelope);
        envelope = undefined;
      }
    }
    if (typeof body === 'string' && !inAddon) body = Buffer.from(body);
    if (native === undefined) {
      warn('addon_missing', `native addon unavailable (${reason ?? 'not loaded'}); requests go out unattested`);
      return { kind: 'fallback', url, body: body as Uint8Array | undefined, reason: 'addon_missing' };
    }
    if (signal?.aborted) throw signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
    return { kind: 'native', native, url, method, lines, body, envelope, install, signal };
  };

  return {
    prepare,
    transmit: transmitter(options, warn, withEnvelope, () => placeholder(addons.loaded()?.kid ?? 'unattested', 'request')),
    fallback: (url: string, init: RequestInit, body: Uint8Array | string | undefined, reason: UnattestedReason) =>
      sendUnattested(options, url, init, typeof body === 'string' ? Buffer.from(body) : body, reason),
    warnOnce: warn,
    withEnvelope,
    urlOf: urlParser(options),
    loaded: addons.loaded,
    load: addons.load,
  };
}
