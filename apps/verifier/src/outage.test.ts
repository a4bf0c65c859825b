/**
 * The record store failing for a while, for real: a PostgreSQL and a Redis of this file's own
 * (stopped, locked and restarted here without disturbing other suites), database files made
 * read-only, text no store takes. Each test checks what the client saw — 200, or 503 with
 * `retry-after`, never 500 — that nothing went upstream that could not be recorded, and that
 * every answer left exactly one record.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { PgRedisStorage } from './pg-storage.js';
import { createVerifier, type Verifier } from './server.js';
import { cleanups, hasPostgres, hasRedis, isRoot, ownPostgres, ownRedis, until } from './services.test-util.js';
import { addKey } from './spawned.test-util.js';

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const body = (text: string, model = 'claude-mock') =>
  JSON.stringify({ model, max_tokens: 16, messages: [{ role: 'user', content: text }] });

interface Rig {
  verifier: Verifier;
  url: string;
  key: string;
  admin: string;
  pgUrl: string;
  stopPg(): void;
  startPg(): void;
  /** Bodies the upstream received, in order. */
  forwarded: string[];
}

async function rig(): Promise<Rig> {
  const postgres = await ownPostgres();
  const redis = await ownRedis();
  const secret = randomBytes(32).toString('hex');
  const storage = await PgRedisStorage.open(postgres.url, redis.url, Buffer.from(secret, 'hex'), { timeoutMs: 2_000 });
  const env = devEnvironment();
  const forwarded: string[] = [];
  const verifier = await createVerifier(
    loadConfig({
      ...env,
      MOAT_VERIFIER_SERVER_SECRET: secret,
      MOAT_VERIFIER_SPOOL_FILE: join(mkdtempSync(join(tmpdir(), 'moat-outage-')), 'spool'),
    }),
    { logLevel: 'silent', storage, onUpstreamRequest: (b) => forwarded.push(b) },
  );
  cleanups.push(() => verifier.close());
  const url = await verifier.listen();
  const { key } = await verifier.storage.createApiKey('outage');
  return {
    verifier,
    url,
    key,
    admin: env.MOAT_VERIFIER_ADMIN_TOKEN as string,
    pgUrl: postgres.url,
    stopPg: postgres.stop,
    startPg: postgres.start,
    forwarded,
  };
}

