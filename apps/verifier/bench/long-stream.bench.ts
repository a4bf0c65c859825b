/**
 * What the verifier adds to a long streamed answer, per event. The SSE mode of
 * `verifier.bench.ts` streams 92 events; a real answer streams one event per few tokens, so a
 * long one is thousands. Here the upstream (the mock model over HTTP, in its own process) is
 * asked to echo a long text, which it streams as one `content_block_delta` per 12 characters:
 * 2,000 events, about 250 KB. Targets, each a process of `verifier.bench.ts`'s own roles: the
 * upstream directly, the bare node:http + undici proxy, the verifier with a plain request
 * (no Moat tags: the relay's work without the stamp's), and each build of BENCH_BUILDS.
 *
 *   node bench/long-stream.bench.ts    (BENCH_ROUNDS, BENCH_SEQUENTIAL, BENCH_EVENTS)
 */
import { Pool } from 'undici';
import { benchBuilds, type RoleProcess as Child, cpuOf, startRole } from './role-process.ts';
import { median, percentile, spread } from './stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SEQUENTIAL = Number(process.env.BENCH_SEQUENTIAL ?? 200);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 2000);
const WARMUP = 30;
const ROLES = new URL('./verifier.bench.ts', import.meta.url).pathname;

/** A role of verifier.bench.ts in its own process (the same servers the main bench measures). */
const role = (args: string[], env: Record<string, string> = {}) => startRole(ROLES, args, [], env);

// The mock echoes the last user text after "Echo: ", 12 characters per delta.
const text = 'x'.repeat(EVENTS * 12 - 'Echo: '.length);
const body = (apiKey: string) => ({
  headers: { 'content-type': 'application/json', 'x-api-key': apiKey, 'anthropic-version': '2023-06-01', 'user-agent': 'moat-chat/1.4.2' },
  body: JSON.stringify({ model: 'claude-mock', max_tokens: 4096, stream: true, messages: [{ role: 'user', content: text }] }),
});

/** Per-request wall times (µs) of `n` sequential requests on one keep-alive connection, and the events of the last answer. */
async function sequential(c: Child, n: number): Promise<{ times: number[]; events: number; bytes: number }> {
  const pool = new Pool(c.url, { connections: 1, pipelining: 1 });
  const { headers, body: payload } = body(c.apiKey ?? 'upstream');
  const times: number[] = [];
  let events = 0;
  let bytes = 0;
  try {
    for (let i = 0; i < n; i++) {
      const start = process.hrtime.bigint();
      const res = await pool.request({ path: '/v1/messages', method: 'POST', headers, body: payload });
      const answer = Buffer.from(await res.body.arrayBuffer());
      times.push(Number(process.hrtime.bigint() - start) / 1000);
      if (res.statusCode !== 200) throw new Error(`answered ${res.statusCode}: ${answer.toString('utf8').slice(0, 200)}`);
      if (i === n - 1) {
        const stream = answer.toString('utf8');
        events = stream.split('\n\n').filter((e) => e.startsWith('event: content_block_delta')).length;
        bytes = answer.length;
        if (!stream.includes('event: message_stop')) throw new Error('the stream ended without message_stop');
      }
    }
  } finally {
    await pool.close();
  }
  return { times, events, bytes };
}

const upstream = await role(['--upstream']);
const proxy = await role(['--proxy', upstream.url]);
// The verifier's publicAuthorities only matter to stamped requests; none are sent here.
const verifierOf = (env: Record<string, string> = {}) => role(['--verifier', upstream.url, '127.0.0.1:1'], env);
const targets: Array<{ name: string; child: Child }> = [
  { name: 'direct', child: upstream },
  { name: 'proxy', child: proxy },
  { name: 'verifier', child: await verifierOf() },
  ...(await Promise.all(
    benchBuilds().map(async ({ name, dist }) => ({ name: `verifier@${name}`, child: await verifierOf({ BENCH_DIST: dist }) })),
  )),
];

const figures = new Map<string, { p50: number[]; p90: number[]; p99: number[]; cpu: number[]; added: number[]; ratio: number[] }>();
let events = 0;
let bytes = 0;
for (let round = 0; round < ROUNDS; round++) {
  const order = [...targets.slice(round % targets.length), ...targets.slice(0, round % targets.length)];
  const p50 = new Map<string, number>();
  for (const t of order) {
    await sequential(t.child, WARMUP);
    const before = await cpuOf(t.child);
    const run = await sequential(t.child, SEQUENTIAL);
    const cpu = ((await cpuOf(t.child)) - before) / SEQUENTIAL;
    events = run.events;
    bytes = run.bytes;
    const f = figures.get(t.name) ?? { p50: [], p90: [], p99: [], cpu: [], added: [], ratio: [] };
    const sorted = run.times.sort((a, b) => a - b);
    f.p50.push(percentile(sorted, 50));
    f.p90.push(percentile(sorted, 90));
    f.p99.push(percentile(sorted, 99));
    f.cpu.push(cpu);
    figures.set(t.name, f);
    p50.set(t.name, percentile(sorted, 50));
  }
  const direct = p50.get('direct') as number;
  const proxyAdded = (p50.get('proxy') as number) - direct;
  for (const t of targets) {
    if (t.name === 'direct') continue;
    const f = figures.get(t.name);
    const added = (p50.get(t.name) as number) - direct;
    f?.added.push(added);
    // A round where the proxy added nothing over direct (its p50 at or under direct's) gives no ratio.
    if (proxyAdded > 0) f?.ratio.push(added / proxyAdded);
  }
  process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`);
}
for (const t of targets) t.child.process.kill('SIGTERM');

console.log(
  `long streamed answers (${process.version}; ${ROUNDS} rotated rounds of ${SEQUENTIAL} sequential requests on one keep-alive connection after ${WARMUP} warm-up; each answer ${events} content_block_delta events, ${(bytes / 1024).toFixed(0)} KiB of SSE; the request ${(Buffer.byteLength(body('k').body) / 1024).toFixed(0)} KiB, plain: no Moat tags; medians with the range over rounds)`,
);
const ratioCell = (ratios: number[]) =>
  ratios.length === 0
    ? 'n/a (the proxy added nothing over direct)'
    : `${median(ratios).toFixed(2)}× (${spread(ratios, 2)})${ratios.length < ROUNDS ? `, ${ratios.length} of ${ROUNDS} rounds` : ''}`;
console.log('');
console.log('| target | p50 ms | p90 ms | p99 ms | added p50 ms | added p50 ÷ proxy | added µs per event | server CPU ms/req |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const t of targets) {
  const f = figures.get(t.name);
  if (f === undefined) continue;
  const ms = (xs: number[]) => (median(xs) / 1000).toFixed(2);
  const direct = t.name === 'direct';
  console.log(
    `| ${t.name} | ${ms(f.p50)} | ${ms(f.p90)} | ${ms(f.p99)} | ${direct ? '—' : `${ms(f.added)} (${(Math.min(...f.added) / 1000).toFixed(2)}–${(Math.max(...f.added) / 1000).toFixed(2)})`} | ${direct ? '—' : ratioCell(f.ratio)} | ${direct ? '—' : (median(f.added) / events).toFixed(2)} | ${(median(f.cpu) / 1000).toFixed(2)} |`,
  );
}
