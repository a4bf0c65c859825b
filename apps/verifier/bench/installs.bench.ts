/**
 * What per-install keys cost the verifier in memory and on disk, per 10⁶ installs, and what an
 * enrollment costs in time:
 * - the store: a SQLite file holding 10⁶ installs (rows and indexes), bytes per install;
 * - the install-key cache (`InstallKeys`: the row and the derived `K_i` of each install that
 *   stamps), heap and RSS per cached install, measured over BENCH_N installs and scaled to 10⁶;
 * - the fan-in state per install (address hashes of the current window), the same way;
 * - an enrollment (challenge, then enroll) against a running verifier, sequential, p50 and p99.
 *
 * Run: node --expose-gc bench/installs.bench.ts (after a build). BENCH_N changes the effort.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { GatewayStats } from '@moat/gateway-detect/server';
import { readDevKey } from '@moat/native/dev-key';
import {
  appendEnvelope,
  computeStamp,
  ENROLLMENT_CHALLENGE_PATH,
  ENROLLMENT_PATH,
  enrollmentRequestBody,
  locateEnvelope,
  placeholderEnvelope,
  utf8,
  x25519PublicKey,
} from '@moat/protocol';
import {
  createVerifier,
  devEnvironment,
  EnrollmentKeyring,
  InstallKeys,
  loadConfig,
  newEnrollmentKeys,
  SqliteStorage,
} from '../dist/index.js';

const STORE_N = Number(process.env.BENCH_STORE_N ?? 1_000_000);
const N = Number(process.env.BENCH_N ?? 50_000);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
const dir = mkdtempSync(join(tmpdir(), 'moat-installs-bench-'));
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

function memory(): { heap: number; rss: number } {
  gc();
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed + m.external, rss: m.rss };
}

// The store: STORE_N installs in one SQLite file (as the verifier keeps them), then its size.
const enrollmentKeys = JSON.parse(newEnrollmentKeys()) as Array<{ kid: string; key: string }>;
const ekid = enrollmentKeys[0]?.kid as string;
const storage = new SqliteStorage(join(dir, 'verifier.db'), randomBytes(32));
const publicKeys = Array.from({ length: 1000 }, () => x25519PublicKey(randomBytes(32)));
const iids: string[] = [];
const started = performance.now();
const insert = storage.db.transaction((from: number, to: number) => {
  for (let i = from; i < to; i++) {
    const iid = `i${randomBytes(12).toString('hex')}`;
    if (i < N) iids.push(iid);
    storage.installs.createInstall({
      iid,
      keyId: `key_${(i % 5000).toString(16).padStart(12, '0')}`,
      installKey: publicKeys[i % publicKeys.length] as string,
      ekid,
      challenge: randomBytes(32).toString('base64url'),
      created: Date.now(),
      revokedAt: null,
      overLimit: false,
      releaseKid: 'k1_5_0',
    });
  }
});
for (let i = 0; i < STORE_N; i += 50_000) insert(i, Math.min(STORE_N, i + 50_000));
const insertSec = (performance.now() - started) / 1000;
storage.db.pragma('wal_checkpoint(TRUNCATE)');
const fileBytes = statSync(join(dir, 'verifier.db')).size;

// The cache: N installs resolved (each derived once), then its memory, scaled to 10⁶.
const keyring = new EnrollmentKeyring(enrollmentKeys);
const before = memory();
const cache = new InstallKeys(keyring, storage.installs, { maxEntries: N });
const deriveStart = performance.now();
for (const iid of iids) await cache.resolve(iid);
const deriveUs = ((performance.now() - deriveStart) * 1000) / N;
const cached = memory();
const fanIn = new GatewayStats({ maxKeys: N });
for (const [i, iid] of iids.entries())
  fanIn.record(iid, { gateways: [], hops: [], userAgent: undefined, signals: [] }, `10.0.${(i >> 8) & 255}.${i & 255}`);
const withFanIn = memory();
// Both stay reachable until measured (an object no later code reads may be collected early).
if (cache.size !== N || fanIn.reports().length !== N) throw new Error('the cache or the fan-in state lost entries');
storage.close();

const load = loadavg()[0]?.toFixed(1);
/** One row: bytes per install, scaled to 10⁶, and a note. */
const row = (part: string, perInstall: number, note: string) =>
  console.log(`| ${part} | ${perInstall.toFixed(0)} B | ${mb(perInstall * 1e6)} MiB | ${note} |`);
