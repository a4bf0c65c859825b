/**
 * `@moat/client` — Moat's client layers composed for someone else's app: one `fetch` to hand
 * to `new Anthropic({ fetch })` or the Vercel AI SDK's `createAnthropic({ fetch })`. For each
 * Messages request to an endpoint that speaks Moat it adds the attribution block and the
 * fingerprint, stamps the body below JavaScript (the native attested transport), drops
 * signed thinking that another API key or model produced, detects AI gateways on the
 * responses and reports them (and unattested sends) as batched telemetry; the verifier's
 * GrowthBook flags switch any layer off for everyone. Every layer fails open: a broken
 * layer warns once and the request goes through.
 *
 * @packageDocumentation
 */
import { GrowthBook } from '@growthbook/growthbook';
import { createAttestedFetch } from '@moat/attest/client';
import { type HistoryEntry, keyIdentity, stripForeignSignedBlocks } from '@moat/distill-guard/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { GatewayDetector, TelemetryQueue } from '@moat/gateway-detect/client';
import { blockSignatureOf, credentialOf, DISCOVERY_PATH, type Feature, TELEMETRY_PATH, tryParseDiscovery } from '@moat/protocol';
import { MessageAssembler, type MessagesRequest, readStreamEvents } from '@moat/protocol/messages';
import { createWarner, errorMessage, LruMap } from '@moat/protocol/support';

/** Options of {@link createMoatFetch}. */
export interface MoatFetchOptions {
  /** The deployment's fingerprint salt (the verifier's `fingerprintSalt`). */
  readonly salt: string;
  /** Your client's version, sent as `cv` in the attribution block. */
  readonly clientVersion: string;
  /** Entry point sent as `ep` (default `sdk`). */
  readonly entrypoint?: string;
  /**
   * Your product's name, added to the user agent as `<product>/<clientVersion>` (default
   * `moat-client`); set the verifier's `userAgentProduct` to the same, so a relay that
   * replaces the user agent shows up (`ua_mismatch`).
   */
  readonly userAgentProduct?: string;
  /** The fetch requests go through when not attested (default: the global `fetch`). */
  readonly fetch?: typeof fetch;
  /** Where warnings go (a layer that fails open says so once). */
  readonly onWarning?: (message: string) => void;
  /**
   * Request binding (`r1` stamps, protocol 1.1). `discover` (default): an origin is bound once
   * its discovery document advertised `request_binding`, and stays pinned — a later document
   * without it (a relay that edits discovery to make the client stamp `v1`) does not unbind it.
   * `always`: a release build that knows its verifier speaks 1.1 binds every Moat origin,
   * whatever discovery says.
   */
  readonly requestBinding?: 'discover' | 'always';
  /** Origins pinned to request binding; pass a persistent store to keep pins across runs (default: in memory). */
  readonly bindingPins?: BindingPins;
}

/** Origins (`https://api.example.com`) known to bind requests: see {@link MoatFetchOptions.requestBinding}. */
export interface BindingPins {
  has(origin: string): boolean;
  add(origin: string): unknown;
}

/** A `fetch` with Moat's client layers, and `close()` to flush telemetry. */
export type MoatFetch = typeof fetch & { close(): Promise<void> };

/** What one endpoint (origin) supports and its remote flags. */
interface Endpoint {
  readonly features: readonly Feature[];
  readonly flags: ReadonlyMap<string, unknown>;
  readonly telemetry?: TelemetryQueue;
  /** Reports detected gateways to this endpoint's telemetry. */
  readonly detector: GatewayDetector;
}

const MESSAGES_PATHS = /\/v1\/messages(?:\/count_tokens)?$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function apiKeyOf(headers: Headers): string | undefined {
  const key = credentialOf((name) => headers.get(name));
  return key === '' ? undefined : key;
}

