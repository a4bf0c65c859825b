import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout } from 'node:timers/promises';
import { AttestationKeyring } from '@moat/attest/server';
import { BlockKeyring } from '@moat/distill-guard/server';
import { FingerprintStats } from '@moat/fingerprint/server';
import { GatewayStats } from '@moat/gateway-detect/server';
import { VERSION_HEADER } from '@moat/protocol';
import { errorMessage } from '@moat/protocol/support';
import { pino } from 'pino';
import { Gauge } from 'prom-client';
import { operatorTokens } from './auth.js';
import type { VerifierConfig } from './config.js';
import { DecoyIndexCache } from './decoy-index.js';
import { ApiError, unavailable, VerifierConfigError } from './errors.js';
import { Flags, loadFeatures } from './flags.js';
import { answerClientError, answerConnect, inConnectionOrder, markCutAtShutdown, sendError } from './http.js';
import { createEnrollment } from './install-keys.js';
import { ApiKeyCache } from './key-cache.js';
import { createMetrics } from './metrics.js';
import { type MockUpstream, startMockUpstream } from './mock-upstream.js';
import { PgRedisStorage } from './pg-storage.js';
import { newRequestId, RequestLedger } from './pipeline/record.js';
import type { VerifierServices } from './pipeline/services.js';
import { Upstream } from './pipeline/upstream.js';
import { FunctionUpstream, type UpstreamFunction } from './pipeline/upstream-function.js';
import { createRouter, dispatch, type Route, type RouteRow } from './router.js';
import { refuseAndRecord } from './routes/refuse.js';
import { routeTable } from './routes/table.js';
import { RecordSpool } from './spool.js';
import { SqliteStorage, type Storage } from './storage.js';
import { StoreContentError, StoreUnavailableError, storeBoundary } from './store-boundary.js';
import { StoreGuard } from './store-guard.js';
import { Supervisor } from './supervise.js';
import { type CanonicalTarget, canonicalTarget, TargetError, withoutPrefix } from './target.js';
import { DecoyTracePool } from './trace-pool.js';

/** Options of {@link createVerifier} besides the configuration. */
export interface VerifierOptions {
  /** pino log level (default `info`; `silent` in tests). */
  readonly logLevel?: string;
  /** Sees every request body the upstream receives (tests: proves no tag reaches it). */
  readonly onUpstreamRequest?: (body: string) => void;
  /** A storage to use instead of the one the configuration names. */
  readonly storage?: Storage;
  /**
   * The model call in process, instead of the upstream the configuration names (no HTTP hop:
   * the embedded handler's way, see `createMoatHandler`).
   */
  readonly upstream?: UpstreamFunction;
  /** A logger to use instead of one at `logLevel` (the embedding server's own pino logger). */
  readonly logger?: pino.Logger;
}

/** Opens the storage the configuration names: PostgreSQL + Redis when both URLs are set, else SQLite. */
export async function openStorage(config: VerifierConfig, log?: pino.Logger): Promise<Storage> {
  const pepper = Buffer.from(config.serverSecret, 'hex');
  if (config.postgresUrl !== undefined && config.redisUrl !== undefined)
    return PgRedisStorage.open(config.postgresUrl, config.redisUrl, pepper, {
      windowSec: config.windowSec,
      onError: (source, error) => log?.warn({ source, err: error.message }, 'storage connection error; reconnecting'),
    }).then((storage) => {
      storage.onReplayCacheReset = (lostAt) =>
        log?.error(
          { lostAt: new Date(lostAt).toISOString() },
          'the replay cache lost its data; stamps made before then are refused for one window',
        );
      return storage;
    });
  try {
    return new SqliteStorage(config.database, pepper, { windowSec: config.windowSec });
  } catch (error) {
    if (error instanceof VerifierConfigError) throw error;
    throw new VerifierConfigError('database', 'a SQLite file the verifier can open and write', errorMessage(error));
  }
}

/** The answer to an error no route turned into one: a store that cannot answer is 503 with `retry-after`, never 500. */
function apiErrorOf(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof StoreUnavailableError) return unavailable('the store', error);
  if (error instanceof StoreContentError)
    return new ApiError(400, 'invalid_request_error', 'the store refused a value of this request');
  return new ApiError(500, 'api_error', 'internal error');
}

/** A running verifier. */
export interface Verifier {
  readonly server: Server;
  readonly storage: Storage;
  readonly fingerprintStats: FingerprintStats;
  readonly gatewayStats: GatewayStats;
  readonly blockKeyring: BlockKeyring;
  /** Base URL once listening. */
  url(): string;
  listen(): Promise<string>;
  /** Stops accepting, finishes in-flight requests, saves statistics, closes the database. */
  close(): Promise<void>;
}

