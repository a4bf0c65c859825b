/**
 * What the verifier adds to a request, against the strongest honest baselines in the same run:
 *
 * - "direct": the upstream itself (the mock model served over HTTP by node:http);
 * - "proxy": a bare pass-through proxy on the verifier's own stack (node:http + undici, the
 *   body read and forwarded, no checks) in front of the same upstream;
 * - "floor": the same stack doing only what the verifier's guarantee and its strict reading
 *   cannot skip, with no Moat check: the API key's keyed hash and a MAC over the body, the
 *   request and a JSON answer parsed and serialized again, and the request's record in the
 *   verifier's own SQLite store (`SqliteStorage`, group commit) reserved before forwarding and
 *   finished before the answer ends — two durable commits per sequential request. What the
 *   verifier adds over this row is its checks; what this row adds over "proxy" is the design;
 * - "plain": the verifier with a request that carries no Moat tags (what a client without Moat
 *   sends: moat-chat's headers and body, untagged);
 * - "moat-chat": the verifier with the request moat-chat sends — `@moat/client` composed as
 *   moat-chat composes it (entrypoint `cli`, anti-distillation compiled in, moat-chat's user
 *   agent and headers, the attribution block with the fingerprint, a stamp from the native
 *   addon: `i1` once the install enrolled with the verifier, as it does on first use). Before measuring, the bench runs the built moat-chat itself once and
 *   fails unless its request is byte for byte the bench's (the envelope's time, nonce and
 *   stamp aside);
 * - "sdk": the verifier with what `@anthropic-ai/sdk` sends through `createMoatFetch` with its
 *   defaults (entrypoint `sdk`: no decoys asked for), the SDK's own headers included.
 *
 * A third mode, "Claude Code", sends every target (direct, proxy, floor, the verifier) the
 * request Claude Code itself sends: the bench runs `claude -p` (the binary of the npm package
 * `@anthropic-ai/claude-code`) once against a capturing server in front of the upstream and
 * replays that request — about 50 KB of system prompt and tool definitions, streamed, to
 * `/v1/messages?beta=true` — with each target's API key. Without the binary the mode is left
 * out, and the output says so.
 *
 * Stamps: a stamp's nonce is single-use and the addon stamps below JavaScript as it sends, so
 * every genuine request is made fresh by the real client code: just before each measurement
 * the client sends the requests it needs to a capturing server (which also relays discovery,
 * flags and telemetry to the verifier), and the bench replays each captured request once,
 * its bytes unchanged — only `Host` and `Content-Length` are set again by the load generator;
 * the verifier is configured with the capturing server's authority as its public authority,
 * as a verifier behind a load balancer is, so the stamp's binding holds. Each verifier (this
 * build's and each of BENCH_BUILDS) has a capturing server of its own, so the client enrolls
 * its install with the verifier that then checks its `i1` stamps. The bench fails unless
 * the verifier found every genuine request's stamp valid.
 *
 * Latency: per-request `process.hrtime.bigint()` over sequential requests on one keep-alive
 * connection, p50/p90/p99 in µs, the added latency against "direct". Throughput: a closed loop of
 * undici requests at 10 and 50 keep-alive connections, a fixed number of requests each. JSON and SSE. Each server runs in
 * its own child process; the load generator runs here. Rounds rotate the order of the targets;
 * figures are medians over rounds, with their range.
 *
 * Run: pnpm --filter @moat/verifier bench (after a build). BENCH_ROUNDS, BENCH_SEQUENTIAL,
 * BENCH_AMOUNT change the effort; BENCH_CPU_PROF=dir profiles the verifier (node --cpu-prof).
 */