console.log(
  `moat-verifier per-install keys (${process.version}; store: ${STORE_N} installs in SQLite; ` +
    `cache and fan-in: ${N} installs, scaled to 10⁶; load average ${load} at the end)`,
);
console.log('');
console.log('| part | per install | per 10⁶ installs | note |');
console.log('|---|---:|---:|---|');
row(
  'store (SQLite file, rows + indexes)',
  fileBytes / STORE_N,
  `on disk; inserted at ${(STORE_N / insertSec).toFixed(0)} installs/s`,
);
row(
  'install-key cache (row + K_i), heap + external',
  (cached.heap - before.heap) / N,
  `bounded by installKeyCacheSize (default 100,000); first use derives K_i in ${deriveUs.toFixed(0)} µs`,
);
row('install-key cache, RSS', (cached.rss - before.rss) / N, "the process's resident growth");
row(
  'fan-in state (one address each), heap',
  (withFanIn.heap - cached.heap) / N,
  "bounded by the gateway statistics' maxKeys (100,000)",
);

// Enrollment latency against a running verifier (the limits lifted for the run).
const devKey = readDevKey();
if (devKey !== undefined) {
  const flags = join(dir, 'flags.json');
  writeFileSync(
    flags,
    JSON.stringify({
      features: { 'moat-policy-enrollment': { defaultValue: { perWindow: 1e6, installsPerKey: 1e6 } } },
    }),
  );
  const env: Record<string, string> = {
    ...devEnvironment({ database: join(dir, 'live.db') }),
    MOAT_VERIFIER_FLAGS_FILE: flags,
    MOAT_VERIFIER_ATTESTATION_KEYS: JSON.stringify([{ kid: devKey.kid, key: devKey.key }]),
  };
  const verifier = await createVerifier(loadConfig(env), { logLevel: 'silent' });
  const base = await verifier.listen();
  const { key } = await verifier.storage.createApiKey('bench');
  const doc = (await (await fetch(`${base}/v1/moat`)).json()) as { moat: { enrollment: { kid: string } } };
  const post = (path: string, body: Buffer | string) =>
    fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body,
    });
  const times: number[] = [];
  for (let i = 0; i < 300; i++) {
    const t0 = performance.now();
    const { challenge } = (await (await post(ENROLLMENT_CHALLENGE_PATH, '')).json()) as { challenge: string };
    const json = enrollmentRequestBody({
      installKey: x25519PublicKey(randomBytes(32)),
      challenge,
      ekid: doc.moat.enrollment.kid,
    });
    const nonce = randomBytes(8).toString('hex');
    const ts = Math.floor(Date.now() / 1000);
    const bytes = utf8(appendEnvelope(json, placeholderEnvelope({ kid: devKey.kid, ts, nonce, binding: 'request' })));
    const where = locateEnvelope(bytes);
    if (where.status !== 'found') throw new Error('no envelope');
    const request = { method: 'POST', authority: new URL(base).host, path: ENROLLMENT_PATH, credential: key };
    bytes.set(
      utf8(computeStamp(Buffer.from(devKey.key, 'hex'), bytes, where.stampStart, where.stampEnd, request)),
      where.stampStart,
    );
    const res = await post(ENROLLMENT_PATH, Buffer.from(bytes));
    await res.arrayBuffer();
    if (res.status !== 201) throw new Error(`enrollment answered ${res.status}`);
    if (i >= 50) times.push(performance.now() - t0);
  }
  await verifier.close();
  times.sort((a, b) => a - b);
  const at = (q: number) => (times[Math.floor(q * (times.length - 1))] as number).toFixed(2);
  console.log('');
  console.log(
    `enrollment (challenge + enroll, two round trips on 127.0.0.1, SQLite, ` +
      `${times.length} sequential after 50 warm-up)`,
  );
  console.log('');
  console.log('| p50 ms | p90 ms | p99 ms |');
  console.log('|---:|---:|---:|');
  console.log(`| ${at(0.5)} | ${at(0.9)} | ${at(0.99)} |`);
}
rmSync(dir, { recursive: true, force: true });
