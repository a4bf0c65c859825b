/**
 * The verifier while its dependencies fail, for real: its own Redis and PostgreSQL (started
 * here, so stopping them disturbs no other test), a full disk under SQLite (a small tmpfs), a
 * slow and a resetting upstream, and SIGTERM under streaming load. Each test checks what the
 * client saw, that the process lived, that no answered request lacks a record and that no
 * replay was served.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAttestedFetch } from '@moat/attest/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { devKeyFile } from '@moat/native/dev-key';
import { readStreamEvents } from '@moat/protocol/messages';
import Database from 'better-sqlite3';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { VerifierConfigError } from './errors.js';
import { startMockUpstream } from './mock-upstream.js';
import { PgRedisStorage } from './pg-storage.js';
import { createVerifier, type Verifier } from './server.js';
import { hasPostgres, hasRedis, isRoot, ownPostgres, ownRedis, cleanups as sharedCleanups, until } from './services.test-util.js';
import { addKey, spawnVerifier } from './spawned.test-util.js';
import { SqliteStorage } from './storage.js';

const cleanups: Array<() => unknown> = sharedCleanups;
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A fresh tmpfs of `size` (`24m`), unmounted at the end; `undefined` where mounting is not allowed. */
function mountTmpfs(prefix: string, size: string): string | undefined {
  const mount = mkdtempSync(join(tmpdir(), prefix));
  if (spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mount]).status !== 0) return undefined;
  cleanups.push(() => spawnSync('umount', ['-l', mount]));
  return mount;
}

const SALT = 'faults-salt';
const attested = createAttestedFetch();
const ask = (text: string, extra: Record<string, unknown> = {}) => {
  const tagged = tagFingerprint(
    { model: 'claude-mock', max_tokens: 32, messages: [{ role: 'user', content: text }], ...extra },
    { salt: SALT, version: '1.4.2', entrypoint: 'cli' },
  );
  return JSON.stringify(tagged.request);
};

async function started(env: Record<string, string>, storage?: PgRedisStorage): Promise<{ verifier: Verifier; url: string; key: string }> {
  const verifier = await createVerifier(loadConfig({ ...devEnvironment({ salt: SALT, attestationKeyFile: devKeyFile }), ...env }), {
    logLevel: 'silent',
    ...(storage === undefined ? {} : { storage }),
  });
  cleanups.push(() => verifier.close());
  const url = await verifier.listen();
  return { verifier, url, key: (await verifier.storage.createApiKey('faults')).key };
}

