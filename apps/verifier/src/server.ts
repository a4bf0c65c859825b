import { randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UNATTESTED_HEADER } from '@moat/attest/client';
import { AttestationKeyring, verifyAttestation } from '@moat/attest/server';
import {
  BlockKeyring,
  type Decoy,
  type DecoyCall,
  DecoyStreamFilter,
  decoyPeriod,
  decoyResult,
  decoyTools,
  findDecoyCall,
  interceptDecoyCalls,
  invalidBlockError,
  type StreamEvent,
  StreamSigner,
  signResponse,
  stripFailedBlocks,
  verifyRequestBlocks,
} from '@moat/distill-guard/server';
import { checkFingerprint, FingerprintStats } from '@moat/fingerprint/server';
import { GatewayStats, inspectRequest } from '@moat/gateway-detect/server';
import {
  ANTI_DISTILLATION_MEMBER,
  DISCOVERY_PATH,
  FEATURES,
  parseTelemetryBatch,
  readStreamEvents,
  stripMoatTags,
  TELEMETRY_PATH,
  VERSION_HEADER,
} from '@moat/protocol';
import { answerConformanceRequest } from '@moat/protocol/conformance';
import { errorMessage } from '@moat/protocol/support';
import { pino } from 'pino';
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import type { VerifierConfig } from './config.js';
import { DASHBOARD_HTML } from './dashboard.js';
import { ApiError, type ApiErrorType, STATUS_OF_ERROR_TYPE } from './errors.js';
import { Flags, loadFeatures } from './flags.js';
import { ApiKeyCache } from './key-cache.js';
import { mockEvents, mockMessages } from './mock-upstream.js';
import { PgRedisStorage } from './pg-storage.js';
import { type RequestRecord, SqliteStorage, type Storage } from './storage.js';

/** Where the verifier answers the conformance interface (SPEC.md §15), and how many requests per call. */
const CONFORMANCE_PATH = '/v1/moat/conformance';
const CONFORMANCE_MAX_REQUESTS = 1000;

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
export async function openStorage(config: VerifierConfig): Promise<Storage> {
  const pepper = Buffer.from(config.serverSecret, 'hex');
  if (config.postgresUrl !== undefined && config.redisUrl !== undefined)
    return PgRedisStorage.open(config.postgresUrl, config.redisUrl, pepper);
  return new SqliteStorage(config.database, pepper);
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

type Json = Record<string, unknown>;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, error: ApiError): void {
  sendJson(res, error.status, error.body());
}

