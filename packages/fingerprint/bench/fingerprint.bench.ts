/**
 * Server-side fingerprint checks per second, and stats updates per second, against
 * node:crypto SHA-256 of the same input measured in the same run (the hash is the floor of
 * what a check costs).
 *
 * Run: pnpm --filter @moat/fingerprint bench (after a build).
 */
import { createHash } from 'node:crypto';
import { fingerprintChars } from '@moat/protocol';
import { Bench } from 'tinybench';
import { checkFingerprint, FingerprintStats, tagFingerprint } from '../dist/index.js';

const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 400);
const salt = 'bench-salt';
const original = {
  model: 'm',
  max_tokens: 256,
  messages: [{ role: 'user', content: 'Refactor the parser so that it streams its input.' }],
};
const tagged = tagFingerprint(original, { salt, version: '1.4.2', entrypoint: 'cli' });
if (tagged.status !== 'tagged') throw new Error(tagged.reason);
const request = tagged.request;
const input = `${salt}${fingerprintChars(original.messages[0]?.content ?? '')}1.4.2`;
const stats = new FingerprintStats();
let i = 0;

const bench = new Bench({ time: TIME_MS, warmup: true });
bench
  .add('checkFingerprint', () => checkFingerprint(request, { salt }))
  .add('FingerprintStats.record (1,000 keys)', () => stats.record(`key-${i++ % 1000}`, 'match'))
  .add('baseline: node:crypto sha256', () => createHash('sha256').update(input).digest());
await bench.run();

const hz = (name: string): number => {
  const result = bench.getTask(name)?.result;
  return result !== undefined && 'throughput' in result ? result.throughput.mean : Number.NaN;
};
const base = hz('baseline: node:crypto sha256');
console.log(`@moat/fingerprint benchmarks (${TIME_MS} ms per task, ${process.version})`);
console.log('| task | ops/s | vs node:crypto sha256 |');
console.log('|---|---:|---:|');
for (const name of ['checkFingerprint', 'FingerprintStats.record (1,000 keys)', 'baseline: node:crypto sha256']) {
  console.log(`| ${name} | ${Math.round(hz(name)).toLocaleString('en-US')} | ${(hz(name) / base).toFixed(2)}× |`);
}
