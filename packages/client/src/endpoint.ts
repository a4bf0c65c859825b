import { GrowthBook } from '@growthbook/growthbook';
import { TelemetryQueue } from '@moat/gateway-detect/client';
import {
  CLIENT_FLAGS,
  type ClientFlag,
  DISCOVERY_PATH,
  type DiscoveryEnrollment,
  type Feature,
  TELEMETRY_PATH,
  type TelemetryEvent,
  tryParseDiscovery,
} from '@moat/protocol';
import { describeValue, errorMessage, type Warner } from '@moat/protocol/support';
import { degradedEvent } from './compose.js';

/** What one endpoint (a base URL) speaks, its remote flags, and where its telemetry goes. */
export interface Endpoint {
  /** The origin, e.g. `http://127.0.0.1:8787`. */
  readonly origin: string;
  /**
   * The base URL the endpoint's Moat paths are under: the origin and the path before
   * `/v1/messages` (`https://gw.example/anthropic` for a verifier mounted under
   * `/anthropic`), never ending in `/`. Discovery is `GET {base}/v1/moat`; the paths its
   * document names (telemetry, flags, enrollment) are `{base}{path}`.
   */
  readonly base: string;
  /** The Moat features its discovery document advertises (none: it does not speak Moat). */
  readonly features: readonly Feature[];
  /** Where and with which verifier key an install enrolls, when it advertises `install_keys` (protocol 1.2). */
  readonly enrollment?: DiscoveryEnrollment | undefined;
  /** Whether the remote flags were read (false: every flag is at its default). */
  readonly flagsRead: boolean;
  /**
   * Whether discovery got its answer: a document (and its flags, when it names them). Anything
   * else leaves it unsettled, asked again as {@link Endpoint.retry} says.
   */
  readonly settled: boolean;
  /**
   * When an unsettled discovery is asked again: `soon` (the endpoint could not be reached: by
   * the next request, which waits for it), `backoff` (a time-out, a broken answer, flags
   * unread: 2 s, doubling up to 1 min) or `rarely` (a `404`, no Moat there now: every 5 min).
   */
  readonly retry?: DiscoveryRetry | undefined;
  /** A boolean flag's remote value, or `fallback` when it is unset or not a boolean. */
  flag(name: ClientFlag, fallback: boolean): boolean;
  /** Queues a telemetry event; dropped when the endpoint takes no telemetry from this client. */
  report(event: TelemetryEvent): void;
  /** The telemetry queue, when the endpoint takes telemetry and gateway detection is not switched off. */
  readonly telemetry?: TelemetryQueue | undefined;
}

/** What discovery needs from the fetch's options. */
export interface DiscoveryContext {
  readonly fetch: typeof fetch;
  readonly clientVersion: string;
  readonly entrypoint: string;
  readonly warn: Warner;
  readonly onWarning?: ((message: string) => void) | undefined;
}

/** When an unsettled discovery is asked again ({@link Endpoint.retry}). */
export type DiscoveryRetry = 'soon' | 'backoff' | 'rarely';

interface Discovery {
  readonly features: readonly Feature[];
  /** How far this machine's clock is ahead of the endpoint's (its `Date`), ms, when it said. */
  readonly clockSkewMs?: number | undefined;
  /** A document: no reason to ask again. */
  readonly settled: boolean;
  readonly retry?: DiscoveryRetry | undefined;
  readonly telemetryPath?: string | undefined;
  readonly flagsPath?: string | undefined;
  readonly enrollment?: DiscoveryEnrollment | undefined;
}

/**
 * `{base}{path}` for a path the discovery document names (an absolute path, never `//…`:
 * {@link tryParseDiscovery} refuses those). Concatenated, not resolved: `/v1/telemetry`
 * under `https://gw.example/anthropic` is `https://gw.example/anthropic/v1/telemetry`.
 *
 * @throws {Error} when the URL's dot segments climb out of `base` (`/../other/collect`):
 * the API key goes to the endpoint's own paths, not to another tenant's on the same host.
 */
export function underBase(base: string, path: string): URL {
  const url = new URL(`${base}${path}`);
  if (!url.href.startsWith(`${base}/`)) throw new Error(`expected a path under ${base}, got ${JSON.stringify(path)}`);
  return url;
}

/** The first path of the document that would leave the base (see {@link underBase}), as an error message. */
function pathOutside(base: string, paths: ReadonlyArray<string | undefined>): string | undefined {
  for (const path of paths)
    try {
      if (path !== undefined) underBase(base, path);
    } catch (error) {
      return errorMessage(error);
    }
  return undefined;
}

/**
 * The base URL of the endpoint a URL belongs to: its origin and the path before its last
 * `/v1` segment (`http://h/anthropic/v1/messages` → `http://h/anthropic`); a URL without one
 * (an SDK's `baseURL`) is its origin and path, without a trailing `/`. The query and the
 * fragment never count.
 */
export function endpointBase(url: URL): string {
  const path = url.pathname;
  let at = -1;
  for (const m of path.matchAll(V1_SEGMENT)) at = m.index;
  const prefix = at >= 0 ? path.slice(0, at) : path;
  return `${url.origin}${prefix.replace(/\/+$/, '')}`;
}

/** A clock further than this off the endpoint's (its `Date` header, to the second) is worth a warning. */
const CLOCK_SKEW_WARN_MS = 60_000;

/** The API's version segment: what comes before it is where the endpoint is mounted. */
const V1_SEGMENT = /\/v1(?=\/|$)/gi;