describe.runIf(hasRedis && process.env.MOAT_TEST_POSTGRES_URL !== undefined)('Redis fails', { timeout: 60_000 }, () => {
  it('down: 503 with retry-after, fast, recorded, no replay served; back without persistence: a captured request stays refused', async () => {
    const redis = await ownRedis();
    const pepperHex = randomBytes(32).toString('hex');
    const storage = await PgRedisStorage.open(process.env.MOAT_TEST_POSTGRES_URL as string, redis.url, Buffer.from(pepperHex, 'hex'), {
      redisPrefix: `faults-${randomBytes(4).toString('hex')}:`,
    });
    const { verifier, url, key } = await started({ MOAT_VERIFIER_SERVER_SECRET: pepperHex }, storage);
    // Genuine requests, captured on the wire by a relay.
    const captured: Buffer[] = [];
    const tap = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      captured.push(Buffer.concat(chunks));
      res.end('{}');
    });
    await new Promise<void>((r) => tap.listen(0, '127.0.0.1', r));
    cleanups.push(() => tap.close());
    const tapAuthority = `127.0.0.1:${(tap.address() as AddressInfo).port}`;
    for (const text of ['captured once', 'captured for the outage'])
      await (
        await attested(`http://${tapAuthority}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key }, body: ask(text) })
      ).arrayBuffer();
    // Replayed exactly as captured: the same bytes, key and Host (which the r1 stamp covers).
    const replay = async (which = 0) => {
      const res = await request(`${url}/v1/messages`, {
        method: 'POST',
        headers: { host: tapAuthority, 'x-api-key': key, 'content-type': 'application/json' },
        body: captured[which] ?? Buffer.alloc(0),
      });
      return new Response(await res.body.arrayBuffer(), { status: res.statusCode });
    };
    const first = await replay();
    expect(first.status, await first.clone().text()).toBe(200);
    expect((await replay()).status).toBe(403);

    // Hung: the command times out and the request is refused, retryably; readiness answers, bounded.
    redis.hang(true);
    const hung = await attested(`${url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key }, body: ask('while redis hangs') });
    expect(hung.status).toBe(503);
    expect((await fetch(`${url}/readyz`)).status).toBe(503);
    redis.hang(false);
    await until(async () => (await fetch(`${url}/readyz`)).status === 200, 'redis answering again');

    await redis.stop();
    const down = await attested(`${url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key }, body: ask('while redis is down') });
    expect(down.status).toBe(503);
    expect(down.headers.get('retry-after')).toBe('1');
    expect(((await down.json()) as { error: { type: string } }).error.type).toBe('overloaded_error');
    // The other capture: a command queued while Redis is down may reach it once it is back, and
    // spend that nonce there; the first capture's nonce is gone with the data.
    expect((await replay(1)).status).toBe(503);
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(503);
    expect(
      ((await ready.json()) as { checks: Array<{ name: string; ok: boolean }> }).checks.find((c) => c.name === 'replay_cache')?.ok,
    ).toBe(false);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const [last] = await verifier.storage.queryRecords({ limit: 1 });
    expect(last).toMatchObject({ status: 503, verdict: 'block' });

    await redis.start(); // empty: every nonce forgotten
    await until(async () => (await fetch(`${url}/readyz`)).status === 200, 'ready again');
    // Refused, retryably: the cache cannot vouch for a stamp made before it lost its data, however
    // long after the loss it comes (here in a later second than the loss, within the window).
    await until(() => Date.now() >= (Math.floor(storage.replayCacheLostAt / 1000) + 1) * 1000, 'the next second');
    const again = await replay();
    // Its answer in the failure message: why it was refused otherwise, when it is.
    expect(again.status, await again.clone().text()).toBe(503);
    expect(((await again.json()) as { error: { message: string } }).error.message).toMatch(/replay cache is unavailable/);
    // A stamp made in a later second than the loss is vouched for again (one in the same second might predate it).
    expect(
      (
        await attested(`${url}/v1/messages`, {
          method: 'POST',
          headers: { 'x-api-key': key },
          body: ask('a fresh request after the restart'),
        })
      ).status,
    ).toBe(200);
  });
});

describe('A replay cache lost while no verifier ran', { timeout: 60_000 }, () => {
  /** A genuine request served once by a verifier, captured on the wire by a relay, and how to send it again. */
  async function servedAndCaptured(url: string, key: string): Promise<(to: string) => Promise<number>> {
    let captured = Buffer.alloc(0);
    const tap = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      captured = Buffer.concat(chunks);
      res.end('{}');
    });
    await new Promise<void>((r) => tap.listen(0, '127.0.0.1', r));
    cleanups.push(() => tap.close());
    const authority = `127.0.0.1:${(tap.address() as AddressInfo).port}`;
    await (
      await attested(`http://${authority}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key }, body: ask('served once') })
    ).arrayBuffer();
    const replay = async (to: string) => {
      const res = await request(`${to}/v1/messages`, {
        method: 'POST',
        headers: { host: authority, 'x-api-key': key, 'content-type': 'application/json' },
        body: captured,
      });
      await res.body.arrayBuffer();
      return res.statusCode;
    };
    expect(await replay(url)).toBe(200);
    expect(await replay(url)).toBe(403);
    return replay;
  }

  /** A verifier on `storage` (or on the settings' own) that knows the API key `id`/`key`. */
  async function verifierWithKey(env: Record<string, string>, id: string, key: string, storage?: PgRedisStorage) {
    const verifier = await createVerifier(loadConfig({ ...devEnvironment({ salt: SALT, attestationKeyFile: devKeyFile }), ...env }), {
      logLevel: 'silent',
      ...(storage === undefined ? {} : { storage }),
    });
    cleanups.push(() => verifier.close());
    await verifier.storage.importApiKey(id, key, 'provisioned');
    return { verifier, url: await verifier.listen() };
  }

  it('SQLite: a verifier started on a new database, its keys provisioned again, refuses a request served before (retryably), then takes fresh ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-lost-db-'));
    const id = 'key_provisioned';
    const key = `sk-moat-${randomBytes(24).toString('base64url')}`;
    const first = await verifierWithKey({ MOAT_VERIFIER_DATABASE: join(dir, 'first.db') }, id, key);
    const replay = await servedAndCaptured(first.url, key);
    await first.verifier.close();
    // The database is gone (a container without a volume); the same keys are provisioned into a
    // new one at once (it begins at the next whole second, and the verifier waits for it).
    rmSync(dir, { recursive: true, force: true });
    const dir2 = mkdtempSync(join(tmpdir(), 'moat-lost-db-'));
    const second = await verifierWithKey({ MOAT_VERIFIER_DATABASE: join(dir2, 'second.db') }, id, key);
    expect(await replay(second.url)).toBe(503);
    const [last] = await second.verifier.storage.queryRecords({ limit: 1 });
    expect(last).toMatchObject({ status: 503, verdict: 'block' });
    const fresh = await attested(`${second.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key }, body: ask('after') });
    expect(fresh.status).toBe(200);
  });

  it.runIf(hasRedis && process.env.MOAT_TEST_POSTGRES_URL !== undefined)(
    'Redis restarted empty while its verifiers were stopped: the next verifier refuses a request served before (retryably), then takes fresh ones',
    async () => {
      const redis = await ownRedis();
      const pepper = randomBytes(32);
      const env = { MOAT_VERIFIER_SERVER_SECRET: pepper.toString('hex') };
      const id = `key_${randomBytes(6).toString('hex')}`;
      const key = `sk-moat-${randomBytes(24).toString('base64url')}`;
      const prefix = `lost-${randomBytes(4).toString('hex')}:`;
      const storageOf = () => PgRedisStorage.open(process.env.MOAT_TEST_POSTGRES_URL as string, redis.url, pepper, { redisPrefix: prefix });
      const first = await verifierWithKey(env, id, key, await storageOf());
      const replay = await servedAndCaptured(first.url, key);
      await first.verifier.close();
      await redis.stop();
      await redis.start(); // empty: the nonce of the request served is forgotten, and no verifier saw it go
      const second = await verifierWithKey(env, id, key, await storageOf());
      expect(await replay(second.url)).toBe(503);
      const fresh = async () =>
        (await attested(`${second.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key }, body: ask('after') })).status;
      // A stamp made in the second the verifier started may predate the loss it cannot date: from the next one on, fresh stamps pass.
      await until(() => Date.now() >= ((second.verifier.storage as PgRedisStorage).replayCacheLostAt / 1000 + 1) * 1000, 'the next second');
      expect(await fresh()).toBe(200);
    },
  );
});

