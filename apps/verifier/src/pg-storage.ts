import { createSecretKey, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import { errorMessage } from '@moat/protocol/support';
import { Redis } from 'ioredis';
import pg from 'pg';
import { ReplayCacheResetError, VerifierConfigError } from './errors.js';
import { type CommitStats, GroupCommit, type Settled } from './group-commit.js';
import { installsSchemaSql, PgInstallStore } from './installs.js';
import {
  ACTIVITY_COLUMNS,
  activityOf,
  andWhere,
  EXISTING_COLUMNS_SQL,
  FINISHED,
  insertRecordSql,
  insertRecordsSql,
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
import {
  type ApiKeyRow,
  type BatchRow,
  batchRowOf,
  type FileRow,
  fileRowOf,
  hashApiKey,
  newApiKey,
  nextWholeSecond,
  probe,
  type ReadinessCheck,
  type Storage,
  tracedColumn,
  withinWindow,
} from './storage.js';
import { isContentError } from './store-boundary.js';

export { ReplayCacheResetError } from './errors.js';

/** Kept past a nonce's last acceptable instant, for clock skew between replicas. */
export const NONCE_MARGIN_MS = 2_000;
/** How far a replica's clock may be from Redis's before it is not ready: half the margin, so any two replicas stay within it. */
export const CLOCK_SKEW_LIMIT_MS = NONCE_MARGIN_MS / 2;

/** Records in one statement of a group commit at most (PostgreSQL takes 65,535 parameters). */
const RECORDS_PER_STATEMENT = 500;

/** A record waiting for its group commit. */
interface PendingRecord {
  readonly row: unknown[];
  readonly upsert: boolean;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, hash BYTEA NOT NULL UNIQUE, label TEXT NOT NULL, created BIGINT NOT NULL, revoked BOOLEAN NOT NULL DEFAULT FALSE);
  ${recordsTableSql('postgres')}
  CREATE TABLE IF NOT EXISTS telemetry (ts BIGINT NOT NULL, key_id TEXT, type TEXT NOT NULL, event JSONB NOT NULL);
  CREATE TABLE IF NOT EXISTS snapshots (name TEXT PRIMARY KEY, data JSONB NOT NULL, updated BIGINT NOT NULL);
  CREATE TABLE IF NOT EXISTS upstream_signatures (ours TEXT PRIMARY KEY, theirs TEXT NOT NULL, created BIGINT NOT NULL);
  CREATE TABLE IF NOT EXISTS revoked_kids (kid TEXT PRIMARY KEY, reason TEXT NOT NULL, at BIGINT NOT NULL);
  CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, record_id TEXT NOT NULL, created BIGINT NOT NULL, items JSONB NOT NULL);
  CREATE INDEX IF NOT EXISTS batches_key ON batches (key_id, created);
  CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, record_id TEXT NOT NULL, created BIGINT NOT NULL, traced TEXT);
  ALTER TABLE files ADD COLUMN IF NOT EXISTS traced TEXT;
  CREATE INDEX IF NOT EXISTS files_key ON files (key_id, created);
