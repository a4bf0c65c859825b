/**
 * Attested send (stamped and sent by the native addon over libcurl) against plain `fetch`
 * (undici) to the same loopback server in another process: 1 KB and 100 KB JSON bodies,
 * sequential and 32 concurrent; and server-side verifications per second for 10 KB bodies
 * on one core, against a bare node:crypto HMAC of the same bytes.
 *
 * Run: pnpm --filter @moat/attest bench (after a build).
 */
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { readDevKey } from '@moat/native/dev-key';
import { Bench } from 'tinybench';
import { AttestationKeyring, createAttestedFetch, verifyAttestation } from '../dist/index.js';

const server = spawn(
  process.execPath,
  [
    '-e',
    `require('node:http').createServer((q, s) => { q.resume(); q.on('end', () => s.end('{"ok":true}')); }).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`,
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const [portLine] = (await once(server.stdout, 'data')) as [Buffer];
const url = `http://127.0.0.1:${portLine.toString().trim()}/v1/messages`;
const attested = createAttestedFetch();

const body = (bytes: number) =>
  JSON.stringify({ model: 'm', max_tokens: 16, messages: [{ role: 'user', content: 'x'.repeat(bytes - 80) }] });

async function timeIt(send: typeof fetch, payload: string, total: number, concurrency: number): Promise<number> {
  let next = 0;
  const worker = async () => {
    while (next < total) {
      next++;
      const res = await send(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: payload });
      await res.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker)); // warm-up round below is discarded
  const start = performance.now();
  next = 0;
  await Promise.all(Array.from({ length: concurrency }, worker));
  return performance.now() - start;
}

console.log(`@moat/attest benchmarks (${process.version})`);
console.log('| body | mode | plain fetch | attested | ratio |');
console.log('|---|---|---:|---:|---:|');
for (const size of [1024, 100 * 1024]) {
  for (const [mode, concurrency, total] of [
    ['sequential', 1, 300],
    ['32 concurrent', 32, 1_000],
  ] as const) {
    const payload = body(size);
    const plain = await timeIt(fetch, payload, total, concurrency);
    const att = await timeIt(attested as typeof fetch, payload, total, concurrency);
    console.log(
      `| ${size / 1024} KB | ${mode} (${total} requests) | ${plain.toFixed(0)} ms | ${att.toFixed(0)} ms | ${(att / plain).toFixed(2)}× |`,
    );
  }
}
server.kill();

// Server-side verification, one core.
const dev = readDevKey() as {
  kid: string;
  key: string;
};
const key = new Uint8Array(Buffer.from(dev.key, 'hex'));
const keyring = new AttestationKeyring([{ kid: dev.kid, key }]);
const raw = Buffer.from(
  `${body(10 * 1024).slice(0, -1)},"moat_att":"v1.${dev.kid}.${Math.floor(Date.now() / 1000)}.0011223344556677.${'0'.repeat(32)}"}`,
);
const stamp = createHmac('sha256', key).update(raw).digest('hex').slice(0, 32);
raw.write(stamp, raw.length - 34, 'latin1');
const bytes = new Uint8Array(raw);
const bench = new Bench({ time: Number(process.env.BENCH_TIME_MS ?? 500), warmup: true });
bench
  .add('verifyAttestation (10 KB)', async () => {
    await verifyAttestation(bytes, { keyring });
  })
  .add('bare node:crypto HMAC (10 KB)', () => createHmac('sha256', key).update(raw).digest());
await bench.run();
const hz = (name: string): number => {
  const result = bench.getTask(name)?.result;
  return result !== undefined && 'throughput' in result ? result.throughput.mean : Number.NaN;
};
const v = hz('verifyAttestation (10 KB)');
const h = hz('bare node:crypto HMAC (10 KB)');
console.log(
  `\nverifyAttestation, 10 KB bodies: ${Math.round(v).toLocaleString('en-US')}/s (${(v / h).toFixed(2)}× a bare node:crypto HMAC at ${Math.round(h).toLocaleString('en-US')}/s)`,
);
