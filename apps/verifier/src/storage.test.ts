/**
 * One storage suite for every backend: SQLite always; PostgreSQL + Redis when
 * MOAT_TEST_POSTGRES_URL and MOAT_TEST_REDIS_URL point at running servers (.ci/run starts
 * Debian's postgresql and redis-server and sets them). Then two verifier replicas on the
 * same PostgreSQL + Redis catch a request replayed from one to the other.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAttestedFetch } from '@moat/attest/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { devKeyFile } from '@moat/native/dev-key';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { PgRedisStorage, ReplayCacheResetError } from './pg-storage.js';
import { createVerifier } from './server.js';
import { cleanups, hasRedis, ownRedis } from './services.test-util.js';
import { initialRecordedSignals } from './signals.js';
import { type RequestRecord, SqliteStorage, type Storage } from './storage.js';

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const PG = process.env.MOAT_TEST_POSTGRES_URL;
const REDIS = process.env.MOAT_TEST_REDIS_URL;
const pepper = randomBytes(32);
const prefix = `moat-test-${randomBytes(4).toString('hex')}:`;

/** Why the PostgreSQL + Redis suites do not run, when they do not (they are then reported skipped). */
const SKIP_PG =
  PG !== undefined && REDIS !== undefined
    ? undefined
    : 'MOAT_TEST_POSTGRES_URL / MOAT_TEST_REDIS_URL not set (pnpm test starts the services where it can: scripts/services.sh)';

const backends: Array<[string, () => Promise<Storage>]> = [
  ['sqlite', async () => new SqliteStorage(':memory:', pepper)],
  [
    SKIP_PG === undefined ? 'postgres+redis' : `postgres+redis (skipped: ${SKIP_PG})`,
    async () => {
      await runningSinceBefore(prefix);
      const s = await PgRedisStorage.open(PG as string, REDIS as string, pepper, { redisPrefix: prefix });
      await emptyPgRedis();
      return s;
    },
  ],
];

/**
 * An epoch marker that knows of no loss (`<id>:0`), as a replay cache that has run since before
 * any stamp these tests make has: found empty at start, a cache counts as lost then, which
 * tests of nonce lifetimes do not test.
 */
async function runningSinceBefore(keyPrefix: string): Promise<void> {
  const redis = new Redis(REDIS as string);
  await redis.set(`${keyPrefix}epoch`, 'test:0', 'NX');
  redis.disconnect();
}

/** Empties every table and this run's Redis keys (the epoch marker kept), so each test starts clean. */
async function emptyPgRedis(keyPrefix = prefix): Promise<void> {
  const pool = new pg.Pool({ connectionString: PG });
  const redis = new Redis(REDIS as string);
  try {
    await pool.query('TRUNCATE api_keys, records, telemetry, snapshots, upstream_signatures, revoked_kids');
    // The epoch marker and the commit sequence kept: the replay cache did not lose its data, the test emptied it.
    const keys = (await redis.keys(`${keyPrefix}*`)).filter((k) => k !== `${keyPrefix}epoch` && k !== `${keyPrefix}sequence`);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    await pool.end();
    redis.disconnect();
  }
}

const record = (id: string, ts: number, over: Partial<RequestRecord> = {}): RequestRecord => ({
  id,
  ts,
  keyId: 'key_a',
  model: 'm',
  ...initialRecordedSignals(),
  attestation: 'valid',
  fingerprint: 'match',
  gateway: [],
  relay: [],
  thinking: 'none',
  decoy: 'none',
  verdict: 'allow',
  reasons: [],
  status: null,
  latencyMs: null,
  decoys: 0,
  batch: null,
  ...over,
});

