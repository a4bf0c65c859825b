/**
 * The verifier's pipeline embedded in a TypeScript API server, with no hop: the same route
 * table, stages and records as `moat-verifier`, called in process in front of the server's own
 * model call instead of forwarding over HTTP.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout } from 'node:timers/promises';
import { type Logger, pino } from 'pino';
import { configFromSettings, type SettingName } from './config.js';
import { VerifierConfigError } from './errors.js';
import { markCutAtShutdown } from './http.js';
import { jsonKind } from './json-body.js';
import type { UpstreamFunction } from './pipeline/upstream-function.js';
import type { RouteRow } from './router.js';
import { routeTable } from './routes/table.js';
import { closeServices, createRequestHandler, createServices, SETTLE_MS, startPeriodicWork } from './server.js';
import type { Storage } from './storage.js';
import { runForWeb } from './web-adapter.js';

export type { UpstreamFunction } from './pipeline/upstream-function.js';

/**
 * Settings that belong to the server alone: where it listens, the HTTP upstream and its
 * time-outs (the model call is a function here), and the operator tokens of the routes the
 * embedded handler does not serve.
 */
export const SERVER_ONLY_SETTINGS: readonly SettingName[] = [
  'host',
  'port',
  'upstream',
  'upstreamKey',
  'upstreamConnectTimeoutMs',
  'upstreamHeadersTimeoutMs',
  'upstreamIdleTimeoutMs',
  'upstreamConnections',
  'upstreamQueueTimeoutMs',
  'upstreamStallMs',
  'adminToken',
  'metricsToken',
];

/** Paths of the verifier's own routes that only its server serves: operators' pages and probes. */
const SERVER_ONLY_PATHS: ReadonlySet<string> = new Set(['/dashboard', '/favicon.ico', '/healthz', '/readyz']);

/**
 * The routes the embedded handler serves: every route of the verifier's table (Messages,
 * count_tokens, Message Batches, discovery, client flags, telemetry, conformance, and the
 * pass-through routes of the settings) except the operator routes (admin API, dashboard,
 * metrics) and the health probes, which the embedding server has its own of. A request no
 * row takes is refused (404) and recorded, as by the server.
 */
export function embeddedRoutes(passthrough: Parameters<typeof routeTable>[0]): RouteRow[] {
  return routeTable(passthrough).filter(
    ([, pattern, , access]) => access !== 'admin' && access !== 'metrics' && !SERVER_ONLY_PATHS.has(pattern),
  );
}

/** Settings of the embedded handler: the verifier's (see `SETTINGS`) bar {@link SERVER_ONLY_SETTINGS}. */
export type MoatHandlerSettings = Partial<Record<Exclude<SettingName, (typeof SERVER_ONLY_SETTINGS)[number]>, unknown>>;

/** Options of {@link createMoatHandler}. */
export interface MoatHandlerOptions {
  /**
   * The model call Moat runs in front of: a web-standard handler that gets the request as
   * the verifier would forward it (Moat's tags and the client's credentials taken out, decoys
   * in) and answers as the Messages API does, JSON or SSE. Its `request.signal` aborts when
   * the client goes away; it owns its own time-outs.
   */
  readonly upstream: UpstreamFunction;
  /**
   * The verifier's settings as JSON values, checked as the server checks its config file:
   * `fingerprintSalt`, `serverSecret` and `signingSecret` are required, `attestationKeys`
   * (or `attestationKeyFile`) for attestation, `database` (default `moat-verifier.db`) or
   * `postgresUrl` + `redisUrl` for the records. No environment variable is read.
   */
  readonly settings: MoatHandlerSettings;
  /** A storage to use instead of the one the settings name. */
  readonly storage?: Storage | undefined;
  /** A pino logger (the server's own, or a child of it); else one at `logLevel` (default `warn`). */
  readonly logger?: Logger | undefined;
  readonly logLevel?: string | undefined;
  /**
   * The client's address for a web-standard request (the runtime's, e.g. Bun's
   * `server.requestIP(request)`), for the gateway evidence; `node` takes the socket's.
   */
  readonly remoteAddress?: ((request: Request) => string | undefined) | undefined;
}

