/**
 * The seam of `@moat/client`: each client layer is an interceptor over one request and its
 * response, `(next) => (call) => response`, as in undici's `compose`. Layers compose in a
 * checked order (observe → history → tag → stamp: nothing may change the body after the
 * stamp layer has chosen the attested transport), and each fails open on its own: a layer
 * that throws before it hands the call on is skipped for that request, one that throws after
 * the answer came gives back that answer; either way the app hears a warning and the
 * endpoint's telemetry a `layer_degraded` event.
 */
import type { TelemetryEvent } from '@moat/protocol';
import type { MessagesRequest } from '@moat/protocol/messages';
import type { Endpoint } from './endpoint.js';
import { MoatClientError } from './errors.js';

/** Where a layer sits; layers compose in this order, the first outermost. */
export const LAYER_PHASES = ['observe', 'history', 'tag', 'stamp'] as const;

/**
 * A layer's phase: `observe` reads answers (gateway detection, status reports), `history`
 * cleans the conversation (signed blocks), `tag` adds Moat's tags, `stamp` picks the attested
 * transport and comes last.
 */
export type LayerPhase = (typeof LAYER_PHASES)[number];

/** One request on its way through the layers. Layers hand on a changed copy, never mutate it. */
export interface MoatCall {
  /** The request as the app handed it to `fetch`. */
  readonly input: string | URL | Request;
  readonly init: RequestInit;
  readonly url: URL;
  /** Upper-case method. */
  readonly method: string;
  /** The headers that are sent when the call is a Moat call (a copy the layers may change). */
  readonly headers: Headers;
  /** The API key the request carries, if any. */
  readonly apiKey?: string | undefined;
  /**
   * The endpoint, only when this is a Messages request to an endpoint that speaks Moat: the
   * layers that tag act only then; every other request is sent exactly as the app made it.
   */
  readonly endpoint?: Endpoint | undefined;
  /** The Messages body of a Moat call, parsed; layers replace it. */
  readonly body?: MessagesRequest | undefined;
  /**
   * The body of a Message Batch create (`{ requests: [{ custom_id, params }] }`): each item's
   * `params` is a Messages body the tagging layers change through {@link withBodies}.
   */
  readonly batch?: Record<string, unknown> | undefined;
  /** The body text of a Moat call whose body is not a Messages object: sent as it is. */
  readonly bodyText?: string | undefined;
  /** The fetch that sends the call (default: the app's); the stamp layer sets the attested one. */
  readonly transport?: typeof fetch | undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The call with `change` applied to its Messages body, or to the `params` of each item of a
 * Message Batch create (items that are not a Messages body stay as they are). A call with
 * neither is handed back as it is.
 */
export function withBodies(call: MoatCall, change: (body: MessagesRequest) => MessagesRequest): MoatCall {
  if (call.body !== undefined) return { ...call, body: change(call.body) };
  const requests = call.batch?.requests;
  if (!Array.isArray(requests)) return call;
  const changed = requests.map((item: unknown) =>
    isRecord(item) && isRecord(item.params) && typeof item.params.model === 'string'
      ? { ...item, params: change(item.params as unknown as MessagesRequest) }
      : item,
  );
  return { ...call, batch: { ...call.batch, requests: changed } };
}

/** Sends a call and resolves with the answer. */
export type Send = (call: MoatCall) => Promise<Response>;

/** The app's cancellation of a call: its `init.signal`, else its `Request`'s own. */
export function callSignal(call: Pick<MoatCall, 'input' | 'init'>): AbortSignal | undefined {
  return call.init.signal ?? (call.input instanceof Request ? call.input.signal : undefined);
}

/** How one layer is doing at one endpoint (`moat-chat --verbose` prints these). */
export interface LayerStatus {
  readonly layer: string;
  readonly state: 'on' | 'off' | 'degraded';
  readonly detail: string;
}

/** One client layer. */
export interface MoatLayer {
  /** Unique within a composition; used in warnings, telemetry and status reports. */
  readonly name: string;
  readonly phase: LayerPhase;
  /** Wraps the rest of the chain: call `next` with the (changed) call, return its answer (changed or not). */
  readonly intercept: (next: Send) => Send;
  /** Runs once per endpoint when it is discovered, before its first request (flags are known). */
  readonly setup?: (endpoint: Endpoint) => void | Promise<void>;
  /** The layer's state at an endpoint; layers without one are left out of status reports. */
  readonly status?: (endpoint: Endpoint) => LayerStatus;
}

/** Reports a layer that failed open: the layer, the endpoint (if any) and the error. */
export type LayerFailure = (layer: MoatLayer, endpoint: Endpoint | undefined, error: unknown) => void;

function describe(value: unknown): string {
  if (value === null || typeof value !== 'object') return typeof value;
  const { name, phase } = value as { name?: unknown; phase?: unknown };
  return typeof name === 'string' ? `layer "${name}" (phase ${String(phase)})` : 'an object without a name';
}

/**
 * Checks a composition: every entry a layer, names unique, phases in {@link LAYER_PHASES}
 * order (so the stamp is last), at most one `stamp` layer.
 *
 * @throws {MoatClientError} `ERR_LAYER` or `ERR_LAYER_ORDER`, naming the first problem.
 */
export function checkLayers(layers: readonly MoatLayer[]): readonly MoatLayer[] {
  const names = new Set<string>();
  let rank = 0;
  let previous: MoatLayer | undefined;
  for (const layer of layers as readonly unknown[]) {
    const l = layer as Partial<MoatLayer> | null;
    const phase = LAYER_PHASES.indexOf(l?.phase as LayerPhase);
    if (typeof l?.name !== 'string' || l.name === '' || phase < 0 || typeof l.intercept !== 'function')
      throw new MoatClientError('ERR_LAYER', `expected a layer (name, phase, intercept), got ${describe(layer)}`);
    const current = l as MoatLayer;
    const name = current.name;
    if (names.has(name)) throw new MoatClientError('ERR_LAYER_ORDER', `expected one layer named "${name}", got two`);
    if (current.phase === 'stamp' && previous?.phase === 'stamp')
      throw new MoatClientError('ERR_LAYER_ORDER', `expected one stamp layer, got "${previous.name}" and "${name}"`);
    if (phase < rank)
      throw new MoatClientError(
        'ERR_LAYER_ORDER',
        `expected "${current.name}" (${current.phase}) before "${previous?.name}" (${previous?.phase}): ` +
          `layers go ${LAYER_PHASES.join(' → ')}, the stamp last`,
      );
    names.add(name);
    rank = phase;
    previous = current;
  }
  return layers;
}

/** One layer around `next`, failing open for this call. */
function guarded(layer: MoatLayer, next: Send, failed: LayerFailure): Send {
  let reached = false;
  let answer: Response | undefined;
  const send = layer.intercept(async (call) => {
    reached = true;
    answer = await next(call);
    return answer;
  });
  return async (call) => {
    try {
      return await send(call);
    } catch (error) {
      // An error from further down (the network, the app's signal) is the app's to see; so is the
      // app's cancellation while a layer waited (for an endpoint, an install).
      if ((reached && answer === undefined) || callSignal(call)?.aborted === true) throw error;
      failed(layer, call.endpoint, error);
      return answer ?? next(call);
    }
  };
}

/**
 * Composes checked layers over `transmit` (the send at the end of the chain), as undici's
 * `compose` does with interceptors; the chain is built per call, so each layer's fail-open
 * bookkeeping belongs to one request.
 *
 * @throws {MoatClientError} when the layers are not a valid composition (see {@link checkLayers}).
 */
export function composeLayers(layers: readonly MoatLayer[], transmit: Send, failed: LayerFailure): Send {
  checkLayers(layers);
  return (call) => layers.reduceRight<Send>((next, layer) => guarded(layer, next, failed), transmit)(call);
}

/** A `layer_degraded` telemetry event (the reason cut to the protocol's string bound). */
export function degradedEvent(layer: string, reason: string, now = Date.now()): TelemetryEvent {
  let cut = reason || 'unknown';
  const bytes = new TextEncoder().encode(cut);
  // Cut at a byte bound; a code point split there decodes to U+FFFD, which is dropped.
  if (bytes.length > 256) cut = new TextDecoder().decode(bytes.subarray(0, 253)).replace(/\uFFFD+$/, '');
  return { type: 'layer_degraded', ts: Math.floor(now / 1000), layer, reason: cut };
}
