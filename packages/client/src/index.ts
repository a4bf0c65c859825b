/**
 * `@moat/client` — Moat's client layers composed for someone else's app: one `fetch` to hand
 * to `new Anthropic({ fetch })` or the Vercel AI SDK's `createAnthropic({ fetch })`. Each
 * layer is an interceptor over one request and its response, composed in a checked order
 * (observe → history → tag → stamp): gateway detection, signed-block hygiene, the
 * attribution block with the fingerprint, the anti-distillation gates and the attestation
 * stamp, plus process hardening for apps that own their process. The endpoint's GrowthBook
 * flags, read once per endpoint, switch any layer off for everyone. Every layer fails open:
 * a broken layer warns once, reports `layer_degraded` telemetry, and the request goes through.
 *
 * @packageDocumentation
 */
import type { HardenOptions } from '@moat/harden';
import { credentialOf } from '@moat/protocol';
import type { MessagesRequest } from '@moat/protocol/messages';
import { createWarner, errorMessage, type Warner, waitAtMost } from '@moat/protocol/support';
import type { LayerStatus, MoatCall, MoatLayer, Send } from './compose.js';
import { callSignal, checkLayers, composeLayers, degradedEvent } from './compose.js';
import { discover, type Endpoint, endpointBase } from './endpoint.js';
import { antiDistillationLayer } from './layers/anti-distillation.js';
import { attestationLayer, type BindingPins } from './layers/attestation.js';
import { fingerprintLayer, userAgentLayer } from './layers/attribution.js';
import { gatewayLayer } from './layers/gateway.js';
import { hardenLayer } from './layers/harden.js';
import type { InstallKeyOptions } from './layers/install-keys.js';
import { signedBlocksLayer } from './layers/signed-blocks.js';

export * from './compose.js';
export type { Endpoint } from './endpoint.js';
export * from './errors.js';
export { type AntiDistillationLayerOptions, antiDistillationLayer } from './layers/anti-distillation.js';
export { type AttestationLayerOptions, attestationLayer, type BindingPins } from './layers/attestation.js';
export { type AttributionOptions, fingerprintLayer, userAgentLayer } from './layers/attribution.js';
export { gatewayLayer } from './layers/gateway.js';
export { hardenLayer } from './layers/harden.js';
export { defaultInstallDir, type InstallKeyOptions } from './layers/install-keys.js';
export { signedBlocksLayer } from './layers/signed-blocks.js';
export { type ClientSettings, defaultSettingsFile, readClientSettings } from './settings.js';

