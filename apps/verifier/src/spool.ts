import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statfsSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { SpoolError, VerifierConfigError } from './errors.js';
import type { RequestRecord } from './storage.js';
import { isContentError } from './store-boundary.js';

export { SpoolError } from './errors.js';

/** Where drained records go: an upsert by id, so writing one twice leaves one row. */
export interface SpoolTarget {
  insertRecord(record: RequestRecord, options?: { readonly upsert?: boolean }): unknown;
}

/** What one drain did. */
export interface DrainResult {
  /** Records now in the store. */
  readonly drained: number;
  /** Records the store refused for their content, moved to the quarantine. */
  readonly quarantined: number;
}

/** A record the store refused for its content, kept in the spool file's quarantine. */
export interface QuarantinedRecord {
  readonly record: RequestRecord;
  readonly error: string;
  readonly at: number;
}

const SQLITE_MAGIC = 'SQLite format 3\0';
const DRAIN_BATCH = 200;
const RESERVE_CHUNK = Buffer.alloc(1024 * 1024);

/** A spooled record as stored. */
interface Row {
  readonly seq: number;
  readonly record: string;
}

/** Options of {@link RecordSpool}. */
export interface RecordSpoolOptions {
  /**
   * Disk space held back for the records of answers already paid for (default 0: none): a
   * file of this size beside the spool (`<spool>.reserve`), given up the moment such a record
   * finds the disk full, so it can still be written.
   */
  readonly reserveBytes?: number;
}

/** What an append is for: `finish` completes a record reserved before its request was forwarded. */
export interface AppendOptions {
  readonly finish?: boolean;
}

/**
 * A bounded, durable local spool for the records of requests answered while the record store
 * cannot be written: a SQLite file in WAL mode with `synchronous = FULL`, one row per record
 * with a sequence number, committed before the answer goes out. A torn write (a crash, a full
 * disk) fails its transaction and is never counted as written. {@link drain} moves the rows
 * into the store in order, each row deleted only after the store took it (an upsert by record
 * id), so a drain interrupted at any instant neither loses nor duplicates; records appended
 * while a drain runs get later sequence numbers and wait for the next one. A record the store
 * refuses for its content is moved to the quarantine table, never left to block the rest.
 *
 * A full disk must not cost an answer the upstream was already paid for: with `reserveBytes`,
 * the spool keeps a file of that size beside it and gives it up when a finish (an append with
 * `finish`) finds the disk full, then writes the finish in the room it made. From then until
 * the reserve is back ({@link restoreReserve}), only finishes are taken — refusals are not
 * kept — and the size cap (`maxBytes`) never refuses a finish: those are bounded by the
 * requests in flight, the cap by what the refusals of an outage add up to.
 */
export class RecordSpool {
  readonly #file: string;
  readonly #maxBytes: number;
  readonly #db: Database.Database;
  readonly #quarantine: Database.Statement;
  readonly #reserveFile: string | undefined;
  readonly #reserveBytes: number;
  readonly #insert: Database.Statement;
  #reserved = false;
  #bytes: number;
  #draining: Promise<DrainResult> | undefined;

