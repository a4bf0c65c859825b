import { createHmac, createSecretKey, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import type { NonceStore } from '@moat/attest/server';
import Database from 'better-sqlite3';
import { ReplayCacheResetError, VerifierConfigError } from './errors.js';
import { type CommitStats, GroupCommit, settle } from './group-commit.js';
import {
  ACTIVITY_COLUMNS,
  activityOf,
  andWhere,
  EXISTING_COLUMNS_SQL,
  FINISHED,
  finishReservedSql,
  insertRecordSql,
  type KeyActivity,
  migrationSql,
  type RecordQuery,
  type RecordSummary,
  type RequestRecord,
  recordOf,
  recordsIndexSql,
  recordsTableSql,
  recordWhere,
  rowOf,
  UNFINISHED,
} from './record-schema.js';

export type { KeyActivity, RecordQuery, RecordSummary, RequestRecord } from './record-schema.js';

import { type InstallStore, SqliteInstallStore } from './installs.js';

type MaybePromise<T> = T | Promise<T>;

/** What the verifier keeps of a Message Batch it forwarded: whose it is, and what each item needs when its result comes back. */
export interface BatchRow {
  /** The upstream's batch id (`msgbatch_…`). */
  readonly id: string;
  readonly keyId: string;
  /** The record of the create request. */
  readonly recordId: string;
  readonly created: number;
  /** Per `custom_id`: the model asked for (signatures bind it) and the names of the decoys injected. */
  readonly items: Readonly<Record<string, { readonly model: string; readonly decoys: readonly string[] }>>;
}

/** What the verifier keeps of a file uploaded through it: whose it is. */
export interface FileRow {
  /** The upstream's file id (`file_…`). */
  readonly id: string;
  readonly keyId: string;
  /** The record of the upload request. */
  readonly recordId: string;
  readonly created: number;
  /** The keys whose decoys the file's text held when it was uploaded (a request naming it brings them back). */
  readonly tracedTo?: ReadonlyArray<{ readonly apiKeyId: string; readonly confidence: number }>;
}

/** A row of the `files` table, either backend. */
export function fileRowOf(r: Record<string, unknown>): FileRow {
  const row = { id: r.id as string, keyId: r.key_id as string, recordId: r.record_id as string, created: Number(r.created) };
  let traced: FileRow['tracedTo'];
  try {
    traced = typeof r.traced === 'string' ? (JSON.parse(r.traced) as FileRow['tracedTo']) : undefined;
  } catch {
    // A column the verifier did not write: the file holds no evidence it can read.
    traced = undefined;
  }
  return traced === undefined || !Array.isArray(traced) || traced.length === 0 ? row : { ...row, tracedTo: traced };
}

/** The `traced` column of a file row: the keys its text named, or `null`. */
export function tracedColumn(file: FileRow): string | null {
  return file.tracedTo === undefined || file.tracedTo.length === 0 ? null : JSON.stringify(file.tracedTo);
}

/** The column the `files` table gained after it was first made, added where it is missing. */
export const FILES_TRACED_COLUMN = 'traced';

/** A row of the `batches` table, either backend. */
export function batchRowOf(r: Record<string, unknown>): BatchRow {
  return {
    id: r.id as string,
    keyId: r.key_id as string,
    recordId: r.record_id as string,
    created: Number(r.created),
    items: (typeof r.items === 'string' ? JSON.parse(r.items) : r.items) as BatchRow['items'],
  };
}

/** The stored form of an API key: HMAC-SHA-256 under the server secret. */
export function hashApiKey(pepper: Uint8Array | KeyObject, apiKey: string): Buffer {
  return createHmac('sha256', pepper).update(`moat-api-key/1|${apiKey}`).digest();
}

/** A fresh API key and its id. */
export function newApiKey(): { id: string; key: string } {
  return { id: `key_${randomBytes(6).toString('hex')}`, key: `sk-moat-${randomBytes(24).toString('base64url')}` };
}

/**
 * What the verifier stores, whatever the backend: SQLite embedded ({@link SqliteStorage}),
 * or PostgreSQL for records and statistics plus Redis for the replay cache
 * (`PgRedisStorage`) when several replicas run.
 */
export interface Storage extends NonceStore {
  /** Per-install keys: installs, enrollment records, challenges. */
  readonly installs: InstallStore;
  createApiKey(label: string): MaybePromise<{ id: string; key: string }>;
  importApiKey(id: string, key: string, label: string): MaybePromise<void>;
  lookupApiKey(key: string): MaybePromise<string | undefined>;
  listApiKeys(): MaybePromise<ApiKeyRow[]>;
  /**
   * The first instant (ms) the replay cache vouches for stamps made from then on: the start of
   * a new store, the last loss seen. A verifier waits for it before it serves, when it is ahead.
   */
  replayCacheSince(): number;
  /** Revokes a live API key by its id: true when one was revoked, false when none is live under it. */
  revokeApiKey(id: string): MaybePromise<boolean>;
  /** Writes a record; `upsert` replaces one of the same id (a reserved record finished, a spool drained). */
  insertRecord(record: RequestRecord, options?: { readonly upsert?: boolean }): MaybePromise<void>;
  finishRecord(id: string, status: number, latencyMs: number): MaybePromise<void>;
  /** Records matching `query`, newest first (at most `limit`, default 100). */
  queryRecords(query: RecordQuery): MaybePromise<RequestRecord[]>;
  /**
   * Counts of verdicts and attestation results of finished records (`total` is their number),
   * over everything or a time range, and the records not finished: in flight, or reserved
   * before forwarding by a process that was then killed.
   */
  summary(range?: { since?: number; until?: number }): MaybePromise<RecordSummary>;
  /** Per-key traffic in a time range (keys without requests in it are left out). */
  keyActivity(range?: { since?: number; until?: number }): MaybePromise<KeyActivity[]>;
  sweepNonces(now?: number): MaybePromise<number>;
  /** Revokes an attestation key id for good (every replica reads it). */
  revokeKid(kid: string, reason: string): MaybePromise<void>;
  /** Attestation key ids revoked, oldest first. */
  revokedKids(): MaybePromise<Array<{ kid: string; reason: string; at: number }>>;
  /** Requests that brought back a decoy, per API key id. */
  decoyHits(): MaybePromise<Record<string, number>>;
  insertTelemetry(keyId: string | null, events: ReadonlyArray<{ type: string; ts: number }>): MaybePromise<void>;
  telemetryCounts(): MaybePromise<Record<string, number>>;
  saveSnapshot(name: string, data: unknown): MaybePromise<void>;
  loadSnapshot(name: string): MaybePromise<unknown>;
  rememberUpstreamSignature(ours: string, theirs: string): MaybePromise<void>;
  upstreamSignature(ours: string): MaybePromise<string | undefined>;
  /** Keeps a forwarded Message Batch: its owner and what its results need. */
  saveBatch(batch: BatchRow): MaybePromise<void>;
  /** A Message Batch this verifier forwarded, by the upstream's id. */
  batchOf(id: string): MaybePromise<BatchRow | undefined>;
  /** The ids of the Message Batches `keyId` created. */
  batchIds(keyId: string): MaybePromise<string[]>;
  /** Keeps the owner of a file uploaded through the verifier. */
  saveFile(file: FileRow): MaybePromise<void>;
  /** A file uploaded through this verifier, by the upstream's id. */
  fileOf(id: string): MaybePromise<FileRow | undefined>;
  /** The ids of the files `keyId` uploaded. */
  fileIds(keyId: string): MaybePromise<string[]>;
  /** Forgets a file (deleted upstream). */
  deleteFile(id: string): MaybePromise<void>;
  /** Throws when the backend is unreachable. */
  ping(): MaybePromise<void>;
  /**
   * Whether each part can be written now — `records` and `replay_cache` — with a real write on
   * the path requests use (a record inserted and undone: a full disk, a read-only file or a
   * locked records table fails it). Never throws.
   */
  readiness(): Promise<ReadinessCheck[]>;
  close(): MaybePromise<void>;
}

/** One dependency's readiness. */
export interface ReadinessCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly error?: string;
}

