/**
 * The installs store on every backend: SQLite always; PostgreSQL + Redis when
 * MOAT_TEST_POSTGRES_URL and MOAT_TEST_REDIS_URL point at running servers.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { InstallRow } from './installs.js';
import { PgRedisStorage } from './pg-storage.js';
import { SqliteStorage, type Storage } from './storage.js';

const PG = process.env.MOAT_TEST_POSTGRES_URL;
const REDIS = process.env.MOAT_TEST_REDIS_URL;
const pepper = randomBytes(32);
const prefix = `moat-test-installs-${randomBytes(4).toString('hex')}:`;
const SKIP_PG =
  PG !== undefined && REDIS !== undefined ? undefined : 'MOAT_TEST_POSTGRES_URL / MOAT_TEST_REDIS_URL not set';

const backends: Array<[string, () => Promise<Storage>]> = [
  ['sqlite', async () => new SqliteStorage(':memory:', pepper)],
  [
    SKIP_PG === undefined ? 'postgres+redis' : `postgres+redis (skipped: ${SKIP_PG})`,
    async () => {
      const s = await PgRedisStorage.open(PG as string, REDIS as string, pepper, { redisPrefix: prefix });
      const pool = new pg.Pool({ connectionString: PG });
      await pool.query('TRUNCATE installs, enrollments');
      await pool.end();
      return s;
    },
  ],
];

const iid = () => `i${randomBytes(12).toString('hex')}`;
const row = (keyId: string, created: number, over: Partial<InstallRow> = {}): InstallRow => ({
  iid: iid(),
  keyId,
  installKey: randomBytes(32).toString('base64url'),
  ekid: 'e1',
  challenge: randomBytes(32).toString('base64url'),
  created,
  revokedAt: null,
  overLimit: false,
  releaseKid: 'k1',
  ...over,
});

describe.each(backends)('installs on %s', (name, open) => {
  const skip = name.includes('skipped');

  it.skipIf(skip)('spends a challenge once, only under its credential, only before it expires', async () => {
    const s = await open();
    try {
      const c = randomBytes(32).toString('base64url');
      await s.installs.issueChallenge(c, 'cred-a', Date.now() + 60_000);
      expect(await s.installs.consumeChallenge(c, 'cred-b')).toBe(false);
      const both = await Promise.all([
        s.installs.consumeChallenge(c, 'cred-a'),
        s.installs.consumeChallenge(c, 'cred-a'),
      ]);
      expect(both.filter(Boolean)).toHaveLength(1);
      // At most `max` open challenges per credential; a spent one frees its place.
      const open = [randomBytes(32).toString('base64url'), randomBytes(32).toString('base64url')];
      for (const o of open) expect(await s.installs.issueChallenge(o, 'cred-c', Date.now() + 60_000, 2)).toBe(true);
      expect(
        await s.installs.issueChallenge(randomBytes(32).toString('base64url'), 'cred-c', Date.now() + 60_000, 2),
      ).toBe(false);
      expect(await s.installs.consumeChallenge(open[0] as string, 'cred-c')).toBe(true);
      expect(
        await s.installs.issueChallenge(randomBytes(32).toString('base64url'), 'cred-c', Date.now() + 60_000, 2),
      ).toBe(true);
      const late = randomBytes(32).toString('base64url');
      await s.installs.issueChallenge(late, 'cred-a', Date.now() + 100);
      await new Promise((r) => setTimeout(r, 250));
      expect(await s.installs.consumeChallenge(late, 'cred-a')).toBe(false);
    } finally {
      await s.close();
    }
  });

  it.skipIf(skip)('keeps installs, counts them per key and per window, revokes one', async () => {
    const s = await open();
    try {
      const now = Date.now();
      const a = row('key_a', now - 10_000);
      const b = row('key_a', now, { overLimit: true });
      await s.installs.createInstall(a);
      await s.installs.createInstall(b);
      await s.installs.createInstall(row('key_b', now));
      expect(await s.installs.install(a.iid)).toEqual(a);
      expect(await s.installs.install(iid())).toBeUndefined();
      expect(await s.installs.countInstalls('key_a')).toBe(2);
      expect(await s.installs.countEnrollments('key_a', now - 5_000)).toEqual({ count: 1, oldest: now });
      expect((await s.installs.listInstalls('key_a')).map((r) => r.iid)).toEqual([b.iid, a.iid]);
      const revoked = await s.installs.revokeInstall(a.iid, now + 1);
      expect(revoked).toEqual({ ...a, revokedAt: now + 1 });
      // Revoked once: a second revocation keeps the first time.
      expect((await s.installs.revokeInstall(a.iid, now + 2))?.revokedAt).toBe(now + 1);
      expect(await s.installs.revokeInstall(iid())).toBeUndefined();
      expect(await s.installs.countInstalls('key_a')).toBe(1);
      expect(await s.installs.installsPerKey()).toEqual([
        { keyId: 'key_a', installs: 2, revoked: 1, overLimit: 1, newest: now },
        { keyId: 'key_b', installs: 1, revoked: 0, overLimit: 0, newest: now },
      ]);
    } finally {
      await s.close();
    }
  });

  it.skipIf(skip)('revokes every live install of one release key, under any API key, and no other', async () => {
    const s = await open();
    try {
      const now = Date.now();
      const [a, b, c] = [row('key_a', now), row('key_b', now), row('key_a', now, { releaseKid: 'k2' })];
      const gone = row('key_a', now - 5, { revokedAt: now - 1 });
      for (const r of [a, b, c, gone]) await s.installs.createInstall(r);
      const revoked = await s.installs.revokeReleaseInstalls('k1', now + 7);
      expect(revoked.map((r) => r.iid).sort()).toEqual([a.iid, b.iid].sort());
      expect(revoked.every((r) => r.revokedAt === now + 7)).toBe(true);
      // An install revoked before keeps its time; another release's install is live.
      expect((await s.installs.install(gone.iid))?.revokedAt).toBe(now - 1);
      expect((await s.installs.install(c.iid))?.revokedAt).toBeNull();
      expect(await s.installs.revokeReleaseInstalls('k1')).toEqual([]);
    } finally {
      await s.close();
    }
  });

  it.skipIf(skip)('records every enrollment attempt, filtered by key, outcome and time', async () => {
    const s = await open();
    try {
      const base = { address: 'h1', releaseKid: 'k1', installId: null, reason: '429 ERR_ENROLL_LIMIT' };
      await s.installs.recordEnrollment({ ...base, ts: 1000, keyId: 'key_a', outcome: 'limited' });
      await s.installs.recordEnrollment({ ...base, ts: 2000, keyId: 'key_a', outcome: 'created', installId: iid() });
      await s.installs.recordEnrollment({ ...base, ts: 3000, keyId: 'key_b', outcome: 'challenge' });
      expect((await s.installs.enrollments({})).map((e) => e.ts)).toEqual([3000, 2000, 1000]);
      expect(await s.installs.enrollments({ keyId: 'key_a', outcome: 'limited' })).toEqual([
        { ...base, ts: 1000, keyId: 'key_a', outcome: 'limited' },
      ]);
      expect((await s.installs.enrollments({ since: 2000, limit: 1 })).map((e) => e.ts)).toEqual([3000]);
    } finally {
      await s.close();
    }
  });
});