  /**
   * Opens (creating) the spool; a spool of JSON lines from an earlier version is imported.
   * The reserve is made when there is room for it; when there is not, {@link reserveHeld}
   * says so until {@link restoreReserve} makes it.
   *
   * @throws {VerifierConfigError} `spoolFile` when the file cannot be opened for writing.
   */
  constructor(file: string, maxBytes: number, options: RecordSpoolOptions = {}) {
    this.#file = file;
    this.#maxBytes = maxBytes;
    this.#reserveBytes = Math.max(0, Math.floor(options.reserveBytes ?? 0));
    this.#reserveFile = file === ':memory:' || this.#reserveBytes === 0 ? undefined : `${file}.reserve`;
    // An earlier version's spool of JSON lines moves aside (to one fixed name) and is imported below.
    const legacy = `${file}.jsonl`;
    const moveAside = file !== ':memory:' && isJsonLines(file);
    try {
      if (moveAside) renameSync(file, legacy);
      this.#db = new Database(file);
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma('synchronous = FULL');
      // A short write-ahead log (400 KiB, reused after each checkpoint): what a full disk must still have room for is small.
      this.#db.pragma('wal_autocheckpoint = 100');
      this.#db.pragma('busy_timeout = 5000');
      this.#db.exec(`
        CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, record TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS quarantine (
          seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, record TEXT NOT NULL, error TEXT NOT NULL, at INTEGER NOT NULL);
      `);
      // A real write: a read-only file or directory fails here, at start, not under traffic.
      this.#db.exec('BEGIN IMMEDIATE; DELETE FROM spool WHERE seq < 0; COMMIT');
    } catch (error) {
      throw new VerifierConfigError(
        'spoolFile',
        `a writable spool file at ${file}`,
        error instanceof Error ? error.message : String(error),
      );
    }
    // One row per record id: a record refused twice (reserved, then finished) is kept once, as last written.
    this.#quarantine = this.#db.prepare(
      `INSERT INTO quarantine (id, record, error, at) VALUES (?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET record = excluded.record, error = excluded.error, at = excluded.at`,
    );
    this.#insert = this.#db.prepare('INSERT INTO spool (id, record) VALUES (?, ?)');
    this.#bytes = this.#storedBytes();
    if (file !== ':memory:' && existsSync(legacy)) this.#importJsonLines(legacy);
    this.restoreReserve();
  }

  /** Whether the reserve is in place (always, when there is none to keep). */
  get reserveHeld(): boolean {
    return this.#reserveFile === undefined || this.#reserved;
  }

  /**
   * Makes the reserve file when it is missing, its bytes written and synced (a sparse file
   * would hold no room) — only when the disk has room for it twice over, so a reserve just
   * given up is not made again in the room it left (while the disk stays full). A disk
   * without room for it leaves none behind.
   *
   * @returns whether the reserve is in place.
   */
  restoreReserve(): boolean {
    const path = this.#reserveFile;
    if (path === undefined || this.#reserved) return true;
    let fd: number | undefined;
    try {
      if (!existsSync(path) && freeBytes(dirname(path)) < 2 * this.#reserveBytes) return false;
      fd = openSync(path, 'w');
      for (let left = this.#reserveBytes; left > 0; left -= RESERVE_CHUNK.length)
        writeSync(fd, RESERVE_CHUNK, 0, Math.min(left, RESERVE_CHUNK.length));
      fsyncSync(fd);
      this.#reserved = true;
    } catch {
      this.#reserved = false;
    } finally {
      if (fd !== undefined) closeSync(fd);
      if (!this.#reserved) rmSync(path, { force: true });
    }
    return this.#reserved;
  }

  /** Gives the reserve's room back to the disk; whether there was one to give. */
  #releaseReserve(): boolean {
    if (this.#reserveFile === undefined || !this.#reserved) return false;
    rmSync(this.#reserveFile, { force: true });
    this.#reserved = false;
    return true;
  }

  get file(): string {
    return this.#file;
  }

  /** Bytes of records waiting in the spool. */
  size(): number {
    return this.#bytes;
  }

  /** Records waiting in the spool. */
  count(): number {
    return (this.#db.prepare('SELECT COUNT(*) n FROM spool').get() as { n: number }).n;
  }

  /**
   * Appends a record durably (committed and synced before it returns). A `finish` is taken
   * past the size cap, and on a full disk gives up the reserve and is written in its room.
   *
   * @throws {SpoolError} when the spool is full or cannot be written, or (not a finish) while
   * its reserve is given up.
   */
  append(record: RequestRecord, options: AppendOptions = {}): void {
    const text = JSON.stringify(record);
    const bytes = Buffer.byteLength(text);
    const finish = options.finish === true;
    if (!finish) {
      if (this.#bytes + bytes > this.#maxBytes)
        throw new SpoolError('ERR_SPOOL', `expected room in the spool ${this.#file} (${this.#maxBytes} bytes), got a full spool`);
      if (!this.reserveHeld)
        throw new SpoolError(
          'ERR_SPOOL',
          `expected room in the spool ${this.#file}, got a full disk (its reserve is kept for the records of answers in flight)`,
        );
    }
    try {
      this.#insert.run(record.id, text);
    } catch (error) {
      if (!(finish && isDiskFull(error) && this.#releaseReserve())) throw this.#appendError(error);
      try {
        this.#insert.run(record.id, text);
      } catch (again) {
        throw this.#appendError(again);
      }
    }
    this.#bytes += bytes;
  }

  #appendError(error: unknown): SpoolError {
    return new SpoolError('ERR_SPOOL', `expected to append to ${this.#file}, got ${error instanceof Error ? error.message : 'an error'}`, {
      cause: error,
    });
  }

  /** Records in the quarantine. */
  quarantined(): number {
    return (this.#db.prepare('SELECT COUNT(*) n FROM quarantine').get() as { n: number }).n;
  }

  /** The quarantined records, oldest first. */
  quarantine(limit = 100): QuarantinedRecord[] {
    return (
      this.#db.prepare('SELECT record, error, at FROM quarantine ORDER BY seq LIMIT ?').all(limit) as Array<{
        record: string;
        error: string;
        at: number;
      }>
    ).map((r) => ({ record: JSON.parse(r.record) as RequestRecord, error: r.error, at: r.at }));
  }

  /**
   * Keeps a record the store refused for its content (not spooled: it would never drain).
   *
   * @throws {SpoolError} when the spool file cannot be written.
   */
  keep(record: RequestRecord, error: string): void {
    try {
      this.#quarantine.run(record.id, JSON.stringify(record), error, Date.now());
    } catch (cause) {
      throw new SpoolError('ERR_SPOOL', `expected to quarantine ${record.id} in ${this.#file}, got ${String(cause)}`, { cause });
    }
  }

  /**
   * Moves every spooled record into the store, oldest batch first (up to 200 records sent at
   * once, their rows deleted in one transaction once the store took them). Stops, keeping the
   * rest, after a batch with a record the store could not take for a reason other than its
   * content (and throws that error). One drain at a time: a call while one runs gets the running one.
   */
  drain(target: SpoolTarget): Promise<DrainResult> {
    this.#draining ??= this.#drainAll(target).finally(() => {
      this.#draining = undefined;
    });
    return this.#draining;
  }

  async #drainAll(target: SpoolTarget): Promise<DrainResult> {
    let drained = 0;
    let quarantined = 0;
    const next = this.#db.prepare('SELECT seq, record FROM spool WHERE seq > ? ORDER BY seq LIMIT ?');
    const remove = this.#db.prepare('DELETE FROM spool WHERE seq = ?');
    // One synced transaction per batch, not one per row: a drain is bound by the store, not by the spool's fsyncs.
    const settle = this.#db.transaction((taken: readonly Row[], refused: ReadonlyArray<{ row: Row; id: string; error: string }>) => {
      for (const row of taken) remove.run(row.seq);
      for (const { row, id, error } of refused) {
        this.#quarantine.run(id, row.record, error, Date.now());
        remove.run(row.seq);
      }
    });
    let after = 0;
    for (;;) {
      const rows = next.all(after, DRAIN_BATCH) as Row[];
      if (rows.length === 0) return { drained, quarantined };
      after = rows[rows.length - 1]?.seq ?? after;
      // The batch goes to the store at once: an upsert by id each, so their order does not matter —
      // but of two rows of one id only the later is sent, and the earlier one goes with it.
      const latest = new Map<string, { row: Row; record: RequestRecord; earlier: Row[] }>();
      for (const row of rows) {
        const record = JSON.parse(row.record) as RequestRecord;
        const before = latest.get(record.id);
        latest.set(record.id, { row, record, earlier: before === undefined ? [] : [...before.earlier, before.row] });
      }
      const sent = [...latest.values()];
      const outcomes = await Promise.allSettled(sent.map(({ record }) => target.insertRecord(record, { upsert: true })));
      const taken: Row[] = [];
      const refused: Array<{ row: Row; id: string; error: string }> = [];
      let failure: unknown;
      outcomes.forEach((outcome, i) => {
        const { row, record, earlier } = sent[i] as (typeof sent)[number];
        if (outcome.status === 'fulfilled') taken.push(...earlier, row);
        else if (isContentError(outcome.reason)) {
          taken.push(...earlier);
          refused.push({ row, id: record.id, error: outcome.reason instanceof Error ? outcome.reason.message : String(outcome.reason) });
        } else failure ??= outcome.reason;
      });
      settle(taken, refused);
      for (const row of [...taken, ...refused.map((r) => r.row)]) this.#bytes -= Buffer.byteLength(row.record);
      drained += taken.length;
      quarantined += refused.length;
      // Rows the store could not take stay, for the next drain.
      if (failure !== undefined) throw failure;
    }
  }

  /**
   * Imports the records of a JSON-lines spool (an earlier version's format) in one
   * transaction, then deletes it; a crash in between imports it again on the next start, and
   * the drain's upsert by id keeps one row per record. A torn last line is skipped: it was
   * never acknowledged.
   */
  #importJsonLines(file: string): void {
    const records = readFileSync(file, 'utf8')
      .split('\n')
      .flatMap((line) => {
        try {
          return line === '' ? [] : [JSON.parse(line) as RequestRecord];
        } catch {
          return [];
        }
      });
    this.#db.transaction(() => {
      for (const record of records) this.#insert.run(record.id, JSON.stringify(record));
    })();
    this.#bytes = this.#storedBytes();
    unlinkSync(file);
  }

  #storedBytes(): number {
    return (this.#db.prepare('SELECT COALESCE(SUM(length(CAST(record AS BLOB))), 0) n FROM spool').get() as { n: number }).n;
  }

  /** Closes the file; the reserve stays on disk for the next start. */
  close(): void {
    this.#db.close();
  }
}

/** Bytes an unprivileged writer may still use on the file system holding `dir`. */
function freeBytes(dir: string): number {
  const fs = statfsSync(dir);
  return fs.bavail * fs.bsize;
}

/** Whether a write failed for want of disk space (SQLite's `SQLITE_FULL`, or the system's `ENOSPC`). */
function isDiskFull(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'SQLITE_FULL' || code === 'ENOSPC' || (typeof code === 'string' && code.startsWith('SQLITE_IOERR'));
}

/** Whether `file` exists and is not a SQLite database (a spool of JSON lines, or empty). */
function isJsonLines(file: string): boolean {
  if (!existsSync(file)) return false;
  const head = Buffer.alloc(SQLITE_MAGIC.length);
  const fd = openSync(file, 'r');
  try {
    const n = readSync(fd, head, 0, head.length, 0);
    return n > 0 && head.toString('latin1', 0, n) !== SQLITE_MAGIC.slice(0, n);
  } finally {
    closeSync(fd);
  }
}