const post = (r: Rig, text: string, model?: string) =>
  fetch(`${r.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': r.key }, body: body(text, model) });

/** Each answer: 200, or 503 with `retry-after` — and its request id. */
async function answer(res: Response): Promise<{ status: number; id: string | null; retryAfter: string | null }> {
  await res.arrayBuffer();
  return { status: res.status, id: res.headers.get('moat-request-id'), retryAfter: res.headers.get('retry-after') };
}

describe.runIf(hasRedis && hasPostgres)('PostgreSQL fails', { timeout: 120_000 }, () => {
  it('stopped while the verifier is idle: 503 with retry-after on every route (never 500), the key id recorded', async () => {
    const r = await rig();
    expect((await answer(await post(r, 'before'))).status).toBe(200);
    r.stopPg();
    // Past the key cache's freshness: the key must be looked up again, and cannot be.
    await new Promise((resolve) => setTimeout(resolve, 5_500));
    const refused = await answer(await post(r, 'while idle'));
    expect(refused).toMatchObject({ status: 503, retryAfter: '1' });
    const auth = { authorization: `Bearer ${r.admin}` };
    for (const path of ['/admin/records', '/admin/summary', '/admin/keys']) {
      const res = await fetch(`${r.url}${path}`, { headers: auth });
      expect([path, res.status, res.headers.get('retry-after')]).toEqual([path, 503, '1']);
    }
    const telemetry = await fetch(`${r.url}/v1/telemetry`, {
      method: 'POST',
      headers: { 'x-api-key': r.key },
      body: JSON.stringify({ v: 1, client: { cv: '1.4.2', ep: 'cli' }, events: [{ type: 'hardening', ts: 1 }] }),
    });
    expect([telemetry.status, telemetry.headers.get('retry-after')]).toEqual([503, '1']);
    r.startPg();
    await until(async () => (await fetch(`${r.url}/readyz`)).status === 200, 'the store back', 30_000);
    const records = await r.verifier.storage.queryRecords({ limit: 10 });
    expect(records.find((x) => x.id === refused.id)).toMatchObject({ status: 503, keyId: expect.stringMatching(/^key_/) });
  });

  it('records table locked: /readyz says so, nothing forwarded is thrown away, every answer recorded once', async () => {
    const r = await rig();
    expect((await answer(await post(r, 'warm'))).status).toBe(200);
    const locker = new pg.Client({ connectionString: r.pgUrl });
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE records IN ACCESS EXCLUSIVE MODE');
    const before = r.forwarded.length;
    const answers = await Promise.all(Array.from({ length: 8 }, async (_, i) => answer(await post(r, `locked ${i}`))));
    const ready = await fetch(`${r.url}/readyz`);
    expect(ready.status).toBe(503);
    const forwardedDuringLock = r.forwarded.length - before;
    await locker.query('COMMIT');
    await locker.end();
    // Whatever went upstream was answered (200); everything else was refused before it went.
    expect(answers.filter((a) => a.status === 200)).toHaveLength(forwardedDuringLock);
    for (const a of answers.filter((x) => x.status !== 200)) expect(a).toMatchObject({ status: 503, retryAfter: '1' });
    await until(async () => (await fetch(`${r.url}/readyz`)).status === 200, 'unlocked and drained', 30_000);
    const records = await r.verifier.storage.queryRecords({ limit: 50 });
    for (const a of answers) expect(records.filter((x) => x.id === a.id).map((x) => x.status)).toEqual([a.status]);
  });

  it('text no store takes (NUL, a split emoji) blocks nobody: stored as storable text, on every route', async () => {
    const r = await rig();
    const model = `claude-mock-${'e'.repeat(186)}😀\u0000`;
    const odd = await answer(await post(r, 'odd', model));
    expect(odd.status).toBe(200);
    expect((await answer(await post(r, 'next'))).status).toBe(200);
    const [, first] = await r.verifier.storage.queryRecords({ limit: 2 });
    expect(first?.id).toBe(odd.id);
    expect(first?.model?.isWellFormed()).toBe(true);
    expect(first?.model).not.toContain('\u0000');
    const auth = { authorization: `Bearer ${r.admin}` };
    expect((await fetch(`${r.url}/admin/records?key=%00`, { headers: auth })).status).toBe(200);
    const created = await fetch(`${r.url}/admin/keys`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ label: 'a\u0000b\ud800' }),
    });
    expect(created.status).toBe(201);
    const revoked = await fetch(`${r.url}/admin/attestation-keys/revoke`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ kid: 'k_nul', reason: 'why\u0000' }),
    });
    expect(revoked.status).toBe(200);
    const telemetry = await fetch(`${r.url}/v1/telemetry`, {
      method: 'POST',
      headers: { 'x-api-key': r.key },
      body: JSON.stringify({ v: 1, client: { cv: '1.4.2', ep: 'cli' }, events: [{ type: 'custom\u0000', ts: 1, note: '\ud83d' }] }),
    });
    expect(telemetry.status).toBe(202);
    // The same text spooled while PostgreSQL is down drains once it is back, and blocks nothing.
    r.stopPg();
    expect((await answer(await post(r, 'down', model))).status).toBe(503);
    r.startPg();
    await until(async () => (await fetch(`${r.url}/readyz`)).status === 200, 'drained', 30_000);
    expect((await answer(await post(r, 'after'))).status).toBe(200);
  });
});

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
// File modes bind only an unprivileged user: the CLI runs as `nobody`, where it may read the checkout.
const nobodyRuns =
  isRoot &&
  spawnSync(process.execPath, ['-e', `require('fs').accessSync(${JSON.stringify(cli)})`], { uid: 65534, gid: 65534 }).status === 0;

describe.runIf(nobodyRuns)('start-up on read-only database files', { timeout: 180_000 }, () => {
  it('refuses to start, naming the setting; starts once the files are writable again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-readonly-'));
    chmodSync(dir, 0o777);
    const database = join(dir, 'v.db');
    const env = { ...process.env, ...devEnvironment({ database }), MOAT_VERIFIER_PORT: '0', MOAT_VERIFIER_LOG_LEVEL: 'silent' };
    addKey(env, 'made writable'); // creates the database as root
    chmodSync(database, 0o444);
    // As an unprivileged user: root writes through file modes.
    const run = () => {
      const child = spawn(process.execPath, [cli], {
        env,
        uid: 65534,
        gid: 65534,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d));
      child.stderr.on('data', (d: Buffer) => (out += d));
      return { child, output: () => out };
    };
    const refused = run();
    const [code] = (await once(refused.child, 'exit')) as [number];
    expect(code).not.toBe(0);
    expect(refused.output()).toMatch(/ERR_VERIFIER_CONFIG: database: expected a writable SQLite database/);
    for (const file of readdirSync(dir)) chmodSync(join(dir, file), 0o666);
    const started = run();
    cleanups.push(() => started.child.kill('SIGKILL'));
    await until(() => /listening on http/.test(started.output()), `listening: ${started.output()}`, 120_000);
  });
});

describe('the spool file', () => {
  it('is the same after every restart in every configuration; required where it cannot be derived', () => {
    const twice = (env: Record<string, string>) => [
      loadConfig({ ...devEnvironment(), ...env }).spoolFile,
      loadConfig({ ...devEnvironment(), ...env }).spoolFile,
    ];
    const [a, b] = twice({ MOAT_VERIFIER_DATABASE: '/var/lib/moat/v.db' });
    expect([a, b]).toEqual(['/var/lib/moat/v.db.spool', '/var/lib/moat/v.db.spool']);
    // Records that outlive the process (PostgreSQL) need a spool that does too.
    const pgEnv = { MOAT_VERIFIER_POSTGRES_URL: 'postgres://x@127.0.0.1/x', MOAT_VERIFIER_REDIS_URL: 'redis://127.0.0.1:1' };
    expect(() => loadConfig({ ...devEnvironment(), ...pgEnv })).toThrow(
      /ERR_VERIFIER_CONFIG: spoolFile: expected a file for the records spooled/,
    );
    expect(twice({ ...pgEnv, MOAT_VERIFIER_SPOOL_FILE: '/var/lib/moat/s' })).toEqual(['/var/lib/moat/s', '/var/lib/moat/s']);
    expect(twice({ ...pgEnv, MOAT_VERIFIER_DATABASE: '/var/lib/moat/v.db' })).toEqual([
      '/var/lib/moat/v.db.spool',
      '/var/lib/moat/v.db.spool',
    ]);
    // SQLite in memory: the spool lives and goes with it.
    expect(twice({})).toEqual([':memory:', ':memory:']);
  });
});
