/**
 * Group commit on PostgreSQL + Redis: records and nonces written the way requests write them
 * (nonce, reserved record, finished record), sequentially and 50 at a time, by this build and
 * by another one (BENCH_BASE=/abs/dist/index.js, e.g. an earlier commit's build), rounds
 * alternating. Needs MOAT_TEST_POSTGRES_URL and MOAT_TEST_REDIS_URL (a database of its own:
 * it empties `records`).
 *
 *   node bench/pg-commit.bench.ts
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PgRedisStorage } from '../dist/index.js';
import { benchRecord } from './record.ts';
import { median, spread as span } from './stats.ts';

const PG = process.env.MOAT_TEST_POSTGRES_URL;
const REDIS = process.env.MOAT_TEST_REDIS_URL;
if (PG === undefined || REDIS === undefined) {
  console.log('\nPostgreSQL + Redis group commit: not measured (MOAT_TEST_POSTGRES_URL and MOAT_TEST_REDIS_URL not set).');
  process.exit(0);
}
const N = Number(process.env.BENCH_WRITES ?? 1500);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
type Open = typeof PgRedisStorage.open;
const builds: Array<[string, Open]> = [['this build', PgRedisStorage.open.bind(PgRedisStorage)]];
if (process.env.BENCH_BASE !== undefined) {
  const base = (await import(process.env.BENCH_BASE)) as { PgRedisStorage: typeof PgRedisStorage };
  builds.push([process.env.BENCH_BASE_NAME ?? 'base (BENCH_BASE)', base.PgRedisStorage.open.bind(base.PgRedisStorage)]);
}
const record = benchRecord;
type Store = Awaited<ReturnType<Open>>;
/** One request's writes: its nonce, its reserved record, then its finished record. */
async function request(s: Store, tag: string): Promise<void> {
  const id = `req_${tag}`;
  await Promise.all([s.add('kbench', tag, Math.floor(Date.now() / 1000) + 300), s.insertRecord(record(id, null))]);
  await s.insertRecord(record(id, 200), { upsert: true });
}
const results: Record<string, { seq: number[]; c50: number[] }> = {};
const admin = new pg.Pool({ connectionString: PG });
for (let round = 0; round < ROUNDS; round++)
  for (const [name, open] of round % 2 === 0 ? builds : [...builds].reverse()) {
    const s = await open(PG, REDIS, randomBytes(32), { redisPrefix: `moat-bench-${randomBytes(3).toString('hex')}:` });
    // A new replay cache vouches for stamps from the next whole second, as a verifier waits for.
    const since = (s as { replayCacheSince?: () => number }).replayCacheSince?.() ?? 0;
    if (since > Date.now()) await new Promise((resolve) => setTimeout(resolve, since - Date.now()));
    await admin.query('TRUNCATE records');
    results[name] ??= { seq: [], c50: [] };
    const r = results[name];
    const run = randomBytes(4).toString('hex');
    let t = performance.now();
    for (let i = 0; i < N; i++) await request(s, `${run}s${i}`);
    r.seq.push(((performance.now() - t) * 1000) / N);
    t = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (next < N) await request(s, `${run}c${next++}`);
      }),
    );
    r.c50.push(N / ((performance.now() - t) / 1000));
    const rows = Number((await admin.query('SELECT COUNT(*) n FROM records')).rows[0].n);
    if (rows !== 2 * N) throw new Error(`${name}: ${rows} records for ${2 * N} requests`);
    await s.close();
  }
await admin.end();
console.log(
  `PostgreSQL + Redis writes of ${N} requests (nonce + reserved record, then finished record), ${ROUNDS} rounds, medians (range)`,
);
console.log('');
console.log('| build | sequential µs per request | requests/s at 50 concurrent |');
console.log('|---|---:|---:|');
for (const [name, r] of Object.entries(results))
  console.log(`| ${name} | ${median(r.seq).toFixed(0)} (${span(r.seq)}) | ${median(r.c50).toFixed(0)} (${span(r.c50)}) |`);
process.exit(0);
