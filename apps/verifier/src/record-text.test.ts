import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgRedisStorage } from './pg-storage.js';
import { boundedRecord, RECORD_LIMITS } from './pipeline/record.js';
import { RECORD_COLUMNS } from './record-schema.js';
import { cutText, REPLACEMENT, storableText, storableValue } from './record-text.js';
import { type RequestRecord, SqliteStorage, type Storage } from './storage.js';
import { storeBoundary } from './store-boundary.js';

const storable = (s: string) => s.isWellFormed() && !s.includes('\0');

describe('storable text', () => {
  it('replaces NUL and lone surrogates, keeps pairs', () => {
    expect(storableText('a\0b')).toBe(`a${REPLACEMENT}b`);
    expect(storableText('x\uD83D')).toBe(`x${REPLACEMENT}`);
    expect(storableText('\uDE00y')).toBe(`${REPLACEMENT}y`);
    expect(storableText('ok 😀')).toBe('ok 😀');
  });

  it('cuts on whole code points: an emoji at the cut is left out, never split', () => {
    const model = `${'m'.repeat(198)}😀tail`;
    const cut = cutText(model, 200);
    expect(cut).toBe(`${'m'.repeat(198)}…`);
    expect(storable(cut)).toBe(true);
    expect(cutText('short', 200)).toBe('short');
  });

  it('property: any text comes out storable, at most max long, and unchanged when it already was', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 400 }), fc.integer({ min: 2, max: 300 }), (text, max) => {
        const cut = cutText(text, max);
        expect(storable(cut)).toBe(true);
        expect(cut.length).toBeLessThanOrEqual(max);
        if (storable(text) && text.length <= max) expect(cut).toBe(text);
        expect(storableValue({ [text]: [text, 1, null] })).toEqual({ [storableText(text)]: [storableText(text), 1, null] });
      }),
      { numRuns: 500 },
    );
  });
});

/** Arbitrary text as requests bring it: any code point (NUL and lone surrogates too), raw bytes, emoji at the cut. */
const wild = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 260 }),
  fc.uint8Array({ maxLength: 260 }).map((b) => Buffer.from(b).toString('latin1')),
  fc.uint8Array({ maxLength: 260 }).map((b) => Buffer.from(b).toString('utf8')),
  fc.nat({ max: 12 }).map((n) => `${'m'.repeat(RECORD_LIMITS.model - 2 - n)}${'😀'.repeat(n + 1)}\0\uD800`),
);

/**
 * A record with wild text in every column the schema has (signal columns too: a store must
 * take any text a future signal or an old spool brings), derived from the schema so a new
 * column is drawn as soon as it exists.
 */
const wildRecord = (): fc.Arbitrary<RequestRecord> => {
  const of = (kind: (typeof RECORD_COLUMNS)[number]['kind']): fc.Arbitrary<unknown> => {
    switch (kind) {
      case 'id':
        return wild.map((s) => `req_${s}`);
      case 'time':
        return fc.constant(0);
      case 'optional text':
        return fc.option(wild, { nil: null });
      case 'optional int':
        return fc.constantFrom(1, 200, null);
      case 'count':
        return fc.nat({ max: 5 });
      case 'list':
        return fc.array(wild, { maxLength: 3 });
      default:
        return wild;
    }
  };
  const columns = Object.fromEntries(RECORD_COLUMNS.map((c) => [c.field, of(c.kind)]));
  return fc.record(columns) as unknown as fc.Arbitrary<RequestRecord>;
};

/** Every recorded field, a key label, a revocation reason and a telemetry event type round-trip storable on `open()`'s backend. */
function roundTrips(open: () => Promise<Storage>, runs: number) {
  let storage: Storage;
  beforeAll(async () => {
    storage = storeBoundary(await open());
  });
  afterAll(async () => {
    await storage.close();
  });
  it('stores whatever text a request carries, in every recorded field, as storable text', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(wildRecord(), wild, async (wildOne, label) => {
        // Unique per run (shrinking replays values): the id and the newest time.
        n++;
        const record = { ...wildOne, id: `${wildOne.id}#${n}`, ts: Date.now() + n };
        const bounded = boundedRecord(record);
        // Marked storable, so the boundary does not walk it: it must need no walking.
        expect(storableValue(bounded)).toBe(bounded);
        expect(storableValue({ ...bounded })).toEqual(bounded);
        await storage.insertRecord(bounded);
        const [back] = await storage.queryRecords({ limit: 1 });
        expect(back).toEqual(storableValue(bounded));
        for (const text of [back?.id, back?.model, back?.keyId, back?.verdict, ...(back?.reasons ?? [])])
          if (typeof text === 'string') expect(storable(text)).toBe(true);
        // Finishing the record (an upsert) stores the same way.
        await storage.insertRecord({ ...bounded, status: 200 }, { upsert: true });
        expect((await storage.queryRecords({ limit: 1 }))[0]?.status).toBe(200);
        const key = await storage.createApiKey(label);
        expect((await storage.listApiKeys()).find((k) => k.id === key.id)?.label).toBe(storableText(label));
        await storage.revokeKid(`kid${n}`, label);
        expect((await storage.revokedKids()).find((k) => k.kid === `kid${n}`)?.reason).toBe(storableText(label));
        await storage.insertTelemetry(bounded.keyId, [{ type: label, ts: 1, note: label } as { type: string; ts: number }]);
        expect(Object.keys(await storage.telemetryCounts())).toContain(storableText(label));
      }),
      { numRuns: runs },
    );
  });

  it('counts telemetry under whatever event type a client sent, as own keys ("__proto__" included)', async () => {
    await storage.insertTelemetry(null, [
      { type: '__proto__', ts: 1 },
      { type: 'constructor', ts: 1 },
    ] as Array<{ type: string; ts: number }>);
    const counts = await storage.telemetryCounts();
    expect(Object.hasOwn(counts, '__proto__')).toBe(true);
    expect(Object.hasOwn(counts, 'constructor')).toBe(true);
    expect(Object.getPrototypeOf(counts)).toBe(Object.prototype);
  });
}

describe('every recorded field on SQLite', { timeout: 60_000 }, () => {
  roundTrips(async () => new SqliteStorage(':memory:', randomBytes(32)), 150);
});

const pgUrl = process.env.MOAT_TEST_POSTGRES_URL;
const redisUrl = process.env.MOAT_TEST_REDIS_URL;
describe.runIf(pgUrl !== undefined && redisUrl !== undefined)('every recorded field on PostgreSQL', { timeout: 120_000 }, () => {
  let dropSchema: (() => Promise<void>) | undefined;
  afterAll(async () => {
    await dropSchema?.();
  });
  roundTrips(async () => {
    // A schema of this test's own: other suites truncate the shared tables while they run.
    const schema = `moat_text_${randomBytes(4).toString('hex')}`;
    const admin = new pg.Client({ connectionString: pgUrl });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
    dropSchema = async () => {
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      await c.query(`DROP SCHEMA ${schema} CASCADE`);
      await c.end();
    };
    const url = new URL(pgUrl as string);
    url.searchParams.set('options', `-c search_path=${schema}`);
    const storage = await PgRedisStorage.open(url.toString(), redisUrl as string, randomBytes(32), {
      redisPrefix: `moat-text-${randomBytes(4).toString('hex')}:`,
    });
    return storage;
  }, 60);
});
