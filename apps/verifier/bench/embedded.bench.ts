/**
 * What `createMoatHandler` adds in process, over the embedding server's own model call alone:
 *
 * - "fetch": `moat.fetch(request)` against `model(request)` called directly (the same
 *   function, `mockModel`), both given a ready `Request`, the answer read to its end;
 * - "node": a `node:http` server with `moat.node` against a `node:http` server whose handler
 *   calls the same model and writes its answer, both over one keep-alive loopback connection.
 *
 * Two requests: a plain one (what `@anthropic-ai/sdk` sends, no Moat tags), and the genuine
 * one `@moat/client` sends in moat-chat's composition (entrypoint `cli`, anti-distillation on,
 * an `r1` stamp made below JavaScript by `@moat/native`, the `moat-chat` user agent) — its
 * bytes and headers made by `@moat/client` itself through `@anthropic-ai/sdk`, captured fresh
 * each round (every stamp has its own nonce, so none is replayed). The baseline of the genuine
 * request gets the plain body (the model refuses Moat's members, as the real API does).
 *
 * Latency per request (`process.hrtime.bigint()`), baseline and handler alternating request by
 * request, sequentially; p50/p90/p99 in µs and the added latency per round; and the main
 * thread's CPU time per request, which waiting for a core on a shared machine does not
 * inflate. Figures are medians over rounds with their range. JSON and SSE. Storage: SQLite in
 * a temporary directory.
 *
 * Run: pnpm --filter @moat/verifier bench:embedded (after a build). BENCH_ROUNDS, BENCH_SEQUENTIAL
 * change the effort.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { devKeyFile } from '@moat/native/dev-key';
import { Pool } from 'undici';
import { createMoatHandler, type MoatHandler, mockModel } from '../dist/index.js';
import { createMoatFetch } from './moat-client.ts';
import { median, percentile as pct, spread } from './stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SEQUENTIAL = Number(process.env.BENCH_SEQUENTIAL ?? 2000);
const WARMUP = 100;
const SALT = 'bench-salt';
const dev = JSON.parse(readFileSync(devKeyFile, 'utf8')) as { kid: string; key: string };

/** One request as the embedding server's framework hands it over. */
interface Sent {
  readonly url: string;
  readonly headers: Array<[string, string]>;
  readonly body: Buffer;
}

const ask = (stream: boolean) => ({
  model: 'claude-mock',
  max_tokens: 64,
  stream,
  messages: [{ role: 'user' as const, content: 'Summarize the quarterly report in three bullet points.' }],
});

/** A node:http handler that writes a web `Response` (the embedding server's own glue). */
async function writeResponse(response: Response, res: ServerResponse): Promise<void> {
  const headers: Record<string, string> = {};
  for (const [name, value] of response.headers) headers[name] = value;
  res.writeHead(response.status, headers);
  if (response.body === null) res.end();
  else for await (const chunk of response.body) res.write(chunk);
  res.end();
}

/** The baseline's node:http handler: the model call alone. */
const modelNode = (req: IncomingMessage, res: ServerResponse) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const request = new Request(`http://${req.headers.host}${req.url}`, {
      method: req.method ?? 'POST',
      headers: req.headers as Record<string, string>,
      body: Buffer.concat(chunks),
    });
    mockModel(request).then((response) => writeResponse(response, res));
  });
};

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * Captures what a client sends to `/v1/messages` (answered by the model, unchecked), the
 * rest served by `moat` (discovery, flags, telemetry), so the client binds, asks for decoys
 * and stamps exactly as against a verifier.
 */
async function captureServer(moat: MoatHandler): Promise<{ url: string; taken: Sent[] }> {
  const taken: Sent[] = [];
  const url = await listen((req, res) => {
    if (req.method !== 'POST' || req.url !== '/v1/messages') return moat.node(req, res);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers = Object.entries(req.headers).filter(
        (e): e is [string, string] => typeof e[1] === 'string' && !['content-length', 'connection'].includes(e[0]),
      );
      taken.push({ url: `http://${req.headers.host}${req.url}`, headers, body });
      const plain = JSON.stringify(ask((JSON.parse(body.toString('utf8')) as { stream?: boolean }).stream === true));
      mockModel(new Request('http://model/v1/messages', { method: 'POST', body: plain })).then((r) =>
        writeResponse(r, res),
      );
    });
  });
  return { url, taken };
}