`;

/**
 * Storage for several verifier replicas: records, keys, telemetry and statistics in
 * PostgreSQL, the nonce replay cache in Redis (`SET NX` with the nonce's expiry), so a
 * request replayed to another replica is caught. Records and nonces go in group commits: the
 * records asked for in one turn of the event loop are one statement (one transaction, one
 * WAL flush), the nonces one `MULTI` (one round trip), each answer released after its commit.
 */
export class PgRedisStorage implements Storage {
  readonly installs: PgInstallStore;
  readonly #pool: pg.Pool;
  readonly #redis: Redis;
  readonly #pepper: KeyObject;
  readonly #prefix: string;
  readonly #epochKey: string;
  readonly #windowSec: number;
  #epoch: string | null = null;
  #lostAtMs = 0;
  #clock: () => number = Date.now;
  readonly #sequenceKey: string;
  /** The highest value of the commit sequence this replica has seen under the current marker: Redis never gives a lower one unless it went back. */
  #sequenceSeen = 0;
  /**
   * The highest sequence any replica kept in PostgreSQL under the current marker, read by the
   * last guard check, and the first commit (by the order commits are sent) it applies to: one
   * sent after it was read. Commits sent before may legitimately have drawn lower values.
   */
  #sequenceFloor = { value: 0, from: Number.POSITIVE_INFINITY };
  /** Nonce commits sent so far (their order). */
  #commitsSent = 0;
  /** The highest sequence this replica kept in PostgreSQL under the current marker, and whether a keep runs. */
  #sequenceKept = 0;
  #keeping = false;
  #closing = false;
  /** When the guard check last ran, and the one in flight. */
  #guardedAt = 0;
  #guarding: Promise<void> | undefined;
  /** Why the replay cache cannot vouch for a stamp now (eviction on, a clock off), when it cannot: commits fail while it holds. */
  #unsafe: string | undefined;
  /** Called when the replay cache is found to have lost its data. */
  onReplayCacheReset: ((lostAtMs: number) => void) | undefined;
  readonly #records = new GroupCommit<PendingRecord, void>((batch) => this.#commitRecords(batch));
  readonly #nonces = new GroupCommit<{ key: string; ttlMs: number }, boolean>((batch) => this.#commitNonces(batch));

  private constructor(pool: pg.Pool, redis: Redis, pepper: Uint8Array, prefix: string, windowSec: number) {
    this.#pool = pool;
    this.#redis = redis;
    this.#pepper = createSecretKey(pepper);
    this.#prefix = prefix;
    this.#epochKey = `${prefix}epoch`;
    this.#sequenceKey = `${prefix}sequence`;
    this.#windowSec = windowSec;
    this.installs = new PgInstallStore(pool, redis, prefix);
  }

  /**
   * Connects and creates the schema. Errors of idle connections (PostgreSQL restarted, a
   * backend terminated, Redis gone) go to `onError` and never crash the process: the pool
   * reconnects on the next query, Redis reconnects with backoff. Every PostgreSQL and Redis
   * call is bounded in time.
   */
  static async open(
    postgresUrl: string,
    redisUrl: string,
    pepper: Uint8Array,
    options: {
      redisPrefix?: string;
      onError?: (source: 'postgres' | 'redis', error: Error) => void;
      timeoutMs?: number;
      /** The attestation window in seconds (how long after a loss of the replay cache stamps are refused). */
      windowSec?: number;
      /** This replica's clock, as the readiness check reads it (default `Date.now`; a test skews it). */
      clock?: () => number;
    } = {},
  ): Promise<PgRedisStorage> {
    const timeoutMs = options.timeoutMs ?? 2_000;
    const report = (source: 'postgres' | 'redis') => (error: Error) => options.onError?.(source, error);
    const pool = new pg.Pool({
      connectionString: postgresUrl,
      max: 10,
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
      statement_timeout: timeoutMs,
      idleTimeoutMillis: 30_000,
    });
    // An idle client's connection closed under it: without this listener the pool's 'error' event would end the process.
    pool.on('error', report('postgres'));
    // An operator reads which setting points at the server that failed, not a driver's stack.
    await migrate(pool).catch(async (error: unknown) => {
      await pool.end().catch(() => undefined);
      throw new VerifierConfigError('postgresUrl', 'a reachable PostgreSQL server', errorMessage(error));
    });
    const redis = new Redis(redisUrl, {
      lazyConnect: true,
      maxRetriesPerRequest: 2,
      connectTimeout: Math.min(timeoutMs, 1_000),
      // Every nonce check waits on Redis: a hanging Redis must fail requests fast (503), not hang them.
      commandTimeout: Math.min(timeoutMs, 1_000),
      retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
    });
    redis.on('error', report('redis'));
    await redis.connect().catch(async (error: unknown) => {
      redis.disconnect();
      await pool.end().catch(() => undefined);
      throw new VerifierConfigError('redisUrl', 'a reachable Redis server', errorMessage(error));
    });
    // A Redis that evicts keys under memory pressure forgets nonces (they carry a TTL, which the
    // volatile-* policies evict first) and keeps the epoch marker: replays would pass unseen.
    const evicting = await evictionPolicy(redis).catch((error: unknown) => `no answer to INFO memory (${errorMessage(error)})`);
    if (evicting !== undefined) {
      redis.disconnect();
      await pool.end().catch(() => undefined);
      throw new VerifierConfigError('redisUrl', NEVER_EVICTS, evicting);
    }
    const prefix = options.redisPrefix ?? 'moat:';
    const storage = new PgRedisStorage(pool, redis, pepper, prefix, options.windowSec ?? 300);
    storage.#clock = options.clock ?? Date.now;
    // The epoch marker: a replica that opens against an existing one adopts it. None at all is
    // a first start, or a Redis that lost its data while no replica ran (a restart of both): the
    // two look alike, so it counts as a loss at the next whole second — stamps made before are
    // refused (retryably) for one window, which costs a first start nothing (the verifier waits
    // for that second before it serves), as no stamp predates it.
    await redis.set(`${prefix}epoch`, `${randomBytes(6).toString('hex')}:${nextWholeSecond(Date.now())}`, 'NX');
    storage.#epoch = await redis.get(`${prefix}epoch`);
    storage.#lostAtMs = markerLoss(storage.#epoch, Date.now());
    // A Redis that went back while no replica ran (restored from an older snapshot, a failover to
    // a replica that lagged) keeps its marker: the sequence PostgreSQL kept says it went back.
    const kept = await storage.#keptSequence();
    const sequence = await redis.incr(storage.#sequenceKey);
    if (sequence <= kept) await storage.#declareLoss(Date.now());
    else storage.#sequenceSeen = sequence;
    return storage;
  }

  async createApiKey(label: string): Promise<{ id: string; key: string }> {
    const created = newApiKey();
    await this.importApiKey(created.id, created.key, label);
    return created;
  }

  async importApiKey(id: string, key: string, label: string): Promise<void> {
    await this.#pool.query(
      'INSERT INTO api_keys (id, hash, label, created) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET hash = EXCLUDED.hash, label = EXCLUDED.label',
      [id, hashApiKey(this.#pepper, key), label, Date.now()],
    );
  }

  async lookupApiKey(key: string): Promise<string | undefined> {
    const hash = hashApiKey(this.#pepper, key);
    const { rows } = await this.#pool.query<{ id: string; hash: Buffer }>('SELECT id, hash FROM api_keys WHERE hash = $1 AND NOT revoked', [
      hash,
    ]);
    const row = rows[0];
    return row !== undefined && timingSafeEqual(row.hash, hash) ? row.id : undefined;
  }

  async revokeApiKey(id: string): Promise<boolean> {
    return (await this.#pool.query('UPDATE api_keys SET revoked = TRUE WHERE id = $1 AND NOT revoked', [id])).rowCount === 1;
  }

  async listApiKeys(): Promise<ApiKeyRow[]> {
    const { rows } = await this.#pool.query<{ id: string; label: string; created: string }>(
      'SELECT id, label, created FROM api_keys WHERE NOT revoked ORDER BY created',
    );
    return rows.map((r) => ({ id: r.id, label: r.label, created: Number(r.created) }));
  }

  /** Writes a record in this turn's group commit; resolves once that commit is durable. */
  insertRecord(record: RequestRecord, options: { readonly upsert?: boolean } = {}): Promise<void> {
    return this.#records.write({ row: rowOf(record), upsert: options.upsert === true });
  }

  /** Group commits of records and of nonces so far, and the writes they carried. */
  get commitStats(): { records: CommitStats; nonces: CommitStats } {
    return { records: this.#records.stats, nonces: this.#nonces.stats };
  }

  /**
   * One group commit of records: one statement per {@link RECORDS_PER_STATEMENT} (inserts,
   * then upserts). A record the store refuses for its content fails only itself: the
   * statement that held it is retried a record at a time. A batch that names one id twice
   * (never the pipeline's; a drain racing a request, perhaps) is written a record at a time, in order.
   */
  async #commitRecords(batch: readonly PendingRecord[]): Promise<Array<Settled<void>>> {
    const one = (r: PendingRecord) => this.#pool.query(insertRecordSql('postgres', r.upsert ? 'upsert' : 'insert'), r.row);
    const distinct = new Set(batch.map((r) => r.row[0])).size === batch.length;
    if (batch.length === 1 || !distinct) return this.#oneByOne(batch, one);
    const out: Array<Settled<void>> = [];
    for (let i = 0; i < batch.length; i += RECORDS_PER_STATEMENT) {
      const part = batch.slice(i, i + RECORDS_PER_STATEMENT);
      const inserts = part.filter((r) => !r.upsert);
      const upserts = part.filter((r) => r.upsert);
      try {
        await this.#pool.query(
          insertRecordsSql(inserts.length, upserts.length),
          [...inserts, ...upserts].flatMap((r) => r.row),
        );
        out.push(...part.map(() => ({ ok: true as const, value: undefined })));
      } catch (error) {
        if (!isContentError(error)) out.push(...part.map(() => ({ ok: false as const, error })));
        else out.push(...(await this.#oneByOne(part, one)));
      }
    }
    return out;
  }

  async #oneByOne(batch: readonly PendingRecord[], write: (r: PendingRecord) => Promise<unknown>): Promise<Array<Settled<void>>> {
    const out: Array<Settled<void>> = [];
    for (const r of batch)
      out.push(
        await write(r).then(
          () => ({ ok: true as const, value: undefined }),
          (error: unknown) => ({ ok: false as const, error }),
        ),
      );
    return out;
  }

  async finishRecord(id: string, status: number, latencyMs: number): Promise<void> {
    await this.#pool.query('UPDATE records SET status = $1, latency_ms = $2 WHERE id = $3', [status, Math.round(latencyMs), id]);
  }

  async queryRecords(query: RecordQuery): Promise<RequestRecord[]> {
    const { where, params } = recordWhere(query, 'postgres');
    const { rows } = await this.#pool.query(`SELECT * FROM records ${where} ORDER BY ts DESC, seq DESC LIMIT $${params.length + 1}`, [
      ...params,
      query.limit ?? 100,
    ]);
    return rows.map(recordOf);
  }

  async summary(range: { since?: number; until?: number } = {}): Promise<RecordSummary> {
    const { where, params } = recordWhere(range, 'postgres');
    const finished = andWhere(where, FINISHED);
    const count = async (column: 'verdict' | 'attestation') => {
      const out: Record<string, number> = {};
      for (const r of (
        await this.#pool.query<{ v: string; n: string }>(
          `SELECT ${column} v, COUNT(*) n FROM records ${finished} GROUP BY ${column}`,
          params,
        )
      ).rows)
        out[r.v] = Number(r.n);
      return out;
    };
    const verdicts = await count('verdict');
    const unfinished = Number(
      (await this.#pool.query<{ n: string }>(`SELECT COUNT(*) n FROM records ${andWhere(where, UNFINISHED)}`, params)).rows[0]?.n ?? 0,
    );
    return { verdicts, attestation: await count('attestation'), total: Object.values(verdicts).reduce((a, b) => a + b, 0), unfinished };
  }

  async keyActivity(range: { since?: number; until?: number } = {}): Promise<KeyActivity[]> {
    const { where, params } = recordWhere(range, 'postgres');
    const scope = where === '' ? 'WHERE key_id IS NOT NULL' : `${where} AND key_id IS NOT NULL`;
    const { rows } = await this.#pool.query(`SELECT key_id, ${ACTIVITY_COLUMNS} FROM records ${scope} GROUP BY key_id`, params);
    const gateways = new Map<string, string[]>();
    for (const g of (
      await this.#pool.query<{ key_id: string; g: string }>(
        `SELECT DISTINCT key_id, jsonb_array_elements_text(gateway) g FROM records ${scope} ORDER BY g`,
        params,
      )
    ).rows)
      gateways.set(g.key_id, [...(gateways.get(g.key_id) ?? []), g.g]);
    return rows.map((r: Record<string, unknown>) => activityOf(r, gateways.get(r.key_id as string) ?? []));
  }

  /**
   * Replay cache in Redis: true when the nonce is new, for every replica at once. A nonce is
   * kept in milliseconds until one second past `expiresAt` (the verifier accepts while the
   * whole seconds since the stamp are within the window) plus {@link NONCE_MARGIN_MS} for clock
   * skew between replicas. The same round trip reads the epoch marker: when Redis lost its
   * data, a stamp made before the loss (`madeAt`, whole seconds: one made in the second of the
   * loss may predate it) is refused while it is within the window — outside it, it is left to
   * be refused as stale (see {@link #checkEpoch}). Without `madeAt`, a stamp whose
   * nonce expires within the window after the loss is.
   */
  async add(kid: string, nonce: string, expiresAt: number, madeAt?: number): Promise<boolean> {
    const ttlMs = Math.max(1, (expiresAt + 1) * 1000 - Date.now() + NONCE_MARGIN_MS);
    const set = await this.#nonces.write({ key: `${this.#prefix}nonce:${kid}:${nonce}`, ttlMs });
    // A stamp made before the replay cache forgot its nonces may have been served then: refuse it —
    // retryably, for a genuine client in flight at the loss signs a fresh stamp that passes.
    // (`expiresAt` alone cannot tell: for a stamp from the past it counts from the check, not the stamp.)
    const predates =
      madeAt === undefined
        ? expiresAt * 1000 < this.#lostAtMs + this.#windowSec * 1000
        : madeAt * 1000 < this.#lostAtMs && withinWindow(madeAt, this.#windowSec);
    if (this.#lostAtMs > 0 && predates)
      throw new ReplayCacheResetError(
        'ERR_REPLAY_CACHE_RESET',
        `expected a stamp made after the replay cache lost its data (${new Date(this.#lostAtMs).toISOString()}), got one from before`,
      );
    return set;
  }

  /**
   * One group commit of nonces: the epoch marker read, the commit sequence counted up and every
   * nonce set (`NX`) in one `MULTI`.
   */
  async #commitNonces(batch: ReadonlyArray<{ key: string; ttlMs: number }>): Promise<Array<Settled<boolean>>> {
    // Once a second (and every commit while a check runs): what the other replicas saw, eviction, this clock.
    if (this.#guarding === undefined && Date.now() - this.#guardedAt >= 1_000) {
      this.#guardedAt = Date.now();
      this.#guarding = this.#guard().finally(() => {
        this.#guarding = undefined;
      });
    }
    if (this.#guarding !== undefined) await this.#guarding;
    if (this.#unsafe !== undefined) throw new ReplayCacheResetError('ERR_REPLAY_CACHE_RESET', this.#unsafe);
    const ordinal = ++this.#commitsSent;
    const multi = this.#redis.multi().get(this.#epochKey).incr(this.#sequenceKey);
    for (const n of batch) multi.set(n.key, '1', 'PX', n.ttlMs, 'NX');
    const result = await multi.exec();
    if (result === null) throw new Error('redis transaction aborted');
    const [[epochError, epoch], [sequenceError, sequence], ...sets] = result as Array<[Error | null, unknown]> as [
      [Error | null, unknown],
      [Error | null, unknown],
      ...Array<[Error | null, unknown]>,
    ];
    if (epochError !== null) throw epochError;
    if (sequenceError !== null) throw sequenceError;
    // Read at once, before any other await: replies come in the order the commits were sent.
    const wentBack = this.#noteSequence(Number(sequence), ordinal);
    const marker = await this.#checkEpoch(typeof epoch === 'string' ? epoch : null);
    // Gone back: the sequence under an unchanged marker, or an older marker come back (a
    // snapshot from before an earlier loss). A new marker (a loss declared, here or by another
    // replica; a Redis that lost everything, its marker too) says so already.
    if ((wentBack && marker === 'same') || marker === 'older') await this.#declareLoss(Date.now());
    else if (marker === 'newer') this.#sequenceSeen = Number(sequence);
    this.#keepSoon();
    return sets.map(([error, set]) => (error === null ? { ok: true, value: set === 'OK' } : { ok: false, error }));
  }

  /**
   * The name under which PostgreSQL keeps the highest commit sequence seen under the current
   * epoch marker: a new marker (after a loss) starts afresh, and an old one brought back with an
   * old snapshot finds what was seen under it.
   */
  get #sequenceName(): string {
    return `replay-cache-sequence:${this.#prefix}${(this.#epoch ?? '').split(':')[0]}`;
  }

  /**
   * Notes the commit sequence a nonce commit read, and whether it went back. It only goes up:
   * every nonce commit of every replica counts it up by one. A value no higher than one this
   * replica saw, or than one any replica kept in PostgreSQL before this commit was sent
   * ({@link #guard}), means Redis went back — restarted from an older snapshot or append-only
   * file, or failed over to a replica that lagged — and forgot nonces while keeping its epoch
   * marker: a loss, declared to every replica.
   */
  #noteSequence(sequence: number, ordinal: number): boolean {
    if (!Number.isSafeInteger(sequence)) return false;
    const floor = ordinal >= this.#sequenceFloor.from ? this.#sequenceFloor.value : 0;
    const wentBack = sequence <= Math.max(this.#sequenceSeen, floor);
    this.#sequenceSeen = Math.max(this.#sequenceSeen, sequence);
    return wentBack;
  }

  /**
   * The check a commit waits for once a second: keeps this replica's highest sequence in
   * PostgreSQL and reads the highest any replica kept (so a quiet replica knows what busy ones
   * saw), and finds whether Redis may now evict keys or this replica's clock is off — then the
   * replay cache cannot vouch for stamps, and commits fail (`503`) until it can.
   */
  async #guard(): Promise<void> {
    const marker = this.#epoch;
    // Each part is best effort: a store that does not answer fails the commit itself, as before.
    const [kept, evicting, clock] = await Promise.all([
      (this.#sequenceSeen > 0 ? this.#keepSequence(this.#sequenceSeen) : this.#keptSequence()).catch(() => undefined),
      evictionPolicy(this.#redis).then(
        (policy) => (policy === undefined ? undefined : `expected ${NEVER_EVICTS}, got ${policy}`),
        () => undefined,
      ),
      this.#checkClock().then(
        () => undefined,
        (error: unknown) => (error instanceof ClockSkewError ? error.message : undefined),
      ),
    ]);
    // Read under the marker that still holds: a loss declared meanwhile starts the count afresh.
    if (kept !== undefined && this.#epoch === marker) this.#sequenceFloor = { value: kept, from: this.#commitsSent + 1 };
    this.#unsafe = evicting ?? clock;
  }

  /**
   * Keeps the highest sequence seen in PostgreSQL after each commit, in the background, one
   * write at a time (the next one takes what came meanwhile): a replica's last commit before it
   * goes quiet is kept too, so another replica's next check knows how far the count went.
   */
  #keepSoon(): void {
    if (this.#keeping || this.#sequenceSeen <= this.#sequenceKept) return;
    this.#keeping = true;
    const sequence = this.#sequenceSeen;
    this.#keepSequence(sequence)
      .then(
        () => {
          this.#sequenceKept = Math.max(this.#sequenceKept, sequence);
        },
        () => undefined, // PostgreSQL unreachable: the next commit tries again
      )
      .finally(() => {
        this.#keeping = false;
        if (this.#sequenceSeen > this.#sequenceKept && !this.#closing) this.#keepSoon();
      });
  }

  /** The highest sequence kept under the current marker (0 for none). */
  async #keptSequence(): Promise<number> {
    const { rows } = await this.#pool.query<{ seq: string }>("SELECT data #>> '{}' AS seq FROM snapshots WHERE name = $1", [
      this.#sequenceName,
    ]);
    return Number(rows[0]?.seq ?? 0) || 0;
  }

  /** Keeps `sequence` under the current marker unless a higher one is kept; the highest kept after. */
  async #keepSequence(sequence: number): Promise<number> {
    const { rows } = await this.#pool.query<{ seq: string }>(
      `INSERT INTO snapshots (name, data, updated) VALUES ($1, $2, $3)
       ON CONFLICT (name) DO UPDATE SET
         data = to_jsonb(GREATEST((snapshots.data #>> '{}')::bigint, (EXCLUDED.data #>> '{}')::bigint)),
         updated = EXCLUDED.updated
       RETURNING data #>> '{}' AS seq`,
      [this.#sequenceName, JSON.stringify(sequence), Date.now()],
    );
    return Number(rows[0]?.seq ?? sequence) || sequence;
  }

  /** Declares a loss of the replay cache at `atMs`: a new epoch marker every replica adopts on its next commit. */
  async #declareLoss(atMs: number): Promise<void> {
    const marker = `${randomBytes(6).toString('hex')}:${atMs}`;
    await this.#redis.set(this.#epochKey, marker);
    this.#epoch = marker;
    // The sequence is counted afresh under the new marker.
    this.#sequenceSeen = 0;
    this.#sequenceKept = 0;
    this.#sequenceFloor = { value: 0, from: Number.POSITIVE_INFINITY };
    if (atMs > this.#lostAtMs) {
      this.#lostAtMs = atMs;
      this.onReplayCacheReset?.(atMs);
    }
  }

  /**
   * The epoch marker: `<id>:<ms of the loss it follows>`, written when the storage opens and
   * none is there (the time of that opening: a loss may have come before it). A missing marker
   * means Redis lost its data (a restart without persistence, a flush, a failover to an empty
   * replica): the first replica to notice writes a new one with the time of the loss, and
   * every replica that sees the marker change adopts its loss time.
   */
  async #checkEpoch(epoch: string | null): Promise<'same' | 'newer' | 'older'> {
    if (epoch === this.#epoch) return 'same';
    if (epoch === null) {
      const fresh = `${randomBytes(6).toString('hex')}:${Date.now()}`;
      const set = await this.#redis.set(this.#epochKey, fresh, 'NX');
      this.#epoch = set === 'OK' ? fresh : await this.#redis.get(this.#epochKey);
    } else {
      // A marker of an earlier loss than one adopted came back with the data it held then.
      if (markerLoss(epoch, Date.now()) < this.#lostAtMs) return 'older';
      this.#epoch = epoch;
    }
    const lostAt = markerLoss(this.#epoch, Date.now());
    if (lostAt > this.#lostAtMs) {
      this.#lostAtMs = lostAt;
      this.onReplayCacheReset?.(lostAt);
    }
    this.#sequenceSeen = 0;
    this.#sequenceKept = 0;
    this.#sequenceFloor = { value: 0, from: Number.POSITIVE_INFINITY };
    return 'newer';
  }

  /** When the replay cache last lost its data (ms since the epoch), 0 if never seen. */
  get replayCacheLostAt(): number {
    return this.#lostAtMs;
  }

  /** When the replay cache began vouching for stamps again: its last loss. */
  replayCacheSince(): number {
    return this.#lostAtMs;
  }

  async revokeKid(kid: string, reason: string): Promise<void> {
    await this.#pool.query('INSERT INTO revoked_kids (kid, reason, at) VALUES ($1, $2, $3) ON CONFLICT (kid) DO NOTHING', [
      kid,
      reason,
      Date.now(),
    ]);
  }

  async revokedKids(): Promise<Array<{ kid: string; reason: string; at: number }>> {
    const { rows } = await this.#pool.query<{ kid: string; reason: string; at: string }>(
      'SELECT kid, reason, at FROM revoked_kids ORDER BY at',
    );
    return rows.map((r) => ({ kid: r.kid, reason: r.reason, at: Number(r.at) }));
  }

  async decoyHits(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const r of (
      await this.#pool.query<{ key_id: string; n: string }>(
        "SELECT key_id, COUNT(*) n FROM records WHERE decoy = 'hit' AND key_id IS NOT NULL GROUP BY key_id",
      )
    ).rows)
      out[r.key_id] = Number(r.n);
    return out;
  }

  sweepNonces(): number {
    return 0; // Redis expires nonces itself
  }

  async insertTelemetry(keyId: string | null, events: ReadonlyArray<{ type: string; ts: number }>): Promise<void> {
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      for (const e of events)
        await client.query('INSERT INTO telemetry (ts, key_id, type, event) VALUES ($1, $2, $3, $4)', [
          e.ts,
          keyId,
          e.type,
          JSON.stringify(e),
        ]);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK');
      throw error;
    } finally {
      client.release();
    }
  }

  async telemetryCounts(): Promise<Record<string, number>> {
    const { rows } = await this.#pool.query<{ type: string; n: string }>('SELECT type, COUNT(*) n FROM telemetry GROUP BY type');
    // Own properties whatever a client named its event type ("__proto__" included).
    return Object.fromEntries(rows.map((r) => [r.type, Number(r.n)]));
  }

  async saveSnapshot(name: string, data: unknown): Promise<void> {
    await this.#pool.query(
      'INSERT INTO snapshots (name, data, updated) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data, updated = EXCLUDED.updated',
      [name, JSON.stringify(data), Date.now()],
    );
  }

  async loadSnapshot(name: string): Promise<unknown> {
    return (await this.#pool.query<{ data: unknown }>('SELECT data FROM snapshots WHERE name = $1', [name])).rows[0]?.data;
  }

  async rememberUpstreamSignature(ours: string, theirs: string): Promise<void> {
    await this.#pool.query(
      'INSERT INTO upstream_signatures (ours, theirs, created) VALUES ($1, $2, $3) ON CONFLICT (ours) DO UPDATE SET theirs = EXCLUDED.theirs',
      [ours, theirs, Date.now()],
    );
  }

  async saveBatch(batch: BatchRow): Promise<void> {
    await this.#pool.query(
      'INSERT INTO batches (id, key_id, record_id, created, items) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING',
      [batch.id, batch.keyId, batch.recordId, batch.created, JSON.stringify(batch.items)],
    );
  }

  async batchOf(id: string): Promise<BatchRow | undefined> {
    const row = (await this.#pool.query('SELECT * FROM batches WHERE id = $1', [id])).rows[0] as Record<string, unknown> | undefined;
    return row === undefined ? undefined : batchRowOf(row);
  }

  async batchIds(keyId: string): Promise<string[]> {
    return (await this.#pool.query<{ id: string }>('SELECT id FROM batches WHERE key_id = $1 ORDER BY created', [keyId])).rows.map(
      (r) => r.id,
    );
  }

  async saveFile(file: FileRow): Promise<void> {
    await this.#pool.query(
      'INSERT INTO files (id, key_id, record_id, created, traced) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING',
      [file.id, file.keyId, file.recordId, file.created, tracedColumn(file)],
    );
  }

  async fileOf(id: string): Promise<FileRow | undefined> {
    const row = (await this.#pool.query('SELECT * FROM files WHERE id = $1', [id])).rows[0] as Record<string, unknown> | undefined;
    return row === undefined ? undefined : fileRowOf(row);
  }

  async fileIds(keyId: string): Promise<string[]> {
    return (await this.#pool.query<{ id: string }>('SELECT id FROM files WHERE key_id = $1 ORDER BY created', [keyId])).rows.map(
      (r) => r.id,
    );
  }

  async deleteFile(id: string): Promise<void> {
    await this.#pool.query('DELETE FROM files WHERE id = $1', [id]);
  }

  async upstreamSignature(ours: string): Promise<string | undefined> {
    return (await this.#pool.query<{ theirs: string }>('SELECT theirs FROM upstream_signatures WHERE ours = $1', [ours])).rows[0]?.theirs;
  }

  async ping(): Promise<void> {
    await this.#pool.query('SELECT 1');
    await this.#redis.ping();
  }

  async readiness(): Promise<ReadinessCheck[]> {
    return Promise.all([
      probe('records', () => this.#probeWrite()),
      probe('replay_cache', async () => {
        // A new marker seen here: the next commit's sequence is the one to count from.
        if ((await this.#checkEpoch((await this.#redis.get(this.#epochKey)) ?? null)) === 'older') await this.#declareLoss(Date.now());
        // Set at run time (CONFIG SET) as well as at start: not ready while it could forget nonces.
        const evicting = await evictionPolicy(this.#redis);
        if (evicting !== undefined) throw new Error(`expected ${NEVER_EVICTS}, got ${evicting}`);
      }),
      probe('clock', () => this.#checkClock()),
    ]);
  }

  /**
   * This replica's clock against Redis's, the one clock every replica shares. A nonce is kept
   * {@link NONCE_MARGIN_MS} past the last instant its stamp is accepted, by the clock of the
   * replica that spent it; a replica whose clock is behind by more than that accepts the stamp
   * after its nonce is gone. Each replica within half the margin of Redis keeps every pair of
   * replicas within the margin. A round trip too slow to tell is not counted against it.
   */
  async #checkClock(): Promise<void> {
    const before = this.#clock();
    const [seconds, micros] = await this.#redis.time();
    const after = this.#clock();
    const skew = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - (before + after) / 2;
    if (Math.abs(skew) - (after - before) / 2 > CLOCK_SKEW_LIMIT_MS)
      throw new ClockSkewError(
        `expected this replica's clock within ${CLOCK_SKEW_LIMIT_MS} ms of Redis's (the clock the replicas share), got ${Math.round(skew)} ms off: a stamp could be accepted after its nonce expired (keep clocks in sync: NTP)`,
      );
  }

  /** The write requests make (a record inserted), rolled back: a stopped server or a locked table fails it. */
  async #probeWrite(): Promise<void> {
    const client = await this.#pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      await client.query(
        "INSERT INTO records (id, ts, attestation, fingerprint, gateway, relay, thinking, verdict, reasons) VALUES ('~probe', 0, 'missing', 'missing', '[]', '[]', 'none', 'allow', '[]') ON CONFLICT (id) DO NOTHING",
      );
    } catch (error) {
      broken = error instanceof Error ? error : new Error(String(error));
      throw error;
    } finally {
      // A connection whose rollback fails is dropped, never handed to a request mid-transaction.
      await client.query('ROLLBACK').then(
        () => client.release(broken?.message.includes('Connection terminated') ? broken : undefined),
        (error: Error) => client.release(error),
      );
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    // Writes queued for this turn's group commit go before the connections close.
    await Promise.all([this.#records.flush(), this.#nonces.flush()]);
    // The last sequence seen, for a replica that starts after a loss to compare with.
    if (this.#sequenceSeen > 0) await this.#keepSequence(this.#sequenceSeen).catch(() => undefined);
    await this.#pool.end();
    this.#redis.disconnect();
  }
}

/** What a replay cache must be: nothing it holds is ever evicted. */
const NEVER_EVICTS = 'a Redis that never evicts the replay cache (maxmemory-policy noeviction, or maxmemory 0)';

/**
 * The eviction setting of a Redis that may evict keys (`maxmemory 67108864 bytes with
 * maxmemory-policy allkeys-lru`), or `undefined` when it never does: no `maxmemory`, or the
 * `noeviction` policy (writes then fail when memory is full: refused, never forgotten). Read
 * from `INFO memory`, which servers that rename `CONFIG` still answer.
 */
async function evictionPolicy(redis: Redis): Promise<string | undefined> {
  const info = await redis.info('memory');
  const field = (name: string) => new RegExp(`^${name}:(.*?)\\r?$`, 'm').exec(info)?.[1];
  const maxmemory = Number(field('maxmemory') ?? '0');
  const policy = field('maxmemory_policy') ?? 'noeviction';
  return maxmemory > 0 && policy !== 'noeviction' ? `maxmemory ${maxmemory} bytes with maxmemory-policy ${policy}` : undefined;
}

/** The advisory lock replicas take to make or migrate the schema one at a time (any constant; "moat"). */
const SCHEMA_LOCK = 0x6d6f6174;

/**
 * Makes or migrates the schema: the tables, columns a database made before a signal existed
 * lacks, the indexes and the install tables — in one transaction under an advisory lock, so
 * replicas that start together on an empty database wait for each other instead of racing
 * (two `CREATE TABLE IF NOT EXISTS` at once can fail on PostgreSQL's catalog).
 */
async function migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
    await client.query(SCHEMA);
    const existing = (await client.query<{ name: string }>(EXISTING_COLUMNS_SQL.postgres)).rows.map((r) => r.name);
    for (const sql of migrationSql('postgres', existing)) await client.query(sql);
    await client.query(recordsIndexSql());
    await client.query(installsSchemaSql('postgres'));
    await client.query('COMMIT');
    client.release();
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    client.release(error instanceof Error ? error : new Error(String(error)));
    throw error;
  }
}

/** This replica's clock is too far from Redis's for the replay cache to vouch for stamps. */
class ClockSkewError extends Error {
  override readonly name = 'ClockSkewError';
}

/**
 * The loss time an epoch marker names (`<id>:<ms>`), no later than `now`: a loss cannot come
 * after it is seen, and a marker written by a replica whose clock runs ahead (or by hand) would
 * otherwise refuse every stamp, on every replica, until the clock caught up. Half the nonce
 * margin of slack allows for clocks a little apart. 0 for none.
 */
function markerLoss(marker: string | null, now: number): number {
  const at = Number((marker ?? '').split(':')[1] ?? 0);
  return Number.isFinite(at) && at > 0 ? Math.min(at, now + CLOCK_SKEW_LIMIT_MS) : 0;
}