/** Runs a readiness probe, bounded in time; a failure or a time-out is `ok: false`. */
export async function probe(name: string, run: () => unknown, timeoutMs = 1_000): Promise<ReadinessCheck> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      Promise.resolve().then(run),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return { name, ok: true };
  } catch (error) {
    return { name, ok: false, error: error instanceof Error ? error.message : String(error) };
  } finally {
    clearTimeout(timer);
  }
}

/** An API key as stored: never the key, only a keyed hash. */
export interface ApiKeyRow {
  readonly id: string;
  readonly label: string;
  readonly created: number;
}

/**
 * The verifier's storage on SQLite (WAL): API keys (hashed with the server secret), request
 * records, telemetry, nonces for the replay cache, statistics snapshots and the upstream
 * signatures of signed blocks. A request's record and nonce are committed before it is
 * answered (in a group commit shared with the other requests of the same event-loop turn),
 * so a crash loses nothing that was answered.
 */
export class SqliteStorage implements Storage {
  readonly db: Database.Database;
  readonly installs: InstallStore;
  readonly #pepper: KeyObject;
  readonly #lookupKey: Database.Statement;
  readonly #insertRecord: Database.Statement;
  readonly #upsertRecord: Database.Statement;
  readonly #finishReserved: { readonly statement: Database.Statement; readonly params: (row: readonly unknown[]) => unknown[] };
  readonly #probeWrite: () => void;
  readonly #finishRecord: Database.Statement;
  readonly #insertNonce: Database.Statement;
  readonly #rememberSignature: Database.Statement;
  readonly #lookupSignature: Database.Statement;
  // Group commit: writes a request must have made durable before it is answered (its
  // record, its nonce) are queued and committed in one transaction per turn of the event
  // loop. Under load that is one WAL commit for many requests instead of one each.
  readonly #group: GroupCommit<() => unknown, unknown>;
  /** When this database's replay cache began (ms, a whole second), 0 for a database made before it was kept. */
  readonly #noncesSinceMs: number;
  /** The attestation window in seconds: a stamp outside it is refused as stale, whatever the cache says. */
  readonly #windowSec: number;