describe.runIf(hasRedis && process.env.MOAT_TEST_POSTGRES_URL !== undefined)('Redis that may evict', { timeout: 60_000 }, () => {
  const open = (url: string) =>
    PgRedisStorage.open(process.env.MOAT_TEST_POSTGRES_URL as string, url, randomBytes(32), {
      redisPrefix: `evict-${randomBytes(4).toString('hex')}:`,
    });

  it('refuses to start on a replay cache that may evict nonces, naming the setting and what it found', async () => {
    for (const policy of ['allkeys-lru', 'volatile-lru', 'volatile-ttl', 'allkeys-random']) {
      const redis = await ownRedis(['--maxmemory', '64mb', '--maxmemory-policy', policy]);
      const refused = await open(redis.url).then(
        (storage) => storage.close().then(() => undefined),
        (error: unknown) => error,
      );
      expect(refused).toBeInstanceOf(VerifierConfigError);
      expect((refused as VerifierConfigError).setting).toBe('redisUrl');
      expect((refused as Error).message).toContain(`maxmemory 67108864 bytes with maxmemory-policy ${policy}`);
      expect((refused as Error).message).toContain('noeviction');
      await redis.stop();
    }
    // No limit (an evicting policy then never runs), or no eviction: it starts.
    for (const args of [
      ['--maxmemory-policy', 'allkeys-lru'],
      ['--maxmemory', '64mb', '--maxmemory-policy', 'noeviction'],
    ]) {
      const redis = await ownRedis(args);
      const storage = await open(redis.url);
      expect((await storage.readiness()).every((c) => c.ok)).toBe(true);
      await storage.close();
      await redis.stop();
    }
  });

  it('is not ready while eviction is turned on at run time, and ready again once it is off', async () => {
    const redis = await ownRedis(['--maxmemory', '64mb', '--maxmemory-policy', 'noeviction']);
    const storage = await open(redis.url);
    cleanups.push(() => storage.close());
    const port = new URL(redis.url).port;
    const policy = (name: string) => spawnSync('redis-cli', ['-p', port, 'config', 'set', 'maxmemory-policy', name]).stdout.toString();
    expect(policy('volatile-lru')).toContain('OK');
    const check = async () => (await storage.readiness()).find((c) => c.name === 'replay_cache');
    expect(await check()).toMatchObject({ ok: false, error: expect.stringContaining('maxmemory-policy volatile-lru') });
    expect(policy('noeviction')).toContain('OK');
    expect(await check()).toMatchObject({ ok: true });
  });
});