import { spawn } from 'node:child_process';
import { createHmac, createSecretKey, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { devKeyFile } from '@moat/native/dev-key';
import { Agent, Pool, request } from 'undici';
import {
  type createVerifier,
  type devEnvironment,
  type loadConfig,
  type RequestRecord,
  SqliteStorage,
  startMockUpstream,
} from '../dist/index.js';
import { claudeBinary } from '../src/claude-code.test-util.ts';
import { createMoatFetch } from './moat-client.ts';
import { benchBuilds, cpuOf, type RoleProcess, startRole } from './role-process.ts';
import { median, percentile as pct, spread } from './stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SEQUENTIAL = Number(process.env.BENCH_SEQUENTIAL ?? 2000);
const AMOUNT = Number(process.env.BENCH_AMOUNT ?? 3000);
const WARMUP = 50;
const SALT = 'bench-salt';
/** moat-chat's version (apps/cli/src/version.ts), in its attribution block and user agent. */
const CHAT_VERSION = '1.4.2';
const PROMPT = 'Summarize the quarterly report in three bullet points.';
const MOAT_CHAT = new URL('../../cli/dist/external/moat-chat.js', import.meta.url).pathname;

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A server child answers `cpu` with its CPU time so far (µs), so the bench can say what one request cost it. */
function answerCpu(): void {
  process.on('message', (m) => {
    if (m !== 'cpu') return;
    const { user, system } = process.cpuUsage();
    process.send?.({ cpu: user + system });
  });
}

/** A role's server on a free loopback port, keeping connections as the verifier does; its URL. */
async function listenLocal(server: ReturnType<typeof createServer>): Promise<string> {
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Tells the bench where a role serves, answers its CPU questions, and serves until the bench goes. */
async function serveRole(url: string, apiKey?: string): Promise<never> {
  answerCpu();
  process.stdout.write(`${JSON.stringify(apiKey === undefined ? { url } : { url, apiKey })}\n`);
  process.on('SIGTERM', () => process.exit(0));
  // The bench gone (finished or failed), its servers go too.
  process.on('disconnect', () => process.exit(0));
  return new Promise<never>(() => {});
}

const role = process.argv[2];
if (role === '--upstream') {
  const mock = await startMockUpstream();
  await serveRole(mock.url);
}
if (role === '--proxy') {
  const upstream = new URL(process.argv[3] as string);
  const agent = new Agent({ keepAliveTimeout: 30_000, connections: 128 });
  const proxy = createServer(async (req, res) => {
    const body = await readAll(req);
    const answer = await agent.request({
      origin: upstream.origin,
      path: req.url ?? '/',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': 'upstream', 'content-length': String(body.length) },
      body,
    });
    res.writeHead(answer.statusCode, { 'content-type': String(answer.headers['content-type']) });
    for await (const chunk of answer.body) res.write(chunk);
    res.end();
  });
  await serveRole(await listenLocal(proxy));
}
if (role === '--floor') {
  const upstream = new URL(process.argv[3] as string);
  const agent = new Agent({ keepAliveTimeout: 30_000, connections: 128 });
  const storage = new SqliteStorage(join(mkdtempSync(join(tmpdir(), 'moat-floor-')), 'floor.db'), randomBytes(32));
  const mac = createSecretKey(randomBytes(32));
  const floor = createServer(async (req, res) => {
    const raw = await readAll(req);
    // The load generator's warm-up (GET /v1/models) opens the connections; only Messages bodies are measured.
    if (req.method !== 'POST') {
      res.writeHead(204).end();
      return;
    }
    createHmac('sha256', mac).update(String(req.headers['x-api-key'])).digest();
    createHmac('sha256', mac).update(raw).digest();
    const body = JSON.parse(raw.toString('utf8')) as { model?: unknown; stream?: unknown };
    const record = {
      id: randomBytes(12).toString('base64url'),
      ts: Date.now(),
      keyId: 'key_floor',
      model: String(body.model),
      attestation: 'missing',
      fingerprint: 'missing',
      gateway: [],
      relay: [],
      thinking: 'none',
      decoy: 'none',
      verdict: 'allow',
      reasons: [],
      status: null,
      latencyMs: null,
      decoys: 0,
      batch: null,
    } as unknown as RequestRecord;
    await storage.insertRecord(record);
    const out = Buffer.from(JSON.stringify(body));
    const answer = await agent.request({
      origin: upstream.origin,
      path: req.url ?? '/',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': 'upstream', 'content-length': String(out.length) },
      body: out,
    });
    const finish = () => storage.insertRecord({ ...record, status: answer.statusCode, latencyMs: 0 }, { upsert: true });
    if (body.stream === true) {
      res.writeHead(answer.statusCode, { 'content-type': 'text/event-stream' });
      for await (const chunk of answer.body) res.write(chunk);
      await finish();
      res.end();
      return;
    }
    const text = JSON.stringify(JSON.parse((await readAll(answer.body)).toString('utf8')));
    await finish();
    res.writeHead(answer.statusCode, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) });
    res.end(text);
  });
  await serveRole(await listenLocal(floor));
}
if (role === '--verifier') {
  // BENCH_DIST: another build of the verifier (an earlier commit's), measured in the same run.
  const build = (process.env.BENCH_DIST === undefined ? await import('../dist/index.js') : await import(process.env.BENCH_DIST)) as {
    createVerifier: typeof createVerifier;
    loadConfig: typeof loadConfig;
    devEnvironment: typeof devEnvironment;
  };
  const { createVerifier: create, loadConfig: load, devEnvironment: env } = build;
  const verifier = await create(
    load({
      ...env({
        // BENCH_DATABASE=memory: the same verifier with nothing durable, to split what the commits cost from the rest.
        database: process.env.BENCH_DATABASE === 'memory' ? ':memory:' : join(mkdtempSync(join(tmpdir(), 'moat-bench-')), 'bench.db'),
        salt: SALT,
        attestationKeyFile: devKeyFile,
      }),
      MOAT_VERIFIER_UPSTREAM: process.argv[3] as string,
      MOAT_VERIFIER_UPSTREAM_KEY: 'upstream',
      MOAT_VERIFIER_PUBLIC_AUTHORITIES: process.argv[4] as string,
      MOAT_VERIFIER_LOG_LEVEL: 'silent',
    }),
    { logLevel: process.env.BENCH_LOG_LEVEL ?? 'silent' },
  );
  const url = await verifier.listen();
  const { key } = await verifier.storage.createApiKey('bench');
  process.on('message', async (m) => {
    if (m === 'summary') process.send?.(await verifier.storage.summary());
  });
  await serveRole(url, key);
}