/**
 * Creates the fetch. Requests that are not Messages requests, or that go to an endpoint
 * without Moat's discovery document, pass through untouched (only gateway detection looks at
 * their answers).
 *
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
  const entrypoint = options.entrypoint ?? 'sdk';
  const endpoints = new Map<string, Promise<Endpoint>>();
  /** Who each signed block we passed on was issued to, by its signature: to strip it when the key or model changes. */
  const issued = new LruMap<string, { apiKeyId: string; model: string }>({ maxSize: 10_000 });
  const telemetries: TelemetryQueue[] = [];
  const detector = new GatewayDetector(options.onWarning === undefined ? {} : { onWarning: options.onWarning });
  let attested: typeof fetch | undefined;
  /** Origins whose discovery advertised `request_binding` (protocol 1.1), pinned: their stamps cover the request too. */
  const bindsRequests: BindingPins = options.bindingPins ?? new Set<string>();

  const endpoint = (origin: string, apiKey: string | undefined): Promise<Endpoint> => {
    let known = endpoints.get(origin);
    if (known === undefined) {
      known = discover(origin, apiKey);
      endpoints.set(origin, known);
    }
    return known;
  };

  const discover = async (origin: string, apiKey: string | undefined): Promise<Endpoint> => {
    let features: readonly Feature[] = [];
    let flagsPath: string | undefined;
    try {
      const res = await base(new URL(DISCOVERY_PATH, origin), { signal: AbortSignal.timeout(2_000) });
      const doc = tryParseDiscovery(res.ok ? await res.json() : {});
      if (doc.ok) {
        features = doc.value.features;
        flagsPath = doc.value.flags;
        if (features.includes('request_binding')) bindsRequests.add(new URL(origin).origin);
      }
    } catch (error) {
      warn(`no Moat discovery at ${origin} (${errorMessage(error)}); requests go out untagged`, `discovery:${origin}`);
    }
    const flags = new Map<string, unknown>();
    if (flagsPath !== undefined) {
      const clientKey = flagsPath.split('/').pop() ?? 'moat';
      const gb = new GrowthBook({ apiHost: origin, clientKey });
      try {
        const r = await gb.init({ timeout: 2_000, skipCache: true });
        if (!r.success) throw r.error ?? new Error(r.source);
        for (const key of Object.keys(gb.getFeatures())) flags.set(key, gb.getFeatureValue(key, null));
      } catch (error) {
        warn(`remote flags unavailable at ${origin} (${errorMessage(error)}); using defaults`, `flags:${origin}`);
      } finally {
        gb.destroy();
      }
    }
    let telemetry: TelemetryQueue | undefined;
    if (features.includes('telemetry') && apiKey !== undefined && flags.get('moat-kill-gateway-detect') !== true) {
      telemetry = new TelemetryQueue({
        endpoint: new URL(TELEMETRY_PATH, origin),
        client: { cv: options.clientVersion, ep: entrypoint },
        headers: { 'x-api-key': apiKey },
        fetch: base,
        ...(options.onWarning === undefined ? {} : { onWarning: options.onWarning }),
      });
      telemetries.push(telemetry);
    }
    const detector = new GatewayDetector({
      ...(telemetry === undefined ? {} : { telemetry }),
      ...(options.onWarning === undefined ? {} : { onWarning: options.onWarning }),
    });
    return { features, flags, detector, ...(telemetry === undefined ? {} : { telemetry }) };
  };

  const flag = (e: Endpoint, name: string, fallback: boolean): boolean => {
    const v = e.flags.get(name);
    return typeof v === 'boolean' ? v : fallback;
  };

  /** The request with Moat's tags, and signed blocks of another key or model dropped. */
  const tagged = (body: MessagesRequest, e: Endpoint, origin: { apiKeyId: string; model: string }): MessagesRequest => {
    let request = body;
    if (Array.isArray(request.messages)) {
      const history: HistoryEntry[] = request.messages.map((message) => {
        const first = Array.isArray(message.content) ? message.content.map(blockSignatureOf).find((s) => typeof s === 'string') : undefined;
        const producedBy = typeof first === 'string' ? issued.peek(first) : undefined;
        return producedBy === undefined || message.role !== 'assistant'
          ? { message: message as HistoryEntry['message'], ...(message.role === 'assistant' ? { origin } : {}) }
          : { message: message as HistoryEntry['message'], origin: producedBy };
      });
      const { messages, stripped } = stripForeignSignedBlocks(history, origin);
      if (stripped > 0) request = { ...request, messages: messages as MessagesRequest['messages'] };
    }
    if (e.features.includes('fingerprint') && flag(e, 'moat-attribution', true) && !flag(e, 'moat-kill-fingerprint', false)) {
      const t = tagFingerprint(request as unknown as Record<string, unknown>, {
        salt: options.salt,
        version: options.clientVersion,
        entrypoint,
        ...(options.onWarning === undefined ? {} : { onWarning: options.onWarning }),
      });
      request = t.request as unknown as MessagesRequest;
    }
    return request;
  };

  /** Remembers who the signed blocks of an answer were issued to (read from a copy, never delaying the caller). */
  const remember = (response: Response, producedFor: { apiKeyId: string; model: string }): Response => {
    if (!response.ok || response.body === null) return response;
    const note = (content: unknown) => {
      if (!Array.isArray(content)) return;
      for (const block of content) {
        const signature = blockSignatureOf(block);
        if (typeof signature === 'string' && signature.startsWith('ms1.')) issued.set(signature, producedFor);
      }
    };
    const [mine, theirs] = response.body.tee();
    const stream = (response.headers.get('content-type') ?? '').includes('text/event-stream');
    void (async () => {
      try {
        if (stream) {
          const assembler = new MessageAssembler({ parseToolInput: false });
          for await (const ev of readStreamEvents(mine)) assembler.push(ev);
          note(assembler.blocks);
        } else {
          const json = (await new Response(mine).json()) as { content?: unknown };
          note(json.content);
        }
      } catch {
        // Not a Messages answer this layer can read: nothing to remember.
      }
    })();
    return new Response(theirs, { status: response.status, statusText: response.statusText, headers: response.headers });
  };

  const moatFetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const request = input instanceof Request ? input : undefined;
    const url = new URL(request?.url ?? String(input));
    const method = (init.method ?? request?.method ?? 'GET').toUpperCase();
    const headers = new Headers(init.headers ?? request?.headers);
    let via = detector;
    const observe = (response: Response) => {
      via.observe({ headers: response.headers, url: url.href });
      return response;
    };
    if (method !== 'POST' || !MESSAGES_PATHS.test(url.pathname)) return observe(await base(input, init));
    const apiKey = apiKeyOf(headers);
    let e: Endpoint;
    try {
      e = await endpoint(url.origin, apiKey);
    } catch (error) {
      warn(`Moat layers off for ${url.origin} (${errorMessage(error)})`, `endpoint:${url.origin}`);
      return observe(await base(input, init));
    }
    if (e.features.length === 0) return observe(await base(input, init));
    via = e.detector;

    // The body: tags and signed-block hygiene on a JSON body; anything else goes as it is.
    let bodyText =
      typeof init.body === 'string'
        ? init.body
        : request !== undefined && init.body === undefined
          ? await request.clone().text()
          : undefined;
    let model = '';
    if (bodyText !== undefined) {
      try {
        const parsed = JSON.parse(bodyText) as unknown;
        if (isRecord(parsed) && typeof parsed.model === 'string') {
          model = parsed.model;
          bodyText = JSON.stringify(tagged(parsed as unknown as MessagesRequest, e, { apiKeyId: keyIdentity(apiKey ?? ''), model }));
        }
      } catch (error) {
        warn(`request body left as it was (${errorMessage(error)})`, 'body');
      }
    }
    const product = `${options.userAgentProduct ?? 'moat-client'}/${options.clientVersion}`;
    const agent = headers.get('user-agent');
    if (agent === null || !agent.split(/\s+/).includes(product))
      headers.set('user-agent', agent === null ? product : `${agent} ${product}`);
    const sendInit: RequestInit = { ...init, method, headers, ...(bodyText === undefined ? {} : { body: bodyText }) };
    const target = request === undefined ? input : url.href;

    const attest = e.features.includes('attestation') && flag(e, 'moat-envelope', true) && !flag(e, 'moat-kill-attestation', false);
    if (attest) {
      attested ??= createAttestedFetch({
        ...(options.onWarning === undefined ? {} : { onWarning: options.onWarning }),
        onUnattested: (reason) => e.telemetry?.push({ type: 'attestation_unavailable', ts: Math.floor(Date.now() / 1000), reason }),
        bindRequestFor: (target) => options.requestBinding === 'always' || bindsRequests.has(target.origin),
      }) as typeof fetch;
    }
    const response = observe(await (attest ? (attested as typeof fetch) : base)(target, sendInit));
    return remember(response, { apiKeyId: keyIdentity(apiKey ?? ''), model });
  };

  return Object.assign(moatFetch as typeof fetch, {
    close: async () => {
      await Promise.all(telemetries.map((t) => t.close()));
    },
  });
}