/** Options of {@link createMoatFetch}. */
export interface MoatFetchOptions {
  /** The deployment's fingerprint salt (the verifier's `fingerprintSalt`). */
  readonly salt: string;
  /** Your client's version, sent as `cv` in the attribution block. */
  readonly clientVersion: string;
  /** Entry point sent as `ep` (default `sdk`). */
  readonly entrypoint?: string | undefined;
  /**
   * Your product's name, added to the user agent as `<product>/<clientVersion>` (default
   * `moat-client`); set the verifier's `userAgentProduct` to the same, so a relay that
   * replaces the user agent shows up (`ua_mismatch`).
   */
  readonly userAgentProduct?: string | undefined;
  /**
   * Gate 1 of anti-distillation, the compile-time flag (default false). Decoys are asked for
   * only when it is set, the entrypoint is `cli` and the endpoint's flag says so.
   */
  readonly antiDistillation?: boolean | undefined;
  /**
   * Harden the process (`prctl(PR_SET_DUMPABLE, 0)`, tracer detection) when the first Moat
   * endpoint is discovered, unless it says `moat-kill-harden` (default off: a library in
   * someone else's server should not change its process). `true` or the hardening options.
   */
  readonly harden?: boolean | HardenOptions | undefined;
  /**
   * The layers, outermost first (default {@link defaultLayers}); a function gets the
   * defaults to change. The order is checked when the fetch is created.
   */
  readonly layers?: readonly MoatLayer[] | ((defaults: readonly MoatLayer[]) => readonly MoatLayer[]) | undefined;
  /** The fetch requests go through when not attested (default: the global `fetch`). */
  readonly fetch?: typeof fetch | undefined;
  /**
   * The proxy attested requests go through (`http://host:port`, `socks5h://…`). The addon
   * sends them, so neither this `fetch`'s agent nor a request's `dispatcher` (the SDK's
   * `fetchOptions`) can carry them: a request that brings its own `dispatcher` while this is
   * unset goes through that dispatcher unattested, with a warning, never around it.
   */
  readonly proxy?: string | undefined;
  /** Where warnings go (a layer that fails open says so once). */
  readonly onWarning?: ((message: string) => void) | undefined;
  /**
   * Request binding (`r1` stamps, protocol 1.1). `discover` (default): an origin is bound once
   * its discovery document advertised `request_binding`, and stays pinned — a later document
   * without it (a relay that edits discovery to make the client stamp `v1`) does not unbind it.
   * `always`: a release build that knows its verifier speaks 1.1 binds every Moat origin,
   * whatever discovery says.
   */
  readonly requestBinding?: 'discover' | 'always' | undefined;
  /** Origins pinned to request binding; pass a persistent store to keep pins across runs (default: in memory). */
  readonly bindingPins?: BindingPins | undefined;
  /**
   * Per-install keys (protocol 1.2). Where an endpoint's discovery advertises `install_keys`,
   * the first Moat call enrolls this install (the key pair made and kept by `@moat/native`, the
   * enrollment stamped with the release key) and every call after is stamped `i1` with the
   * install's own key; an origin enrolled once keeps `i1` (pinned in the state file). Any
   * failure leaves calls with `r1`, warns once, reports `layer_degraded` and retries after a
   * back-off. Options: the state directory (default `MOAT_INSTALL_DIR`, else
   * `$XDG_CONFIG_HOME/moat/installs`, else `~/.config/moat/installs`), the keystore, the
   * back-off; `false` switches per-install keys off.
   */
  readonly installKeys?: InstallKeyOptions | false | undefined;
}

/** A `fetch` with Moat's client layers. */
export type MoatFetch = typeof fetch & {
  /**
   * Discovers the endpoint of `url` now (as its first Messages request would) and tells how
   * each layer is doing there. `url` is the SDK's base URL (or a Messages URL): a path in it
   * is where the endpoint is mounted. `apiKey` enables its telemetry before the first request.
   */
  connect(url: string | URL, apiKey?: string): Promise<readonly LayerStatus[]>;
  /** Flushes the telemetry of every endpoint. */
  close(): Promise<void>;
};

/** The routes whose bodies the layers tag and stamp: Messages, count_tokens and Message Batch creates. */
const MESSAGES_PATHS = /\/v1\/messages(?:\/count_tokens|\/batches)?$/;
/** A Message Batch create: `{ requests: [{ custom_id, params }] }`, each `params` a Messages body. */
const BATCHES_PATH = /\/v1\/messages\/batches$/;

/**
 * A path as a verifier routes it: escapes of unreserved characters decoded (`%6D` is `m`),
 * empty segments merged, letter case ignored. `/v1//messages` and `/V1/%6Dessages` reach the
 * Messages route there, so they are Messages requests here too, tagged and stamped.
 */
function routedPath(pathname: string): string {
  return pathname
    .replace(/%([0-9A-Fa-f]{2})/g, (encoded, hex: string) => {
      const c = String.fromCharCode(Number.parseInt(hex, 16));
      return /^[A-Za-z0-9\-._~]$/.test(c) ? c : encoded;
    })
    .replace(/\/{2,}/g, '/')
    .toLowerCase();
}

/**
 * The default layers for `options`, outermost first: gateway detection, hardening (when
 * asked for), signed-block hygiene, the user agent, the fingerprint, anti-distillation, and
 * the attestation stamp last.
 */