/** Moat's checks as a handler of the embedding server. */
export interface MoatHandler {
  /** The web-standard handler: hono (`app.all('/v1/*', (c) => moat.fetch(c.req.raw))`), Bun, Deno, Workers. */
  readonly fetch: (request: Request) => Promise<Response>;
  /** The `node:http` handler (`createServer(moat.node)`, or Express's `app.use(moat.node)`); the server's own. */
  readonly node: (req: IncomingMessage, res: ServerResponse) => void;
  /** The records, API keys and statistics (create API keys here: `storage.createApiKey(name)`). */
  readonly storage: Storage;
  /**
   * The verifier's Prometheus metrics (`moat_requests_total`, `moat_signals_total`, …) and
   * their content type, to serve behind the embedding server's own operator access: the
   * per-signal series tell a fake client which of its requests raised what.
   */
  metrics(): Promise<{ readonly contentType: string; readonly text: string }>;
  /** Lets answers in flight finish (up to `shutdownGraceMs`), saves the statistics, closes the storage; once. */
  close(): Promise<void>;
}

/** The options checked, or the error that names the first one at fault. */
function checkOptions(options: MoatHandlerOptions): void {
  if (typeof options !== 'object' || options === null)
    throw new VerifierConfigError('options', 'an object { upstream, settings }', jsonKind(options));
  if (typeof options.upstream !== 'function')
    throw new VerifierConfigError(
      'upstream',
      'a function (request: Request) => Promise<Response>',
      jsonKind(options.upstream),
    );
  const { settings } = options;
  if (typeof settings !== 'object' || settings === null || Array.isArray(settings))
    throw new VerifierConfigError('settings', 'an object of verifier settings', jsonKind(settings));
  for (const name of SERVER_ONLY_SETTINGS)
    if (Object.hasOwn(settings, name))
      throw new VerifierConfigError(name, 'a setting the embedded handler uses', 'a setting of the server alone');
  if (options.remoteAddress !== undefined && typeof options.remoteAddress !== 'function')
    throw new VerifierConfigError(
      'remoteAddress',
      'a function (request: Request) => string',
      jsonKind(options.remoteAddress),
    );
}

/**
 * Creates Moat's checks as a handler to embed in a TypeScript API server: the verifier's
 * pipeline (authentication, attestation with the `r1` binding and the replay cache, the
 * fingerprint, decoys for anti-distillation, signed thinking blocks on the way back, SSE
 * included, gateway evidence, policy and verdict, one durable record per request) runs in
 * process and calls `options.upstream` where the verifier would forward over HTTP.
 *
 * @throws {VerifierConfigError} naming the option or setting at fault, what it expected and
 * what came.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono';
 * import { createMoatHandler } from '@moat/verifier';
 *
 * const moat = await createMoatHandler({
 *   settings: { fingerprintSalt, serverSecret, signingSecret, attestationKeys, database: 'moat.db' },
 *   upstream: (request) => myModel(request), // (Request) => Promise<Response>
 * });
 * const app = new Hono();
 * app.all('/v1/*', (c) => moat.fetch(c.req.raw));
 * ```
 */
export async function createMoatHandler(options: MoatHandlerOptions): Promise<MoatHandler> {
  checkOptions(options);
  // The admin token guards routes this handler does not serve; the server's settings need one.
  const config = configFromSettings({ ...options.settings, adminToken: randomBytes(24).toString('base64url') });
  const log = options.logger ?? pino({ level: options.logLevel ?? 'warn' });
  const { upstream, storage } = options;
  const { services } = await createServices(config, { upstream, ...(storage === undefined ? {} : { storage }) }, log);
  await startPeriodicWork(services);
  // No readiness probe holds traffic back here: the decoy index is built before the first request,
  // so nothing is served untraced (a build that fails is retried; until then requests say so).
  await services.decoyIndex.refresh().catch(() => undefined);
  let closing = false;
  let closed: Promise<void> | undefined;
  const inflight = new Set<ServerResponse>();
  const handle = createRequestHandler(services, embeddedRoutes(config.passthroughRoutes), () => closing);
  const node = (req: IncomingMessage, res: ServerResponse): void => {
    inflight.add(res);
    res.once('close', () => inflight.delete(res));
    handle(req, res);
  };
  const addressOf = options.remoteAddress;
  return {
    node,
    fetch: (request) => runForWeb(request, addressOf?.(request), node),
    storage: services.storage,
    metrics: async () => ({
      contentType: services.metrics.registry.contentType,
      text: await services.metrics.registry.metrics(),
    }),
    close: () =>
      (closed ??= (async () => {
        closing = true;
        const deadline = Date.now() + config.shutdownGraceMs;
        while (inflight.size > 0 && Date.now() < deadline) await setTimeout(25);
        // What still runs is cut, as the server cuts it: its client told (503, an SSE error), its record written before the store closes.
        for (const res of inflight) markCutAtShutdown(res);
        await Promise.race([handle.settled(), setTimeout(SETTLE_MS, undefined, { ref: false })]);
        await closeServices(services);
      })()),
  };
}
