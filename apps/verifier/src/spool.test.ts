import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { RequestLedger } from './pipeline/record.js';
import { RecordSpool, SpoolError } from './spool.js';
import { type RequestRecord, SqliteStorage } from './storage.js';
import { StoreGuard } from './store-guard.js';

const dirs: string[] = [];
const mounts: string[] = [];
afterAll(() => {
  for (const m of mounts) spawnSync('umount', ['-l', m]);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'moat-spool-test-'));
  dirs.push(dir);
  return dir;
};

/** Record i, as the pipeline starts one (its defaults), refused with a 503. */
const recordOf = (i: number, extra: Partial<RequestRecord> = {}): RequestRecord => ({
  ...new RequestLedger({ write: () => Promise.resolve('stored') }, `req_${String(i).padStart(6, '0')}`).record,
  ts: 1_700_000_000_000 + i,
  keyId: 'key_a',
  model: 'claude-mock',
  status: 503,
  latencyMs: 1,
  ...extra,
});

/** A store that takes records one event-loop turn later, as a networked one does. */
function slowStore(onInsert?: (record: RequestRecord) => void) {
  const stored: RequestRecord[] = [];
  return {
    stored,
    async insertRecord(record: RequestRecord) {
      await new Promise((r) => setImmediate(r));
      onInsert?.(record);
      stored.push(record);
    },
  };
}

describe('the record spool', () => {
  it('keeps the records appended while it drains: every record lands once, in order', async () => {
    const spool = new RecordSpool(join(tempDir(), 'records.spool'), 64 * 1024 * 1024);
    for (let i = 0; i < 100; i++) spool.append(recordOf(i));
    let next = 100;
    // Refusals keep arriving while the drain runs: one appended per record drained.
    const store = slowStore(() => {
      if (next < 200) spool.append(recordOf(next++));
    });
    await spool.drain(store);
    await spool.drain(store);
    const ids = store.stored.map((r) => r.id);
    expect(ids).toHaveLength(200);
    expect(new Set(ids).size).toBe(200);
    expect(ids).toEqual([...ids].sort());
    expect(spool.size()).toBe(0);
    spool.close();
  });

  it('a drain interrupted half way neither loses nor duplicates (upsert by id)', async () => {
    const file = join(tempDir(), 'records.spool');
    const spool = new RecordSpool(file, 64 * 1024 * 1024);
    for (let i = 0; i < 10; i++) spool.append(recordOf(i));
    const stored = new Map<string, RequestRecord>();
    let calls = 0;
    const flaky = {
      async insertRecord(record: RequestRecord, options?: { upsert?: boolean }) {
        expect(options?.upsert).toBe(true);
        if (++calls === 6) throw Object.assign(new Error('connection terminated'), { code: '57P01' });
        stored.set(record.id, record);
      },
    };
    await expect(spool.drain(flaky)).rejects.toThrow(/connection terminated/);
    spool.close();
    // A new process opens the same file and finishes the drain.
    const again = new RecordSpool(file, 64 * 1024 * 1024);
    // The batch's other records were taken and their rows deleted; the one the store failed on stays.
    expect(again.count()).toBe(1);
    await expect(again.drain(flaky)).resolves.toEqual({ drained: 1, quarantined: 0 });
    expect([...stored.keys()].sort()).toEqual(Array.from({ length: 10 }, (_, i) => recordOf(i).id));
    again.close();
  });

  it('sends only the last of two spooled rows of one record, and deletes both once it is taken', async () => {
    const spool = new RecordSpool(':memory:', 64 * 1024 * 1024);
    spool.append(recordOf(1, { status: 503 }));
    spool.append(recordOf(2));
    spool.append(recordOf(1, { status: 200 }), { finish: true });
    const store = slowStore();
    await expect(spool.drain(store)).resolves.toEqual({ drained: 3, quarantined: 0 });
    expect(store.stored.map((r) => [r.id, r.status]).sort()).toEqual([
      [recordOf(1).id, 200],
      [recordOf(2).id, 503],
    ]);
    expect(spool.count()).toBe(0);
    spool.close();
  });

  it('drains a large spool in batches, none lost or repeated', async () => {
    const spool = new RecordSpool(':memory:', 64 * 1024 * 1024);
    for (let i = 0; i < 1_050; i++) spool.append(recordOf(i));
    const store = slowStore();
    await expect(spool.drain(store)).resolves.toEqual({ drained: 1_050, quarantined: 0 });
    expect(new Set(store.stored.map((r) => r.id)).size).toBe(1_050);
    expect(spool.count()).toBe(0);
    expect(spool.size()).toBe(0);
    spool.close();
  });

  it('quarantines a record the store refuses for its content; the records after it drain', async () => {
    const spool = new RecordSpool(join(tempDir(), 'records.spool'), 64 * 1024 * 1024);
    for (let i = 0; i < 5; i++) spool.append(recordOf(i, i === 2 ? { model: 'bad' } : {}));
    const store = slowStore();
    const picky = {
      async insertRecord(record: RequestRecord) {
        if (record.model === 'bad') throw Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), { code: '22021' });
        await store.insertRecord(record);
      },
    };
    await expect(spool.drain(picky)).resolves.toEqual({ drained: 4, quarantined: 1 });
    expect(store.stored.map((r) => r.id)).toEqual([0, 1, 3, 4].map((i) => recordOf(i).id));
    expect(spool.count()).toBe(0);
    expect(spool.quarantined()).toBe(1);
    expect(spool.quarantine()[0]).toMatchObject({ record: { id: recordOf(2).id }, error: expect.stringMatching(/0x00/) });
    spool.close();
  });

  it('imports a spool of JSON lines from an earlier version (a torn last line skipped)', async () => {
    const file = join(tempDir(), 'records.spool');
    writeFileSync(file, `${JSON.stringify(recordOf(1))}\n${JSON.stringify(recordOf(2))}\n{"id":"req_torn`);
    const spool = new RecordSpool(file, 64 * 1024 * 1024);
    const store = slowStore();
    await spool.drain(store);
    expect(store.stored.map((r) => r.id)).toEqual([recordOf(1).id, recordOf(2).id]);
    spool.close();
    // Imported once: the next start finds nothing more to import.
    expect(existsSync(`${file}.jsonl`)).toBe(false);
    const reopened = new RecordSpool(file, 64 * 1024 * 1024);
    expect(reopened.count()).toBe(0);
    reopened.close();
  });

  it('refuses to open a spool file it cannot write, naming the setting', () => {
    expect(() => new RecordSpool(join(tempDir(), 'missing', 'dir', 'records.spool'), 4096)).toThrow(
      /ERR_VERIFIER_CONFIG: spoolFile: expected a writable spool file/,
    );
  });

  it('is bounded: a full spool refuses the append', () => {
    const spool = new RecordSpool(':memory:', 4096);
    let appended = 0;
    expect(() => {
      for (;;) {
        spool.append(recordOf(appended));
        appended++;
      }
    }).toThrow(SpoolError);
    expect(appended).toBeGreaterThan(5);
    expect(spool.count()).toBe(appended);
    spool.close();
  });
});