export function defaultLayers(options: MoatFetchOptions): readonly MoatLayer[] {
  const { onWarning, clientVersion } = options;
  const entrypoint = options.entrypoint ?? 'sdk';
  const harden = options.harden === true ? {} : options.harden === false ? undefined : options.harden;
  return [
    gatewayLayer({ onWarning }),
    ...(harden === undefined ? [] : [hardenLayer({ onWarning, ...harden })]),
    signedBlocksLayer(),
    userAgentLayer({ product: options.userAgentProduct ?? 'moat-client', clientVersion }),
    fingerprintLayer({ salt: options.salt, clientVersion, entrypoint, onWarning }),
    antiDistillationLayer({ compileTime: options.antiDistillation === true, entrypoint, onWarning }),
    attestationLayer({
      onWarning,
      // What goes out unattested goes through the app's fetch, as every other request does.
      fetch: options.fetch,
      ...(options.proxy === undefined ? {} : { proxy: options.proxy }),
      requestBinding: options.requestBinding,
      bindingPins: options.bindingPins,
      installKeys: options.installKeys === false ? false : { fetch: options.fetch, ...options.installKeys },
    }),
  ];
}

function apiKeyOf(headers: Headers): string | undefined {
  const key = credentialOf((name) => headers.get(name));
  return key === '' ? undefined : key;
}

/** Whether a parsed body is a Messages request this client can tag. */
function isMessagesBody(value: unknown): value is MessagesRequest {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return typeof (value as { model?: unknown }).model === 'string';
}

/** Whether a parsed body is a Message Batch create (`requests` a list). */
function isBatchCreate(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return Array.isArray((value as { requests?: unknown }).requests);
}

/** Strict UTF-8 (a body that is not is left as bytes), the byte order mark kept as the app sent it. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The body text of a request, when it is text this client can read without consuming the app's copy. */
async function bodyTextOf(input: string | URL | Request, init: RequestInit): Promise<string | undefined> {
  const { body } = init;
  if (typeof body === 'string') return body;
  // Bytes an app encoded itself are the same JSON text: tagged like a string body, or left as they are if not UTF-8.
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
    const bytes = body instanceof ArrayBuffer ? new Uint8Array(body) : new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    try {
      return UTF8.decode(bytes);
    } catch {
      return undefined;
    }
  }
  // A Blob (a File) is read as the bytes it holds; a stream or a form is left as it is (reading one would consume it).
  if (typeof Blob !== 'undefined' && body instanceof Blob) {
    try {
      return UTF8.decode(new Uint8Array(await body.arrayBuffer()));
    } catch {
      return undefined;
    }
  }
  return input instanceof Request && body === undefined ? await input.clone().text() : undefined;
}

/** `JSON.rawJSON` where the runtime has it (Node 21+, Bun, current browsers). */
const rawJSON = (JSON as { rawJSON?: (text: string) => unknown }).rawJSON;

/**
 * Keeps a number the way the app wrote it when a double would change it (an integer past
 * 2^53, a literal past the double range): the body goes out serialized again, and an id in a
 * tool's input must reach the API with every digit. Every other value is parsed as usual.
 */
function losslessNumbers(_key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== 'number' || rawJSON === undefined || context?.source === undefined) return value;
  const exact = Number.isFinite(value) && (Number.isSafeInteger(value) || !/^-?[0-9]+$/.test(context.source));
  return exact ? value : rawJSON(context.source);
}

/**
 * Whether a JSON text may hold a number a double would change: 16 digits in a row (2^53 has
 * 16) or a three-digit exponent. Most bodies have neither, and parse without the reviver,
 * which costs about five times the parse itself.
 */
const MAY_LOSE_DIGITS = /[0-9]{16}|[eE][+-]?[0-9]{3}/;