async function loadFingerprintStats(storage: Storage, log: pino.Logger): Promise<FingerprintStats> {
  try {
    const snapshot = await storage.loadSnapshot('fingerprint');
    return snapshot === undefined ? new FingerprintStats() : FingerprintStats.fromJSON(snapshot);
  } catch (error) {
    log.warn({ err: errorMessage(error) }, 'fingerprint statistics snapshot unreadable; starting empty');
    return new FingerprintStats();
  }
}

/**
 * Why the server could not listen, as the setting at fault: a port in use or not allowed is
 * `port`, an address not of this machine `host`; anything else as it came.
 */
function listenError(error: Error, host: string, port: number): Error {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE')
    return new VerifierConfigError(
      'port',
      `a port free to listen on at ${host}:${port}`,
      'EADDRINUSE (another process listens there)',
    );
  if (code === 'EACCES')
    return new VerifierConfigError('port', `a port this user may listen on at ${host}`, `EACCES for ${port}`);
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND')
    return new VerifierConfigError('host', 'an address of this machine', `${code} for ${JSON.stringify(host)}`);
  return error;
}

/** The services of the pipeline and the routes, with what only `createVerifier` holds. */
export async function createServices(
  config: VerifierConfig,
  options: VerifierOptions,
  log: pino.Logger,
): Promise<{ services: VerifierServices; mock: MockUpstream | undefined }> {
  // The policy file is read and checked before anything is opened or started: a mistake in
  // it stops the start with nothing left running.
  const flags = new Flags(loadFeatures(config.flagsFile));
  const secret = Buffer.from(config.serverSecret, 'hex');
  // One boundary for every use of the store: storable text in, typed errors out.
  const storage = storeBoundary(options.storage ?? (await openStorage(config, log)));
  // A store that begins vouching for stamps at the next whole second (a new one): served from then.
  const begins = (await storage.replayCacheSince()) - Date.now();
  if (begins > 0) await setTimeout(begins);
  const attestationKeyring = new AttestationKeyring(
    config.attestationKeys.map((k) => ({ kid: k.kid, key: Buffer.from(k.key, 'hex') })),
  );
  for (const kid of config.revokedKids) attestationKeyring.revoke(kid);
  // Stamps are checked in @moat/native where it loads: wait for it, so the first requests use it too.
  await attestationKeyring.ready();
  const blockKeyring = new BlockKeyring(
    [{ kid: config.signingKid, alg: 'hs256', secret: Buffer.from(config.signingSecret, 'hex') }],
    config.signingKid,
  );
  const mock: MockUpstream | undefined =
    options.upstream === undefined && config.upstream === 'mock' ? await startMockUpstream() : undefined;
  const metrics = createMetrics();
  const supervisor = new Supervisor(log, { registry: metrics.registry });
  const spool = new RecordSpool(config.spoolFile, config.spoolMaxBytes, { reserveBytes: config.spoolReserveBytes });
  const guard = new StoreGuard(storage, spool, log, { supervisor, registry: metrics.registry });
  // Records spooled by an earlier run go to the store first; if it cannot take them yet, the guard keeps trying.
  await guard.recover();
  const upstreamKey = mock === undefined ? config.upstreamKey : undefined;
  const services: VerifierServices = {
    config,
    storage,
    guard,
    supervisor,
    flags,
    log,
    metrics,
    attestationKeyring,
    blockKeyring,
    fingerprintStats: await loadFingerprintStats(storage, log),
    gatewayStats: new GatewayStats({ addressSecret: secret }),
    keyCache: new ApiKeyCache(),
    enrollment: createEnrollment(config, storage.installs, secret),
    decoyIndex: new DecoyIndexCache(storage, secret, {
      retentionDays: config.decoyRetentionDays,
      background: (name, task) => supervisor.run(name, task),
    }),
    decoyTracer: new DecoyTracePool({
      ...(config.traceWorkers === undefined ? {} : { workers: config.traceWorkers }),
      warn: (message) => log.warn(message),
    }),
    secret,
    upstream:
      options.upstream === undefined
        ? new Upstream(mock?.url ?? config.upstream, upstreamKey, config.upstreamTimeouts, config.upstreamConnections)
        : new FunctionUpstream(options.upstream, log),
    onUpstreamRequest: options.onUpstreamRequest,
  };
  const { upstream } = services;
  for (const [name, help, value] of [
    [
      'moat_verifier_upstream_calls_active',
      'Upstream calls in flight, each holding one of upstreamConnections',
      'active',
    ],
    ['moat_verifier_upstream_calls_waiting', 'Requests waiting for a free upstream connection', 'waiting'],
  ] as const)
    new Gauge({
      name,
      help,
      registers: [metrics.registry],
      collect() {
        this.set(upstream.load?.()[value] ?? 0);
      },
    });
  return { services, mock };
}

