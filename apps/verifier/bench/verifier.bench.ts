/**
 * The verifier's overhead, measured with autocannon against two baselines on the same stack
 * in the same run:
 *
 * - "bare": node:http reading the body, parsing it and answering from the same in-process
 *   mock model — the verifier with every check removed;
 * - "verifier": every check on (attestation with a fresh stamp and nonce per request,
 *   fingerprint and statistics, gateway traces, signed blocks, policy, decoys off), SQLite.
 *
 * JSON and SSE, 10 connections, 5 s each. The servers run in a child process, the load
 * generator (which stamps every request) in this one, so they do not share a core. Reports
 * requests/s, the ratio, and the p50/p99 latency the verifier adds.
 * Run: pnpm --filter @moat/verifier bench (after a build).
 */
import { spawn } from 'node:child_process';
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
import { createVerifier, devEnvironment, loadConfig, mockEvents, mockMessages } from '../dist/index.js';

const DURATION = Number(process.env.BENCH_SECONDS ?? 5);
const dev = JSON.parse(readFileSync(devKeyFile, 'utf8')) as { kid: string; key: string };
const key = Buffer.from(dev.key, 'hex');

const SERVE = process.argv.includes('--serve');
if (SERVE) {
  const bare = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    delete body.moat_att;
    delete body.system;
    const response = mockMessages(body);
    if (body.stream === true) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const ev of mockEvents(response)) res.write(`event: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`);
      res.end();
    } else {
      const text = JSON.stringify(response);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    }
  });
  await new Promise<void>((r) => bare.listen(0, '127.0.0.1', () => r()));
  const bareUrl = `http://127.0.0.1:${(bare.address() as AddressInfo).port}`;

  const verifier = await createVerifier(
    loadConfig({
      ...devEnvironment({
        database: join(mkdtempSync(join(tmpdir(), 'moat-bench-')), 'bench.db'),
        salt: 'bench-salt',
        attestationKeyFile: devKeyFile,
      }),
      MOAT_VERIFIER_LOG_LEVEL: 'silent',
    }),
    { logLevel: 'silent' },
  );
  const verifierUrl = await verifier.listen();
  const { key: apiKey } = await verifier.storage.createApiKey('bench');
  // Exit cleanly on SIGTERM so `node --cpu-prof` can write the server's profile.
  process.on('SIGTERM', () => process.exit(0));
  process.stdout.write(`${JSON.stringify({ bareUrl, verifierUrl, apiKey })}\n`);
  await new Promise(() => {});
}

const server = spawn(process.execPath, [new URL(import.meta.url).pathname, '--serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
const [line] = (await once(server.stdout, 'data')) as [Buffer];
const { bareUrl, verifierUrl, apiKey } = JSON.parse(line.toString()) as { bareUrl: string; verifierUrl: string; apiKey: string };

/** A genuine request: attribution block, fresh nonce, stamp over the exact bytes. */
function genuineBody(stream: boolean): string {
  const request = {
    model: 'claude-mock',
    max_tokens: 64,
    stream,
    messages: [{ role: 'user', content: 'Summarize the quarterly report in three bullet points.' }],
  };
  const fp = fingerprintRequest(request, { salt: 'bench-salt', version: '1.4.2' });
  const tagged = withAttribution(request, serializeAttribution({ cv: '1.4.2', fp, ep: 'cli' }));
  const text = appendEnvelope(
    JSON.stringify(tagged),
    placeholderEnvelope({ kid: dev.kid, ts: Math.floor(Date.now() / 1000), nonce: randomBytes(8).toString('hex') }),
  );
  const bytes = utf8(text);
  const where = locateEnvelope(bytes);
  if (where.status !== 'found') throw new Error('no envelope');
  bytes.set(utf8(computeStamp(key, bytes, where.stampStart, where.stampEnd)), where.stampStart);
  return Buffer.from(bytes).toString('utf8');
}

async function run(url: string, stream: boolean) {
  const result = await autocannon({
    url: `${url}/v1/messages`,
    connections: 10,
    duration: DURATION,
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': apiKey, 'user-agent': 'moat-chat/1.4.2' },
        setupRequest: (req) => ({ ...req, body: genuineBody(stream) }),
      },
    ],
  });
  if (result.non2xx > 0) throw new Error(`${result.non2xx} non-2xx answers from ${url}`);
  return result;
}

console.log(`moat-verifier benchmark (${process.version}, autocannon, 10 connections, ${DURATION} s per run)`);
console.log('| mode | bare req/s | verifier req/s | ratio | bare p50 / p99 | verifier p50 / p99 | added p50 |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const stream of [false, true]) {
  const b = await run(bareUrl, stream);
  const v = await run(verifierUrl, stream);
  console.log(
    `| ${stream ? 'SSE' : 'JSON'} | ${Math.round(b.requests.average)} | ${Math.round(v.requests.average)} | ${(v.requests.average / b.requests.average).toFixed(2)}× | ${b.latency.p50} / ${b.latency.p99} ms | ${v.latency.p50} / ${v.latency.p99} ms | ${(v.latency.p50 - b.latency.p50).toFixed(1)} ms |`,
  );
}
server.kill();
