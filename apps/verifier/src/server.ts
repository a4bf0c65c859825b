import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { AttestationKeyring } from '@moat/attest/server';
import { BlockKeyring } from '@moat/distill-guard/server';
import { FingerprintStats } from '@moat/fingerprint/server';
import { GatewayStats } from '@moat/gateway-detect/server';
import { TELEMETRY_PATH, VERSION_HEADER } from '@moat/protocol';
import { errorMessage } from '@moat/protocol/support';
import { pino } from 'pino';
import type { VerifierConfig } from './config.js';
import { DecoyIndexCache } from './decoy-index.js';
import { ApiError, unavailable } from './errors.js';
import { Flags, loadFeatures } from './flags.js';
import { answerClientError, answerConnect, sendError } from './http.js';
import { ApiKeyCache } from './key-cache.js';
import { createMetrics } from './metrics.js';
import { type MockUpstream, startMockUpstream } from './mock-upstream.js';
import { PgRedisStorage } from './pg-storage.js';
import { handleMessagesRequest, type MessagesEndpoint } from './pipeline/index.js';
import type { VerifierServices } from './pipeline/services.js';
import { Upstream } from './pipeline/upstream.js';
import { handleAdmin } from './routes/admin.js';
import { CONFORMANCE_PATH, handleConformance } from './routes/conformance.js';
import { handleMoatEndpoint } from './routes/moat.js';
import { handlePassthrough } from './routes/passthrough.js';
import { answerReadiness } from './routes/readiness.js';
import { handleTelemetry } from './routes/telemetry.js';
import { RecordSpool } from './spool.js';
import { SqliteStorage, type Storage } from './storage.js';
import { StoreContentError, StoreUnavailableError, storeBoundary } from './store-boundary.js';
import { StoreGuard } from './store-guard.js';
import { Supervisor } from './supervise.js';

/** Options of {@link createVerifier} besides the configuration. */
export interface VerifierOptions {
  /** pino log level (default `info`; `silent` in tests). */
  readonly logLevel?: string;
  /** Sees every request body the upstream receives (tests: proves no tag reaches it). */
  readonly onUpstreamRequest?: (body: string) => void;
  /** A storage to use instead of the one the configuration names. */
  readonly storage?: Storage;
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
  return new SqliteStorage(config.database, pepper);
}

/** The answer to an error no route turned into one: a store that cannot answer is 503 with `retry-after`, never 500. */
function apiErrorOf(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof StoreUnavailableError) return unavailable('the store', error);
  if (error instanceof StoreContentError) return new ApiError(400, 'invalid_request_error', 'the store refused a value of this request');
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

/** Messages endpoints, where the whole pipeline runs; every other `/v1` path passes through. */
const MESSAGES_ENDPOINTS: ReadonlyMap<string, MessagesEndpoint> = new Map([
  ['/v1/messages', 'messages'],
  ['/v1/messages/count_tokens', 'count_tokens'],
]);

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
 * Creates the verifier: an Anthropic-Messages-compatible gateway that runs every request with
 * a Messages body through the decision pipeline (`pipeline/`), serves Moat's own endpoints
 * (discovery, flags, telemetry, conformance, admin, dashboard, health, metrics) and passes
 * every other `/v1` path through to the upstream.
 */
