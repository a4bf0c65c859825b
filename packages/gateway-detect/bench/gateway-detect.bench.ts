/**
 * Response observations per second on a typical response (12 headers, no gateway, and with
 * LiteLLM's headers), against a baseline that only lowercases the same header names.
 *
 * Run: pnpm --filter @moat/gateway-detect bench (after a build).
 */
import { Bench } from 'tinybench';
import { GatewayDetector, inspectRequest } from '../dist/index.js';

const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 400);
const plain = new Headers({
  'content-type': 'application/json',
  'request-id': 'req_1',
  'anthropic-ratelimit-requests-limit': '50',
  'anthropic-ratelimit-requests-remaining': '49',
  'anthropic-ratelimit-requests-reset': '2026-11-25T10:00:00Z',
  'anthropic-ratelimit-tokens-limit': '100000',
  'anthropic-ratelimit-tokens-remaining': '99000',
  'anthropic-ratelimit-tokens-reset': '2026-11-25T10:00:00Z',
  'cf-ray': '8f1e2d3c4b5a6978-FRA',
  server: 'cloudflare',
  date: 'Wed, 25 Nov 2026 10:00:00 GMT',
  'content-length': '512',
});
const relayed = new Headers(plain);
relayed.set('x-litellm-call-id', 'c');
relayed.set('x-litellm-model-id', 'm');
const detector = new GatewayDetector();

const bench = new Bench({ time: TIME_MS, warmup: true });
bench
  .add('observe (direct response)', () => detector.observe({ headers: plain }))
  .add('observe (LiteLLM response)', () => detector.observe({ headers: relayed }))
  .add('inspectRequest (server)', () => inspectRequest({ headers: plain, clientVersion: '1.4.2', userAgentProduct: 'moat-chat' }))
  .add('baseline: lowercase header names', () => {
    const names: string[] = [];
    for (const [name] of plain) names.push(name.toLowerCase());
    return names;
  });
await bench.run();

const hz = (name: string): number => {
  const result = bench.getTask(name)?.result;
  return result !== undefined && 'throughput' in result ? result.throughput.mean : Number.NaN;
};
const base = hz('baseline: lowercase header names');
console.log(`@moat/gateway-detect benchmarks (${TIME_MS} ms per task, ${process.version})`);
console.log('| task | ops/s | vs baseline |');
console.log('|---|---:|---:|');
for (const task of bench.tasks)
  console.log(`| ${task.name} | ${Math.round(hz(task.name)).toLocaleString('en-US')} | ${(hz(task.name) / base).toFixed(2)}× |`);