/** The call for a request: a Moat call (its body parsed when it is a Messages body) when `endpoint` speaks Moat. */
async function callOf(input: MoatCall['input'], init: RequestInit, at?: Endpoint, warn?: Warner): Promise<MoatCall> {
  const request = input instanceof Request ? input : undefined;
  const url = new URL(request?.url ?? String(input));
  const method = (init.method ?? request?.method ?? 'GET').toUpperCase();
  const headers = new Headers(init.headers ?? request?.headers);
  const call: MoatCall = { input, init, url, method, headers, apiKey: apiKeyOf(headers) };
  if (at === undefined) return call;
  const text = await bodyTextOf(input, init);
  if (text === undefined) return { ...call, endpoint: at };
  try {
    const parsed = (
      MAY_LOSE_DIGITS.test(text) ? JSON.parse(text, losslessNumbers as (key: string, value: unknown) => unknown) : JSON.parse(text)
    ) as unknown;
    if (isMessagesBody(parsed)) return { ...call, endpoint: at, body: parsed };
    if (BATCHES_PATH.test(routedPath(url.pathname)) && isBatchCreate(parsed)) return { ...call, endpoint: at, batch: parsed };
  } catch (error) {
    warn?.(`request body left as it was (${errorMessage(error)})`, 'body');
  }
  return { ...call, endpoint: at, bodyText: text };
}

/** The first wait before an endpoint whose discovery did not settle is asked again, ms; doubled per failure. */
const DISCOVERY_RETRY_MS = 2_000;
/** The longest wait between two discoveries of an endpoint that does not settle, ms. */
const DISCOVERY_MAX_RETRY_MS = 60_000;
/** The wait before an endpoint that could not be reached is asked again by a request, ms: a retry's delay. */
const DISCOVERY_UNREACHABLE_RETRY_MS = 250;
/** The wait before an endpoint whose discovery answered 404 is asked again, ms. */
const DISCOVERY_ABSENT_RETRY_MS = 5 * 60_000;

/** An endpoint as known: its discovery, when to ask again (never, once settled), and the asking under way. */
interface KnownEndpoint {
  readonly endpoint: Promise<Endpoint>;
  retryAt: number;
  failures: number;
  next?: KnownEndpoint;
}

/** The end of the chain: a plain call goes out exactly as the app made it, a Moat call with its (tagged) body. */
function transmitter(base: typeof fetch): Send {
  return (call) => {
    if (call.endpoint === undefined) return base(call.input, call.init);
    const init: RequestInit = { ...call.init, method: call.method, headers: call.headers };
    // Sent by URL, a Request's own signal would be lost: the app's cancellation must still reach the call.
    if (init.signal === undefined && call.input instanceof Request) init.signal = call.input.signal;
    const parsed = call.body ?? call.batch;
    const body = parsed === undefined ? call.bodyText : JSON.stringify(parsed);
    if (body !== undefined) init.body = body;
    return (call.transport ?? base)(call.input instanceof Request ? call.url.href : call.input, init);
  };
}

/** A layer's status (none for a layer without one); one that cannot say is `degraded` with the reason. */
function statusOf(layer: MoatLayer, e: Endpoint): LayerStatus[] {
  try {
    return layer.status === undefined ? [] : [layer.status(e)];
  } catch (error) {
    return [{ layer: layer.name, state: 'degraded', detail: errorMessage(error) }];
  }
}

/**
 * Creates the fetch. Requests that are not Messages requests, or that go to an endpoint
 * without Moat's discovery document, pass through untouched (only gateway detection looks at
 * their answers).
 *
 * @throws {MoatClientError} when `layers` is not a valid composition (a layer after the stamp, two of one name).
 * @example
 * ```ts
 * import Anthropic from '@anthropic-ai/sdk';
 * import { createMoatFetch } from '@moat/client';
 * const moatFetch = createMoatFetch({ salt: process.env.MOAT_SALT ?? 'moat-dev-salt', clientVersion: '1.0.0' });
 * const client = new Anthropic({ baseURL: 'http://127.0.0.1:8787', fetch: moatFetch });
 * ```
 */
