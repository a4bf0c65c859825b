/**
 * The decoy index over a retention window: build time, heap, and trace time per request text
 * for a number of keys and weekly periods (90 days = 14 periods).
 *
 * Run: node --expose-gc bench/trace-index.bench.ts [keys] [periods] (after a build).
 */
import { randomBytes } from 'node:crypto';
import { CanaryIndex, decoyPeriod } from '../dist/index.js';

const keysN = Number(process.argv[2] ?? 1_000);
const periodsN = Number(process.argv[3] ?? 14);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
const secret = randomBytes(32);
const keys = Array.from({ length: keysN }, (_, i) => `key_${i.toString(16).padStart(12, '0')}`);
const now = decoyPeriod();
const periods = Array.from({ length: periodsN }, (_, i) => now - i);
gc();
const before = process.memoryUsage().heapUsed;
let t = performance.now();
const index = new CanaryIndex({ secret, keys, periods });
const buildMs = performance.now() - t;
gc();
const heapMiB = (process.memoryUsage().heapUsed - before) / 1_048_576;
const text = 'a conversation with reconcile_regional_ledger and acct_abcdefgh in it '.repeat(40);
t = performance.now();
for (let i = 0; i < 1_000; i++) index.trace(text);
const traceMs = (performance.now() - t) / 1_000;
console.log(
  JSON.stringify({
    keys: keysN,
    periods: periodsN,
    tokens: index.tokens,
    buildMs: Math.round(buildMs),
    heapMiB: +heapMiB.toFixed(1),
    traceMs,
  }),
);