export async function createVerifier(config: VerifierConfig, options: VerifierOptions = {}): Promise<Verifier> {
  const log = pino({ level: options.logLevel ?? process.env.MOAT_VERIFIER_LOG_LEVEL ?? 'info' });
  const secret = Buffer.from(config.serverSecret, 'hex');
  // One boundary for every use of the store: storable text in, typed errors out.
  const storage = storeBoundary(options.storage ?? (await openStorage(config, log)));
  const attestationKeyring = new AttestationKeyring(config.attestationKeys.map((k) => ({ kid: k.kid, key: Buffer.from(k.key, 'hex') })));
  for (const kid of config.revokedKids) attestationKeyring.revoke(kid);
  // Stamps are checked in @moat/native where it loads: wait for it, so the first requests use it too.
  await attestationKeyring.ready();
  const blockKeyring = new BlockKeyring(
    [{ kid: config.signingKid, alg: 'hs256', secret: Buffer.from(config.signingSecret, 'hex') }],
    config.signingKid,
  );
  const mock: MockUpstream | undefined = config.upstream === 'mock' ? await startMockUpstream() : undefined;
  const metrics = createMetrics();
  const supervisor = new Supervisor(log, { registry: metrics.registry });
  const spool = new RecordSpool(config.spoolFile, config.spoolMaxBytes);
  const guard = new StoreGuard(storage, spool, log, { supervisor, registry: metrics.registry });
  // Records spooled by an earlier run go to the store first; if it cannot take them yet, the guard keeps trying.
  await guard.recover();
  const services: VerifierServices = {
    config,
    storage,
    guard,
    supervisor,
    flags: new Flags(loadFeatures(config.flagsFile)),
    log,
    metrics,
    attestationKeyring,
    blockKeyring,
    fingerprintStats: await loadFingerprintStats(storage, log),
    gatewayStats: new GatewayStats({ addressSecret: secret }),
    keyCache: new ApiKeyCache(),
    decoyIndex: new DecoyIndexCache(storage, secret, undefined, (name, task) => supervisor.run(name, task)),
    secret,
    upstream: new Upstream(mock?.url ?? config.upstream, mock === undefined ? config.upstreamKey : undefined, config.upstreamTimeouts),
    onUpstreamRequest: options.onUpstreamRequest,
  };
  const tokens = {
    admin: Buffer.from(config.adminToken),
    metrics: config.metricsToken === undefined ? undefined : Buffer.from(config.metricsToken),
  };

  // Background work is supervised: an error is logged, counted, shown by /readyz and retried with backoff.
  supervisor.every('fingerprint-snapshot', 30_000, () => storage.saveSnapshot('fingerprint', services.fingerprintStats.toJSON()));
  // Revocations made on any replica (or before this start) apply here within seconds.
  const applyRevocations = async () => {
    for (const { kid } of await storage.revokedKids()) attestationKeyring.revoke(kid);
  };
  await applyRevocations().catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'revoked key ids not read'));
  supervisor.every('revocations', 5_000, applyRevocations);
  supervisor.every('nonce-sweep', 60_000, () => storage.sweepNonces());

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader(VERSION_HEADER, '1');
    const url = new URL(req.url ?? '/', 'http://verifier');
    const endpoint = req.method === 'POST' ? MESSAGES_ENDPOINTS.get(url.pathname) : undefined;
    if (endpoint !== undefined) return handleMessagesRequest(req, res, endpoint, services);
    if (req.method === 'POST' && url.pathname === TELEMETRY_PATH) return handleTelemetry(req, res, services);
    if (req.method === 'POST' && url.pathname === CONFORMANCE_PATH) return handleConformance(req, res, services);
    if (req.method === 'GET' && url.pathname === '/readyz') return answerReadiness(res, services, closing);
    if (await handleMoatEndpoint(req, res, url, services, tokens)) return;
    if (url.pathname.startsWith('/admin/')) return handleAdmin(req, res, url, services, tokens.admin);
    if (url.pathname.startsWith('/v1/') && !url.pathname.startsWith('/v1/moat')) return handlePassthrough(req, res, services);
    throw new ApiError(404, 'not_found_error', `no route ${req.method} ${url.pathname}`);
  }

  // Graceful shutdown: answers in flight are counted; once closing, every answer says `connection: close`.
  let closing = false;
  const inflight = new Set<ServerResponse>();
  const server = createServer({ maxHeaderSize: 32 * 1024 }, (req, res) => {
    inflight.add(res);
    res.on('close', () => inflight.delete(res));
    if (closing) res.setHeader('connection', 'close');
    route(req, res).catch((error: unknown) => {
      const apiError = apiErrorOf(error);
      if (!(error instanceof ApiError)) log.error({ err: errorMessage(error) }, 'request failed');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // Drain what the client is still sending so the error gets through.
      req.resume();
      sendError(res, apiError);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.on('clientError', (error: Error & { code?: string }, socket: Socket) => answerClientError(error, socket));
  server.on('connect', (_req: IncomingMessage, socket: Socket) => answerConnect(socket));

  let baseUrl = '';
  return {
    server,
    storage,
    fingerprintStats: services.fingerprintStats,
    gatewayStats: services.gatewayStats,
    blockKeyring,
    url: () => baseUrl,
    listen: () =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => {
          const { port } = server.address() as AddressInfo;
          baseUrl = `http://${config.host}:${port}`;
          const stampCheck = [...new Set(attestationKeyring.kids().map((kid) => attestationKeyring.backend(kid)))].join(',') || 'no keys';
          log.info({ url: baseUrl, upstream: mock === undefined ? config.upstream : 'mock', stampCheck }, 'moat-verifier listening');
          resolve(baseUrl);
        });
      }),
    close: async () => {
      closing = true;
      supervisor.close();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Idle keep-alive connections go now; busy ones as soon as their answer is out.
      server.closeIdleConnections();
      const idle = setInterval(() => server.closeIdleConnections(), 25);
      const deadline = Date.now() + config.shutdownGraceMs;
      while (inflight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      clearInterval(idle);
      server.closeAllConnections();
      await closed;
      guard.close();
      // A store that cannot take the last snapshot (read-only, disk full, gone) must not turn shutdown into a crash.
      for (const step of [
        () => services.upstream.close(),
        () => mock?.close(),
        () => storage.saveSnapshot('fingerprint', services.fingerprintStats.toJSON()),
        () => storage.close(),
        () => spool.close(),
      ]) {
        try {
          await step();
        } catch (error) {
          log.warn({ err: errorMessage(error) }, 'shutdown step failed');
        }
      }
    },
  };
}