export function createMoatFetch(options: MoatFetchOptions): MoatFetch {
  const warn = createWarner('client', options.onWarning);
  const base = options.fetch ?? globalThis.fetch;
  const defaults = defaultLayers(options);
  const chosen = typeof options.layers === 'function' ? options.layers(defaults) : options.layers;
  const layers = checkLayers(chosen ?? defaults);
  const endpoints = new Map<string, KnownEndpoint>();
  const failed = (layer: MoatLayer, endpoint: Endpoint | undefined, error: unknown) => {
    warn(`${layer.name} failed open (${errorMessage(error)})`, `layer:${layer.name}`);
    endpoint?.report(degradedEvent(layer.name, errorMessage(error)));
  };
  const context = {
    fetch: base,
    clientVersion: options.clientVersion,
    entrypoint: options.entrypoint ?? 'sdk',
    warn,
    onWarning: options.onWarning,
  };
  const set = async (e: Endpoint) => {
    for (const layer of layers)
      try {
        await layer.setup?.(e);
      } catch (error) {
        failed(layer, e, error);
      }
    return e;
  };
  // One endpoint per base URL: a verifier mounted under a path (`https://gw.example/anthropic`)
  // is discovered there, not at the origin's root.
  const discovered = (base: string, apiKey: string | undefined, failures: number): KnownEndpoint => {
    const known: KnownEndpoint = { endpoint: discover(base, apiKey, context).then(set), retryAt: Number.POSITIVE_INFINITY, failures };
    // A discovery that did not settle (the endpoint down, slow, broken, its flags unread) is asked
    // again after a back-off, so a passing outage does not leave the process untagged for good.
    void known.endpoint.then((e) => {
      if (e.settled) return;
      known.failures += 1;
      known.retryAt =
        Date.now() +
        (e.retry === 'soon'
          ? DISCOVERY_UNREACHABLE_RETRY_MS
          : e.retry === 'rarely'
            ? DISCOVERY_ABSENT_RETRY_MS
            : Math.min(DISCOVERY_RETRY_MS * 2 ** (known.failures - 1), DISCOVERY_MAX_RETRY_MS));
    });
    return known;
  };
  const endpoint = (base: string, apiKey: string | undefined): Promise<Endpoint> => {
    const known = endpoints.get(base);
    if (known === undefined) {
      const first = discovered(base, apiKey, 0);
      endpoints.set(base, first);
      return first.endpoint;
    }
    if (Date.now() >= known.retryAt && known.next === undefined) {
      const next = discovered(base, apiKey, known.failures);
      known.next = next;
      const adopted = next.endpoint.then(async (e) => {
        endpoints.set(base, e.settled ? { ...next, failures: 0 } : next);
        void (await known.endpoint).telemetry?.close();
        return e;
      });
      // What is known tags nothing (the endpoint was down, broken, absent): this call waits for
      // the answer, as the first did (discovery's own 2 s bound it). Otherwise it goes with
      // what is known, and the next ones with the answer.
      return known.endpoint.then((e) => (e.features.length === 0 ? adopted : e));
    }
    return known.endpoint;
  };
  const send = composeLayers(layers, transmitter(base), failed);

  const moatFetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    let call = await callOf(input, init);
    if (call.method === 'POST' && MESSAGES_PATHS.test(routedPath(call.url.pathname))) {
      const signal = callSignal(call);
      try {
        // The app's cancellation holds while the endpoint is discovered, as it would for the request itself.
        const e = (await waitAtMost(endpoint(endpointBase(call.url), call.apiKey), undefined, signal)) as Endpoint;
        if (e.features.length > 0) call = await callOf(input, init, e, warn);
      } catch (error) {
        if (signal?.aborted === true) throw signal.reason;
        const base = endpointBase(call.url);
        warn(`Moat layers off for ${base} (${errorMessage(error)})`, `endpoint:${base}`);
      }
    }
    return send(call);
  };

  return Object.assign(moatFetch as typeof fetch, {
    connect: async (url: string | URL, apiKey?: string): Promise<readonly LayerStatus[]> => {
      const e = await endpoint(endpointBase(new URL(url)), apiKey);
      return layers.flatMap((layer) => statusOf(layer, e));
    },
    close: async () => {
      const all = [...endpoints.values()].flatMap((k) => (k.next === undefined ? [k.endpoint] : [k.endpoint, k.next.endpoint]));
      await Promise.all(all.map(async (e) => (await e).telemetry?.close()));
    },
  });
}