async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) throw new ApiError(413, 'request_too_large', `request body of ${declared} bytes exceeds the ${max}-byte limit`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > max) throw new ApiError(413, 'request_too_large', `request body exceeds the ${max}-byte limit`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function sse(res: ServerResponse, ev: StreamEvent): void {
  res.write(`event: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`);
}

/**
 * Creates the verifier: an Anthropic-Messages-compatible gateway that checks every layer's
 * evidence (attestation on the raw bytes, fingerprint, gateway traces, signed blocks sent
 * back), records the signals and a verdict, decides by policy, strips Moat's tags, injects
 * decoys when asked and allowed, forwards, and signs signed-type blocks in the response
 * (streaming too).
 */
export async function createVerifier(config: VerifierConfig, options: VerifierOptions = {}): Promise<Verifier> {
  const log = pino({ level: options.logLevel ?? process.env.MOAT_VERIFIER_LOG_LEVEL ?? 'info' });
  const secret = Buffer.from(config.serverSecret, 'hex');
  const storage = options.storage ?? (await openStorage(config));
  const attestationKeyring = new AttestationKeyring(config.attestationKeys.map((k) => ({ kid: k.kid, key: Buffer.from(k.key, 'hex') })));
  for (const kid of config.revokedKids) attestationKeyring.revoke(kid);
  const blockKeyring = new BlockKeyring(
    [{ kid: config.signingKid, alg: 'hs256', secret: Buffer.from(config.signingSecret, 'hex') }],
    config.signingKid,
  );
  let fingerprintStats: FingerprintStats;
  try {
    const snapshot = await storage.loadSnapshot('fingerprint');
    fingerprintStats = snapshot === undefined ? new FingerprintStats() : FingerprintStats.fromJSON(snapshot);
  } catch (error) {
    log.warn({ err: errorMessage(error) }, 'fingerprint statistics snapshot unreadable; starting empty');
    fingerprintStats = new FingerprintStats();
  }
  const gatewayStats = new GatewayStats({ addressSecret: secret });
  const flags = new Flags(loadFeatures(config.flagsFile));

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({
    name: 'moat_requests_total',
    help: 'Messages requests by verdict',
    labelNames: ['verdict'],
    registers: [registry],
  });
  const signals = new Counter({
    name: 'moat_signals_total',
    help: 'Signals by layer and value',
    labelNames: ['layer', 'value'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'moat_request_duration_seconds',
    help: 'Time to answer a Messages request',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [registry],
  });
  const decoyCalls = new Counter({
    name: 'moat_decoy_calls_total',
    help: 'Decoy tool calls the verifier kept from the client (answered, or withheld next to real calls)',
    registers: [registry],
  });
  let decoyCallCount = 0;
  const telemetryEvents = new Counter({
    name: 'moat_telemetry_events_total',
    help: 'Client telemetry events by type',
    labelNames: ['type'],
    registers: [registry],
  });

  const snapshotTimer = setInterval(() => {
    Promise.resolve(storage.saveSnapshot('fingerprint', fingerprintStats.toJSON())).catch((err: unknown) =>
      log.warn({ err }, 'snapshot not saved'),
    );
  }, 30_000);
  snapshotTimer.unref();
  const sweepTimer = setInterval(() => {
    Promise.resolve(storage.sweepNonces()).catch((err: unknown) => log.warn({ err }, 'nonce sweep failed'));
  }, 60_000);
  sweepTimer.unref();

  const apiKeyOf = (req: IncomingMessage): string | undefined => {
    const header = req.headers['x-api-key'];
    if (typeof header === 'string' && header !== '') return header;
    const auth = req.headers.authorization;
    return typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : undefined;
  };
  const keyCache = new ApiKeyCache();
  const authenticate = async (req: IncomingMessage): Promise<string> => {
    const key = apiKeyOf(req);
    const id = key === undefined ? undefined : await keyCache.resolve(key, (k) => storage.lookupApiKey(k));
    if (id === undefined)
      throw new ApiError(401, 'authentication_error', key === undefined ? 'x-api-key header is required' : 'invalid x-api-key');
    return id;
  };
  const adminToken = Buffer.from(config.adminToken);
  const isAdmin = (req: IncomingMessage): boolean => {
    const auth = req.headers.authorization;
    if (typeof auth !== 'string' || !auth.startsWith('Bearer ')) return false;
    const given = Buffer.from(auth.slice(7));
    return given.length === adminToken.length && timingSafeEqual(given, adminToken);
  };

  const callUpstream = async (
    body: Json,
    headers: IncomingMessage['headers'],
  ): Promise<{ status: number; json?: Json; events?: Iterable<StreamEvent> | AsyncIterable<StreamEvent> }> => {
    const text = JSON.stringify(body);
    options.onUpstreamRequest?.(text);
    if (config.upstream === 'mock') {
      const response = mockMessages(body);
      return body.stream === true ? { status: 200, events: mockEvents(response) } : { status: 200, json: response as unknown as Json };
    }
    const res = await fetch(new URL('/v1/messages', config.upstream), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-api-key': config.upstreamKey ?? '',
        'anthropic-version': String(headers['anthropic-version'] ?? '2023-06-01'),
        ...(headers['anthropic-beta'] === undefined ? {} : { 'anthropic-beta': String(headers['anthropic-beta']) }),
      },
      body: text,
    });
    if (!res.ok) {
      const err = (await res.json().catch(() => ({}))) as { error?: { type?: string; message?: string } };
      throw new ApiError(
        res.status,
        (err.error?.type as ApiError['type']) ?? 'api_error',
        err.error?.message ?? `upstream answered ${res.status}`,
      );
    }
    if (body.stream === true && res.body !== null) return { status: res.status, events: readStreamEvents(res.body) };
    return { status: res.status, json: (await res.json()) as Json };
  };

  async function messages(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    // Time-ordered (milliseconds, then 48 random bits): records append to the id index.
    const id = `req_${Date.now().toString(16).padStart(12, '0')}${randomUUID().slice(-12)}`;
    res.setHeader('request-id', id);
    const keyId = await authenticate(req);
    const raw = await readBody(req, config.maxBodyBytes);
    const base = { id, ts: Date.now(), keyId, decoys: 0, status: null, latencyMs: null } as const;
    let body: Json;
    try {
      const parsed = JSON.parse(raw.toString('utf8')) as unknown;
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      body = parsed as Json;
    } catch (error) {
      await storage.insertRecord({
        ...base,
        model: null,
        attestation: 'invalid',
        fingerprint: 'missing',
        gateway: [],
        relay: [],
        thinking: 'none',
        verdict: 'block',
        reasons: [`malformed JSON: ${errorMessage(error)}`.slice(0, 200)],
        status: 400,
        latencyMs: 0,
      });
      throw new ApiError(400, 'invalid_request_error', `request body: expected a JSON object, got ${errorMessage(error)}`);
    }
    const model = typeof body.model === 'string' ? body.model : null;

    const attestation = await verifyAttestation(raw, {
      keyring: attestationKeyring,
      nonceStore: storage,
      windowSec: config.windowSec,
      clientUnavailable: String(req.headers[UNATTESTED_HEADER] ?? '').startsWith('unavailable'),
    });
    const fingerprint = checkFingerprint(body, { salt: config.fingerprintSalt });
    const keyClass = fingerprintStats.record(keyId, fingerprint.signal);
    const evidence = gatewayStats.record(
      keyId,
      inspectRequest({
        headers: req.headers as Record<string, string>,
        ...(fingerprint.clientVersion === undefined ? {} : { clientVersion: fingerprint.clientVersion }),
        userAgentProduct: config.userAgentProduct,
      }),
      req.socket.remoteAddress,
    );
    const thinking = verifyRequestBlocks(body, keyId, blockKeyring);

    // Policy: each signal's action; the verdict is the strongest.
    const actions: Array<[string, string, string]> = [
      ['attestation', attestation.signal, flags.action('attestation', attestation.signal, keyId)],
      ['fingerprint', fingerprint.signal, flags.action('fingerprint', fingerprint.signal, keyId)],
      ['fingerprint', keyClass, keyClass === 'tampering' ? flags.action('fingerprint', 'tampering', keyId) : 'monitor'],
      ['thinking', thinking.signal, flags.action('thinking', thinking.signal, keyId)],
      ...evidence.signals.map((s): [string, string, string] => [
        'gateway',
        s,
        flags.action('gateway', s === 'gateway_headers' ? 'detected' : s, keyId),
      ]),
    ];
    const reasons = actions.filter(([, , a]) => a !== 'monitor').map(([layer, value, a]) => `${a}:${layer}=${value}`);
    const verdict = actions.some(([, , a]) => a === 'block') ? 'block' : actions.some(([, , a]) => a === 'flag') ? 'flag' : 'allow';
    for (const [layer, value] of actions) signals.inc({ layer, value });
    requests.inc({ verdict });

    // Tags never reach the model; decoys are added when asked for and allowed.
    let forward = stripMoatTags(thinking.signal === 'invalid' ? stripFailedBlocks(body, thinking.failures) : body) as Json;
    const asked = Array.isArray(body[ANTI_DISTILLATION_MEMBER]) && (body[ANTI_DISTILLATION_MEMBER] as unknown[]).includes('fake_tools');
    let decoys: Decoy[] = [];
    if (asked && flags.value('moat-policy-decoys', true, keyId)) {
      const real = Array.isArray(forward.tools) ? (forward.tools as Array<{ name?: string }>) : [];
      decoys = decoyTools({ secret, apiKeyId: keyId, period: decoyPeriod(), avoid: real.map((t) => String(t.name)) });
      forward = { ...forward, tools: [...real, ...decoys.map((d) => d.tool)] };
    }
    forward = answerDecoyResults(forward, decoys, secret);
    forward = await restoreUpstreamSignatures(forward, storage);

    const record: RequestRecord = {
      ...base,
      model,
      attestation: attestation.signal,
      fingerprint: fingerprint.signal,
      gateway: evidence.gateways.map((g) => g.id),
      relay: evidence.signals.filter((s) => s !== 'gateway_headers'),
      thinking: thinking.signal,
      verdict,
      reasons,
      decoys: decoys.length,
    };
    log.info(
      { id, keyId, model, verdict, attestation: attestation.signal, fingerprint: fingerprint.signal, thinking: thinking.signal },
      'messages',
    );

    // One write per request, with its outcome, before the response completes.
    let finished = false;
    const finish = async (status: number) => {
      if (finished) return;
      finished = true;
      const elapsed = performance.now() - started;
      await storage.insertRecord({ ...record, status, latencyMs: Math.round(elapsed) });
      duration.observe(elapsed / 1000);
    };
    if (verdict === 'block') {
      const failure = thinking.failures[0];
      if (thinking.signal === 'invalid' && flags.action('thinking', 'invalid', keyId) === 'block' && failure !== undefined) {
        await finish(400);
        sendJson(res, 400, invalidBlockError(failure));
        return;
      }
      await finish(403);
      throw new ApiError(403, 'permission_error', `request blocked by policy (${reasons.filter((r) => r.startsWith('block')).join(', ')})`);
    }

    const ctx = { apiKeyId: keyId, model: model ?? '' };
    // Decoy calls are answered here, up to this many rounds, and never reach the client's executor.
    const decoyRounds = 3;
    const countDecoyCalls = (n: number) => {
      if (n === 0) return;
      decoyCalls.inc(n);
      decoyCallCount += n;
    };
    const answerDecoys = (messages: unknown[], continueWith: readonly unknown[], calls: readonly DecoyCall[]) => [
      ...messages,
      { role: 'assistant', content: continueWith },
      { role: 'user', content: calls.map((c) => decoyResult(c, secret)) },
    ];
    let messagesSoFar = Array.isArray(forward.messages) ? [...(forward.messages as unknown[])] : [];
    try {
      let upstream = await callUpstream(forward, req.headers);
      if (upstream.events !== undefined) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        const signer = new StreamSigner(ctx, blockKeyring);
        const filter = decoys.length > 0 ? new DecoyStreamFilter(decoys) : undefined;
        // The mock streams slowly for model names containing "slow" (cancellation tests).
        const pause = config.upstream === 'mock' && model?.includes('slow') ? 150 : 0;
        // An error event from upstream ends the stream; the record keeps the status it stands for.
        let streamStatus = 200;
        const send = async (ev: StreamEvent) => {
          if (ev.event === 'error') {
            const type = (ev.data.error as { type?: unknown } | undefined)?.type;
            streamStatus =
              typeof type === 'string' && Object.hasOwn(STATUS_OF_ERROR_TYPE, type) ? STATUS_OF_ERROR_TYPE[type as ApiErrorType] : 502;
          }
          // The client may send its next turn as soon as it sees message_stop.
          if (ev.event === 'message_stop')
            await rememberUpstreamSignatures(storage, signer.upstreamSignatures, (i) => signer.issuedSignatures.get(i));
          for (const out of signer.handle(ev)) sse(res, out);
        };
        try {
          for (let round = 0; ; round++) {
            for await (const ev of upstream.events ?? []) {
              for (const kept of filter === undefined ? [ev] : filter.handle(ev)) await send(kept);
              if (pause > 0) await new Promise((r) => setTimeout(r, pause));
            }
            const turn = filter?.takeTurn();
            if (filter === undefined || turn?.continueWith === undefined) break;
            if (round + 1 === decoyRounds) {
              for (const ev of filter.close()) await send(ev);
              break;
            }
            messagesSoFar = answerDecoys(messagesSoFar, turn.continueWith, turn.calls);
            filter.nextRound();
            upstream = await callUpstream({ ...forward, messages: messagesSoFar }, req.headers);
          }
        } catch (error) {
          // Headers are out: the failure goes to the client as the API's own SSE error event.
          const apiError = error instanceof ApiError ? error : new ApiError(502, 'api_error', `upstream failed: ${errorMessage(error)}`);
          sse(res, { event: 'error', data: { type: 'error', error: { type: apiError.type, message: apiError.message } } });
          await finish(apiError.status);
          res.end();
          return;
        } finally {
          countDecoyCalls(filter?.decoyCalls ?? 0);
        }
        await finish(streamStatus);
        res.end();
        return;
      }
      let answer: Json;
      // Output tokens of the rounds the client does not see, added to the answer's usage.
      let hiddenOutputTokens = 0;
      for (let round = 0; ; round++) {
        const intercepted = interceptDecoyCalls(upstream.json as Json, decoys);
        answer = intercepted.response;
        const { continueWith, calls } = intercepted.turn;
        countDecoyCalls(calls.length);
        if (continueWith === undefined || round + 1 === decoyRounds) break;
        hiddenOutputTokens += outputTokensOf(answer);
        messagesSoFar = answerDecoys(messagesSoFar, continueWith, calls);
        upstream = await callUpstream({ ...forward, messages: messagesSoFar }, req.headers);
      }
      if (hiddenOutputTokens > 0) {
        const usage = (answer.usage ?? {}) as Record<string, unknown>;
        answer = { ...answer, usage: { ...usage, output_tokens: outputTokensOf(answer) + hiddenOutputTokens } };
      }
      const { response, upstreamSignatures } = signResponse(answer, ctx, blockKeyring);
      const content = (response.content ?? []) as Array<{ signature?: string }>;
      await rememberUpstreamSignatures(storage, upstreamSignatures, (i) => content[i]?.signature);
      await finish(upstream.status);
      sendJson(res, upstream.status, response);
    } catch (error) {
      const apiError = error instanceof ApiError ? error : new ApiError(502, 'api_error', `upstream failed: ${errorMessage(error)}`);
      await finish(apiError.status);
      throw apiError;
    }
  }

  async function telemetry(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const keyId = await authenticate(req);
    const raw = await readBody(req, 65_536);
    let batch: ReturnType<typeof parseTelemetryBatch>;
    try {
      batch = parseTelemetryBatch(JSON.parse(raw.toString('utf8')), raw.length);
    } catch (error) {
      throw new ApiError(400, 'invalid_request_error', `telemetry batch: ${errorMessage(error)}`);
    }
    await storage.insertTelemetry(keyId, batch.events);
    for (const e of batch.events) {
      telemetryEvents.inc({ type: e.type });
      if (e.type === 'gateway_detected' && Array.isArray(e.gateways)) gatewayStats.recordTelemetry(keyId, e.gateways as string[]);
    }
    sendJson(res, 202, { accepted: batch.events.length });
  }

  /** SPEC.md §15: the stdio conformance interface over HTTP, so partners can check a running verifier. */
  async function conformance(req: IncomingMessage, res: ServerResponse): Promise<void> {
    await authenticate(req);
    const raw = await readBody(req, 1_048_576);
    let requests: unknown;
    try {
      requests = (JSON.parse(raw.toString('utf8')) as { requests?: unknown }).requests;
    } catch (error) {
      throw new ApiError(400, 'invalid_request_error', `body: expected JSON { "requests": [...] }, got ${errorMessage(error)}`);
    }
    if (!Array.isArray(requests) || requests.length > CONFORMANCE_MAX_REQUESTS)
      throw new ApiError(
        400,
        'invalid_request_error',
        `requests: expected an array of at most ${CONFORMANCE_MAX_REQUESTS}, got ${Array.isArray(requests) ? `${requests.length} items` : typeof requests}`,
      );
    sendJson(res, 200, { answers: requests.map((r) => answerConformanceRequest(r)) });
  }

  async function admin(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (!isAdmin(req)) throw new ApiError(401, 'authentication_error', 'admin bearer token required');
    if (req.method === 'GET' && url.pathname === '/admin/records') {
      const limit = Math.min(1000, Math.max(1, Number(url.searchParams.get('limit') ?? 100) || 100));
      return sendJson(res, 200, { records: await storage.recentRecords(limit, url.searchParams.get('key') ?? undefined) });
    }
    if (req.method === 'GET' && url.pathname === '/admin/summary') {
      return sendJson(res, 200, {
        ...(await storage.summary()),
        telemetry: await storage.telemetryCounts(),
        gateways: gatewayStats.totals(),
        decoyCalls: decoyCallCount,
      });
    }
    if (req.method === 'GET' && url.pathname === '/admin/keys') {
      return sendJson(res, 200, {
        keys: (await storage.listApiKeys()).map((k) => ({
          ...k,
          fingerprint: fingerprintStats.report(k.id) ?? null,
          gateway: gatewayStats.report(k.id) ?? null,
        })),
      });
    }
    if (req.method === 'POST' && url.pathname === '/admin/keys') {
      const raw = await readBody(req, 4096);
      let label = 'unnamed';
      try {
        const parsed = JSON.parse(raw.toString('utf8') || '{}') as { label?: unknown };
        if (typeof parsed.label === 'string' && parsed.label !== '') label = parsed.label.slice(0, 100);
      } catch {
        throw new ApiError(400, 'invalid_request_error', 'body: expected JSON { "label": string }');
      }
      return sendJson(res, 201, await storage.createApiKey(label));
    }
    if (req.method === 'GET' && url.pathname === '/admin/policy') return sendJson(res, 200, { features: flags.features });
    throw new ApiError(404, 'not_found_error', `no admin route ${req.method} ${url.pathname}`);
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader(VERSION_HEADER, '1');
    const url = new URL(req.url ?? '/', 'http://verifier');
    if (req.method === 'POST' && url.pathname === '/v1/messages') return messages(req, res);
    if (req.method === 'POST' && url.pathname === TELEMETRY_PATH) return telemetry(req, res);
    if (req.method === 'POST' && url.pathname === CONFORMANCE_PATH) return conformance(req, res);
    if (req.method === 'GET' && url.pathname === DISCOVERY_PATH) {
      return sendJson(res, 200, {
        moat: { versions: [1], features: [...FEATURES], telemetry: TELEMETRY_PATH, flags: `/api/features/${config.clientKey}` },
      });
    }
    if (req.method === 'GET' && url.pathname.startsWith('/api/features/')) {
      if (url.pathname !== `/api/features/${config.clientKey}`) throw new ApiError(404, 'not_found_error', 'unknown client key');
      return sendJson(res, 200, flags.clientPayload());
    }
    if (req.method === 'GET' && url.pathname === '/healthz') {
      try {
        await storage.ping();
      } catch (error) {
        return sendJson(res, 503, { ok: false, error: errorMessage(error) });
      }
      return sendJson(res, 200, { ok: true });
    }
    if (req.method === 'GET' && url.pathname === '/metrics') {
      const text = await registry.metrics();
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(text);
      return;
    }
    if (req.method === 'GET' && url.pathname === '/dashboard') {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
      });
      res.end(DASHBOARD_HTML);
      return;
    }
    if (url.pathname.startsWith('/admin/')) return admin(req, res, url);
    throw new ApiError(404, 'not_found_error', `no route ${req.method} ${url.pathname}`);
  }

  const server = createServer((req, res) => {
    route(req, res).catch((error: unknown) => {
      const apiError = error instanceof ApiError ? error : new ApiError(500, 'api_error', 'internal error');
      if (!(error instanceof ApiError)) log.error({ err: error }, 'unexpected error');
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

  let baseUrl = '';
  return {
    server,
    storage,
    fingerprintStats,
    gatewayStats,
    blockKeyring,
    url: () => baseUrl,
    listen: () =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => {
          const { port } = server.address() as AddressInfo;
          baseUrl = `http://${config.host}:${port}`;
          log.info({ url: baseUrl, upstream: config.upstream }, 'moat-verifier listening');
          resolve(baseUrl);
        });
      }),
    close: async () => {
      clearInterval(snapshotTimer);
      clearInterval(sweepTimer);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await storage.saveSnapshot('fingerprint', fingerprintStats.toJSON());
      await storage.close();
    },
  };
}