/**
 * The periodic work, supervised (an error is logged, counted, shown by `/readyz` and retried
 * with backoff): the fingerprint statistics saved, revocations made on any replica (or before
 * this start) applied within seconds, expired nonces swept. `supervisor.close()` stops it.
 */
export async function startPeriodicWork(services: VerifierServices): Promise<void> {
  const { storage, log, attestationKeyring, supervisor } = services;
  const applyRevocations = async () => {
    for (const { kid } of await storage.revokedKids()) attestationKeyring.revoke(kid);
  };
  await applyRevocations().catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'revoked key ids not read'));
  const snapshot = () => storage.saveSnapshot('fingerprint', services.fingerprintStats.toJSON());
  supervisor.every('fingerprint-snapshot', 30_000, snapshot);
  supervisor.every('revocations', 5_000, applyRevocations);
  supervisor.every('nonce-sweep', 60_000, () => storage.sweepNonces());
  supervisor.every('challenge-sweep', 60_000, () => storage.installs.sweepChallenges());
}

/** Whether a route is served under `publicPathPrefix`: the client's and the public ones, not the operator's (admin, metrics, dashboard). */
function servedUnderPrefix(route: Route): boolean {
  return route.access === 'client' || (route.access === 'public' && !ROOT_ONLY_PUBLIC.has(route.pattern));
}

/** Headers a request may carry once: the authority, the credentials, the body's type, the client's name, the API version. */
const HEADER_NAMES: Readonly<Record<string, string>> = {
  host: 'Host',
  authorization: 'Authorization',
  'x-api-key': 'x-api-key',
  'content-type': 'Content-Type',
  'user-agent': 'User-Agent',
  'anthropic-version': 'anthropic-version',
};

/** How many times each header of {@link HEADER_NAMES} is in a request's raw headers, in one pass. */
function singleHeaderCounts(rawHeaders: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as string).toLowerCase();
    if (Object.hasOwn(HEADER_NAMES, name)) counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

/** Public routes for the operator's eyes: the dashboard's sign-in, and readiness with its checks' errors. */
const ROOT_ONLY_PUBLIC: ReadonlySet<string> = new Set(['/dashboard', '/readyz']);

/**
 * The `node:http` handler over a route table: the one entry of every request, whether the
 * verifier's server or an embedding server calls it. Every answer says protocol version 1; an
 * error no route answered becomes Anthropic's error shape (a store that cannot answer is 503),
 * or a destroyed connection once the answer has begun.
 */
export function createRequestHandler(
  services: VerifierServices,
  rows: readonly RouteRow[],
  closing: () => boolean,
): RequestHandler {
  const tokens = operatorTokens(services.config);
  const running = new Set<Promise<void>>();
  const router = createRouter(rows);
  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader(VERSION_HEADER, '1');
    // One of each header a check reads: Node keeps the first of two, and a front end or the
    // upstream may read the second. (A web `Request` read as one has no raw headers: its
    // `Headers` join what was sent twice.) HTTP/1.1 requires a Host.
    if (Array.isArray(req.rawHeaders)) {
      const counts = singleHeaderCounts(req.rawHeaders);
      for (const [name, label] of Object.entries(HEADER_NAMES)) {
        const count = counts.get(name) ?? 0;
        const missing = name === 'host' && count === 0 && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1;
        if (count > 1 || missing)
          return refuseAndRecord(
            req,
            res,
            services,
            new ApiError(400, 'invalid_request_error', `expected one ${label} header, got ${count}`),
          );
      }
    }
    // One canonical target: what is routed here is exactly what a route forwards.
    let target: CanonicalTarget;
    let mounted: boolean;
    try {
      const received = canonicalTarget(req.url ?? '/');
      target = withoutPrefix(received, services.config.publicPathPrefix);
      mounted = target !== received;
    } catch (error) {
      if (error instanceof TargetError) return refuseAndRecord(req, res, services, error);
      throw error;
    }
    const found = router.match(req.method ?? 'GET', target.path);
    // The mount serves the API and Moat's client routes; the operator's stay at the root.
    const matched = found !== undefined && mounted && !servedUnderPrefix(found.route) ? undefined : found;
    if (matched === undefined)
      return refuseAndRecord(
        req,
        res,
        services,
        new ApiError(404, 'not_found_error', `no route ${req.method} ${target.path}`),
      );
    const url = new URL(`${target.path}${target.query}`, 'http://verifier');
    await dispatch(matched, { req, res, url, target, services, closing: closing() }, tokens);
  }
  const handler = (req: IncomingMessage, res: ServerResponse) =>
    inConnectionOrder(req, res, () => {
      const handled = route(req, res).catch((error: unknown) => {
        const apiError = apiErrorOf(error);
        if (!(error instanceof ApiError)) services.log.error({ err: errorMessage(error) }, 'request failed');
        if (res.headersSent) {
          res.destroy();
          return;
        }
        // Drain what the client is still sending so the error gets through.
        req.resume();
        sendError(res, apiError);
      });
      running.add(handled);
      void handled.finally(() => running.delete(handled));
    });
  return Object.assign(handler, {
    settled: async () => {
      while (running.size > 0) await Promise.allSettled([...running]);
    },
  });
}