describe.runIf(process.getuid?.() === 0)('the record spool on a full disk', () => {
  it('never counts a torn write as written: every append that returned is drained, whole', async (ctx) => {
    const mount = tempDir();
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mount]).status !== 0)
      return ctx.skip('no tmpfs mount here (a container without the capability)');
    mounts.push(mount);
    const spool = new RecordSpool(join(mount, 'records.spool'), 64 * 1024 * 1024);
    // Leave a few pages free, then append records of odd sizes until the disk is full.
    execFileSync('sh', ['-c', `dd if=/dev/zero of=${join(mount, 'filler')} bs=4k count=40 2>/dev/null || true`]);
    let acknowledged = 0;
    let failed = 0;
    for (let i = 0; i < 2_000 && failed < 5; i++) {
      try {
        spool.append(recordOf(i, { reasons: [`pad ${'x'.repeat(700 + (i % 13) * 37)}`] }));
        acknowledged++;
      } catch (error) {
        expect(error).toBeInstanceOf(SpoolError);
        failed++;
      }
    }
    expect(failed).toBeGreaterThan(0);
    expect(acknowledged).toBeGreaterThan(0);
    rmSync(join(mount, 'filler'));
    const store = slowStore();
    await spool.drain(store);
    expect(store.stored).toHaveLength(acknowledged);
    for (const r of store.stored) expect(r.reasons[0]).toMatch(/^pad x+$/);
    spool.close();
  });
});

