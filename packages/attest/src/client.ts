import { randomBytes } from 'node:crypto';
import { appendEnvelope, placeholderEnvelope } from '@moat/protocol';
import { createWarner, errorMessage, loadNativeAddon, type NativeBinding, STAMP_RESULTS } from '@moat/protocol/support';

/** The native transport's interface (`@moat/native`'s request and key id), injectable for tests. */
export type NativeTransport = Pick<NativeBinding, 'request' | 'keyId'>;

/** Request header that tells the verifier the client could not attest this request. */
export const UNATTESTED_HEADER = 'moat-attestation';

/** Why a request went out unattested. */
export type UnattestedReason = 'addon_missing' | 'addon_failed' | 'unsupported_body';

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
  /** Stamp length in hex digits (32-64, default 32 = 128 bits). */
  readonly stampHexLength?: number;
  readonly timeoutMs?: number;
  readonly connectTimeoutMs?: number;
  /** Public-key pinning for TLS: `sha256//<base64>`. */
  readonly pinnedPublicKey?: string;
  /** Extra CA bundle (TLS verification is always on). */
  readonly caFile?: string;
  /** Called once per distinct problem (fallback, unstamped body); never throws. */
  readonly onWarning?: (message: string) => void;
  /** Called for every request that goes out unattested (feed it to telemetry). */
  readonly onUnattested?: (reason: UnattestedReason, url: string) => void;
  /** Clock in Unix milliseconds (tests). */
  readonly now?: () => number;
}

/** A `fetch`-compatible function whose JSON bodies are stamped and sent below JavaScript. */
export type AttestedFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

function parseHeaderBlock(raw: string): Headers {
  const headers = new Headers();
  for (const line of raw.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    try {
      headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    } catch {
      // A header the WHATWG Headers class refuses is dropped, as fetch would.
    }
  }
  return headers;
}

async function bodyBytes(body: RequestInit['body'] | null | undefined): Promise<Uint8Array | undefined | 'unsupported'> {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return Buffer.from(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  return 'unsupported';
}

/**
 * Creates a `fetch` whose request bodies are stamped and sent by the native addon: for a
 * JSON object body it appends the attestation envelope (key id, time, nonce, placeholder
 * stamp) as the last member, and hands the bytes to native code, which overwrites the
 * placeholder with the keyed MAC in its own copy and sends it over libcurl. The MAC also
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
  const warner = createWarner('attest', options.onWarning);
  const warn = (key: string, message: string) => warner(message, key);
  const now = options.now ?? Date.now;

  const fallback = async (url: string, init: RequestInit, body: Uint8Array | undefined, reason: UnattestedReason): Promise<Response> => {
    try {
      options.onUnattested?.(reason, url);
    } catch {
      // telemetry must not break the request
    }
    const headers = new Headers(init.headers);
    headers.set(UNATTESTED_HEADER, `unavailable; reason=${reason}`);
    return fetch(url, { ...init, headers, ...(body === undefined ? {} : { body: body as NonNullable<RequestInit['body']> }) });
  };

  return async (input, init = {}) => {
    const request = input instanceof Request ? input : undefined;
    const url = new URL(request?.url ?? String(input));
    const method = (init.method ?? request?.method ?? 'GET').toUpperCase();
    const headers = new Headers(init.headers ?? request?.headers);
    let body = await bodyBytes(
      init.body ?? (request !== undefined && request.body !== null ? new Uint8Array(await request.arrayBuffer()) : undefined),
    );
    const { native, reason } =
      options.native === null
        ? { native: undefined, reason: 'disabled by options' }
        : options.native !== undefined
          ? { native: options.native, reason: undefined }
          : await loadNativeAddon<NativeTransport>(() => import('@moat/native'));
    if (body === 'unsupported') {
      warn('unsupported_body', 'a streaming or form body cannot be stamped; sent unattested');
      return fallback(url.href, init, undefined, 'unsupported_body');
    }
    let kid = 'unattested';
    try {
      if (native !== undefined) kid = native.keyId();
    } catch {
      // an addon that cannot even name its key is treated as missing
    }
    if (body !== undefined && (options.envelopeFor?.(url) ?? true)) {
      // A string body is used as it is: decoding bytes back to text would cost a copy.
      const text = typeof init.body === 'string' ? init.body : new TextDecoder().decode(body);
      if (text.startsWith('{') && text.endsWith('}')) {
        try {
          const envelope = placeholderEnvelope({
            kid,
            ts: Math.floor(now() / 1000),
            nonce: randomBytes(8).toString('hex'),
            ...(options.stampHexLength === undefined ? {} : { stampHexLength: options.stampHexLength }),
            ...((options.bindRequestFor?.(url) ?? true) ? { binding: 'request' as const } : {}),
          });
          body = Buffer.from(appendEnvelope(text, envelope));
        } catch (e) {
          warn('envelope', `no envelope added (${errorMessage(e)})`);
        }
      }
    }
    if (native === undefined) {
      warn('addon_missing', `native addon unavailable (${reason ?? 'not loaded'}); requests go out unattested`);
      return fallback(url.href, init, body, 'addon_missing');
    }

    // libcurl would not decompress: ask for identity so the Response body is what it says.
    headers.set('accept-encoding', 'identity');
    const lines: string[] = [];
    headers.forEach((value, name) => {
      lines.push(`${name}: ${value}`);
    });
    const signal = init.signal ?? request?.signal ?? undefined;
    if (signal?.aborted) throw signal.reason ?? new DOMException('This operation was aborted', 'AbortError');

    return new Promise<Response>((resolve, reject) => {
      let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
      let settled = false;
      let handle: { abort(): void };
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          controller = c;
        },
        cancel() {
          handle?.abort();
        },
      });
      const onAbort = () => handle?.abort();
      try {
        handle = native.request(
          {
            method,
            url: url.href,
            headers: lines,
            ...(body === undefined ? {} : { body: Buffer.from(body.buffer, body.byteOffset, body.byteLength) }),
            ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
            ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
            ...(options.pinnedPublicKey === undefined ? {} : { pinnedPublicKey: options.pinnedPublicKey }),
            ...(options.caFile === undefined ? {} : { caFile: options.caFile }),
          },
          (event, a, b, c) => {
            if (event === 'headers') {
              const status = a as number;
              const stamp = STAMP_RESULTS[c ?? 1] ?? 'no_envelope';
              if (stamp !== 'stamped' && body !== undefined && stamp !== 'no_envelope')
                warn(`stamp_${stamp}`, `the addon did not stamp the body (${stamp})`);
              settled = true;
              try {
                resolve(new Response(NULL_BODY_STATUS.has(status) ? null : stream, { status, headers: parseHeaderBlock(b ?? '') }));
              } catch (e) {
                reject(e);
              }
            } else if (event === 'data') controller?.enqueue(new Uint8Array(a as Buffer));
            else if (event === 'end') {
              signal?.removeEventListener('abort', onAbort);
              try {
                controller?.close();
              } catch {
                // already cancelled by the reader
              }
            } else {
              signal?.removeEventListener('abort', onAbort);
              const message = String(a ?? 'transport error');
              const err = signal?.aborted
                ? (signal.reason ?? new DOMException('This operation was aborted', 'AbortError'))
                : new TypeError(`fetch failed: ${message}`);
              if (!settled) reject(err);
              else controller?.error(err);
            }
          },
        );
      } catch (e) {
        warn('addon_failed', `native transport failed (${errorMessage(e)}); requests go out unattested`);
        fallback(url.href, init, body, 'addon_failed').then(resolve, reject);
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  };
}