describe.runIf(hasRedis && hasPostgres)('PostgreSQL fails', { timeout: 120_000 }, () => {
  it('stopped and started under the verifier: refused and spooled while down, drained after, the process lives', async () => {
    const pg = await ownPostgres();
    const redis = await ownRedis();
    const pepperHex = randomBytes(32).toString('hex');
    const spool = join(mkdtempSync(join(tmpdir(), 'moat-spool-')), 'records.spool');
    const storage = await PgRedisStorage.open(pg.url, redis.url, Buffer.from(pepperHex, 'hex'), { timeoutMs: 1_000 });
    const { verifier, url, key } = await started({ MOAT_VERIFIER_SERVER_SECRET: pepperHex, MOAT_VERIFIER_SPOOL_FILE: spool }, storage);
    const send = (text: string) => attested(`${url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key }, body: ask(text) });
    expect((await send('before')).status).toBe(200);

    pg.stop();
    const answers: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await send(`during ${i}`);
      answers.push(r.status);
      if (r.status === 503) expect(r.headers.get('retry-after')).toBe('1');
      await r.arrayBuffer();
    }
    // Every answer during the outage is a retryable refusal: nothing was served unrecorded.
    expect(answers.every((s) => s === 503)).toBe(true);
    expect((await fetch(`${url}/readyz`)).status).toBe(503);

    pg.start();
    await until(async () => (await fetch(`${url}/readyz`)).status === 200, 'the store back and the spool drained', 30_000);
    expect((await send('after')).status).toBe(200);
    const records = await verifier.storage.queryRecords({ limit: 20 });
    expect(records.filter((r) => r.status === 503)).toHaveLength(4);
    expect(records.filter((r) => r.status === 200)).toHaveLength(2);
  });
});

describe.runIf(isRoot)('SQLite on a full disk', { timeout: 60_000 }, () => {
  it('refuses (503) instead of forwarding, reports not ready, and recovers once there is room again', async (ctx) => {
    const mount = mountTmpfs('moat-tmpfs-', '2m');
    if (mount === undefined) return ctx.skip('no tmpfs mount here (a container without the capability)');
    const spool = join(mkdtempSync(join(tmpdir(), 'moat-spool-')), 'records.spool');
    const { verifier, url, key } = await started({ MOAT_VERIFIER_DATABASE: join(mount, 'verifier.db'), MOAT_VERIFIER_SPOOL_FILE: spool });
    const send = (text: string, attest = true) =>
      (attest ? attested : fetch)(`${url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: ask(text),
      });
    expect((await send('room')).status).toBe(200);
    // Fill the disk.
    const filler = join(mount, 'filler');
    spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k', 'count=64'], { stdio: 'ignore' });
    // Requests go on until the store refuses a write; that one is refused too (503), its record spooled.
    let refused = 0;
    for (let i = 0; i < 200 && refused === 0; i++) {
      const r = await send(`pad ${'x'.repeat(20_000)} ${i}`, i % 2 === 0);
      await r.arrayBuffer();
      if (r.status === 503) refused++;
      else expect(r.status).toBe(200);
    }
    expect(refused).toBe(1);
    // From then on nothing is forwarded, attested or not, until there is room again.
    const results = await Promise.all(Array.from({ length: 6 }, async (_, i) => (await send(`unattested ${i}`, false)).status));
    expect(results.every((s) => s === 503)).toBe(true);
    expect((await fetch(`${url}/readyz`)).status).toBe(503);
    rmSync(filler);
    await until(async () => (await fetch(`${url}/readyz`)).status === 200, 'recovered', 20_000);
    expect((await send('room again')).status).toBe(200);
    const db = new Database(join(mount, 'verifier.db'), { readonly: true });
    try {
      const refused = (db.prepare('SELECT COUNT(*) n FROM records WHERE status = 503').get() as { n: number }).n;
      expect(refused).toBeGreaterThanOrEqual(6);
    } finally {
      db.close();
    }
    await verifier.close();
  });
});

