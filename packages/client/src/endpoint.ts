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
import { errorMessage, type Warner } from '@moat/protocol/support';

/** What one endpoint (origin) speaks, its remote flags, and where its telemetry goes. */
export interface Endpoint {
  /** The origin, e.g. `http://127.0.0.1:8787`. */
  readonly origin: string;
  /** The Moat features its discovery document advertises (none: it does not speak Moat). */
  readonly features: readonly Feature[];
  /** Where and with which verifier key an install enrolls, when it advertises `install_keys` (protocol 1.2). */
  readonly enrollment?: DiscoveryEnrollment | undefined;
  /** Whether the remote flags were read (false: every flag is at its default). */
  readonly flagsRead: boolean;
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

interface Discovery {
  readonly features: readonly Feature[];
  readonly flagsPath?: string | undefined;
  readonly enrollment?: DiscoveryEnrollment | undefined;
}

async function readDiscovery(origin: string, ctx: DiscoveryContext): Promise<Discovery> {
  try {
    const res = await ctx.fetch(new URL(DISCOVERY_PATH, origin), { signal: AbortSignal.timeout(2_000) });
    const doc = tryParseDiscovery(res.ok ? await res.json() : {});
    if (doc.ok) return { features: doc.value.features, flagsPath: doc.value.flags, enrollment: doc.value.enrollment };
    // 404 is an endpoint that speaks no Moat; any other answer is a Moat endpoint that is broken, and says so.
    if (res.status !== 404) {
      const why = res.ok ? doc.error.message : `answered ${res.status}`;
      ctx.warn(`no usable Moat discovery at ${origin} (${why}); requests go out untagged`, `discovery:${origin}`);
    }
  } catch (error) {
    const why = errorMessage(error);
    ctx.warn(`no Moat discovery at ${origin} (${why}); requests go out untagged`, `discovery:${origin}`);
  }
  return { features: [] };
}

/** The endpoint's client flags, read once with the stock GrowthBook SDK (the one flag fetch of every layer). */
async function readFlags(origin: string, flagsPath: string, warn: Warner): Promise<Map<string, unknown> | undefined> {
  const gb = new GrowthBook({ apiHost: origin, clientKey: flagsPath.split('/').pop() ?? 'moat' });
  try {
    const r = await gb.init({ timeout: 2_000, skipCache: true });
    if (!r.success) throw r.error ?? new Error(r.source);
    const flags = new Map<string, unknown>();
    for (const key of Object.keys(gb.getFeatures())) flags.set(key, gb.getFeatureValue(key, null));
    return flags;
  } catch (error) {
    warn(`remote flags unavailable at ${origin} (${errorMessage(error)}); using defaults`, `flags:${origin}`);
    return undefined;
  } finally {
    gb.destroy();
  }
}

/**
 * Discovers an endpoint: its discovery document, its flags (only when it advertises them)
 * and, when it takes telemetry and the request carried an API key, a telemetry queue. Never
 * throws: an endpoint that cannot be discovered speaks no Moat.
 */
export async function discover(origin: string, apiKey: string | undefined, ctx: DiscoveryContext): Promise<Endpoint> {
  const { features, flagsPath, enrollment } = await readDiscovery(origin, ctx);
  const flags = flagsPath === undefined ? undefined : await readFlags(origin, flagsPath, ctx.warn);
  const flag = (name: ClientFlag, fallback: boolean): boolean => {
    const v = flags?.get(name);
    return typeof v === 'boolean' ? v : fallback;
  };
  const telemetry =
    features.includes('telemetry') && apiKey !== undefined && !flag(CLIENT_FLAGS.killGatewayDetect, false)
      ? new TelemetryQueue({
          endpoint: new URL(TELEMETRY_PATH, origin),
          client: { cv: ctx.clientVersion, ep: ctx.entrypoint },
          headers: { 'x-api-key': apiKey },
          fetch: ctx.fetch,
          onWarning: ctx.onWarning,
        })
      : undefined;
  return {
    origin,
    features,
    enrollment,
    flagsRead: flags !== undefined,
    flag,
    report: (event) => telemetry?.push(event),
    telemetry,
  };
}