/** Replaces the client's results for decoy calls with plausible ones (the client cannot run decoys). */
function answerDecoyResults(body: Json, decoys: readonly Decoy[], secret: Uint8Array): Json {
  if (decoys.length === 0 || !Array.isArray(body.messages)) return body;
  const calls = new Map<string, { id: string; name: string; input?: unknown }>();
  for (const m of body.messages as Array<{ content?: unknown }>) {
    if (!Array.isArray(m.content)) continue;
    for (const b of m.content as Array<{ type?: string; id?: string; name?: string; input?: unknown }>) {
      if (b.type === 'tool_use' && typeof b.id === 'string' && findDecoyCall(b, decoys) !== undefined)
        calls.set(b.id, b as { id: string; name: string });
    }
  }
  if (calls.size === 0) return body;
  const messages = (body.messages as Array<{ content?: unknown }>).map((m) => {
    if (!Array.isArray(m.content)) return m;
    return {
      ...m,
      content: (m.content as Array<{ type?: string; tool_use_id?: string }>).map((b) => {
        const call = b.type === 'tool_result' && b.tool_use_id !== undefined ? calls.get(b.tool_use_id) : undefined;
        return call === undefined ? b : decoyResult(call, secret);
      }),
    };
  });
  return { ...body, messages };
}