interface Child extends RoleProcess {
  /** A verifier's own capturing server: each verifier enrolls its clients' installs itself. */
  readonly capture?: Capture;
}

/** One of this file's roles in a process of its own. */
const child = (args: string[], nodeArgs: string[] = [], env: Record<string, string> = {}): Promise<Child> =>
  startRole(new URL(import.meta.url).pathname, args, nodeArgs, env);

/** One request as a client sent it: its header lines (`Host` and `Content-Length` left out) and body bytes. */
interface Captured {
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

/** A request's header lines as the client wrote them, but those named in `drop` (lower case). */
function headersOf(req: IncomingMessage, drop: ReadonlySet<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i] as string;
    if (!drop.has(name.toLowerCase())) out[name] = req.rawHeaders[i + 1] as string;
  }
  return out;
}

/**
 * The capturing server: keeps every Messages request the client code sends (answering it
 * as the upstream would) and relays everything else — discovery, flags, telemetry — to the
 * verifier, so the client sees the verifier's own documents.
 */
async function startCapture(canned: { json: Buffer; sse: Buffer }) {
  const state = { verifier: '', captured: [] as Captured[] };
  const server = createServer(async (req, res) => {
    const body = await readAll(req);
    if (req.method === 'POST' && req.url === '/v1/messages') {
      state.captured.push({ headers: headersOf(req, new Set(['host', 'content-length'])), body });
      const stream = (JSON.parse(body.toString('utf8')) as { stream?: boolean }).stream === true;
      res.writeHead(200, { 'content-type': stream ? 'text/event-stream' : 'application/json' });
      res.end(stream ? canned.sse : canned.json);
      return;
    }
    const answer = await request(`${state.verifier}${req.url}`, {
      method: req.method as 'GET',
      headers: headersOf(req, new Set(['host', 'content-length', 'connection'])),
      body: body.length > 0 ? body : null,
    });
    const headers = Object.fromEntries(
      Object.entries(answer.headers).filter(([k]) => !['connection', 'keep-alive', 'transfer-encoding'].includes(k)),
    );
    res.writeHead(answer.statusCode, headers);
    res.end(await readAll(answer.body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return { state, server, url: `http://127.0.0.1:${port}`, authority: `127.0.0.1:${port}` };
}

/** A captured request and the path with query it was sent to. */
interface CapturedAt extends Captured {
  readonly path: string;
}

/**
 * Runs `claude -p` once against a server that keeps each Messages request it sends and
 * relays it to `upstream`, so Claude Code gets a real answer; returns its largest Messages
 * request (the turn itself, not a token count), or why there is none.
 */
async function captureClaudeCode(upstream: string): Promise<CapturedAt | string> {
  const binary = claudeBinary();
  if (binary === undefined) return '`@anthropic-ai/claude-code` (its binary for this platform) is not installed';
  const seen: CapturedAt[] = [];
  const server = createServer(async (req, res) => {
    const body = await readAll(req);
    const path = req.url ?? '/';
    if (req.method === 'POST' && /^\/v1\/messages(\?|$)/.test(path))
      seen.push({ path, headers: headersOf(req, new Set(['host', 'content-length'])), body });
    const answer = await request(`${upstream}${path}`, {
      method: req.method as 'POST',
      headers: {
        ...headersOf(req, new Set(['host', 'content-length', 'connection', 'x-api-key', 'authorization'])),
        'x-api-key': 'upstream',
      },
      body: body.length > 0 ? body : null,
    });
    res.writeHead(answer.statusCode, { 'content-type': String(answer.headers['content-type'] ?? 'application/json') });
    res.end(await readAll(answer.body));
  });
  const url = await listenLocal(server);
  const home = mkdtempSync(join(tmpdir(), 'moat-bench-claude-'));
  const claude = spawn(binary, ['-p', PROMPT], {
    env: {
      PATH: process.env.PATH,
      HOME: home,
      ANTHROPIC_BASE_URL: url,
      ANTHROPIC_API_KEY: 'sk-bench-claude-code',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_AUTOUPDATER: '1',
      DISABLE_TELEMETRY: '1',
      DISABLE_ERROR_REPORTING: '1',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  claude.stderr?.on('data', (d: Buffer) => {
    stderr += d;
  });
  const timer = setTimeout(() => claude.kill('SIGKILL'), 120_000);
  const [code] = (await once(claude, 'close')) as [number | null];
  clearTimeout(timer);
  server.close();
  const turn = seen.filter((c) => !c.path.includes('count_tokens')).sort((a, b) => b.body.length - a.body.length)[0];
  if (code !== 0 || turn === undefined) throw new Error(`claude -p exited ${code} with ${seen.length} Messages requests: ${stderr}`);
  return turn;
}

const requestOf = (stream: boolean, maxTokens: number) => ({
  model: 'claude-mock',
  max_tokens: maxTokens,
  stream,
  messages: [{ role: 'user', content: PROMPT }],
});
/** moat-chat's headers (apps/cli/src/session.ts); the plain request sends them too. */
const chatHeaders = (apiKey: string) => ({
  'content-type': 'application/json',
  'x-api-key': apiKey,
  'anthropic-version': '2023-06-01',
  'user-agent': `moat-chat/${CHAT_VERSION}`,
});

type Genuine = 'moat-chat' | 'sdk';
type Kind = 'direct' | 'proxy' | 'floor' | 'plain' | Genuine;
type Mode = 'JSON' | 'SSE' | 'Claude Code';
interface Target {
  /** The row's name: the kind, and `@build` for another build of the verifier. */
  readonly name: string;
  readonly kind: Kind;
  readonly url: string;
  readonly apiKey: string;
  /** The process that serves it (its CPU time is measured). */
  readonly server: Child;
}

const warnings: string[] = [];
const onWarning = (message: string) => warnings.push(message);
/** `@moat/client` composed as moat-chat composes it (ChatSession), minus hardening this process. */
const chatFetch = createMoatFetch({
  salt: SALT,
  userAgentProduct: 'moat-chat',
  clientVersion: CHAT_VERSION,
  entrypoint: 'cli',
  antiDistillation: true,
  onWarning,
});
/** `@moat/client` with its defaults under the Anthropic SDK. */
const sdkFetch = createMoatFetch({ salt: SALT, clientVersion: '1.0.0', onWarning });

/** Sends one request of `shape` through the real client code to the capturing server. */
async function send(shape: Genuine, stream: boolean, base: string, apiKey: string): Promise<void> {
  if (shape === 'moat-chat') {
    const res = await chatFetch(`${base}/v1/messages`, {
      method: 'POST',
      headers: chatHeaders(apiKey),
      body: JSON.stringify(requestOf(stream, 1024)),
    });
    await res.arrayBuffer();
    return;
  }
  const sdk = new Anthropic({ baseURL: base, apiKey, fetch: sdkFetch, maxRetries: 0 });
  if (!stream) {
    await sdk.messages.create({ model: 'claude-mock', max_tokens: 64, messages: [{ role: 'user', content: PROMPT }] });
    return;
  }
  const events = await sdk.messages.create({
    model: 'claude-mock',
    max_tokens: 64,
    messages: [{ role: 'user', content: PROMPT }],
    stream: true,
  });
  for await (const _ of events);
}

type Capture = Awaited<ReturnType<typeof startCapture>>;

/** `n` fresh requests of `shape`, each made (and stamped by the addon) by the client code, 16 at a time. */
async function freshRequests(capture: Capture, shape: Genuine, stream: boolean, n: number, apiKey: string): Promise<Captured[]> {
  capture.state.captured = [];
  let left = n;
  const worker = async () => {
    while (left-- > 0) await send(shape, stream, capture.url, apiKey);
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  const out = capture.state.captured;
  if (out.length !== n) throw new Error(`captured ${out.length} of ${n} ${shape} requests`);
  if (warnings.length > 0) throw new Error(`the client failed open: ${warnings.join('; ')}`);
  // An enrolled install stamps with its own key (i1), else the release key (r1); both bind the request.
  if (!out.every((c) => /"moat_att":"[ri]1\./.test(c.body.toString('utf8'))))
    throw new Error(`a ${shape} request went out without an r1 or i1 stamp`);
  return out;
}

/** The body with the envelope's time, nonce and stamp masked: what stays the same from one request to the next. */
const shapeOf = (c: Captured) =>
  JSON.stringify({ headers: c.headers, body: c.body.toString('utf8').replace(/"moat_att":"[^"]*"\}$/, '"moat_att":"…"}') });

/** Runs the built moat-chat once against the capturing server: its request must be the bench's moat-chat request. */
async function checkAgainstMoatChat(capture: Capture, apiKey: string): Promise<void> {
  if (!existsSync(MOAT_CHAT)) throw new Error(`${MOAT_CHAT} is missing: build apps/cli first (pnpm bench builds it)`);
  capture.state.captured = [];
  const dir = mkdtempSync(join(tmpdir(), 'moat-bench-chat-'));
  const chat = spawn(process.execPath, [MOAT_CHAT, '-p', PROMPT, '--base-url', capture.url], {
    cwd: dir,
    env: { PATH: process.env.PATH, HOME: dir, MOAT_API_KEY: apiKey, MOAT_FINGERPRINT_SALT: SALT, MOAT_CONFIG_DIR: dir },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  chat.stderr?.on('data', (d: Buffer) => {
    stderr += d;
  });
  const [code] = (await once(chat, 'close')) as [number];
  const [real] = capture.state.captured;
  if (code !== 0 || real === undefined) throw new Error(`moat-chat exited ${code} without a request: ${stderr}`);
  const [ours] = await freshRequests(capture, 'moat-chat', true, 1, apiKey);
  if (shapeOf(real) !== shapeOf(ours as Captured))
    throw new Error(`the bench's moat-chat request differs from moat-chat's:\n${shapeOf(real)}\n${shapeOf(ours as Captured)}`);
}

/** Per-request latency in µs over sequential requests on one keep-alive connection. */
async function sequential(t: Target, requests: readonly Captured[], path: string): Promise<number[]> {
  const pool = new Pool(t.url, { connections: 1, pipelining: 1 });
  const times: number[] = [];
  try {
    for (let i = 0; i < requests.length; i++) {
      const { headers, body } = requests[i] as Captured;
      const start = process.hrtime.bigint();
      const res = await pool.request({ path, method: 'POST', headers, body });
      await res.body.arrayBuffer();
      const end = process.hrtime.bigint();
      if (res.statusCode !== 200) throw new Error(`${t.name} answered ${res.statusCode}`);
      if (i >= WARMUP) times.push(Number(end - start) / 1000);
    }
  } finally {
    await pool.close();
  }
  return times.sort((a, b) => a - b);
}

/**
 * Requests per second at `connections` keep-alive connections, each sending its next request
 * when the last answer ended (closed loop): `AMOUNT` requests, fresh ones used once each.
 */
async function throughput(t: Target, requests: readonly Captured[], connections: number, repeat: boolean, path: string): Promise<number> {
  const pool = new Pool(t.url, { connections, pipelining: 1 });
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < AMOUNT) {
      const c = requests[repeat ? 0 : next] as Captured;
      next++;
      const res = await pool.request({ path, method: 'POST', headers: c.headers, body: c.body });
      await res.body.arrayBuffer();
      if (res.statusCode !== 200) failed++;
    }
  };
  try {
    // One request per connection first, so every connection is open before the clock starts.
    await Promise.all(
      Array.from({ length: connections }, () => pool.request({ path: '/v1/models', method: 'GET' }).then((r) => r.body.dump())),
    );
    const started = performance.now();
    await Promise.all(Array.from({ length: connections }, worker));
    if (failed > 0) throw new Error(`${failed} answers from ${t.name} were not 200`);
    return AMOUNT / ((performance.now() - started) / 1000);
  } finally {
    await pool.close();
  }
}

/** `a ÷ b`, or NaN when `b` is not above 0 (a proxy that added nothing over direct gives no ratio, not a negative one). */
const over = (a: number, b: number) => (b > 0 ? a / b : Number.NaN);

const upstream = await child(['--upstream']);
const plainBytes = (stream: boolean) => Buffer.from(JSON.stringify(requestOf(stream, 1024)));
const cannedOf = async (stream: boolean) =>
  Buffer.from(
    await (
      await request(`${upstream.url}/v1/messages`, { method: 'POST', headers: chatHeaders('upstream'), body: plainBytes(stream) })
    ).body.arrayBuffer(),
  );
const canned = { json: await cannedOf(false), sse: await cannedOf(true) };
const claudeCode = process.env.BENCH_CLAUDE_CODE === '0' ? 'BENCH_CLAUDE_CODE=0' : await captureClaudeCode(upstream.url);
const modes: readonly Mode[] = typeof claudeCode === 'string' ? ['JSON', 'SSE'] : ['JSON', 'SSE', 'Claude Code'];
const profile = process.env.BENCH_CPU_PROF;
const proxy = await child(['--proxy', upstream.url]);
const floorServer = await child(['--floor', upstream.url]);
/** A verifier behind its own capturing server (whose authority is the verifier's public one). */
const startVerifier = async (env: Record<string, string> = {}): Promise<Child> => {
  const capture = await startCapture(canned);
  const server = await child(
    ['--verifier', upstream.url, capture.authority],
    profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profile}`],
    env,
  );
  capture.state.verifier = server.url;
  return { ...server, capture };
};
const verifier = await startVerifier();
/** BENCH_BUILDS=name=/abs/dist/index.js,…: other builds of the verifier, each with its plain and moat-chat rows. */
const otherBuilds = await Promise.all(
  benchBuilds().map(async ({ name, dist }) => ({ name, server: await startVerifier({ BENCH_DIST: dist }) })),
);
// This build again with its database in memory (BENCH_MEMORY=0 leaves it out): the same checks
// and HTTP path without a durable commit, so the rows split what durability costs from the rest.
const inMemory = process.env.BENCH_MEMORY === '0' ? [] : [{ name: 'memory', server: await startVerifier({ BENCH_DATABASE: 'memory' }) }];
/** Every verifier besides this build's own, each with its `@name` rows. */
const builds = [...otherBuilds, ...inMemory];
await checkAgainstMoatChat(verifier.capture as Capture, verifier.apiKey as string);

const only = process.env.BENCH_TARGETS?.split(',');
const onVerifier = (server: Child, suffix: string): Target[] =>
  (['plain', 'moat-chat', 'sdk'] as const)
    .filter((kind) => only === undefined || only.includes(kind))
    .filter((kind) => suffix === '' || kind !== 'sdk')
    .map((kind) => ({ name: `${kind}${suffix}`, kind, url: server.url, apiKey: server.apiKey as string, server }));
const targets: Target[] = [
  { name: 'direct', kind: 'direct', url: upstream.url, apiKey: 'upstream', server: upstream },
  { name: 'proxy', kind: 'proxy', url: proxy.url, apiKey: 'upstream', server: proxy },
  ...(only === undefined || only.includes('floor')
    ? [{ name: 'floor', kind: 'floor' as const, url: floorServer.url, apiKey: 'upstream', server: floorServer }]
    : []),
  ...onVerifier(verifier, ''),
  ...builds.flatMap((b) => onVerifier(b.server, `@${b.name}`)),
];
const genuineSent = new Map<Child, number>();

/** Claude Code's request with `apiKey` in place of the one it was captured with. */
function claudeCodeFor(cc: CapturedAt, apiKey: string): Captured {
  const headers = Object.fromEntries(Object.entries(cc.headers).filter(([k]) => !['x-api-key', 'authorization'].includes(k.toLowerCase())));
  return { headers: { ...headers, 'x-api-key': apiKey }, body: cc.body };
}

/** The path a mode's requests go to. */
const pathOf = (mode: Mode) => (mode === 'Claude Code' && typeof claudeCode !== 'string' ? claudeCode.path : '/v1/messages');

/** Whether `t` is measured in `mode`: Claude Code's request goes to the baselines and as it is to the verifier. */
const measuredIn = (mode: Mode, t: Target) => mode !== 'Claude Code' || (t.kind !== 'moat-chat' && t.kind !== 'sdk');

/** The requests `t` gets: fresh genuine ones made by the client code, or one plain request repeated. */
async function requestsFor(t: Target, mode: Mode, n: number): Promise<{ list: Captured[]; repeat: boolean }> {
  if (mode === 'Claude Code' && typeof claudeCode !== 'string') return { list: [claudeCodeFor(claudeCode, t.apiKey)], repeat: true };
  const stream = mode === 'SSE';
  if (t.kind === 'moat-chat' || t.kind === 'sdk') {
    genuineSent.set(t.server, (genuineSent.get(t.server) ?? 0) + n);
    return { list: await freshRequests(t.server.capture as Capture, t.kind, stream, n, t.apiKey), repeat: false };
  }
  return { list: [{ headers: chatHeaders(t.apiKey), body: plainBytes(stream) }], repeat: true };
}

/** Runs `phase` (which sends `n` requests to `t`) and what it cost `t`'s server in CPU µs per request. */
async function withCpu<T>(t: Target, n: number, phase: () => Promise<T>): Promise<[T, number]> {
  const before = await cpuOf(t.server);
  const result = await phase();
  return [result, ((await cpuOf(t.server)) - before) / n];
}

interface Figure {
  p50: number[];
  p90: number[];
  p99: number[];
  rps10: number[];
  rps50: number[];
  cpu: number[];
}
const figures: Record<Mode, Record<string, Figure>> = { JSON: {}, SSE: {}, 'Claude Code': {} };
for (let round = 0; round < ROUNDS; round++) {
  const order = [...targets.slice(round % targets.length), ...targets.slice(0, round % targets.length)];
  for (const mode of modes) {
    const path = pathOf(mode);
    for (const t of order) {
      if (!measuredIn(mode, t)) continue;
      figures[mode][t.name] ??= { p50: [], p90: [], p99: [], rps10: [], rps50: [], cpu: [] };
      const f = figures[mode][t.name] as Figure;
      const seq = await requestsFor(t, mode, SEQUENTIAL + WARMUP);
      const list = seq.repeat ? Array(SEQUENTIAL + WARMUP).fill(seq.list[0]) : seq.list;
      const [times, cpu] = await withCpu(t, list.length, () => sequential(t, list, path));
      f.p50.push(pct(times, 50));
      f.p90.push(pct(times, 90));
      f.p99.push(pct(times, 99));
      f.cpu.push(cpu);
      for (const connections of [10, 50]) {
        const load = await requestsFor(t, mode, AMOUNT);
        (connections === 10 ? f.rps10 : f.rps50).push(await throughput(t, load.list, connections, load.repeat, path));
      }
    }
  }
  process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`);
}
let valid = 0;
for (const server of [verifier, ...builds.map((b) => b.server)]) {
  server.process.send('summary');
  const [summary] = (await once(server.process, 'message')) as [{ attestation: Record<string, number> }];
  const sent = genuineSent.get(server) ?? 0;
  if ((summary.attestation.valid ?? 0) !== sent || Object.keys(summary.attestation).some((k) => k !== 'valid' && k !== 'missing'))
    throw new Error(`the verifier found ${JSON.stringify(summary.attestation)} for ${sent} genuine requests`);
  valid += sent;
}
for (const c of [upstream, proxy, floorServer, verifier, ...builds.map((b) => b.server)]) {
  c.process.kill('SIGTERM');
  c.capture?.server.close();
}
await Promise.all([chatFetch.close(), sdkFetch.close()]);

console.log(
  `moat-verifier benchmark (${process.version}; ${ROUNDS} rotated rounds; latency over ${SEQUENTIAL} sequential requests on one keep-alive connection; throughput over ${AMOUNT} requests per run (closed loop); medians with the range over rounds; every genuine request made fresh by the client code and stamped by the native addon, ${valid} stamps found valid)`,
);
if (typeof claudeCode === 'string') console.log(`\nThe Claude Code mode is left out: ${claudeCode}.`);
else {
  const agent = Object.entries(claudeCode.headers).find(([k]) => k.toLowerCase() === 'user-agent')?.[1] ?? 'no user agent';
  console.log(
    `\nClaude Code: the request \`claude -p\` sends (${agent}), ${claudeCode.body.length} bytes to ${claudeCode.path}, captured once and sent to every target with its own API key; "verifier" is the verifier with that request (no Moat tags: a plain request).`,
  );
}
if (otherBuilds.length > 0)
  console.log(
    `\nRows named \`…@name\` are the same requests to another build of the verifier in the same run (BENCH_BUILDS: ${otherBuilds.map((b) => b.name).join(', ')}), for before/after figures under the same load.`,
  );
if (inMemory.length > 0)
  console.log(
    "\nRows named `…@memory` are this build with `database: ':memory:'`: every check and the same HTTP path, but no durable commit (no file, no write-ahead log). The difference to the row without `@memory` is what the two durable commits cost; what remains over the proxy is the checks and the verifier's own reading and writing of each request and answer.",
  );
console.log('');
console.log(
  '| mode | target | p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs | req/s at 10 | req/s at 50 | throughput ÷ proxy (10 / 50) | server CPU µs/req |',
);
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
interface Ratio {
  kind: Kind;
  p50: number[];
  p99: number[];
  rps10: number[];
  rps50: number[];
}
const ratios: Record<Mode, Record<string, Ratio>> = { JSON: {}, SSE: {}, 'Claude Code': {} };
const range = (xs: number[], digits = 0) => `${median(xs).toFixed(digits)} (${spread(xs, digits)})`;
/** A row's name: Claude Code's request to the verifier is its plain request, named for where it went. */
const rowName = (mode: Mode, name: string) => (mode === 'Claude Code' ? name.replace(/^plain/, 'verifier') : name);
for (const mode of modes) {
  const direct = figures[mode].direct as Figure;
  const bare = figures[mode].proxy as Figure;
  const proxyAdded = (k: 'p50' | 'p99') => bare[k].map((v, i) => v - (direct[k][i] as number));
  for (const t of targets) {
    if (!measuredIn(mode, t)) continue;
    const f = figures[mode][t.name] as Figure;
    const added = (k: 'p50' | 'p99') => f[k].map((v, i) => v - (direct[k][i] as number));
    const ratio = (k: 'rps10' | 'rps50') => f[k].map((v, i) => v / (bare[k][i] as number));
    if (t.kind !== 'direct' && t.kind !== 'proxy')
      ratios[mode][t.name] = {
        kind: t.kind,
        p50: added('p50').map((v, i) => over(v, proxyAdded('p50')[i] as number)),
        p99: added('p99').map((v, i) => over(v, proxyAdded('p99')[i] as number)),
        rps10: ratio('rps10'),
        rps50: ratio('rps50'),
      };
    const d = t.kind === 'direct';
    console.log(
      `| ${mode} | ${rowName(mode, t.name)} | ${median(f.p50).toFixed(0)} | ${median(f.p90).toFixed(0)} | ${median(f.p99).toFixed(0)} | ${d ? '—' : range(added('p50'))} | ${d ? '—' : range(added('p99'))} | ${median(f.rps10).toFixed(0)} | ${median(f.rps50).toFixed(0)} | ${d ? '—' : `${range(ratio('rps10'), 2)} / ${range(ratio('rps50'), 2)}`} | ${range(f.cpu)} |`,
    );
  }
}
console.log('');
console.log(
  'Targets, as ratios to the bare proxy in the same round (median, range over rounds): added p50 ≤ 1.5× and added p99 ≤ 2× for a genuine request; throughput ≥ 0.6× for a genuine request and ≥ 0.8× for a plain one. Server CPU µs/req is the CPU time of the process that answers (the verifier, the proxy, the upstream for direct) per sequential request.',
);
console.log('');
console.log('| mode | request | added p50 ÷ proxy | added p99 ÷ proxy | req/s ÷ proxy at 10 | req/s ÷ proxy at 50 |');
console.log('|---|---|---:|---:|---:|---:|');
/** A ratio's rounds that have one (a round where the proxy added nothing over direct has none), or why there is none. */
const rounds = (xs: number[], text: (ys: number[]) => string) => {
  const ys = xs.filter(Number.isFinite);
  if (ys.length === 0) return 'n/a (the proxy added nothing over direct)';
  return `${text(ys)}${ys.length < xs.length ? ` (${ys.length} of ${xs.length} rounds)` : ''}`;
};
const cell = (xs: number[], target: number, higher: boolean) =>
  rounds(
    xs,
    (ys) =>
      `${median(ys).toFixed(2)}× (${spread(ys, 2)}) ${(higher ? median(ys) >= target : median(ys) <= target) ? 'meets' : 'misses'} ${higher ? '≥' : '≤'} ${target}×`,
  );
for (const mode of modes)
  for (const [target, r] of Object.entries(ratios[mode])) {
    const name = rowName(mode, target);
    if (r.kind === 'floor') {
      // The design's own cost, no target: what any request pays before the verifier checks anything.
      const show = (xs: number[]) => rounds(xs, (ys) => `${median(ys).toFixed(2)}× (${spread(ys, 2)})`);
      console.log(`| ${mode} | ${name} | ${show(r.p50)} | ${show(r.p99)} | ${show(r.rps10)} | ${show(r.rps50)} |`);
      continue;
    }
    const plain = r.kind === 'plain';
    const floor = plain ? 0.8 : 0.6;
    console.log(
      `| ${mode} | ${name} | ${plain ? rounds(r.p50, (ys) => range(ys, 2)) : cell(r.p50, 1.5, false)} | ${plain ? rounds(r.p99, (ys) => range(ys, 2)) : cell(r.p99, 2, false)} | ${cell(r.rps10, floor, true)} | ${cell(r.rps50, floor, true)} |`,
    );
  }
process.exit(0);
