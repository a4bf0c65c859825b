import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { PgRedisStorage } from './pg-storage.js';
import { migrationSql, RECORD_COLUMNS, type RequestRecord, recordOf, recordWhere, rowOf } from './record-schema.js';
import { initialRecordedSignals, RECORDED_SIGNALS } from './signals.js';
import { SqliteStorage } from './storage.js';

const PG = process.env.MOAT_TEST_POSTGRES_URL;
const REDIS = process.env.MOAT_TEST_REDIS_URL;
const pepper = randomBytes(32);

/** The records table of a database made before the decoy signal existed. */
const BEFORE_DECOY = {
  sqlite: `CREATE TABLE records (id TEXT PRIMARY KEY, ts INTEGER NOT NULL, key_id TEXT, model TEXT, attestation TEXT NOT NULL,
    fingerprint TEXT NOT NULL, gateway TEXT NOT NULL, relay TEXT NOT NULL, thinking TEXT NOT NULL, verdict TEXT NOT NULL,
    reasons TEXT NOT NULL, status INTEGER, latency_ms INTEGER, decoys INTEGER NOT NULL DEFAULT 0)`,
  postgres: `CREATE TABLE records (id TEXT PRIMARY KEY, ts BIGINT NOT NULL, key_id TEXT, model TEXT, attestation TEXT NOT NULL,
    fingerprint TEXT NOT NULL, gateway JSONB NOT NULL, relay JSONB NOT NULL, thinking TEXT NOT NULL, verdict TEXT NOT NULL,
    reasons JSONB NOT NULL, status INTEGER, latency_ms INTEGER, decoys INTEGER NOT NULL DEFAULT 0, seq BIGSERIAL)`,
};
const OLD_ROW = `INSERT INTO records (id, ts, key_id, model, attestation, fingerprint, gateway, relay, thinking, verdict, reasons,
  status, latency_ms, decoys) VALUES ('old', 1000, 'key_a', 'm', 'valid', 'match', '["litellm"]', '[]', 'none', 'flag',
  '["flag:gateway=x"]', 200, 12, 0)`;

const fresh = (id: string, over: Partial<RequestRecord> = {}): RequestRecord => ({
  id,
  ts: 2000,
  keyId: 'key_a',
  model: 'm',
  ...initialRecordedSignals(),
  attestation: 'valid',
  fingerprint: 'match',
  thinking: 'none',
  decoy: 'hit',
  gateway: [],
  relay: [],
  verdict: 'flag',
  reasons: [],
  status: 200,
  latencyMs: 3,
  decoys: 0,
  batch: null,
  ...over,
});

const OLD_RECORD = {
  id: 'old',
  ts: 1000,
  keyId: 'key_a',
  gateway: ['litellm'],
  reasons: ['flag:gateway=x'],
  status: 200,
  latencyMs: 12,
  decoy: 'none',
};