async function readDiscovery(base: string, ctx: DiscoveryContext): Promise<Discovery> {
  let reached = false;
  try {
    const res = await ctx.fetch(underBase(base, DISCOVERY_PATH), { signal: AbortSignal.timeout(2_000) });
    reached = true;
    const said = Date.parse(res.headers.get('date') ?? '');
    const clockSkewMs = Number.isFinite(said) ? Date.now() - said : undefined;
    const doc = tryParseDiscovery(res.ok ? await res.json() : {});
    const { telemetry, flags, enrollment } = doc.ok ? doc.value : {};
    const outside = doc.ok ? pathOutside(base, [telemetry, flags, enrollment?.challenge, enrollment?.enroll]) : undefined;
    if (outside !== undefined) {
      ctx.warn(`no usable Moat discovery at ${base} (${outside}); requests go out untagged`, `discovery:${base}`);
      return { features: [], settled: false, retry: 'backoff' };
    }
    if (doc.ok)
      return {
        settled: true,
        clockSkewMs,
        features: doc.value.features,
        telemetryPath: doc.value.telemetry,
        flagsPath: doc.value.flags,
        enrollment: doc.value.enrollment,
      };
    // A 404 is an endpoint that speaks no Moat, now: a front end mid-deploy says the same, so it is asked again, rarely.
    if (res.status === 404) {
      ctx.warn(`no Moat at ${base} (discovery answered 404); requests go out untagged, asked again every 5 min`, `discovery:${base}`);
      return { features: [], settled: false, retry: 'rarely' };
    }
    const why = res.ok ? doc.error.message : `answered ${res.status}`;
    ctx.warn(`no usable Moat discovery at ${base} (${why}); requests go out untagged until it answers`, `discovery:${base}`);
  } catch (error) {
    const why = errorMessage(error);
    ctx.warn(`no Moat discovery at ${base} (${why}); requests go out untagged until it answers`, `discovery:${base}`);
    // Not reached at all (refused, reset, no route), not merely slow: the request itself meets the same, so the next one asks first.
    const name = (error as { name?: unknown }).name;
    if (!reached && name !== 'TimeoutError' && name !== 'AbortError') return { features: [], settled: false, retry: 'soon' };
  }
  return { features: [], settled: false, retry: 'backoff' };
}

/**
 * The endpoint's client flags, read once (the one flag fetch of every layer) through the
 * app's own fetch (its proxy agent, its mTLS) and evaluated by the stock GrowthBook SDK.
 */
async function readFlags(base: string, flagsPath: string, ctx: DiscoveryContext): Promise<Map<string, unknown> | undefined> {
  const gb = new GrowthBook();
  try {
    const res = await ctx.fetch(underBase(base, flagsPath), { signal: AbortSignal.timeout(2_000) });
    if (!res.ok) throw new Error(`answered ${res.status}`);
    const payload: unknown = await res.json();
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload))
      throw new Error(`expected a GrowthBook payload { features }, got ${describeValue(payload)}`);
    gb.initSync({ payload: payload as Parameters<GrowthBook['initSync']>[0]['payload'] });
    const flags = new Map<string, unknown>();
    for (const key of Object.keys(gb.getFeatures())) flags.set(key, gb.getFeatureValue(key, null));
    return flags;
  } catch (error) {
    ctx.warn(`remote flags unavailable at ${base} (${errorMessage(error)}); using defaults`, `flags:${base}`);
    return undefined;
  } finally {
    gb.destroy();
  }
}

/**
 * Discovers the endpoint at a base URL ({@link endpointBase}): its discovery document, its flags (only when it advertises them)
 * and, when it takes telemetry and the request carried an API key, a telemetry queue. Never
 * throws: an endpoint that cannot be discovered speaks no Moat.
 */
export async function discover(base: string, apiKey: string | undefined, ctx: DiscoveryContext): Promise<Endpoint> {
  const { features, telemetryPath, flagsPath, enrollment, settled, retry, clockSkewMs } = await readDiscovery(base, ctx);
  const flags = flagsPath === undefined ? undefined : await readFlags(base, flagsPath, ctx);
  const flag = (name: ClientFlag, fallback: boolean): boolean => {
    const v = flags?.get(name);
    return typeof v === 'boolean' ? v : fallback;
  };
  const telemetry =
    features.includes('telemetry') && apiKey !== undefined && !flag(CLIENT_FLAGS.killGatewayDetect, false)
      ? new TelemetryQueue({
          endpoint: underBase(base, telemetryPath ?? TELEMETRY_PATH),
          client: { cv: ctx.clientVersion, ep: ctx.entrypoint },
          headers: { 'x-api-key': apiKey },
          fetch: ctx.fetch,
          onWarning: ctx.onWarning,
        })
      : undefined;
  // Stamps carry this machine's time: a clock far off the verifier's makes every one stale.
  if (clockSkewMs !== undefined && Math.abs(clockSkewMs) > CLOCK_SKEW_WARN_MS) {
    const seconds = Math.round(Math.abs(clockSkewMs) / 1000);
    const reason = `clock ${seconds} s ${clockSkewMs > 0 ? 'ahead of' : 'behind'} the endpoint's`;
    ctx.warn(`this machine's ${reason} at ${base}: stamps outside the verifier's window are refused as stale`, `clock:${base}`);
    telemetry?.push(degradedEvent('attest', reason));
  }
  return {
    origin: new URL(base).origin,
    base,
    features,
    enrollment,
    flagsRead: flags !== undefined,
    settled: settled && (flagsPath === undefined || flags !== undefined),
    retry: settled ? (flagsPath === undefined || flags !== undefined ? undefined : 'backoff') : retry,
    flag,
    report: (event) => telemetry?.push(event),
    telemetry,
  };
}
