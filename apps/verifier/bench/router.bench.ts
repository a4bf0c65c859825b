/**
 * The route table's dispatch cost: `match(method, path)` for real request lines (the hot
 * Messages path, a pass-through, an admin path, a miss), in ns per match. A router library
 * pays only when this figure matters next to a request's own cost (tens to hundreds of µs).
 *
 * Run: node bench/router.bench.ts (after a build). BENCH_N changes the effort.
 */
import { createRouter, ROUTES } from '../dist/index.js';

const N = Number(process.env.BENCH_N ?? 2_000_000);
const router = createRouter(ROUTES);
const requests: Array<[string, string]> = [
  ['POST', '/v1/messages'],
  ['POST', '/v1/messages/count_tokens'],
  ['GET', '/v1/models'],
  ['GET', '/admin/activity'],
  ['GET', '/nothing/here'],
];
for (const [method, path] of requests) {
  let hits = 0;
  for (let i = 0; i < N / 10; i++) if (router.match(method, path) !== undefined) hits++;
  const start = process.hrtime.bigint();
  for (let i = 0; i < N; i++) if (router.match(method, path) !== undefined) hits++;
  const ns = Number(process.hrtime.bigint() - start) / N;
  console.log(`${method} ${path}: ${ns.toFixed(1)} ns/match (${hits > 0 ? 'match' : 'miss'})`);
}
