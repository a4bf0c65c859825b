/**
 * What each change to the genuine path took out, measured in one process, before and after
 * interleaved over rounds (so a loaded machine moves both alike): the work a request no
 * longer does, against what it does now.
 *
 * - decoy index: listing the API keys (SQLite, 100 keys), which every request did once the
 *   index was 10 s old, against nothing;
 * - decoys: `decoyTools` for the key and period, against a cached set;
 * - JSON answer with decoys injected and none called: parse, intercept, sign, serialize,
 *   against parse and pass the upstream's bytes;
 * - SSE answer with decoys injected and none called (the mock's stream, 64-character deltas):
 *   read, filter, sign and serialize each event, against passing unchanged events on as
 *   their data text as it arrived;
 * - policy: each layer's table for the request's attributes (default flags, no rules),
 *   evaluated by GrowthBook, against read from the features without rules;
 * - forwarded body: the decoy tools' JSON text, serialized per request, against made once per
 *   cached decoy set;
 * - group commit on SQLite: three commits per stamped request (nonce; reserved record;
 *   finished record), against two (nonce and reserved record together; finished record).
 *
 *   node bench/steps.bench.ts
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GrowthBook } from '@growthbook/growthbook';
import {
  BlockKeyring,
  DecoyStreamFilter,
  decoyPeriod,
  decoyTools,
  interceptDecoyCalls,
  StreamSigner,
  signResponse,
} from '@moat/distill-guard/server';
import { formatReceivedEvent, formatStreamEvent, parseMessagesResponse, readStreamEvents, streamEventsOf } from '@moat/protocol/messages';
import { DEFAULT_FEATURES, Flags, mockMessages, POLICY_PREFIX, SqliteStorage } from '../dist/index.js';
import { benchRecord } from './record.ts';
import { median, spread } from './stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const N = Number(process.env.BENCH_ITERATIONS ?? 2000);
const secret = randomBytes(32);

/** µs per call of `fn` over N calls (awaited when it returns a promise). */
async function time(fn: (i: number) => unknown): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < N; i++) {
    const r = fn(i);
    if (r instanceof Promise) await r;
  }
  return ((performance.now() - start) * 1000) / N;
}

const dir = mkdtempSync(join(tmpdir(), 'moat-steps-'));
const storage = new SqliteStorage(join(dir, 'steps.db'), randomBytes(32));
for (let i = 0; i < 100; i++) storage.createApiKey(`key ${i}`);
const period = decoyPeriod();
const cached = decoyTools({ secret, apiKeyId: 'key_a', period });
const cache = new Map([['key_a', cached]]);
// The mock's JSON answer to moat-chat's request with its three decoys: no decoy called.
const answer = Buffer.from(
  JSON.stringify(
    mockMessages({
      model: 'claude-mock',
      max_tokens: 1024,
      messages: [{ role: 'user', content: 'Summarize the quarterly report in three bullet points.' }],
      tools: cached.map((d) => d.tool),
    }),
  ),
);
if (interceptDecoyCalls(parseMessagesResponse(JSON.parse(answer.toString('utf8'))), cached).turn.calls.length > 0)
  throw new Error('the mock called a decoy: pick another prompt');