describe.each(backends)('%s storage', { timeout: 30_000 }, (name, open) => {
  if (name.includes('skipped')) {
    it.skip(`needs PostgreSQL and Redis: ${SKIP_PG}`, () => {});
    return;
  }
  it('stores API keys as hashes and finds them again', async () => {
    const s = await open();
    try {
      const { id, key } = await s.createApiKey('alice');
      expect(await s.lookupApiKey(key)).toBe(id);
      expect(await s.lookupApiKey(`${key}x`)).toBeUndefined();
      await s.importApiKey('key_fixed', 'sk-fixed-key', 'bob');
      expect(await s.lookupApiKey('sk-fixed-key')).toBe('key_fixed');
      expect((await s.listApiKeys()).map((k) => k.label).sort()).toEqual(['alice', 'bob']);
    } finally {
      await s.close();
    }
  });

  it('keeps the owner of each file, lists a key’s own, forgets a deleted one', async () => {
    const s = await open();
    try {
      await s.saveFile({ id: 'file_a1', keyId: 'key_a', recordId: 'req_1', created: 1 });
      await s.saveFile({ id: 'file_b1', keyId: 'key_b', recordId: 'req_2', created: 2 });
      await s.saveFile({ id: 'file_a2', keyId: 'key_a', recordId: 'req_3', created: 3 });
      const tracedTo = [{ apiKeyId: 'key_z', confidence: 0.95 }];
      await s.saveFile({ id: 'file_t1', keyId: 'key_b', recordId: 'req_5', created: 5, tracedTo });
      expect(await s.fileOf('file_t1')).toEqual({ id: 'file_t1', keyId: 'key_b', recordId: 'req_5', created: 5, tracedTo });
      // Saved twice (a retried write): the first owner stays.
      await s.saveFile({ id: 'file_a1', keyId: 'key_b', recordId: 'req_4', created: 4 });
      expect(await s.fileOf('file_a1')).toEqual({ id: 'file_a1', keyId: 'key_a', recordId: 'req_1', created: 1 });
      expect(await s.fileOf('file_none')).toBeUndefined();
      expect(await s.fileIds('key_a')).toEqual(['file_a1', 'file_a2']);
      await s.deleteFile('file_a1');
      expect(await s.fileOf('file_a1')).toBeUndefined();
      expect(await s.fileIds('key_a')).toEqual(['file_a2']);
    } finally {
      await s.close();
    }
  });

  it('keeps records, their outcome and the summary', async () => {
    const s = await open();
    try {
      await s.insertRecord(record('r1', 1000));
      await s.insertRecord(
        record('r2', 2000, { verdict: 'block', attestation: 'replayed', gateway: ['litellm'], reasons: ['block:attestation=replayed'] }),
      );
      await s.finishRecord('r2', 403, 1.6);
      const recent = await s.queryRecords({ limit: 10 });
      expect(recent.map((r) => r.id)).toEqual(['r2', 'r1']);
      expect(recent[0]).toMatchObject({ status: 403, latencyMs: 2, gateway: ['litellm'], reasons: ['block:attestation=replayed'] });
      // r1 was reserved and never finished (a process killed in flight): counted apart, not as allowed.
      expect(await s.summary()).toEqual({ verdicts: { block: 1 }, attestation: { replayed: 1 }, total: 1, unfinished: 1 });
      await s.finishRecord('r1', 200, 1);
      expect(await s.summary()).toEqual({
        verdicts: { allow: 1, block: 1 },
        attestation: { valid: 1, replayed: 1 },
        total: 2,
        unfinished: 0,
      });
      expect(await s.queryRecords({ limit: 10, keyId: 'key_none' })).toEqual([]);
    } finally {
      await s.close();
    }
  });

  it('group commit: records and nonces of one turn share a commit; every record lands once, a refused one fails alone', async () => {
    const s = await open();
    const stats = () => (s as unknown as { commitStats: unknown }).commitStats;
    const commits = () => {
      const c = stats() as { commits: number } | { records: { commits: number }; nonces: { commits: number } };
      return 'records' in c ? c.records.commits + c.nonces.commits : c.commits;
    };
    try {
      const before = commits();
      const now = Math.floor(Date.now() / 1000);
      const n = 40;
      const written = await Promise.all([
        ...Array.from({ length: n }, (_, i) => s.insertRecord(record(`g${i}`, 1000 + i))),
        ...Array.from({ length: n }, (_, i) => s.add('k1', `nonce-${i}`, now + 300)),
        s.add('k1', 'nonce-0', now + 300),
      ]);
      // One commit for the records and (PostgreSQL + Redis) one for the nonces, not one per write.
      expect(commits() - before).toBeLessThanOrEqual(2);
      expect(written.slice(n, 2 * n)).toEqual(Array(n).fill(true));
      expect(written.at(-1)).toBe(false); // the same nonce twice in one commit: the second is a replay
      // A reserved record finished in the same turn as others are reserved: one row each, the last write kept.
      await Promise.all([s.insertRecord(record('g0', 1000, { status: 200 }), { upsert: true }), s.insertRecord(record('h1', 5001))]);
      await Promise.all([s.insertRecord(record('h0', 5000)), s.insertRecord(record('h0', 5000, { status: 201 }), { upsert: true })]);
      const rows = await s.queryRecords({ limit: 100 });
      expect(rows.map((r) => r.id).sort()).toEqual([...Array.from({ length: n }, (_, i) => `g${i}`), 'h0', 'h1'].sort());
      expect(rows.find((r) => r.id === 'g0')?.status).toBe(200);
      expect(rows.find((r) => r.id === 'h0')?.status).toBe(201);
      // A record written twice by mistake (no upsert) is refused alone; the others of its commit land.
      const outcomes = await Promise.allSettled([s.insertRecord(record('g1', 1)), s.insertRecord(record('i0', 6000))]);
      expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'fulfilled']);
      expect((await s.queryRecords({ limit: 100 })).filter((r) => r.id === 'g1' || r.id === 'i0')).toHaveLength(2);
    } finally {
      await s.close();
    }
  });

  it('finishing a record leaves exactly the finished record, whatever the reserved row held or whether there was one', async () => {
    const s = await open();
    const fields = fc.record({
      ts: fc.constantFrom(1000, 1001),
      keyId: fc.constantFrom(null, 'key_a', 'key_b'),
      installId: fc.constantFrom(null, `i${'0'.repeat(24)}`),
      batch: fc.constantFrom(null, 'rec_batch'),
      status: fc.constantFrom(null, 200, 503),
      verdict: fc.constantFrom('allow', 'block'),
      reasons: fc.array(fc.constantFrom('a', 'b:c'), { maxLength: 2 }),
      attestation: fc.constantFrom('valid', 'missing'),
    });
    let n = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.option(fields, { nil: undefined }), fields, fc.boolean(), async (reserved, finished, twice) => {
          const id = `f${n++}`;
          if (reserved !== undefined) await s.insertRecord(record(id, reserved.ts, { ...reserved, status: null }));
          const last = record(id, finished.ts, finished as Partial<RequestRecord>);
          await s.insertRecord(last, { upsert: true });
          if (twice) await s.insertRecord(last, { upsert: true }); // a spool drained twice
          const rows = (await s.queryRecords({ limit: 1000 })).filter((r) => r.id === id);
          expect(rows).toEqual([last]);
        }),
        { numRuns: 60 },
      );
    } finally {
      await s.close();
    }
  });

  it('group commit: a write queued when the store closes is committed before it closes', async () => {
    const s = await open();
    const now = Math.floor(Date.now() / 1000);
    const writes = Promise.all([s.insertRecord(record('last', 1)), s.add('k1', 'last-nonce', now + 300)]);
    await s.close();
    await expect(writes).resolves.toEqual([undefined, true]);
  });

  it('remembers nonces until they expire', async () => {
    const s = await open();
    try {
      const now = Math.floor(Date.now() / 1000);
      expect(await s.add('k1', 'n1', now + 300)).toBe(true);
      expect(await s.add('k1', 'n1', now + 300)).toBe(false);
      expect(await s.add('k2', 'n1', now + 300)).toBe(true);
      // A nonce past its last acceptable second (and the skew margin) is forgotten.
      expect(await s.add('k1', 'n2', now - 3)).toBe(true);
      await new Promise((r) => setTimeout(r, 100));
      await s.sweepNonces(Math.floor(Date.now() / 1000));
      expect(await s.add('k1', 'n2', now + 300)).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('keeps a nonce at the window edge until the last millisecond its stamp is accepted', async () => {
    const s = await open();
    try {
      // A stamp with ts = now + 1 - window: accepted while the whole seconds since it are <= window,
      // that is until the end of the next second. Its nonce must outlive that instant.
      // (One second ahead, so a store that counts whole seconds from the time of the write falls short.)
      const expiresAt = Math.floor(Date.now() / 1000) + 1;
      expect(await s.add('edge', 'n1', expiresAt)).toBe(true);
      const lastAccepted = (expiresAt + 1) * 1000 - 1;
      await new Promise((r) => setTimeout(r, Math.max(0, lastAccepted - Date.now() - 15)));
      expect(await s.add('edge', 'n1', expiresAt)).toBe(false);
    } finally {
      await s.close();
    }
  });

  it('counts requests that brought back a decoy, per key', async () => {
    const s = await open();
    try {
      await s.insertRecord(record('d1', 1, { decoy: 'hit', keyId: 'key_a' }));
      await s.insertRecord(record('d2', 2, { decoy: 'hit', keyId: 'key_a' }));
      await s.insertRecord(record('d3', 3, { decoy: 'hit', keyId: 'key_b' }));
      await s.insertRecord(record('d4', 4, { keyId: 'key_b' }));
      expect(await s.decoyHits()).toEqual({ key_a: 2, key_b: 1 });
      expect((await s.queryRecords({ limit: 1 }))[0]?.decoy).toBe('none');
    } finally {
      await s.close();
    }
  });

  it('filters records by time range, key, verdict and signals, and sums activity per key', async () => {
    const s = await open();
    try {
      await s.insertRecord(record('q1', 1_000, { keyId: 'key_a', status: 200 }));
      await s.insertRecord(
        record('q2', 2_000, { keyId: 'key_a', verdict: 'flag', fingerprint: 'mismatch', gateway: ['litellm'], status: 200 }),
      );
      await s.insertRecord(
        record('q3', 3_000, {
          keyId: 'key_b',
          verdict: 'block',
          attestation: 'invalid',
          decoy: 'hit',
          gateway: ['portkey', 'litellm'],
          status: 403,
        }),
      );
      await s.insertRecord(record('q4', 4_000, { keyId: null, verdict: 'block', attestation: 'missing', status: 403 }));
      const ids = async (q: Parameters<Storage['queryRecords']>[0]) => (await s.queryRecords(q)).map((r) => r.id);
      expect(await ids({})).toEqual(['q4', 'q3', 'q2', 'q1']);
      expect(await ids({ since: 2_000, until: 4_000 })).toEqual(['q3', 'q2']);
      expect(await ids({ keyId: 'key_a' })).toEqual(['q2', 'q1']);
      expect(await ids({ verdict: 'block' })).toEqual(['q4', 'q3']);
      expect(await ids({ attestation: 'invalid', decoy: 'hit' })).toEqual(['q3']);
      expect(await ids({ fingerprint: 'mismatch' })).toEqual(['q2']);
      expect(await ids({ gateway: 'litellm' })).toEqual(['q3', 'q2']);
      expect(await ids({ gateway: 'lite' })).toEqual([]);
      expect(await ids({ limit: 1 })).toEqual(['q4']);
      expect(await s.summary({ since: 2_000 })).toEqual({
        verdicts: { flag: 1, block: 2 },
        attestation: { valid: 1, invalid: 1, missing: 1 },
        total: 3,
        unfinished: 0,
      });
      const activity = (await s.keyActivity()).sort((a, b) => (a.keyId < b.keyId ? -1 : 1));
      expect(activity).toEqual([
        {
          keyId: 'key_a',
          requests: 2,
          allow: 1,
          flag: 1,
          block: 0,
          match: 1,
          mismatch: 1,
          decoyHits: 0,
          gateways: ['litellm'],
          last: 2_000,
        },
        {
          keyId: 'key_b',
          requests: 1,
          allow: 0,
          flag: 0,
          block: 1,
          match: 1,
          mismatch: 0,
          decoyHits: 1,
          gateways: ['litellm', 'portkey'],
          last: 3_000,
        },
      ]);
      expect((await s.keyActivity({ since: 2_500 })).map((a) => a.keyId)).toEqual(['key_b']);
      expect(await s.keyActivity({ since: 10_000 })).toEqual([]);
    } finally {
      await s.close();
    }
  });

  it('concurrent writes: one nonce wins once, a failing write fails alone, every record lands', async () => {
    const s = await open();
    try {
      const now = Math.floor(Date.now() / 1000);
      const claims = await Promise.all(Array.from({ length: 20 }, () => s.add('k9', 'same-nonce', now + 300)));
      expect(claims.filter(Boolean)).toHaveLength(1);
      const writes = await Promise.allSettled([
        s.insertRecord(record('c1', 5000)),
        s.insertRecord(record('c1', 5001)), // the same id again: refused
        s.insertRecord(record('c2', 5002)),
        s.add('k9', 'other-nonce', now + 300),
      ]);
      expect(writes.map((w) => w.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
      expect((await s.queryRecords({ limit: 10 })).map((r) => r.id).filter((id) => id.startsWith('c'))).toEqual(['c2', 'c1']);
    } finally {
      await s.close();
    }
  });

  it('keeps telemetry, snapshots and upstream signatures', async () => {
    const s = await open();
    try {
      await s.insertTelemetry('key_a', [
        { type: 'gateway_detected', ts: 1 },
        { type: 'harden_status', ts: 2 },
        { type: 'gateway_detected', ts: 3 },
      ]);
      expect(await s.telemetryCounts()).toEqual({ gateway_detected: 2, harden_status: 1 });
      await s.saveSnapshot('fingerprint', { format: 'x', keys: { a: 1 } });
      expect(await s.loadSnapshot('fingerprint')).toEqual({ format: 'x', keys: { a: 1 } });
      expect(await s.loadSnapshot('none')).toBeUndefined();
      await s.rememberUpstreamSignature('ms1.ours', 'theirs');
      expect(await s.upstreamSignature('ms1.ours')).toBe('theirs');
      await s.ping();
    } finally {
      await s.close();
    }
  });
});

describe.runIf(PG !== undefined && REDIS !== undefined)('two replicas on one PostgreSQL + Redis', () => {
  it('a request replayed to the other replica is caught', { timeout: 60_000 }, async () => {
    // The public address in front of both replicas (a load balancer): it captures the stamped
    // bytes as a proxy on the wire would, and both replicas check r1 stamps against its authority.
    let raw = Buffer.alloc(0);
    const tap = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      raw = Buffer.concat(chunks);
      res.end('{}');
    });
    tap.listen(0, '127.0.0.1');
    await once(tap, 'listening');
    const publicUrl = `http://127.0.0.1:${(tap.address() as AddressInfo).port}`;
    const env: Record<string, string> = {
      ...devEnvironment({ salt: 'replica-salt', attestationKeyFile: devKeyFile }),
      MOAT_VERIFIER_PUBLIC_AUTHORITIES: new URL(publicUrl).host,
    };
    const secret = env.MOAT_VERIFIER_SERVER_SECRET as string;
    const cfg = loadConfig(env);
    const storageA = await PgRedisStorage.open(PG as string, REDIS as string, Buffer.from(secret, 'hex'), { redisPrefix: `${prefix}r:` });
    await emptyPgRedis(`${prefix}r:`);
    const storageB = await PgRedisStorage.open(PG as string, REDIS as string, Buffer.from(secret, 'hex'), { redisPrefix: `${prefix}r:` });
    const a = await createVerifier(cfg, { logLevel: 'silent', storage: storageA });
    const b = await createVerifier(cfg, { logLevel: 'silent', storage: storageB });
    const [urlA, urlB] = [await a.listen(), await b.listen()];
    try {
      const { key } = await storageA.createApiKey('replicas');
      const tagged = tagFingerprint(
        { model: 'claude-mock', max_tokens: 64, messages: [{ role: 'user', content: 'One request, two replicas' }] },
        { salt: 'replica-salt', version: '1.4.2', entrypoint: 'cli' },
      );
      await (
        await createAttestedFetch()(`${publicUrl}/v1/messages`, {
          method: 'POST',
          headers: { 'x-api-key': key },
          body: JSON.stringify(tagged.request),
        })
      ).arrayBuffer();
      const send = (url: string) =>
        fetch(`${url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key, 'content-type': 'application/json' }, body: raw });
      expect((await send(urlA)).status).toBe(200);
      const replay = await send(urlB);
      expect(replay.status).toBe(403);
      expect(((await replay.json()) as { error: { message: string } }).error.message).toMatch(/attestation=replayed/);
      const records = await storageA.queryRecords({ limit: 2 });
      expect(records.map((r) => r.attestation)).toEqual(['replayed', 'valid']);
    } finally {
      tap.close();
      await a.close();
      await b.close();
    }
  });
});

describe.runIf(PG !== undefined && REDIS !== undefined)('the Redis replay cache across replicas', () => {
  it('a nonce added at the window edge on one replica is refused by the other until its last accepted millisecond', {
    timeout: 30_000,
  }, async () => {
    const p = `${prefix}edge:`;
    await runningSinceBefore(p);
    const a = await PgRedisStorage.open(PG as string, REDIS as string, pepper, { redisPrefix: p });
    const b = await PgRedisStorage.open(PG as string, REDIS as string, pepper, { redisPrefix: p });
    try {
      for (let round = 0; round < 3; round++) {
        const expiresAt = Math.floor(Date.now() / 1000) + 1;
        expect(await a.add('edge', `r${round}`, expiresAt)).toBe(true);
        await new Promise((r) => setTimeout(r, Math.max(0, (expiresAt + 1) * 1000 - 15 - Date.now())));
        expect(await b.add('edge', `r${round}`, expiresAt)).toBe(false);
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('when Redis loses its data, nonces it can no longer vouch for are refused on every replica', { timeout: 30_000 }, async () => {
    const p = `${prefix}loss:`;
    const resets: number[] = [];
    const a = await PgRedisStorage.open(PG as string, REDIS as string, pepper, { redisPrefix: p, windowSec: 300 });
    const b = await PgRedisStorage.open(PG as string, REDIS as string, pepper, { redisPrefix: p, windowSec: 300 });
    a.onReplayCacheReset = (at) => resets.push(at);
    // A new cache vouches for stamps from the next whole second on, as a verifier waits for.
    while (Date.now() < a.replayCacheSince()) await new Promise((r) => setTimeout(r, 20));
    try {
      const now = Math.floor(Date.now() / 1000);
      expect(await a.add('k', 'captured', now + 300)).toBe(true);
      expect(await a.add('k', 'captured', now + 300)).toBe(false);
      // Redis forgets everything (a restart without persistence; FLUSHDB does the same to these keys).
      const { Redis } = await import('ioredis');
      const admin = new Redis(REDIS as string);
      const keys = await admin.keys(`${p}*`);
      await admin.del(...keys);
      await admin.quit();
      // The captured request again: Redis alone would take it as new; the lost epoch refuses it.
      await expect(a.add('k', 'captured', now + 300)).rejects.toThrow(ReplayCacheResetError);
      expect(resets).toHaveLength(1);
      await expect(b.add('k', 'other-old', now + 300)).rejects.toThrow(ReplayCacheResetError);
      expect(b.replayCacheLostAt).toBe(a.replayCacheLostAt);
      // Stamps made after the loss are fine.
      expect(await b.add('k', 'new', Math.floor(a.replayCacheLostAt / 1000) + 301)).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe.runIf(PG !== undefined && REDIS !== undefined)('replicas that start together on an empty PostgreSQL schema', () => {
  it('all start: the schema is made once, under a lock, not raced', { timeout: 60_000 }, async () => {
    const admin = new pg.Pool({ connectionString: PG });
    try {
      for (let round = 0; round < 3; round++) {
        // An empty schema of its own, as an empty database would be.
        const name = `moat_race_${randomBytes(4).toString('hex')}`;
        await admin.query(`CREATE SCHEMA ${name}`);
        const url = new URL(PG as string);
        url.searchParams.set('options', `-c search_path=${name}`);
        try {
          const opened = await Promise.allSettled(
            Array.from({ length: 4 }, () =>
              PgRedisStorage.open(url.toString(), REDIS as string, pepper, { redisPrefix: `${prefix}race${round}:` }),
            ),
          );
          expect(opened.map((o) => (o.status === 'fulfilled' ? 'started' : String(o.reason)))).toEqual(Array(4).fill('started'));
          for (const o of opened) if (o.status === 'fulfilled') await o.value.close();
        } finally {
          await admin.query(`DROP SCHEMA ${name} CASCADE`);
        }
      }
    } finally {
      await admin.end();
    }
  });
});

describe.runIf(PG !== undefined && REDIS !== undefined)('a replica whose clock is off', () => {
  it('is not ready while its clock is more than 1 s from Redis’s, whichever way', async () => {
    for (const [offset, ready] of [
      [0, true],
      [-5_000, false],
      [5_000, false],
      [-600, true],
    ] as const) {
      const s = await PgRedisStorage.open(PG as string, REDIS as string, pepper, {
        redisPrefix: `${prefix}clock:`,
        clock: () => Date.now() + offset,
      });
      try {
        const clock = (await s.readiness()).find((c) => c.name === 'clock');
        expect(clock?.ok, `${offset} ms`).toBe(ready);
        if (!ready) expect(clock?.error).toMatch(/within 1000 ms of Redis's .*got -?\d+ ms off/);
      } finally {
        await s.close();
      }
    }
  });
});

/**
 * A Redis of the test's own that keeps RDB snapshots in a directory (so it can be restarted
 * from an older one), `redis-cli` against it, and replicas opened on it under one prefix.
 */
async function snapshotRedis(name: string) {
  const dir = mkdtempSync(join(tmpdir(), 'moat-rdb-'));
  const redis = await ownRedis(['--dir', dir]);
  const port = new URL(redis.url).port;
  const p = `${prefix}${name}:`;
  return {
    dir,
    redis,
    prefix: p,
    cli: (...args: string[]) => spawnSync('redis-cli', ['-p', port, ...args]).stdout.toString(),
    open: () => PgRedisStorage.open(PG as string, redis.url, pepper, { redisPrefix: p, windowSec: 300 }),
    sleep: (ms: number) => new Promise((r) => setTimeout(r, ms)),
  };
}

describe('a replay cache that begins empty', () => {
  it.runIf(PG !== undefined && REDIS !== undefined)(
    'Redis found without its epoch marker at start (its data lost while no replica ran): stamps made before are refused within the window, by their own time',
    { timeout: 30_000 },
    async () => {
      const p = `${prefix}cold:`;
      const now = Math.floor(Date.now() / 1000);
      // Stamps made before this start, one of them served by a replica that ran before Redis lost its data.
      const s = await PgRedisStorage.open(PG as string, REDIS as string, pepper, { redisPrefix: p, windowSec: 300 });
      try {
        expect(s.replayCacheLostAt).toBe(Math.floor(s.replayCacheLostAt / 1000) * 1000);
        for (const madeAt of [now - 1, now - 60, now - 290])
          await expect(s.add('k', `before${madeAt}`, now + 300, madeAt)).rejects.toThrow(ReplayCacheResetError);
        // Outside the window: refused as stale by the caller, not as a loss.
        expect(await s.add('k', 'stale', now + 300, now - 301)).toBe(true);
        // Made in the second the cache began, or later: vouched for.
        const since = s.replayCacheLostAt / 1000;
        expect(await s.add('k', 'same-second', since + 300, since)).toBe(true);
        expect(await s.add('k', 'same-second', since + 300, since)).toBe(false);
      } finally {
        await s.close();
      }
      // A replica that opens later adopts the marker: the same stamps stay refused.
      const later = await PgRedisStorage.open(PG as string, REDIS as string, pepper, { redisPrefix: p, windowSec: 300 });
      try {
        await expect(later.add('k', 'before-again', now + 300, now - 1)).rejects.toThrow(ReplayCacheResetError);
      } finally {
        await later.close();
      }
    },
  );

  it.runIf(PG !== undefined && hasRedis)(
    'Redis that went back (restarted from an older snapshot): running replicas see its sequence go back, and so does one that starts after',
    { timeout: 30_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'moat-rdb-'));
      const redis = await ownRedis(['--dir', dir]);
      const port = new URL(redis.url).port;
      const p = `${prefix}back:`;
      const open = () => PgRedisStorage.open(PG as string, redis.url, pepper, { redisPrefix: p, windowSec: 300 });
      const a = await open();
      const b = await open();
      while (Date.now() < a.replayCacheSince()) await new Promise((r) => setTimeout(r, 20));
      const now = Math.floor(Date.now() / 1000);
      const resets: number[] = [];
      b.onReplayCacheReset = (at) => resets.push(at);
      expect(await a.add('k', 'early', now + 300, now)).toBe(true);
      // The snapshot Redis will come back from, then a request served after it.
      expect(spawnSync('redis-cli', ['-p', port, 'save']).stdout.toString()).toContain('OK');
      expect(await a.add('k', 'late', now + 300, now)).toBe(true);
      await redis.stop();
      await redis.start();
      // Back from the snapshot: the epoch marker is there, the late nonce is not. Its replay is refused, retryably.
      await expect(a.add('k', 'late', now + 300, now - 1)).rejects.toThrow(ReplayCacheResetError);
      // The other replica adopts the loss on its next commit; a stamp made after the loss passes.
      await expect(b.add('k', 'early-other', now + 300, now - 1)).rejects.toThrow(ReplayCacheResetError);
      expect(resets).toEqual([a.replayCacheLostAt]);
      const after = Math.floor(a.replayCacheLostAt / 1000) + 1;
      expect(await b.add('k', 'after', after + 300, after)).toBe(true);
      await a.close();
      await b.close();

      // Again with no replica running: the sequence PostgreSQL kept says Redis went back.
      const c = await open();
      // Stamps made after that loss (in a later second than it).
      const then = after;
      while (Date.now() < then * 1000) await new Promise((r) => setTimeout(r, 20));
      expect(await c.add('k', 'c-early', then + 300, then)).toBe(true);
      expect(spawnSync('redis-cli', ['-p', port, 'save']).stdout.toString()).toContain('OK');
      expect(await c.add('k', 'c-late', then + 300, then)).toBe(true);
      await c.close();
      await redis.stop();
      await redis.start();
      const d = await open();
      try {
        expect(d.replayCacheLostAt).toBeGreaterThan(then * 1000);
        await expect(d.add('k', 'c-late', then + 300, then)).rejects.toThrow(ReplayCacheResetError);
      } finally {
        await d.close();
      }
    },
  );

  it.runIf(PG !== undefined && hasRedis)(
    'Redis gone back, seen by a quiet replica through the sequence another one kept; an older marker come back; no loss declared twice',
    { timeout: 60_000 },
    async () => {
      const { dir, redis, cli, open, sleep } = await snapshotRedis('quiet');
      const busy = await open();
      const quiet = await open();
      while (Date.now() < busy.replayCacheSince()) await sleep(20);
      const madeAt = () => Math.floor(Date.now() / 1000);
      // The quiet replica commits once; the busy one, on and on, keeping its sequence in PostgreSQL.
      expect(await quiet.add('k', 'quiet-1', madeAt() + 300, madeAt())).toBe(true);
      expect(cli('save')).toContain('OK');
      for (let i = 0; i < 8; i++) {
        expect(await busy.add('k', `busy-${i}`, madeAt() + 300, madeAt())).toBe(true);
        await sleep(200);
      }
      // Redis comes back from the snapshot, which lacks the busy replica's nonces.
      await redis.stop();
      await redis.start();
      await sleep(1_100); // the quiet replica's next commit checks what the others kept
      const replayed = madeAt() - 1;
      await expect(quiet.add('k', 'busy-7', replayed + 300, replayed)).rejects.toThrow(ReplayCacheResetError);
      expect(quiet.replayCacheLostAt).toBeGreaterThan(replayed * 1000);
      // The busy one adopts that loss: one loss, declared once.
      await expect(busy.add('k', 'busy-6', replayed + 300, replayed)).rejects.toThrow(ReplayCacheResetError);
      expect(busy.replayCacheLostAt).toBe(quiet.replayCacheLostAt);

      // An older marker comes back: a snapshot from before a loss the replicas already adopted.
      const lost = quiet.replayCacheLostAt;
      expect(cli('save')).toContain('OK'); // holds the marker of that loss (lost)
      while (Date.now() < lost + 1_100) await sleep(20);
      expect(cli('flushall')).toContain('OK'); // a later loss: a new marker
      const afterFlush = madeAt();
      await expect(busy.add('k', 'after-flush-0', afterFlush + 300, afterFlush - 2)).rejects.toThrow(ReplayCacheResetError);
      const flushedAt = busy.replayCacheLostAt;
      expect(flushedAt).toBeGreaterThan(lost);
      while (Date.now() < flushedAt + 1_100) await sleep(20);
      const served = madeAt();
      expect(await busy.add('k', 'served-after-flush', served + 300, served)).toBe(true);
      await redis.stop();
      await redis.start(); // back from the snapshot: the marker of the earlier loss, not the flush's
      await expect(busy.add('k', 'served-after-flush', served + 300, served)).rejects.toThrow(ReplayCacheResetError);
      expect(busy.replayCacheLostAt).toBeGreaterThan(flushedAt);
      await busy.close();
      await quiet.close();

      // Redis restarted empty: a replica that opens then declares one loss, and the next adopts it (no other is declared).
      await redis.stop();
      rmSync(join(dir, 'dump.rdb'));
      await redis.start();
      const first = await open();
      const second = await open();
      try {
        expect(first.replayCacheLostAt % 1000).toBe(0);
        expect(second.replayCacheLostAt).toBe(first.replayCacheLostAt);
      } finally {
        await first.close();
        await second.close();
      }
    },
  );

  it.runIf(PG !== undefined && hasRedis)(
    "a replica's last commit before it goes quiet is kept: the other replica sees Redis go back past it; a marker from the future counts from now",
    { timeout: 60_000 },
    async () => {
      const { redis, cli, open, sleep, prefix: p } = await snapshotRedis('last');
      const a = await open();
      const b = await open();
      try {
        while (Date.now() < a.replayCacheSince()) await sleep(20);
        const madeAt = () => Math.floor(Date.now() / 1000);
        expect(await b.add('k', 'b-first', madeAt() + 300, madeAt())).toBe(true);
        await sleep(1_100);
        expect(cli('save')).toContain('OK');
        // One request on A, then nothing: its sequence is kept in the background.
        const served = madeAt();
        expect(await a.add('k', 'served-on-a', served + 300, served)).toBe(true);
        await sleep(200);
        await redis.stop();
        await redis.start(); // back from the snapshot, without that nonce
        await expect(b.add('k', 'served-on-a', served + 300, served)).rejects.toThrow(ReplayCacheResetError);

        // A marker written with a clock an hour ahead (or by hand) refuses stamps for a second, not an hour.
        while (Date.now() < b.replayCacheLostAt + 1_100) await sleep(20);
        expect(cli('set', `${p}epoch`, `bogus:${Date.now() + 3_600_000}`)).toContain('OK');
        const during = madeAt();
        await expect(b.add('k', 'during', during + 300, during - 1)).rejects.toThrow(ReplayCacheResetError);
        expect(b.replayCacheLostAt).toBeLessThan(Date.now() + 2_000);
        await sleep(2_100);
        const after = madeAt();
        expect(await b.add('k', 'after', after + 300, after)).toBe(true);
      } finally {
        await a.close();
        await b.close();
      }
    },
  );

  it.runIf(PG !== undefined && hasRedis)(
    'commits fail (503) while Redis may evict keys or this clock is off, and pass again once not',
    { timeout: 30_000 },
    async () => {
      const redis = await ownRedis(['--maxmemory', '64mb', '--maxmemory-policy', 'noeviction']);
      const port = new URL(redis.url).port;
      const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
      const policy = (name: string) => spawnSync('redis-cli', ['-p', port, 'config', 'set', 'maxmemory-policy', name]).stdout.toString();
      const s = await PgRedisStorage.open(PG as string, redis.url, pepper, { redisPrefix: `${prefix}unsafe:` });
      try {
        while (Date.now() < s.replayCacheSince()) await sleep(20);
        const now = () => Math.floor(Date.now() / 1000);
        expect(await s.add('k', 'before', now() + 300, now())).toBe(true);
        expect(policy('allkeys-lru')).toContain('OK');
        await sleep(1_100);
        await expect(s.add('k', 'evicting', now() + 300, now())).rejects.toThrow(/maxmemory-policy allkeys-lru/);
        expect(policy('noeviction')).toContain('OK');
        await sleep(1_100);
        expect(await s.add('k', 'again', now() + 300, now())).toBe(true);
      } finally {
        await s.close();
      }
      let offset = 0;
      const skewed = await PgRedisStorage.open(PG as string, redis.url, pepper, {
        redisPrefix: `${prefix}skewed:`,
        clock: () => Date.now() + offset,
      });
      try {
        while (Date.now() < skewed.replayCacheSince()) await sleep(20);
        const now = () => Math.floor(Date.now() / 1000);
        offset = -4_000;
        await expect(skewed.add('k', 'behind', now() + 300, now())).rejects.toThrow(/within 1000 ms of Redis/);
        offset = 0;
        await sleep(1_100);
        expect(await skewed.add('k', 'in-step', now() + 300, now())).toBe(true);
      } finally {
        await skewed.close();
      }
    },
  );

  it('a new SQLite database (the old one lost, its keys provisioned again): stamps made before it began are refused within the window; a reopened one keeps the time', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-cold-')), 'verifier.db');
    const now = Math.floor(Date.now() / 1000);
    const s = new SqliteStorage(file, pepper, { windowSec: 300 });
    try {
      for (const madeAt of [now - 1, now - 60, now - 290])
        await expect(s.add('k', `before${madeAt}`, now + 300, madeAt)).rejects.toThrow(ReplayCacheResetError);
      expect(await s.add('k', 'stale', now + 300, now - 301)).toBe(true);
      // It begins at the next whole second: a stamp of the second it was made in may predate it.
      expect(s.replayCacheSince() % 1000).toBe(0);
      expect(s.replayCacheSince()).toBeGreaterThan(Date.now() - 1000);
      const since = s.replayCacheSince() / 1000;
      await expect(s.add('k', 'same-second', since + 299, since - 1)).rejects.toThrow(ReplayCacheResetError);
      expect(await s.add('k', 'later', since + 300, since)).toBe(true);
      expect(await s.add('k', 'later', since + 300, since)).toBe(false);
    } finally {
      s.close();
    }
    const reopened = new SqliteStorage(file, pepper, { windowSec: 300 });
    try {
      await expect(reopened.add('k', 'before-again', now + 300, now - 1)).rejects.toThrow(ReplayCacheResetError);
      const since = reopened.replayCacheSince() / 1000;
      expect(await reopened.add('k', 'later', since + 300, since)).toBe(false);
    } finally {
      reopened.close();
    }
    // A database from before the time was kept has nonces of its own: nothing is refused for it.
    const old = new Database(file);
    old.prepare("DELETE FROM meta WHERE name = 'nonces_since'").run();
    old.close();
    const upgraded = new SqliteStorage(file, pepper, { windowSec: 300 });
    try {
      expect(await upgraded.add('k', 'from-before', now + 300, now - 1)).toBe(true);
    } finally {
      upgraded.close();
    }
  });
});

describe.runIf(PG !== undefined && REDIS !== undefined)('PostgreSQL closing idle connections', () => {
  it('the process lives on and the next query reconnects (pg_terminate_backend)', { timeout: 30_000 }, async () => {
    const errors: string[] = [];
    // Its own application name: the test ends this storage's connections only, never another
    // test's or a superuser's session on the same database.
    const appName = `moat-terminated-${process.pid}`;
    const url = new URL(PG as string);
    url.searchParams.set('application_name', appName);
    const storage = await PgRedisStorage.open(url.toString(), REDIS as string, pepper, {
      redisPrefix: `${prefix}t:`,
      onError: (source, error) => errors.push(`${source}: ${error.message}`),
    });
    try {
      const { key } = await storage.createApiKey('terminated');
      // The pool now holds an idle connection; end it from another session.
      const pg = (await import('pg')).default;
      const admin = new pg.Client({ connectionString: PG });
      await admin.connect();
      const { rows } = await admin.query<{ n: number }>(
        'SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
        [appName],
      );
      await admin.end();
      expect(rows[0]?.n).toBeGreaterThan(0);
      for (let i = 0; i < 50 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(errors.some((e) => e.startsWith('postgres:'))).toBe(true);
      expect(await storage.lookupApiKey(key)).toMatch(/^key_/);
    } finally {
      await storage.close();
    }
  });
});

describe('a SQLite database made before files kept their traces', () => {
  it('gains the column at start and keeps what it held', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'moat-files-')), 'v.db');
    const old = new Database(path);
    old.exec('CREATE TABLE files (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, record_id TEXT NOT NULL, created INTEGER NOT NULL)');
    old.prepare("INSERT INTO files VALUES ('file_old', 'key_a', 'req_1', 1)").run();
    old.close();
    const s = new SqliteStorage(path, pepper);
    try {
      expect(s.fileOf('file_old')).toEqual({ id: 'file_old', keyId: 'key_a', recordId: 'req_1', created: 1 });
      const tracedTo = [{ apiKeyId: 'key_z', confidence: 0.75 }];
      await s.saveFile({ id: 'file_new', keyId: 'key_a', recordId: 'req_2', created: 2, tracedTo });
      expect(s.fileOf('file_new')?.tracedTo).toEqual(tracedTo);
    } finally {
      await s.close();
    }
  });
});
