import { closeSync, existsSync, openSync, readFileSync, readSync, renameSync, unlinkSync } from 'node:fs';
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

/**
 * A bounded, durable local spool for the records of requests answered while the record store
 * cannot be written: a SQLite file in WAL mode with `synchronous = FULL`, one row per record
 * with a sequence number, committed before the answer goes out. A torn write (a crash, a full
 * disk) fails its transaction and is never counted as written. {@link drain} moves the rows
 * into the store in order, each row deleted only after the store took it (an upsert by record
 * id), so a drain interrupted at any instant neither loses nor duplicates; records appended
 * while a drain runs get later sequence numbers and wait for the next one. A record the store
 * refuses for its content is moved to the quarantine table, never left to block the rest.
 * Keep the file on another volume than the database if a full disk is the failure to survive.
 */
export class RecordSpool {
  readonly #file: string;
  readonly #maxBytes: number;
  readonly #db: Database.Database;
  readonly #quarantine: Database.Statement;
  #bytes: number;
  #draining: Promise<DrainResult> | undefined;

  /**
   * Opens (creating) the spool; a spool of JSON lines from an earlier version is imported.
   *
   * @throws {VerifierConfigError} `spoolFile` when the file cannot be opened for writing.
   */
  constructor(file: string, maxBytes: number) {
    this.#file = file;
    this.#maxBytes = maxBytes;
    // An earlier version's spool of JSON lines moves aside (to one fixed name) and is imported below.
    const legacy = `${file}.jsonl`;
    const moveAside = file !== ':memory:' && isJsonLines(file);
    try {
      if (moveAside) renameSync(file, legacy);
      this.#db = new Database(file);
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma('synchronous = FULL');
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
    this.#bytes = this.#storedBytes();
    if (file !== ':memory:' && existsSync(legacy)) this.#importJsonLines(legacy);
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
   * Appends a record durably (committed and synced before it returns).
   *
   * @throws {SpoolError} when the spool is full or cannot be written.
   */
  append(record: RequestRecord): void {
    const text = JSON.stringify(record);
    const bytes = Buffer.byteLength(text);
    if (this.#bytes + bytes > this.#maxBytes)
      throw new SpoolError('ERR_SPOOL', `expected room in the spool ${this.#file} (${this.#maxBytes} bytes), got a full spool`);
    try {
      this.#db.prepare('INSERT INTO spool (id, record) VALUES (?, ?)').run(record.id, text);
    } catch (error) {
      throw new SpoolError('ERR_SPOOL', `expected to append to ${this.#file}, got ${error instanceof Error ? error.message : 'an error'}`, {
        cause: error,
      });
    }
    this.#bytes += bytes;
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
   * Moves every spooled record into the store, oldest first. Stops, keeping the rest, at the
   * first record the store cannot take for a reason other than its content (and throws that
   * error). One drain at a time: a call while one runs gets the running one.
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
    const toQuarantine = this.#db.transaction((seq: number, id: string, record: string, error: string) => {
      this.#quarantine.run(id, record, error, Date.now());
      remove.run(seq);
    });
    let after = 0;
    for (;;) {
      const rows = next.all(after, DRAIN_BATCH) as Array<{ seq: number; record: string }>;
      if (rows.length === 0) return { drained, quarantined };
      for (const row of rows) {
        after = row.seq;
        const record = JSON.parse(row.record) as RequestRecord;
        try {
          await target.insertRecord(record, { upsert: true });
        } catch (error) {
          if (!isContentError(error)) throw error;
          toQuarantine(row.seq, record.id, row.record, error instanceof Error ? error.message : String(error));
          this.#bytes -= Buffer.byteLength(row.record);
          quarantined++;
          continue;
        }
        remove.run(row.seq);
        this.#bytes -= Buffer.byteLength(row.record);
        drained++;
      }
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
      for (const record of records) this.append(record);
    })();
    this.#bytes = this.#storedBytes();
    unlinkSync(file);
  }

  #storedBytes(): number {
    return (this.#db.prepare('SELECT COALESCE(SUM(length(CAST(record AS BLOB))), 0) n FROM spool').get() as { n: number }).n;
  }

  close(): void {
    this.#db.close();
  }
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