describe.runIf(process.getuid?.() === 0)('the record spool reserve on a full disk', () => {
  const fullDisk = (ctx: { skip: (note: string) => void }, size = '4m') => {
    const mount = tempDir();
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mount]).status !== 0) {
      ctx.skip('no tmpfs mount here (a container without the capability)');
      return undefined;
    }
    mounts.push(mount);
    return mount;
  };
  const fill = (mount: string) => execFileSync('sh', ['-c', `dd if=/dev/zero of=${join(mount, 'filler')} bs=4k 2>/dev/null || true`]);
  const pad = (i: number) => ({ reasons: [`pad ${'x'.repeat(700 + (i % 13) * 37)}`] });

  it('gives up its reserve for the finishes of answers in flight: every finish is kept, refusals are not, and all drain whole', async (ctx) => {
    const mount = fullDisk(ctx);
    if (mount === undefined) return;
    const spool = new RecordSpool(join(mount, 'records.spool'), 64 * 1024 * 1024, { reserveBytes: 1024 * 1024 });
    expect(spool.reserveHeld).toBe(true);
    expect(existsSync(join(mount, 'records.spool.reserve'))).toBe(true);
    fill(mount);
    // Refusals find the disk full and are refused; the reserve stays.
    let refusals = 0;
    for (let i = 0; i < 50; i++) {
      try {
        spool.append(recordOf(i, pad(i)));
      } catch (error) {
        expect(error).toBeInstanceOf(SpoolError);
        refusals++;
      }
    }
    expect(refusals).toBeGreaterThan(0);
    expect(spool.reserveHeld).toBe(true);
    const before = spool.count();
    // 300 finishes of answers in flight: the first to find the disk full gives the reserve up, all are kept.
    for (let i = 1_000; i < 1_300; i++) spool.append(recordOf(i, { ...pad(i), status: 200 }), { finish: true });
    expect(spool.reserveHeld).toBe(false);
    expect(existsSync(join(mount, 'records.spool.reserve'))).toBe(false);
    expect(spool.count()).toBe(before + 300);
    // With the reserve given up, a refusal is not kept even where the disk has room: the room is for finishes.
    expect(() => spool.append(recordOf(2_000))).toThrow(/its reserve is kept for the records of answers in flight/);
    // The room the reserve left is not enough to make it again; freeing the disk is.
    expect(spool.restoreReserve()).toBe(false);
    rmSync(join(mount, 'filler'));
    expect(spool.restoreReserve()).toBe(true);
    expect(spool.reserveHeld).toBe(true);
    const store = slowStore();
    await spool.drain(store);
    expect(store.stored.filter((r) => r.status === 200)).toHaveLength(300);
    expect(store.stored).toHaveLength(before + 300);
    spool.close();
  });

  it('a guard whose spool has given up its reserve forwards nothing until it is back, and counts what it could not keep', async (ctx) => {
    const mount = fullDisk(ctx);
    if (mount === undefined) return;
    const registry = new Registry();
    const storage = new SqliteStorage(':memory:', randomBytes(32));
    const down = new Proxy(storage, {
      get(target, name) {
        if (name === 'insertRecord')
          return () => Promise.reject(Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' }));
        if (name === 'readiness') return () => Promise.resolve([{ name: 'records', ok: false, error: 'full' }]);
        const value = Reflect.get(target, name);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const spool = new RecordSpool(join(mount, 'records.spool'), 64 * 1024 * 1024, { reserveBytes: 1024 * 1024 });
    const guard = new StoreGuard(down, spool, pino({ level: 'silent' }), { registry, probeMs: 50 });
    expect(() => guard.assertWritable()).not.toThrow();
    fill(mount);
    // A finish of a reserved record: the store is full, the spool takes it in the reserve's room.
    await expect(guard.write(recordOf(1, { ...pad(1), status: 200 }), { upsert: true })).resolves.toBe('spooled');
    let lost = 0;
    for (let i = 2; i < 40; i++) await guard.write(recordOf(i, pad(i))).catch(() => lost++);
    expect(lost).toBeGreaterThan(0);
    expect(guard.unrecorded).toBe(lost);
    expect(() => guard.assertWritable()).toThrow(/unavailable/);
    const value = async (name: string) => (await registry.getSingleMetric(name)?.get())?.values[0]?.value;
    expect(await value('moat_verifier_records_unrecorded_total')).toBe(lost);
    rmSync(join(mount, 'filler'));
    for (let i = 0; i < 100 && !spool.reserveHeld; i++) await new Promise((r) => setTimeout(r, 50));
    expect(spool.reserveHeld).toBe(true);
    guard.close();
    spool.close();
    storage.close();
  });
});

describe('the store guard', () => {
  it('quarantines a record the store refuses for its content at once: the store stays up, the record is kept and counted', async () => {
    const registry = new Registry();
    const storage = new SqliteStorage(':memory:', randomBytes(32));
    const picky = new Proxy(storage, {
      get(target, name) {
        if (name === 'insertRecord')
          return (record: RequestRecord, options?: { upsert?: boolean }) =>
            record.model === 'bad'
              ? Promise.reject(Object.assign(new Error('unsupported Unicode escape sequence'), { code: '22P05' }))
              : target.insertRecord(record, options);
        const value = Reflect.get(target, name);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const spool = new RecordSpool(':memory:', 1024 * 1024);
    const guard = new StoreGuard(picky, spool, pino({ level: 'silent' }), { registry });
    await expect(guard.write(recordOf(1, { model: 'bad' }))).resolves.toBe('quarantined');
    await expect(guard.write(recordOf(2))).resolves.toBe('stored');
    expect(guard.down).toBeUndefined();
    expect(spool.quarantined()).toBe(1);
    expect(spool.count()).toBe(0);
    expect((await registry.getSingleMetric('moat_verifier_records_quarantined_total')?.get())?.values[0]?.value).toBe(1);
    guard.close();
    spool.close();
    storage.close();
  });
});