const sse = [...streamEventsOf(parseMessagesResponse(JSON.parse(answer.toString('utf8'))))].map(formatStreamEvent).join('');
const sseBytes = Buffer.from(sse);
/** The SSE stage's work on one answer: read, withhold decoy calls, sign, write out (into a string). */
async function relaySse(keepText: boolean): Promise<number> {
  const filter = new DecoyStreamFilter(cached);
  const signer = new StreamSigner(ctx, keyring);
  let out = 0;
  async function* body() {
    yield sseBytes;
  }
  for await (const ev of readStreamEvents(body(), { keepText }))
    for (const kept of filter.handle(ev))
      for (const o of signer.handle(kept)) out += (keepText && o === ev ? formatReceivedEvent(o) : formatStreamEvent(o)).length;
  return out;
}
const toolsText = new WeakMap([[cached, JSON.stringify(cached.map((d) => d.tool)).slice(1, -1)]]);
const layers = Object.keys(DEFAULT_FEATURES).filter((k) => k.startsWith(POLICY_PREFIX));
const growthbook = new GrowthBook({ features: DEFAULT_FEATURES as never });
const flags = new Flags({ ...DEFAULT_FEATURES });
const attributes = { id: 'key_a', model: 'claude-mock', attestation: 'valid', binding: 'request', ep: 'cli', cv: '1.0.0' };
const keyring = new BlockKeyring([{ kid: 'bench', alg: 'hs256', secret: randomBytes(32) }], 'bench');
const ctx = { apiKeyId: 'key_a', model: 'claude-mock' };
const record = benchRecord;
let n = 0;
const exp = Math.floor(Date.now() / 1000) + 300;

const steps: Array<[string, (i: number) => unknown, (i: number) => unknown]> = [
  ['decoy index: list the keys per request', () => storage.listApiKeys(), () => undefined],
  ['decoys for the key and period', () => decoyTools({ secret, apiKeyId: 'key_a', period }), () => cache.get('key_a')],
  [
    'JSON answer, decoys injected, none called',
    () => {
      const parsed = interceptDecoyCalls(parseMessagesResponse(JSON.parse(answer.toString('utf8'))), cached).response;
      return JSON.stringify(signResponse(parsed, ctx, keyring).response);
    },
    () => interceptDecoyCalls(parseMessagesResponse(JSON.parse(answer.toString('utf8'))), cached).turn.calls.length === 0 && answer,
  ],
  ['SSE answer, decoys injected, none called', () => relaySse(false), () => relaySse(true)],
  [
    "policy: each layer's table from the flags",
    () =>
      layers.map((k) => {
        growthbook.setAttributes({ ...attributes });
        return growthbook.getFeatureValue(k, {} as never);
      }),
    () => layers.map((k) => flags.value(k, {}, attributes)),
  ],
  ["forwarded body: the decoy tools' JSON text", () => JSON.stringify([...cached.map((d) => d.tool)]), () => `[${toolsText.get(cached)}]`],
  [
    'SQLite commits of one stamped request, sequential',
    async () => {
      const id = `a${n++}`;
      await storage.add('k', id, exp);
      await storage.insertRecord(record(id, null));
      await storage.insertRecord(record(id, 200), { upsert: true });
    },
    async () => {
      const id = `b${n++}`;
      await Promise.all([storage.add('k', id, exp), storage.insertRecord(record(id, null))]);
      await storage.insertRecord(record(id, 200), { upsert: true });
    },
  ],
];
const results = steps.map(() => ({ before: [] as number[], after: [] as number[] }));
for (let round = 0; round < ROUNDS; round++)
  for (const [i, [, before, after]] of steps.entries()) {
    const r = results[i] as { before: number[]; after: number[] };
    if (round % 2 === 0) {
      r.before.push(await time(before));
      r.after.push(await time(after));
    } else {
      r.after.push(await time(after));
      r.before.push(await time(before));
    }
  }
storage.close();
console.log('');
console.log(`Per-request work before and after each change (${ROUNDS} interleaved rounds of ${N} calls; µs per request, median (range))`);
console.log('');
console.log('| change | before µs | after µs | taken out µs |');
console.log('|---|---:|---:|---:|');
for (const [i, [name]] of steps.entries()) {
  const r = results[i] as { before: number[]; after: number[] };
  const saved = r.before.map((b, k) => b - (r.after[k] as number));
  console.log(
    `| ${name} | ${median(r.before).toFixed(1)} (${spread(r.before, 1)}) | ${median(r.after).toFixed(1)} (${spread(r.after, 1)}) | ${median(saved).toFixed(1)} |`,
  );
}
process.exit(0);