describe.runIf(isRoot)('the default layout (database and spool on one disk) filling up under load', { timeout: 90_000 }, () => {
  it('every answer the upstream gave reaches its client and is recorded; nothing is forwarded once the reserve is in use', async (ctx) => {
    const mount = mountTmpfs('moat-tmpfs-', '24m');
    if (mount === undefined) return ctx.skip('no tmpfs mount here (a container without the capability)');
    const mock = await startMockUpstream();
    cleanups.push(() => mock.close());
    // The upstream answers after 600 ms: the disk fills while answers are on their way.
    let forwarded = 0;
    const slow: Server = createServer((req, res) => {
      forwarded++;
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        setTimeout(async () => {
          const answer = await request(`${mock.url}${req.url}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: Buffer.concat(chunks),
          });
          res.writeHead(answer.statusCode, { 'content-type': String(answer.headers['content-type']) });
          for await (const chunk of answer.body) res.write(chunk);
          res.end();
        }, 600);
      });
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      slow.closeAllConnections();
      slow.close();
    });
    const database = join(mount, 'verifier.db');
    const { verifier, url, key } = await started({
      MOAT_VERIFIER_DATABASE: database,
      MOAT_VERIFIER_SPOOL_RESERVE_BYTES: String(4 * 1024 * 1024),
      MOAT_VERIFIER_UPSTREAM: `http://127.0.0.1:${(slow.address() as AddressInfo).port}`,
      MOAT_VERIFIER_UPSTREAM_KEY: 'k',
    });
    expect(existsSync(`${database}.spool.reserve`)).toBe(true);
    const send = async (i: number) => {
      const stream = i % 2 === 0;
      const res = await fetch(`${url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: ask(`load ${i} ${'y'.repeat(3_000)}`, stream ? { stream: true } : {}),
      });
      const text = await res.text();
      const complete = res.status === 200 && (stream ? text.includes('event: message_stop') : JSON.parse(text).type === 'message');
      return { status: res.status, complete, id: res.headers.get('moat-request-id') };
    };
    // Waves of 24 requests; the disk fills while the second wave waits on the upstream.
    const results: Array<Awaited<ReturnType<typeof send>>> = [];
    for (let wave = 0; wave < 4; wave++) {
      const pending = Array.from({ length: 24 }, (_, i) => send(wave * 100 + i));
      if (wave === 1) {
        await until(() => forwarded >= 40, 'the second wave forwarded');
        spawnSync('sh', ['-c', `dd if=/dev/zero of=${join(mount, 'filler')} bs=64k 2>/dev/null || true`]);
      }
      results.push(...(await Promise.all(pending)));
    }
    // Every request the upstream answered got its whole answer; every other one was refused before it.
    const answered = results.filter((r) => r.status === 200);
    expect(answered.every((r) => r.complete)).toBe(true);
    expect(answered).toHaveLength(forwarded);
    expect(results.filter((r) => r.status !== 200).every((r) => r.status === 503)).toBe(true);
    expect(results.filter((r) => r.status === 503).length).toBeGreaterThan(0);
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.stringify(await ready.json())).toMatch(/spool-reserve|records are spooled/);
    // Room again: the spool drains, the reserve comes back, and no record is left open.
    rmSync(join(mount, 'filler'));
    await until(async () => (await fetch(`${url}/readyz`)).status === 200, 'recovered', 30_000);
    expect(existsSync(`${database}.spool.reserve`)).toBe(true);
    const db = new Database(database, { readonly: true });
    try {
      const rows = db.prepare('SELECT id, status FROM records').all() as Array<{ id: string; status: number | null }>;
      const byId = new Map(rows.map((r) => [r.id, r.status]));
      expect(rows.filter((r) => r.status === null)).toEqual([]);
      for (const r of answered) expect(byId.get(r.id as string)).toBe(200);
    } finally {
      db.close();
    }
    await verifier.close();
  });
});

describe.runIf(isRoot)('SQLite on a read-only file system', { timeout: 60_000 }, () => {
  it('does not start on read-only files, saying why', async (ctx) => {
    const mount = mountTmpfs('moat-ro-', '8m');
    if (mount === undefined) return ctx.skip('no tmpfs mount here (a container without the capability)');
    const database = join(mount, 'verifier.db');
    const env = {
      MOAT_VERIFIER_DATABASE: database,
      MOAT_VERIFIER_SPOOL_FILE: join(mkdtempSync(join(tmpdir(), 'moat-spool-')), 'records.spool'),
    };
    await (await started(env)).verifier.close();
    expect(spawnSync('mount', ['-o', 'remount,ro', mount]).status).toBe(0);
    await expect(started(env)).rejects.toThrow(/ERR_VERIFIER_CONFIG: database: expected a writable SQLite database/);
    expect(spawnSync('mount', ['-o', 'remount,rw', mount]).status).toBe(0);

    expect((await started(env)).url).toMatch(/^http:/);
  });

  it('shuts down without crashing when the store refuses its last writes', async () => {
    const storage = new SqliteStorage(':memory:', randomBytes(32));
    const broken = new Proxy(storage, {
      get(target, name, receiver) {
        if (name === 'saveSnapshot' || name === 'close') return () => Promise.reject(new Error('attempt to write a readonly database'));
        const value = Reflect.get(target, name, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const verifier = await createVerifier(loadConfig(devEnvironment()), { logLevel: 'silent', storage: broken });
    await verifier.listen();
    await expect(verifier.close()).resolves.toBeUndefined();
    storage.close();
  });
});

describe('the upstream fails', { timeout: 60_000 }, () => {
  it('a silent upstream times out fast; a stream cut short is an SSE error and a 502 record', async () => {
    let mode: 'silent' | 'reset' = 'silent';
    const upstream: Server = createServer((req, res) => {
      req.resume();
      if (mode === 'silent') return; // never answers
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(MESSAGE_START);
      setTimeout(() => res.socket?.destroy(), 50);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      upstream.closeAllConnections();
      upstream.close();
    });
    const { verifier, url, key } = await started({
      MOAT_VERIFIER_UPSTREAM: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      MOAT_VERIFIER_UPSTREAM_KEY: 'k',
      MOAT_VERIFIER_UPSTREAM_HEADERS_TIMEOUT_MS: '300',
    });
    const post = (stream: boolean) =>
      fetch(`${url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: ask('hello', { stream }),
      });
    const silent = await post(false);
    expect(silent.status).toBe(504);
    expect(((await silent.json()) as { error: { type: string; message: string } }).error).toMatchObject({
      type: 'api_error',
      message: expect.stringMatching(/timed out/),
    });
    expect((await verifier.storage.queryRecords({ limit: 1 }))[0]?.status).toBe(504);

    mode = 'reset';
    const cut = await post(true);
    expect(cut.status).toBe(200);
    const events = [];
    for await (const ev of readStreamEvents(cut.body as ReadableStream<Uint8Array>)) events.push(ev.event);
    expect(events[0]).toBe('message_start');
    expect(events.at(-1)).toBe('error');
    expect(events).not.toContain('message_stop');
    await until(async () => (await verifier.storage.queryRecords({ limit: 1 }))[0]?.status === 502, 'the 502 record');
  });
});

/**
 * An upstream that hangs while `hang` is set — a JSON call never gets its headers, a stream
 * gets its first event and then nothing — and otherwise answers as the mock model does.
 */
async function hangingUpstream(): Promise<{ url: string; hung: ServerResponse[]; set(hang: boolean): void }> {
  const mock = await startMockUpstream();
  cleanups.push(() => mock.close());
  let hang = true;
  const hung: ServerResponse[] = [];
  const upstream: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      if (hang) {
        hung.push(res);
        if (Buffer.concat(chunks).toString().includes('"stream":true')) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(MESSAGE_START);
        }
        return;
      }
      const answer = await request(`${mock.url}${req.url}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: Buffer.concat(chunks),
      });
      res.writeHead(answer.statusCode, { 'content-type': String(answer.headers['content-type']) });
      res.end(Buffer.from(await answer.body.arrayBuffer()));
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    upstream.closeAllConnections();
    upstream.close();
  });
  return {
    url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
    hung,
    set: (value) => {
      hang = value;
    },
  };
}

/** The first event of a Messages stream, as an upstream sends it. */
const MESSAGE_START =
  'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"claude-mock","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}\n\n';

/** A verifier (with `env`) in front of {@link hangingUpstream}, and a Messages request to it, JSON or streamed. */
async function startedOnHangingUpstream(env: Record<string, string>) {
  const { url: upstreamUrl, hung, set } = await hangingUpstream();
  const adminToken = randomBytes(16).toString('hex');
  const { verifier, url, key } = await started({
    MOAT_VERIFIER_ADMIN_TOKEN: adminToken,
    MOAT_VERIFIER_UPSTREAM: upstreamUrl,
    MOAT_VERIFIER_UPSTREAM_KEY: 'k',
    ...env,
  });
  const post = (text: string, stream = false) =>
    fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: ask(text, stream ? { stream } : {}),
    });
  return { verifier, url, adminToken, hung, set, post };
}

describe('upstream calls that hang', { timeout: 60_000 }, () => {
  it('hold at most upstreamConnections: later requests wait a bounded time for one, get 503, /readyz says why; a cut one comes back', async () => {
    const { verifier, url, adminToken, hung, set, post } = await startedOnHangingUpstream({
      MOAT_VERIFIER_UPSTREAM_CONNECTIONS: '2',
      MOAT_VERIFIER_UPSTREAM_QUEUE_TIMEOUT_MS: '400',
    });
    const held = [post('held 1'), post('held 2')];
    await until(() => hung.length === 2, 'both connections held');
    // A third waits for a connection; meanwhile the replica says it cannot take more.
    const waiting = post('waits');
    await until(async () => {
      const ready = await fetch(`${url}/readyz`);
      return ready.status === 503 && JSON.stringify(await ready.json()).includes('all 2 upstream connections busy, 1 requests waiting');
    }, 'readyz naming the busy connections');
    const refused = await waiting;
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(((await refused.json()) as { error: { type: string; message: string } }).error).toMatchObject({
      type: 'overloaded_error',
      message: expect.stringMatching(/all 2 upstream connections busy/),
    });
    // The upstream comes back and drops the calls it held: their connections are free again.
    set(false);
    for (const res of hung) res.socket?.destroy();
    expect((await Promise.all(held)).map((r) => r.status)).toEqual([502, 502]);
    const answers = await Promise.all([post('after 1'), post('after 2'), post('after 3')]);
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200]);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    // Every answer is counted by its status, whatever the policy said.
    const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } })).text();
    expect(metrics).toMatch(/moat_responses_total\{status="503",kept="stored"\} 1\n/);
    expect(metrics).toMatch(/moat_responses_total\{status="502",kept="stored"\} 2\n/);
    expect(metrics).toMatch(/moat_responses_total\{status="200",kept="stored"\} 3\n/);
    // Every call gave its connection back: the ones cut, the ones answered, the one that never got one.
    expect(metrics).toMatch(/moat_verifier_upstream_calls_active 0\n/);
    expect(metrics).toMatch(/moat_verifier_upstream_calls_waiting 0\n/);
    await verifier.close();
  });
});

describe('upstream calls that stall while others wait', { timeout: 60_000 }, () => {
  it('are ended (504, an SSE error mid-stream) so waiting requests get their connections, and traffic flows again as soon as the upstream does', async () => {
    const { verifier, url, adminToken, hung, set, post } = await startedOnHangingUpstream({
      MOAT_VERIFIER_UPSTREAM_CONNECTIONS: '1',
      MOAT_VERIFIER_UPSTREAM_QUEUE_TIMEOUT_MS: '5000',
      MOAT_VERIFIER_UPSTREAM_STALL_MS: '300',
    });
    // One connection: a JSON call holds it and never gets its headers; a stream waits for it.
    const json = post('stalls before its headers');
    await until(() => hung.length === 1, 'the JSON call upstream');
    const sse = post('stalls mid-stream', true);
    // Quiet for the stall time with a request waiting: the JSON call is ended, the stream gets its connection, then goes quiet too.
    const ended = await json;
    expect(ended.status).toBe(504);
    expect(((await ended.json()) as { error: { message: string } }).error.message).toMatch(
      /upstream stalled: nothing for \d+ ms while requests waited/,
    );
    await until(() => hung.length === 2, 'the stream upstream');
    // The upstream is back: the next request takes the quiet stream's connection, and its client sees the stream end in an error.
    set(false);
    expect((await post('after the upstream came back')).status).toBe(200);
    const cut = await (await sse).text();
    expect(cut).toContain('event: message_start');
    expect(cut).toMatch(/event: error/);
    expect(cut).not.toContain('message_stop');
    expect((await post('and another')).status).toBe(200);
    const records = await verifier.storage.queryRecords({ limit: 4 });
    expect(records.map((r) => r.status).sort()).toEqual([200, 200, 502, 504]);
    expect(records.find((r) => r.status === 502)?.reasons.join()).toMatch(/upstream stalled/);
    const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } })).text();
    expect(metrics).toMatch(/moat_verifier_upstream_calls_active 0\n/);
    await verifier.close();
  });
});

describe('a shutdown whose grace period runs out', { timeout: 60_000 }, () => {
  it('tells the clients it cuts (a 503, an SSE error mid-stream) and records them as its own cut (503 shutdown_cut), before the store closes', async () => {
    const held: ServerResponse[] = [];
    const upstream: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        held.push(res); // never ends
        // A JSON answer that never starts; a stream that starts and never ends.
        if (!Buffer.concat(chunks).toString().includes('"stream":true')) return;
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(MESSAGE_START);
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      upstream.closeAllConnections();
      upstream.close();
    });
    const database = join(mkdtempSync(join(tmpdir(), 'moat-cut-')), 'verifier.db');
    const { verifier, url, key } = await started({
      MOAT_VERIFIER_DATABASE: database,
      MOAT_VERIFIER_UPSTREAM: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      MOAT_VERIFIER_UPSTREAM_KEY: 'k',
      MOAT_VERIFIER_SHUTDOWN_GRACE_MS: '200',
    });
    const streams = await Promise.all(
      [1, 2].map((i) =>
        fetch(`${url}/v1/messages`, {
          method: 'POST',
          headers: { 'x-api-key': key, 'content-type': 'application/json' },
          body: ask(`cut ${i}`, { stream: true }),
        }),
      ),
    );
    const json = fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: ask('cut before its headers'),
    });
    await until(() => held.length === 3, 'all three upstream');
    const bodies = streams.map((r) => r.text().catch(() => 'cut'));
    await verifier.close();
    // The streams end in an error event; the JSON request gets a 503 it can retry.
    for (const body of await Promise.all(bodies)) {
      expect(body).toContain('event: message_start');
      expect(body).toMatch(
        /event: error\ndata: \{"type":"error","error":\{"type":"overloaded_error","message":"the verifier shut down before the answer ended"\}\}/,
      );
    }
    const refused = await json;
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    const ids = [...streams.map((r) => r.headers.get('moat-request-id')), refused.headers.get('moat-request-id')];
    const db = new Database(database, { readonly: true });
    try {
      const rows = db.prepare('SELECT id, status, reasons FROM records WHERE status IS NOT 200').all() as Array<{
        id: string;
        status: number;
        reasons: string;
      }>;
      expect(rows.map((r) => r.id).sort()).toEqual([...ids].sort());
      for (const row of rows) {
        expect(row.status).toBe(503);
        expect(row.reasons).toContain('shutdown_cut');
        expect(row.reasons).not.toContain('client_disconnected');
      }
    } finally {
      db.close();
    }
  });
});

describe('SIGTERM under streaming load', { timeout: 60_000 }, () => {
  it('finishes every stream in flight, closes idle keep-alive connections, exits within the grace period, and records every answer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-sigterm-'));
    const env = {
      ...process.env,
      ...devEnvironment({ database: join(dir, 'v.db'), salt: SALT }),
      MOAT_VERIFIER_LOG_LEVEL: 'silent',
      MOAT_VERIFIER_SHUTDOWN_GRACE_MS: '8000',
    };
    const { key } = addKey(env, 'sigterm');
    const { child, url } = await spawnVerifier(env);
    cleanups.push(() => child.kill('SIGKILL'));
    // An idle keep-alive connection, open before the signal.
    const idle = await fetch(`${url}/healthz`);
    expect(idle.status).toBe(200);
    // Eight streams in flight: each has its answer's headers before the signal.
    const responses = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        fetch(`${url}/v1/messages`, {
          method: 'POST',
          headers: { 'x-api-key': key, 'content-type': 'application/json' },
          body: JSON.stringify({
            model: 'claude-mock-slow',
            max_tokens: 16,
            stream: true,
            messages: [{ role: 'user', content: `stream ${i}` }],
          }),
        }),
      ),
    );
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const results = await Promise.all(
      responses.map(async (res) => ({
        id: res.headers.get('moat-request-id'),
        complete: (await res.text()).includes('event: message_stop'),
      })),
    );
    const [code] = (await exited) as [number];
    expect(code).toBe(0);
    expect(results.every((r) => r.complete)).toBe(true);
    // Stopped accepting: a new connection is refused.
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    const db = new Database(join(dir, 'v.db'), { readonly: true });
    try {
      const ids = new Set((db.prepare('SELECT id FROM records').all() as Array<{ id: string }>).map((r) => r.id));
      expect(results.filter((r) => r.id !== null && !ids.has(r.id))).toEqual([]);
    } finally {
      db.close();
    }
    writeFileSync(join(dir, 'done'), '');
  });
});