const toRequest = (s: Sent) => new Request(s.url, { method: 'POST', headers: s.headers, body: s.body });

/** Sends a request over one keep-alive connection and reads the answer to its end. */
async function overHttp(pool: Pool, s: Sent): Promise<number> {
  const res = await pool.request({
    path: '/v1/messages',
    method: 'POST',
    headers: Object.fromEntries(s.headers),
    body: s.body,
  });
  await res.body.arrayBuffer();
  return res.statusCode;
}

async function readFetch(response: Promise<Response>): Promise<number> {
  const r = await response;
  await r.arrayBuffer();
  return r.status;
}

/** Sorted wall µs of each side, and the mean main-thread CPU µs per request of each. */
interface Paired {
  readonly base: number[];
  readonly moat: number[];
  readonly baseCpu: number;
  readonly moatCpu: number;
}

/**
 * Times `a` and `b` request by request, alternating which goes first. Wall time counts the
 * waits for a core on a shared machine too; the main thread's CPU time (summed per request:
 * the kernel accounts it in ticks, so only the sum over many requests is exact) does not.
 */
async function paired(
  n: number,
  a: (i: number) => Promise<number>,
  b: (i: number) => Promise<number>,
): Promise<Paired> {
  const ta: number[] = [];
  const tb: number[] = [];
  const cpu = { a: 0, b: 0 };
  const time = async (f: (i: number) => Promise<number>, i: number, into: number[], side: 'a' | 'b') => {
    const cpu0 = process.threadCpuUsage();
    const start = process.hrtime.bigint();
    const status = await f(i);
    const us = Number(process.hrtime.bigint() - start) / 1000;
    const used = process.threadCpuUsage(cpu0);
    if (status !== 200) throw new Error(`answered ${status}`);
    if (i < WARMUP) return;
    into.push(us);
    cpu[side] += used.user + used.system;
  };
  for (let i = 0; i < n + WARMUP; i++) {
    if (i % 2 === 0) {
      await time(a, i, ta, 'a');
      await time(b, i, tb, 'b');
    } else {
      await time(b, i, tb, 'b');
      await time(a, i, ta, 'a');
    }
  }
  return { base: ta.sort((x, y) => x - y), moat: tb.sort((x, y) => x - y), baseCpu: cpu.a / n, moatCpu: cpu.b / n };
}

const database = join(mkdtempSync(join(tmpdir(), 'moat-embedded-bench-')), 'bench.db');
const settings = {
  fingerprintSalt: SALT,
  serverSecret: 'ab'.repeat(32),
  signingSecret: 'cd'.repeat(32),
  attestationKeys: [dev],
  database,
  userAgentProduct: 'moat-chat',
};
// The capture server's moat only answers discovery and flags; the measured one gets every request.
const front = await createMoatHandler({ settings: { ...settings, database: ':memory:' }, upstream: mockModel });
const capture = await captureServer(front);
const moat = await createMoatHandler({
  // Stamps are bound to the authority the client sent to: the capture server's.
  settings: { ...settings, publicAuthorities: [new URL(capture.url).host] },
  upstream: mockModel,
});
const { key } = await moat.storage.createApiKey('bench');
const moatNode = new Pool(await listen(moat.node), { connections: 1, pipelining: 1 });
const baseNode = new Pool(await listen(modelNode), { connections: 1, pipelining: 1 });
const moatFetch = createMoatFetch({
  salt: SALT,
  clientVersion: '1.4.2',
  entrypoint: 'cli',
  antiDistillation: true,
  userAgentProduct: 'moat-chat',
});
const client = new Anthropic({ apiKey: key, baseURL: capture.url, fetch: moatFetch, maxRetries: 0 });
const plainClient = new Anthropic({ apiKey: key, baseURL: capture.url, maxRetries: 0 });

/** `n` requests made by the client's own code, each with a fresh stamp. */
async function made(by: Anthropic, stream: boolean, n: number): Promise<Sent[]> {
  capture.taken.length = 0;
  for (let i = 0; i < n; i++) {
    if (stream) for await (const _ of await by.messages.create({ ...ask(false), stream: true }));
    else await by.messages.create(ask(false));
  }
  return [...capture.taken];
}