/** A `node:http` handler that can say when every request it took has settled (its record written or given up). */
export type RequestHandler = ((req: IncomingMessage, res: ServerResponse) => void) & {
  /** Resolves once no request is being handled. */
  settled(): Promise<void>;
};

/**
 * The HTTP server over the route table. Answers in flight are counted, and once `closing()`
 * every answer says `connection: close`, for a graceful shutdown.
 */
function createHttpServer(
  services: VerifierServices,
  closing: () => boolean,
): { server: Server; inflight: Set<ServerResponse>; handle: RequestHandler } {
  const handle = createRequestHandler(services, routeTable(services.config.passthroughRoutes), closing);
  const inflight = new Set<ServerResponse>();
  // Host is checked by the handler (one, and only one, in HTTP/1.1), so its refusal is recorded in the API's shape.
  const server = createServer({ maxHeaderSize: 32 * 1024, requireHostHeader: false }, (req, res) => {
    inflight.add(res);
    res.on('close', () => inflight.delete(res));
    if (closing()) res.setHeader('connection', 'close');
    handle(req, res);
  });
  server.keepAliveTimeout = 65_000;
  // A request Node's parser refused is recorded too, and shutdown waits for its record as for any other.
  const refusals = new Set<Promise<void>>();
  const record = (status: number, message: string) => recordParserRefusal(services, status, message);
  const refuse = (socket: Socket, answer: Promise<void>) => {
    const refusal = answer.catch((failure: unknown) => {
      services.log.error({ err: errorMessage(failure) }, 'parser refusal failed');
      socket.destroy();
    });
    refusals.add(refusal);
    void refusal.finally(() => refusals.delete(refusal));
  };
  server.on('clientError', (error: Error & { code?: string }, socket: Socket) =>
    refuse(socket, answerClientError(error, socket, record)),
  );
  // An `Expect` other than 100-continue: refused in Anthropic's error shape and recorded, not Node's bare 417.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    inflight.add(res);
    res.on('close', () => inflight.delete(res));
    res.setHeader(VERSION_HEADER, '1');
    const expectation = JSON.stringify(String(req.headers.expect ?? '').slice(0, 60));
    refuseAndRecord(
      req,
      res,
      services,
      new ApiError(417, 'invalid_request_error', `expected no Expect header or "100-continue", got ${expectation}`),
    ).catch((error: unknown) => {
      services.log.error({ err: errorMessage(error) }, 'request failed');
      res.destroy();
    });
  });
  server.on('connect', (_req: IncomingMessage, socket: Socket) => refuse(socket, answerConnect(socket, record)));
  const settled = async () => {
    await handle.settled();
    await Promise.all(refusals);
  };
  return {
    server,
    inflight,
    handle: Object.assign((req: IncomingMessage, res: ServerResponse) => handle(req, res), { settled }),
  };
}

/**
 * The record of a request Node's HTTP parser refused: no key, model or signal could be read
 * (the request never parsed), the status and the parser's reason. Resolves to its id, or
 * `undefined` when the store could not take it (logged; the refusal still goes out).
 */