  /**
   * @throws {VerifierConfigError} `database` when the file cannot be opened for writing
   * (a read-only file system, a missing directory).
   */
  /**
   * `windowSec`: the attestation window (default 300). `replayCacheSince`: for a new database,
   * when its replay cache begins vouching for stamps (ms) — by default the next whole second, as
   * a database that may replace a lost one must; 0 only for a first database, where no request
   * was ever served (a demo, a test).
   */
  constructor(path: string, pepper: Uint8Array, options: { readonly windowSec?: number; readonly replayCacheSince?: number } = {}) {
    try {
      this.db = new Database(path);
      this.db.pragma('journal_mode = WAL');
    } catch (error) {
      throw new VerifierConfigError(
        'database',
        `a writable SQLite database at ${path}`,
        error instanceof Error ? error.message : String(error),
      );
    }
    this.#pepper = createSecretKey(pepper);
    // A database without a nonces table is new: its replay cache knows nothing from before now.
    const noncesExisted = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nonces'").get() !== undefined;
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    // Every commit rewrites the same few right-edge B-tree pages; checkpointing every 10,000
    // WAL pages (about 40 MB) instead of 1,000 copies them back far less often.
    this.db.pragma('wal_autocheckpoint = 10000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, label TEXT NOT NULL, created INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
      ${recordsTableSql('sqlite')}
      -- WITHOUT ROWID: one B-tree per nonce written, not a table and its key index.
      CREATE TABLE IF NOT EXISTS nonces (kid TEXT NOT NULL, nonce TEXT NOT NULL, expires INTEGER NOT NULL, PRIMARY KEY (kid, nonce)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS telemetry (ts INTEGER NOT NULL, key_id TEXT, type TEXT NOT NULL, event TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS snapshots (name TEXT PRIMARY KEY, data TEXT NOT NULL, updated INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS upstream_signatures (ours TEXT PRIMARY KEY, theirs TEXT NOT NULL, created INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS revoked_kids (kid TEXT PRIMARY KEY, reason TEXT NOT NULL, at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, record_id TEXT NOT NULL, created INTEGER NOT NULL, items TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS batches_key ON batches (key_id, created);
      CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, record_id TEXT NOT NULL, created INTEGER NOT NULL, traced TEXT);
      CREATE INDEX IF NOT EXISTS files_key ON files (key_id, created);
    `);
    // A database made before a signal existed gains its column.
    const existing = (this.db.prepare(EXISTING_COLUMNS_SQL.sqlite).all() as Array<{ name: string }>).map((c) => c.name);
    for (const sql of migrationSql('sqlite', existing)) this.db.exec(sql);
    this.db.exec(recordsIndexSql());
    const fileColumns = (this.db.prepare('PRAGMA table_info(files)').all() as Array<{ name: string }>).map((c) => c.name);
    if (!fileColumns.includes(FILES_TRACED_COLUMN)) this.db.exec(`ALTER TABLE files ADD COLUMN ${FILES_TRACED_COLUMN} TEXT`);
    // A new database may replace one that was lost (a container without a volume, a file
    // deleted) while the same keys are provisioned again: the nonces spent in the old one are
    // gone, so stamps made before this one began are refused, retryably, for one window. It
    // begins at the next whole second: a stamp is dated in whole seconds, so one made in this
    // second may predate the database (the verifier waits for that second before it serves).
    if (!noncesExisted)
      this.db
        .prepare("INSERT OR IGNORE INTO meta (name, value) VALUES ('nonces_since', ?)")
        .run(String(options.replayCacheSince ?? nextWholeSecond(Date.now())));
    this.#windowSec = options.windowSec ?? 300;
    this.#noncesSinceMs = Number(
      (this.db.prepare("SELECT value FROM meta WHERE name = 'nonces_since'").get() as { value: string } | undefined)?.value ?? 0,
    );
    this.installs = new SqliteInstallStore(this.db);
    this.#insertRecord = this.db.prepare(insertRecordSql('sqlite', 'insert'));
    this.#upsertRecord = this.db.prepare(insertRecordSql('sqlite', 'upsert'));
    const finish = finishReservedSql();
    this.#finishReserved = { statement: this.db.prepare(finish.sql), params: finish.params };
    // The write requests make, undone in the same transaction: what readiness and start-up check.
    const probeInsert = this.db.prepare(
      "INSERT OR IGNORE INTO records (id, ts, attestation, fingerprint, gateway, relay, thinking, verdict, reasons) VALUES ('~probe', 0, 'missing', 'missing', '[]', '[]', 'none', 'allow', '[]')",
    );
    const probeDelete = this.db.prepare("DELETE FROM records WHERE id = '~probe'");
    this.#probeWrite = this.db.transaction(() => {
      probeInsert.run();
      probeDelete.run();
    });
    try {
      this.#probeWrite();
    } catch (error) {
      // Read-only files start nothing: the records of answered requests could not be kept.
      throw new VerifierConfigError(
        'database',
        `a writable SQLite database at ${path}`,
        error instanceof Error ? error.message : String(error),
      );
    }
    this.#finishRecord = this.db.prepare('UPDATE records SET status = ?, latency_ms = ? WHERE id = ?');
    this.#lookupKey = this.db.prepare('SELECT id, hash FROM api_keys WHERE hash = ? AND revoked = 0');
    this.#insertNonce = this.db.prepare('INSERT OR IGNORE INTO nonces (kid, nonce, expires) VALUES (?, ?, ?)');
    this.#rememberSignature = this.db.prepare('INSERT OR REPLACE INTO upstream_signatures (ours, theirs, created) VALUES (?, ?, ?)');
    this.#lookupSignature = this.db.prepare('SELECT theirs FROM upstream_signatures WHERE ours = ?');
    // A failing statement undoes itself only (SQLite's statement journal); the others in the batch still commit.
    const commit = this.db.transaction((ops: ReadonlyArray<() => unknown>) => ops.map((run) => settle(run)));
    this.#group = new GroupCommit((ops) => commit(ops));
  }

  /** Runs a write in the next group commit; settles once that commit is durable. */
  #enqueue<T>(run: () => T): Promise<T> {
    return this.#group.write(run) as Promise<T>;
  }

  /** Group commits run so far and the writes they carried. */
  get commitStats(): CommitStats {
    return this.#group.stats;
  }

  /** When this database's replay cache began vouching for stamps (ms; 0 for a database made before that was kept). */
  replayCacheSince(): number {
    return this.#noncesSinceMs;
  }

  #hash(apiKey: string): Buffer {
    return hashApiKey(this.#pepper, apiKey);
  }

  /** Creates an API key; the key is returned once and only its keyed hash is stored. */
  createApiKey(label: string): { id: string; key: string } {
    const { id, key } = newApiKey();
    this.db.prepare('INSERT INTO api_keys (id, hash, label, created) VALUES (?, ?, ?, ?)').run(id, this.#hash(key), label, Date.now());
    return { id, key };
  }

  /** Registers a key chosen elsewhere (tests, migrations). */
  importApiKey(id: string, key: string, label: string): void {
    this.db
      .prepare('INSERT OR REPLACE INTO api_keys (id, hash, label, created) VALUES (?, ?, ?, ?)')
      .run(id, this.#hash(key), label, Date.now());
  }

  /** The id of a live API key, by its hash (constant-time comparison of the stored hash). */
  lookupApiKey(key: string): string | undefined {
    const hash = this.#hash(key);
    const row = this.#lookupKey.get(hash) as { id: string; hash: Buffer } | undefined;
    return row !== undefined && timingSafeEqual(row.hash, hash) ? row.id : undefined;
  }

  revokeApiKey(id: string): boolean {
    return this.db.prepare('UPDATE api_keys SET revoked = 1 WHERE id = ? AND revoked = 0').run(id).changes === 1;
  }

  listApiKeys(): ApiKeyRow[] {
    return this.db.prepare('SELECT id, label, created FROM api_keys WHERE revoked = 0 ORDER BY created').all() as ApiKeyRow[];
  }

  /** Writes a request record; resolves once it is committed (before the request is answered). */
  insertRecord(record: RequestRecord, options: { readonly upsert?: boolean } = {}): Promise<void> {
    const row = rowOf(record);
    if (options.upsert !== true)
      return this.#enqueue(() => {
        this.#insertRecord.run(row);
      });
    // A reserved record is finished in place (fewer pages rewritten per commit); anything else
    // (no such row, or one with another time or key) is written whole.
    const finish = this.#finishReserved;
    const params = finish.params(row);
    return this.#enqueue(() => {
      if (finish.statement.run(params).changes === 0) this.#upsertRecord.run(row);
    });
  }

  /** Completes a record with the response status and latency. */
  finishRecord(id: string, status: number, latencyMs: number): void {
    this.#finishRecord.run(status, Math.round(latencyMs), id);
  }

  queryRecords(query: RecordQuery): RequestRecord[] {
    const { where, params } = recordWhere(query, 'sqlite');
    const rows = this.db
      .prepare(`SELECT * FROM records ${where} ORDER BY ts DESC, rowid DESC LIMIT ?`)
      .all(...params, query.limit ?? 100) as Array<Record<string, unknown>>;
    return rows.map(recordOf);
  }

  /** Counts of verdicts and attestation results, for the admin API and metrics. */
  summary(range: { since?: number; until?: number } = {}): RecordSummary {
    const { where, params } = recordWhere(range, 'sqlite');
    const finished = andWhere(where, FINISHED);
    const count = (column: 'verdict' | 'attestation') => {
      const out: Record<string, number> = {};
      for (const r of this.db
        .prepare(`SELECT ${column} v, COUNT(*) n FROM records ${finished} GROUP BY ${column}`)
        .all(...params) as Array<{
        v: string;
        n: number;
      }>)
        out[r.v] = r.n;
      return out;
    };
    const verdicts = count('verdict');
    const unfinished = (this.db.prepare(`SELECT COUNT(*) n FROM records ${andWhere(where, UNFINISHED)}`).get(...params) as { n: number }).n;
    return { verdicts, attestation: count('attestation'), total: Object.values(verdicts).reduce((a, b) => a + b, 0), unfinished };
  }

  keyActivity(range: { since?: number; until?: number } = {}): KeyActivity[] {
    const { where, params } = recordWhere(range, 'sqlite');
    const scope = where === '' ? 'WHERE key_id IS NOT NULL' : `${where} AND key_id IS NOT NULL`;
    const rows = this.db.prepare(`SELECT key_id, ${ACTIVITY_COLUMNS} FROM records ${scope} GROUP BY key_id`).all(...params) as Array<
      Record<string, number | string>
    >;
    const gateways = new Map<string, string[]>();
    for (const g of this.db
      .prepare(`SELECT DISTINCT key_id, j.value g FROM records, json_each(records.gateway) j ${scope} ORDER BY g`)
      .all(...params) as Array<{ key_id: string; g: string }>)
      gateways.set(g.key_id, [...(gateways.get(g.key_id) ?? []), g.g]);
    return rows.map((r) => activityOf(r, gateways.get(r.key_id as string) ?? []));
  }

  revokeKid(kid: string, reason: string): void {
    this.db.prepare('INSERT OR IGNORE INTO revoked_kids (kid, reason, at) VALUES (?, ?, ?)').run(kid, reason, Date.now());
  }

  revokedKids(): Array<{ kid: string; reason: string; at: number }> {
    return this.db.prepare('SELECT kid, reason, at FROM revoked_kids ORDER BY at').all() as Array<{
      kid: string;
      reason: string;
      at: number;
    }>;
  }

  decoyHits(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.db
      .prepare("SELECT key_id, COUNT(*) n FROM records WHERE decoy = 'hit' AND key_id IS NOT NULL GROUP BY key_id")
      .all() as Array<{
      key_id: string;
      n: number;
    }>)
      out[r.key_id] = r.n;
    return out;
  }

  /**
   * NonceStore: true when the nonce is new, once it is committed (and kept until it expires).
   * A stamp made before this database's replay cache began (`madeAt`, whole seconds), still
   * within the window, is refused: its nonce may have been spent in a database this one
   * replaced (`windowSec`, default 300, as the verifier's). One outside the window is left to
   * be refused as stale.
   *
   * @throws {ReplayCacheResetError} for such a stamp (answered `503`, retryably: a fresh stamp passes).
   */
  async add(kid: string, nonce: string, expiresAt: number, madeAt?: number): Promise<boolean> {
    const added = await this.#enqueue(() => this.#insertNonce.run(kid, nonce, expiresAt).changes === 1);
    if (madeAt !== undefined && madeAt * 1000 < this.#noncesSinceMs && withinWindow(madeAt, this.#windowSec))
      throw new ReplayCacheResetError(
        'ERR_REPLAY_CACHE_RESET',
        `expected a stamp made after this database's replay cache began (${new Date(this.#noncesSinceMs).toISOString()}), got one from before`,
      );
    return added;
  }

  /** Drops expired nonces. */
  sweepNonces(now = Math.floor(Date.now() / 1000)): number {
    return this.db.prepare('DELETE FROM nonces WHERE expires < ?').run(now).changes;
  }

  insertTelemetry(keyId: string | null, events: ReadonlyArray<{ type: string; ts: number }>): void {
    const insert = this.db.prepare('INSERT INTO telemetry (ts, key_id, type, event) VALUES (?, ?, ?, ?)');
    this.db.transaction(() => {
      for (const e of events) insert.run(e.ts, keyId, e.type, JSON.stringify(e));
    })();
  }

  telemetryCounts(): Record<string, number> {
    const rows = this.db.prepare('SELECT type, COUNT(*) n FROM telemetry GROUP BY type').all() as Array<{ type: string; n: number }>;
    // Own properties whatever a client named its event type ("__proto__" included).
    return Object.fromEntries(rows.map((r) => [r.type, r.n]));
  }

  saveSnapshot(name: string, data: unknown): void {
    this.db.prepare('INSERT OR REPLACE INTO snapshots (name, data, updated) VALUES (?, ?, ?)').run(name, JSON.stringify(data), Date.now());
  }

  loadSnapshot(name: string): unknown {
    const row = this.db.prepare('SELECT data FROM snapshots WHERE name = ?').get(name) as { data: string } | undefined;
    return row === undefined ? undefined : JSON.parse(row.data);
  }

  /** Joins the turn's group commit: the blocks of one answer and its record share commits, not one each. */
  rememberUpstreamSignature(ours: string, theirs: string): Promise<void> {
    const created = Date.now();
    return this.#enqueue(() => {
      this.#rememberSignature.run(ours, theirs, created);
    });
  }

  upstreamSignature(ours: string): string | undefined {
    return (this.#lookupSignature.get(ours) as { theirs: string } | undefined)?.theirs;
  }

  saveBatch(batch: BatchRow): Promise<void> {
    return this.#enqueue(() => {
      this.db
        .prepare('INSERT OR REPLACE INTO batches (id, key_id, record_id, created, items) VALUES (?, ?, ?, ?, ?)')
        .run(batch.id, batch.keyId, batch.recordId, batch.created, JSON.stringify(batch.items));
    });
  }

  batchOf(id: string): BatchRow | undefined {
    const r = this.db.prepare('SELECT * FROM batches WHERE id = ?').get(id) as Record<string, unknown> | undefined;
    return r === undefined ? undefined : batchRowOf(r);
  }

  batchIds(keyId: string): string[] {
    return (this.db.prepare('SELECT id FROM batches WHERE key_id = ? ORDER BY created').all(keyId) as Array<{ id: string }>).map(
      (r) => r.id,
    );
  }

  saveFile(file: FileRow): Promise<void> {
    return this.#enqueue(() => {
      this.db
        .prepare('INSERT OR IGNORE INTO files (id, key_id, record_id, created, traced) VALUES (?, ?, ?, ?, ?)')
        .run(file.id, file.keyId, file.recordId, file.created, tracedColumn(file));
    });
  }

  fileOf(id: string): FileRow | undefined {
    const r = this.db.prepare('SELECT * FROM files WHERE id = ?').get(id) as Record<string, unknown> | undefined;
    return r === undefined ? undefined : fileRowOf(r);
  }

  fileIds(keyId: string): string[] {
    return (this.db.prepare('SELECT id FROM files WHERE key_id = ? ORDER BY created').all(keyId) as Array<{ id: string }>).map((r) => r.id);
  }

  deleteFile(id: string): Promise<void> {
    return this.#enqueue(() => {
      this.db.prepare('DELETE FROM files WHERE id = ?').run(id);
    });
  }

  ping(): void {
    this.db.prepare('SELECT 1').get();
  }

  async readiness(): Promise<ReadinessCheck[]> {
    // A real write: a full disk or a read-only file fails here, where a read would succeed.
    const check = await probe('records', () => this.#probeWrite());
    return [check, { ...check, name: 'replay_cache' }];
  }

  close(): void {
    // The commit is synchronous: the queued writes are in the database before it closes.
    void this.#group.flush();
    this.db.close();
  }
}

/** Whether a stamp made at `madeAt` (Unix seconds) is within the window now: only then can a replay cache's answer let it through. */
export function withinWindow(madeAt: number, windowSec: number, now = Math.floor(Date.now() / 1000)): boolean {
  return Math.abs(now - madeAt) <= windowSec;
}

/** The start of the next whole second after `ms`. */
export function nextWholeSecond(ms: number): number {
  return (Math.floor(ms / 1000) + 1) * 1000;
}