function outputTokensOf(response: Json): number {
  const tokens = (response.usage as { output_tokens?: unknown } | undefined)?.output_tokens;
  return typeof tokens === 'number' ? tokens : 0;
}

/**
 * Remembers which upstream signature each Moat signature replaced, so the upstream's own can
 * be restored when the block comes back. Pairs remembered leave `theirs` (a stream calls this
 * again for later blocks).
 */
async function rememberUpstreamSignatures(
  storage: Storage,
  theirs: Map<number, string>,
  ours: (index: number) => string | undefined,
): Promise<void> {
  for (const [index, signature] of theirs) {
    const replacement = ours(index);
    if (replacement === undefined) continue;
    await storage.rememberUpstreamSignature(replacement, signature);
    theirs.delete(index);
  }
}

/** Puts the upstream's own signatures back on blocks it signed, before forwarding them to it. */
async function restoreUpstreamSignatures(body: Json, storage: Storage): Promise<Json> {
  if (!Array.isArray(body.messages)) return body;
  let changed = false;
  const messages = [];
  for (const m of body.messages as Array<{ content?: unknown }>) {
    if (!Array.isArray(m.content)) {
      messages.push(m);
      continue;
    }
    const content = [];
    for (const b of m.content as Array<{ signature?: string }>) {
      if (typeof b.signature !== 'string' || !b.signature.startsWith('ms1.')) content.push(b);
      else {
        changed = true;
        content.push({ ...b, signature: (await storage.upstreamSignature(b.signature)) ?? '' });
      }
    }
    messages.push({ ...m, content });
  }
  return changed ? { ...body, messages } : body;
}