describe('the record schema', () => {
  it('has one column per recorded signal of the registry, and nothing to add to a current table', () => {
    const columns = RECORD_COLUMNS.map((c) => c.column);
    for (const row of RECORDED_SIGNALS) expect(columns).toContain(row.column);
    expect(migrationSql('sqlite', columns)).toEqual([]);
    expect(
      migrationSql(
        'postgres',
        columns.filter((c) => c !== 'decoy'),
      ),
    ).toEqual(["ALTER TABLE records ADD COLUMN IF NOT EXISTS decoy TEXT NOT NULL DEFAULT 'none'"]);
    expect(() =>
      migrationSql(
        'sqlite',
        columns.filter((c) => c !== 'verdict'),
      ),
    ).toThrow(/database: expected a records table with a column verdict/);
  });

  it('maps a record to a row and back unchanged (lists as JSON text, as SQLite keeps them)', () => {
    const text = fc.string({ maxLength: 20 });
    const arbitrary = fc.record({
      id: text,
      ts: fc.integer({ min: 0, max: 2 ** 47 }),
      keyId: fc.option(text, { nil: null }),
      model: fc.option(text, { nil: null }),
      gateway: fc.array(text, { maxLength: 3 }),
      relay: fc.array(text, { maxLength: 3 }),
      reasons: fc.array(text, { maxLength: 3 }),
      status: fc.option(fc.integer({ min: 100, max: 599 }), { nil: null }),
      latencyMs: fc.option(fc.nat(), { nil: null }),
      decoys: fc.nat(10),
      batch: fc.option(text, { nil: null }),
      installId: fc.option(text, { nil: null }),
      ...Object.fromEntries(RECORDED_SIGNALS.map((row) => [row.name, fc.constantFrom(...row.values)])),
      verdict: fc.constantFrom('allow', 'flag', 'block'),
    }) as unknown as fc.Arbitrary<RequestRecord>;
    fc.assert(
      fc.property(arbitrary, (record) => {
        const values = rowOf(record);
        const row = Object.fromEntries(RECORD_COLUMNS.map((c, i) => [c.column, values[i]]));
        expect(recordOf(row)).toEqual(record);
      }),
    );
  });

  it('filters by every recorded signal, bound and never interpolated', () => {
    const query = Object.fromEntries(RECORDED_SIGNALS.map((row) => [row.name, "x' OR 1=1"]));
    const { where, params } = recordWhere(query, 'postgres');
    expect(params).toHaveLength(RECORDED_SIGNALS.length);
    expect(where).not.toContain("'");
    expect(where).toBe(`WHERE ${RECORDED_SIGNALS.map((row, i) => `${row.column} = $${i + 1}`).join(' AND ')}`);
  });
});

describe('migration of an existing database', () => {
  it('SQLite: a database made before a signal gains its column; old rows read with its initial value', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-migrate-')), 'old.db');
    const old = new Database(file);
    old.exec(BEFORE_DECOY.sqlite);
    old.exec(OLD_ROW);
    old.close();
    for (let start = 0; start < 2; start++) {
      const s = new SqliteStorage(file, pepper);
      try {
        if (start === 0) await s.insertRecord(fresh('new'));
        expect(s.queryRecords({})).toMatchObject([{ id: 'new', decoy: 'hit' }, OLD_RECORD]);
        expect(s.queryRecords({ decoy: 'none' }).map((r) => r.id)).toEqual(['old']);
        expect(s.keyActivity()).toMatchObject([{ keyId: 'key_a', requests: 2, decoyHits: 1, match: 2 }]);
      } finally {
        s.close();
      }
    }
  });

  it.runIf(PG !== undefined && REDIS !== undefined)(
    'PostgreSQL: a database made before a signal gains its column; old rows read with its initial value',
    { timeout: 30_000 },
    async () => {
      const schema = `moat_migrate_${randomBytes(4).toString('hex')}`;
      const admin = new pg.Pool({ connectionString: PG });
      await admin.query(`CREATE SCHEMA ${schema}`);
      try {
        await admin.query(`SET search_path TO ${schema}; ${BEFORE_DECOY.postgres}; ${OLD_ROW}`);
        const url = new URL(PG as string);
        url.searchParams.set('options', `-c search_path=${schema}`);
        for (let start = 0; start < 2; start++) {
          const s = await PgRedisStorage.open(url.href, REDIS as string, pepper, { redisPrefix: `${schema}:` });
          try {
            if (start === 0) await s.insertRecord(fresh('new'));
            expect(await s.queryRecords({})).toMatchObject([{ id: 'new', decoy: 'hit' }, OLD_RECORD]);
            expect((await s.queryRecords({ decoy: 'none' })).map((r) => r.id)).toEqual(['old']);
            expect(await s.keyActivity()).toMatchObject([{ keyId: 'key_a', requests: 2, decoyHits: 1, match: 2 }]);
          } finally {
            await s.close();
          }
        }
      } finally {
        await admin.query(`DROP SCHEMA ${schema} CASCADE`);
        await admin.end();
      }
    },
  );
});
