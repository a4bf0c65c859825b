/**
 * What the verifier adds to a request, against the strongest honest baselines in the same run:
 *
 * - "direct": the upstream itself (the mock model served over HTTP by node:http);
 * - "proxy": a bare pass-through proxy on the verifier's own stack (node:http + undici, the
 *   body read and forwarded, no checks) in front of the same upstream;
 * - "verifier": every check on (attestation with a fresh stamp and nonce per request,
 *   fingerprint and statistics, gateway traces, signed blocks, policy, a durable SQLite
 *   record), in front of the same upstream.
 *
 * Latency: per-request `process.hrtime.bigint()` over sequential requests on one keep-alive
 * connection, p50/p90/p99 in µs, the added latency against "direct". Throughput: autocannon at
 * 10 and 50 connections. JSON and SSE. Each server runs in its own child process; the load
 * generator (which stamps every request) runs here. Rounds rotate the order of the targets;
 * figures are medians over rounds, with their range.
 *
 * Run: pnpm --filter @moat/verifier bench (after a build). BENCH_ROUNDS, BENCH_SEQUENTIAL,
 * BENCH_SECONDS change the effort.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { devKeyFile } from '@moat/native/dev-key';
import {
  appendEnvelope,
  computeStamp,
  fingerprintRequest,
  locateEnvelope,
  placeholderEnvelope,
  serializeAttribution,
  utf8,
  withAttribution,
} from '@moat/protocol';
import autocannon from 'autocannon';
import { Agent, Pool, request } from 'undici';
import { createVerifier, devEnvironment, loadConfig, startMockUpstream } from '../dist/index.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SEQUENTIAL = Number(process.env.BENCH_SEQUENTIAL ?? 2000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const dev = JSON.parse(readFileSync(devKeyFile, 'utf8')) as { kid: string; key: string };
const stampKey = Buffer.from(dev.key, 'hex');

const role = process.argv[2];
if (role === '--upstream') {
  const mock = await startMockUpstream();
  process.stdout.write(`${JSON.stringify({ url: mock.url })}\n`);
  process.on('SIGTERM', () => process.exit(0));
  await new Promise(() => {});
}
if (role === '--proxy') {
  const upstream = new URL(process.argv[3] as string);
  const agent = new Agent({ keepAliveTimeout: 30_000, connections: 128 });
  const proxy = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
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
  proxy.keepAliveTimeout = 65_000;
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` })}\n`);
  process.on('SIGTERM', () => process.exit(0));
  await new Promise(() => {});
}
if (role === '--verifier') {
  const verifier = await createVerifier(
    loadConfig({
      ...devEnvironment({
        database: join(mkdtempSync(join(tmpdir(), 'moat-bench-')), 'bench.db'),
        salt: 'bench-salt',
        attestationKeyFile: devKeyFile,
      }),
      MOAT_VERIFIER_UPSTREAM: process.argv[3] as string,
      MOAT_VERIFIER_UPSTREAM_KEY: 'upstream',
      MOAT_VERIFIER_LOG_LEVEL: 'silent',
    }),
    { logLevel: process.env.BENCH_LOG_LEVEL ?? 'silent' },
  );
  const url = await verifier.listen();
  const { key } = await verifier.storage.createApiKey('bench');
  process.on('SIGTERM', () => process.exit(0));
  process.stdout.write(`${JSON.stringify({ url, apiKey: key })}\n`);
  await new Promise(() => {});
}

async function child(args: string[]): Promise<{ process: ChildProcess; url: string; apiKey?: string }> {
  const proc = spawn(process.execPath, [new URL(import.meta.url).pathname, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(proc.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  return { process: proc, ...(JSON.parse(line.toString()) as { url: string; apiKey?: string }) };
}

const requestOf = (stream: boolean) => ({
  model: 'claude-mock',
  max_tokens: 64,
  stream,
  messages: [{ role: 'user', content: 'Summarize the quarterly report in three bullet points.' }],
});

/** A genuine request: attribution block, fresh nonce, stamp over the exact bytes. */
function genuineBody(stream: boolean): string {
  const req = requestOf(stream);
  const fp = fingerprintRequest(req, { salt: 'bench-salt', version: '1.4.2' });
  const tagged = withAttribution(req, serializeAttribution({ cv: '1.4.2', fp, ep: 'cli' }));
  const text = appendEnvelope(
    JSON.stringify(tagged),
    placeholderEnvelope({ kid: dev.kid, ts: Math.floor(Date.now() / 1000), nonce: randomBytes(8).toString('hex') }),
  );
  const bytes = utf8(text);
  const where = locateEnvelope(bytes);
  if (where.status !== 'found') throw new Error('no envelope');
  bytes.set(utf8(computeStamp(stampKey, bytes, where.stampStart, where.stampEnd)), where.stampStart);
  return Buffer.from(bytes).toString('utf8');
}

/** The same request without Moat's tags, for the baselines (the upstream refuses Moat's members, as the real API does). */
const plainBody = (stream: boolean) => JSON.stringify(requestOf(stream));

interface Target {
  readonly name: 'direct' | 'proxy' | 'verifier';
  readonly url: string;
  readonly apiKey: string;
}