type Figure = 'p50' | 'p90' | 'p99' | 'added50' | 'added90' | 'added99' | 'baseCpu' | 'cpu' | 'addedCpu';
const rows = new Map<string, Record<Figure, number[]>>();
const keep = (name: string, r: Paired) => {
  const row =
    rows.get(name) ??
    ({ p50: [], p90: [], p99: [], added50: [], added90: [], added99: [], baseCpu: [], cpu: [], addedCpu: [] } as Record<
      Figure,
      number[]
    >);
  for (const p of [50, 90, 99] as const) {
    row[`p${p}`].push(pct(r.moat, p));
    row[`added${p}`].push(pct(r.moat, p) - pct(r.base, p));
  }
  row.baseCpu.push(r.baseCpu);
  row.cpu.push(r.moatCpu);
  row.addedCpu.push(r.moatCpu - r.baseCpu);
  rows.set(name, row);
};

for (let round = 0; round < ROUNDS; round++) {
  for (const mode of ['JSON', 'SSE'] as const) {
    const stream = mode === 'SSE';
    const n = SEQUENTIAL + WARMUP;
    const kinds = { plain: await made(plainClient, stream, n), genuine: await made(client, stream, n) };
    // The baseline always gets the plain request: the model refuses Moat's members.
    const base = kinds.plain;
    const order = round % 2 === 0 ? (['plain', 'genuine'] as const) : (['genuine', 'plain'] as const);
    for (const kind of order) {
      const sent = kinds[kind];
      const requests = sent.map(toRequest);
      const baseRequests = base.map(toRequest);
      keep(
        `fetch ${mode} ${kind}`,
        await paired(
          SEQUENTIAL,
          (i) => readFetch(mockModel(baseRequests[i] as Request)),
          (i) => readFetch(moat.fetch(requests[i] as Request)),
        ),
      );
    }
    // Fresh stamps for the node handler: the fetch rounds spent these nonces.
    const again = { plain: base, genuine: await made(client, stream, n) };
    for (const kind of order)
      keep(
        `node ${mode} ${kind}`,
        await paired(
          SEQUENTIAL,
          (i) => overHttp(baseNode, base[i] as Sent),
          (i) => overHttp(moatNode, again[kind][i] as Sent),
        ),
      );
  }
  process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`);
}

const [record] = await moat.storage.queryRecords({ limit: 1 });
await moatFetch.close();
await Promise.all([moatNode.close(), baseNode.close()]);
await Promise.all([moat.close(), front.close()]);

console.log(
  `createMoatHandler in process (${process.version}; ${ROUNDS} rounds; ${SEQUENTIAL} sequential requests per figure, ` +
    'baseline and handler alternating; medians with the range over rounds). Wall: per-request latency, waits for a ' +
    "core included. CPU: the main thread's CPU time per request, mean over the round (what the handler costs, " +
    'whatever else the machine runs).',
);
console.log('');
const COLUMNS = [
  'handler',
  'mode',
  'request',
  'p50 µs',
  'p90 µs',
  'p99 µs',
  'added p50 µs',
  'added p90 µs',
  'added p99 µs',
  'CPU µs: model alone',
  'CPU µs: with Moat',
  'added CPU µs',
];
console.log(`| ${COLUMNS.join(' | ')} |`);
console.log(`|${COLUMNS.map((_, i) => (i < 3 ? '---' : '---:')).join('|')}|`);
for (const [name, r] of rows) {
  const whole = (xs: number[]) => median(xs).toFixed(0);
  const ranged = (xs: number[]) => `${whole(xs)} (${spread(xs)})`;
  const cells = [...name.split(' '), whole(r.p50), whole(r.p90), whole(r.p99)];
  cells.push(
    ranged(r.added50),
    ranged(r.added90),
    ranged(r.added99),
    whole(r.baseCpu),
    whole(r.cpu),
    ranged(r.addedCpu),
  );
  console.log(`| ${cells.join(' | ')} |`);
}
console.log('');
console.log(
  `Last genuine record: attestation ${record?.attestation}, binding ${record?.binding}, ` +
    `fingerprint ${record?.fingerprint}, decoys ${record?.decoys}, verdict ${record?.verdict}.`,
);
process.exit(0);