async function recordParserRefusal(
  services: VerifierServices,
  status: number,
  message: string,
): Promise<string | undefined> {
  const ledger = new RequestLedger(services.guard, newRequestId());
  ledger.set({ verdict: 'block' });
  ledger.reason(`${status}: ${message}`);
  try {
    await ledger.finish(status);
    return ledger.id;
  } catch (error) {
    services.log.error({ err: errorMessage(error), id: ledger.id }, 'record not written');
    return undefined;
  }
}

/** How long shutdown waits, at most, for the requests it cut to write their records. */
export const SETTLE_MS = 5_000;
// How long shutdown waits, at most, for the requests it cut to tell their clients, before it closes their connections.
const TELL_MS = 1_000;

/** Stops accepting, lets answers in flight finish (up to the grace period), then closes what the verifier opened. */
async function shutDown(
  server: Server,
  inflight: ReadonlySet<ServerResponse>,
  handle: RequestHandler,
  services: VerifierServices,
  mock: MockUpstream | undefined,
): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // Idle keep-alive connections go now; busy ones as soon as their answer is out.
  server.closeIdleConnections();
  const idle = setInterval(() => server.closeIdleConnections(), 25);
  const deadline = Date.now() + services.config.shutdownGraceMs;
  while (inflight.size > 0 && Date.now() < deadline) await setTimeout(25);
  clearInterval(idle);
  // What is still in flight is cut by the verifier, not by its client: each handler is ended
  // while its connection is open, so its client gets a 503 (an SSE error mid-stream), and its
  // record says so; then the connections close.
  for (const res of inflight) markCutAtShutdown(res);
  await Promise.race([handle.settled(), setTimeout(TELL_MS, undefined, { ref: false })]);
  server.closeAllConnections();
  await closed;
  // The requests just cut write their records before the store closes (bounded: a store that hangs must not hold the exit).
  await Promise.race([handle.settled(), setTimeout(SETTLE_MS, undefined, { ref: false })]);
  await closeServices(services, mock);
}

/** Stops the periodic work and closes what `createServices` opened, saving the statistics first. */
export async function closeServices(services: VerifierServices, mock?: MockUpstream): Promise<void> {
  const { storage, log } = services;
  services.supervisor.close();
  services.guard.close();
  // A store that cannot take the last snapshot (read-only, disk full, gone) must not turn shutdown into a crash.
  for (const step of [
    () => services.upstream.close(),
    () => services.decoyTracer.close(),
    () => mock?.close(),
    () => storage.saveSnapshot('fingerprint', services.fingerprintStats.toJSON()),
    () => storage.close(),
    () => services.guard.spool.close(),
  ]) {
    try {
      await step();
    } catch (error) {
      log.warn({ err: errorMessage(error) }, 'shutdown step failed');
    }
  }
}

/**
 * Creates the verifier: an Anthropic-Messages-compatible gateway that runs every request with
 * a Messages body through the decision pipeline (`pipeline/`), serves Moat's own endpoints
 * (discovery, flags, telemetry, conformance, admin, dashboard, health, metrics), passes the
 * upstream routes its configuration names through, and refuses (and records) everything else
 * — as the route table (`routes/table.ts`) says.
 */
export async function createVerifier(config: VerifierConfig, options: VerifierOptions = {}): Promise<Verifier> {
  const log = options.logger ?? pino({ level: options.logLevel ?? process.env.MOAT_VERIFIER_LOG_LEVEL ?? 'info' });
  const { services, mock } = await createServices(config, options, log);
  await startPeriodicWork(services);
  let closing = false;
  const { server, inflight, handle } = createHttpServer(services, () => closing);
  const { attestationKeyring } = services;
  let baseUrl = '';
  return {
    server,
    storage: services.storage,
    fingerprintStats: services.fingerprintStats,
    gatewayStats: services.gatewayStats,
    blockKeyring: services.blockKeyring,
    url: () => baseUrl,
    listen: () =>
      new Promise((resolve, reject) => {
        server.once('error', (error) => reject(listenError(error, config.host, config.port)));
        server.listen(config.port, config.host, () => {
          const { port } = server.address() as AddressInfo;
          baseUrl = `http://${config.host}:${port}`;
          const backends = new Set(attestationKeyring.kids().map((kid) => attestationKeyring.backend(kid)));
          const stampCheck = [...backends].join(',') || 'no keys';
          log.info(
            { url: baseUrl, upstream: mock === undefined ? services.upstream.url : 'mock', stampCheck },
            'moat-verifier listening',
          );
          resolve(baseUrl);
        });
      }),
    close: async () => {
      closing = true;
      await shutDown(server, inflight, handle, services, mock);
    },
  };
}