const headersFor = (t: Target) => ({
  'content-type': 'application/json',
  'x-api-key': t.apiKey,
  'user-agent': 'moat-chat/1.4.2',
  'anthropic-version': '2023-06-01',
});

/** Per-request latency in µs over sequential requests on one keep-alive connection. */
async function sequential(t: Target, stream: boolean): Promise<number[]> {
  const pool = new Pool(t.url, { connections: 1, pipelining: 1 });
  const times: number[] = [];
  try {
    for (let i = 0; i < SEQUENTIAL + 50; i++) {
      const body = t.name === 'verifier' ? genuineBody(stream) : plainBody(stream);
      const start = process.hrtime.bigint();
      const res = await pool.request({ path: '/v1/messages', method: 'POST', headers: headersFor(t), body });
      await res.body.arrayBuffer();
      const end = process.hrtime.bigint();
      if (res.statusCode !== 200) throw new Error(`${t.name} answered ${res.statusCode}`);
      if (i >= 50) times.push(Number(end - start) / 1000); // the first 50 warm up
    }
  } finally {
    await pool.close();
  }
  return times.sort((a, b) => a - b);
}

async function throughput(t: Target, stream: boolean, connections: number): Promise<number> {
  const result = await autocannon({
    url: `${t.url}/v1/messages`,
    connections,
    duration: SECONDS,
    requests: [
      {
        method: 'POST',
        headers: headersFor(t),
        setupRequest: (req) => ({ ...req, body: t.name === 'verifier' ? genuineBody(stream) : plainBody(stream) }),
      },
    ],
  });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${result.non2xx} non-2xx answers, ${result.errors} errors from ${t.name}`);
  return result.requests.average;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};
const spread = (xs: number[], digits = 0) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;

const upstream = await child(['--upstream']);
const proxy = await child(['--proxy', upstream.url]);
const verifier = await child(['--verifier', upstream.url]);
const targets: Target[] = [
  { name: 'direct', url: upstream.url, apiKey: 'upstream' },
  { name: 'proxy', url: proxy.url, apiKey: 'upstream' },
  { name: 'verifier', url: verifier.url, apiKey: verifier.apiKey as string },
];
// Sanity: the upstream answers every target's request (and the mock takes no key).
await request(`${upstream.url}/v1/models`).then((r) => r.body.dump());

type Figures = Record<string, { p50: number[]; p90: number[]; p99: number[]; rps10: number[]; rps50: number[] }>;
const figures: Record<'JSON' | 'SSE', Figures> = { JSON: {}, SSE: {} };
for (let round = 0; round < ROUNDS; round++) {
  const order = [...targets.slice(round % 3), ...targets.slice(0, round % 3)];
  for (const mode of ['JSON', 'SSE'] as const) {
    for (const t of order) {
      figures[mode][t.name] ??= { p50: [], p90: [], p99: [], rps10: [], rps50: [] };
      const f = figures[mode][t.name] as Figures[string];
      const times = await sequential(t, mode === 'SSE');
      f.p50.push(pct(times, 50));
      f.p90.push(pct(times, 90));
      f.p99.push(pct(times, 99));
      f.rps10.push(await throughput(t, mode === 'SSE', 10));
      f.rps50.push(await throughput(t, mode === 'SSE', 50));
    }
  }
  process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`);
}
for (const c of [upstream, proxy, verifier]) c.process.kill('SIGTERM');

console.log(
  `moat-verifier benchmark (${process.version}; ${ROUNDS} rotated rounds; latency over ${SEQUENTIAL} sequential requests on one keep-alive connection; throughput with autocannon, ${SECONDS} s per run; medians with the range over rounds)`,
);
console.log('');
console.log(
  '| mode | target | p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs | req/s at 10 | req/s at 50 | throughput ÷ proxy (10 / 50) |',
);
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const mode of ['JSON', 'SSE'] as const) {
  const direct = figures[mode].direct as Figures[string];
  const bare = figures[mode].proxy as Figures[string];
  for (const t of targets) {
    const f = figures[mode][t.name] as Figures[string];
    const added = (k: 'p50' | 'p99') => f[k].map((v, i) => v - (direct[k][i] as number));
    const ratio = (k: 'rps10' | 'rps50') => f[k].map((v, i) => v / (bare[k][i] as number));
    console.log(
      `| ${mode} | ${t.name} | ${median(f.p50).toFixed(0)} | ${median(f.p90).toFixed(0)} | ${median(f.p99).toFixed(0)} | ${t.name === 'direct' ? '—' : `${median(added('p50')).toFixed(0)} (${spread(added('p50'))})`} | ${t.name === 'direct' ? '—' : `${median(added('p99')).toFixed(0)} (${spread(added('p99'))})`} | ${median(f.rps10).toFixed(0)} | ${median(f.rps50).toFixed(0)} | ${t.name === 'direct' ? '—' : `${median(ratio('rps10')).toFixed(2)}× (${spread(ratio('rps10'), 2)}) / ${median(ratio('rps50')).toFixed(2)}× (${spread(ratio('rps50'), 2)})`} |`,
    );
  }
}
process.exit(0);
