/**
 * Per-install keys (protocol 1.2), stored: the installs each API key enrolled, every
 * enrollment attempt and its outcome, and the one-time enrollment challenges. One schema for
 * SQLite and PostgreSQL; challenges live where the nonces live (the SQLite file, or Redis when
 * several replicas run), consumed atomically.
 */
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Dialect } from './record-schema.js';

/** An install as stored: never its derived key, only what derives it again. */
export interface InstallRow {
  /** `i` + 24 lowercase hex digits. */
  readonly iid: string;
  /** The API key that enrolled it (the only key it stamps for). */
  readonly keyId: string;
  /** The install's X25519 public key, base64url, as it enrolled. */
  readonly installKey: string;
  /** The enrollment key it enrolled under. */
  readonly ekid: string;
  /** The challenge it enrolled with, base64url (the key derivation's salt). */
  readonly challenge: string;
  readonly created: number;
  /** When an operator revoked it (Unix ms), `null` while live. */
  readonly revokedAt: number | null;
  /** Created past an enrollment limit under policy `flag`. */
  readonly overLimit: boolean;
  /** The release key id that stamped its enrollment. */
  readonly releaseKid: string | null;
}

/** What an enrollment attempt came to. */
export const ENROLL_OUTCOMES = [
  'created',
  'over_limit',
  'bad_request',
  'stamp',
  'unknown_ekid',
  'challenge',
  'weak_key',
  'limited',
] as const;
export type EnrollOutcome = (typeof ENROLL_OUTCOMES)[number];

/** One enrollment attempt, whatever its outcome. */
export interface EnrollmentRecord {
  readonly ts: number;
  readonly keyId: string | null;
  /** A keyed hash of the source address (never the address). */
  readonly address: string | null;
  readonly releaseKid: string | null;
  readonly outcome: EnrollOutcome;
  readonly installId: string | null;
  /** The status and reason code the client got. */
  readonly reason: string | null;
}

/** Per API key: its installs, revoked and over-limit ones among them. */
export interface KeyInstalls {
  readonly keyId: string;
  readonly installs: number;
  readonly revoked: number;
  readonly overLimit: number;
  readonly newest: number;
}

type MaybePromise<T> = T | Promise<T>;

/** The installs part of the storage (both backends). */
export interface InstallStore {
  /**
   * Keeps a challenge for `credential` (its SHA-256, hex) until `expiresAt` (Unix ms) — unless
   * `max` challenges were issued to it within the last lifetime (`expiresAt` − now): then false,
   * and nothing is kept (a key cannot fill the store with challenges it never uses).
   */
  issueChallenge(challenge: string, credential: string, expiresAt: number, max?: number): MaybePromise<boolean>;
  /** Spends a challenge: true once, only under the credential it was issued to and before it expired. */
  consumeChallenge(challenge: string, credential: string, now?: number): MaybePromise<boolean>;
  /** Live (unrevoked) installs of a key. */
  countInstalls(keyId: string): MaybePromise<number>;
  /** Installs a key created since `since` (Unix ms), and the oldest of them. */
  countEnrollments(keyId: string, since: number): MaybePromise<{ count: number; oldest: number | null }>;
  createInstall(row: InstallRow): MaybePromise<void>;
  install(iid: string): MaybePromise<InstallRow | undefined>;
  /** A key's installs, newest first. */
  listInstalls(keyId: string, limit?: number): MaybePromise<InstallRow[]>;
  /** Revokes one install; its row after, or `undefined` for an unknown id. */
  revokeInstall(iid: string, at?: number): MaybePromise<InstallRow | undefined>;
  /** Revokes every live install a release key enrolled, under any API key; their rows after. */
  revokeReleaseInstalls(releaseKid: string, at?: number): MaybePromise<InstallRow[]>;
  recordEnrollment(record: EnrollmentRecord): MaybePromise<void>;
  /** Enrollment records, newest first. */
  enrollments(query: EnrollmentQuery): MaybePromise<EnrollmentRecord[]>;
  /** Installs per key, most first. */
  installsPerKey(limit?: number): MaybePromise<KeyInstalls[]>;
  /** Drops expired challenges (Redis expires them itself). */
  sweepChallenges(now?: number): MaybePromise<number>;
}

/** Filters of {@link InstallStore.enrollments}. */
export interface EnrollmentQuery {
  readonly keyId?: string | undefined;
  readonly outcome?: EnrollOutcome | undefined;
  readonly since?: number | undefined;
  readonly limit?: number | undefined;
}

/** The tables, both dialects (`BIGINT`/`BOOLEAN` on PostgreSQL). */
export function installsSchemaSql(dialect: Dialect): string {
  const big = dialect === 'postgres' ? 'BIGINT' : 'INTEGER';
  const bool = dialect === 'postgres' ? 'BOOLEAN NOT NULL DEFAULT FALSE' : 'INTEGER NOT NULL DEFAULT 0';
  const serial = dialect === 'postgres' ? 'seq BIGSERIAL' : 'seq INTEGER PRIMARY KEY AUTOINCREMENT';
  return `
    CREATE TABLE IF NOT EXISTS installs (iid TEXT PRIMARY KEY, key_id TEXT NOT NULL, install_key TEXT NOT NULL,
      ekid TEXT NOT NULL, challenge TEXT NOT NULL, created ${big} NOT NULL, revoked_at ${big},
      over_limit ${bool}, release_kid TEXT);
    CREATE INDEX IF NOT EXISTS installs_key ON installs (key_id, created);
    CREATE TABLE IF NOT EXISTS enrollments (${serial}, ts ${big} NOT NULL, key_id TEXT, address TEXT,
      release_kid TEXT, outcome TEXT NOT NULL, install_id TEXT, reason TEXT);
    CREATE INDEX IF NOT EXISTS enrollments_key ON enrollments (key_id, ts);
    CREATE INDEX IF NOT EXISTS enrollments_ts ON enrollments (ts);`;
}

const SQLITE_CHALLENGES =
  'CREATE TABLE IF NOT EXISTS enroll_challenges (challenge TEXT NOT NULL, credential TEXT NOT NULL, ' +
  'expires INTEGER NOT NULL, PRIMARY KEY (challenge, credential));';

/** A stored row as an install, either backend. */
export function installOf(r: Readonly<Record<string, unknown>>): InstallRow {
  return {
    iid: r.iid as string,
    keyId: r.key_id as string,
    installKey: r.install_key as string,
    ekid: r.ekid as string,
    challenge: r.challenge as string,
    created: Number(r.created),
    revokedAt: r.revoked_at === null || r.revoked_at === undefined ? null : Number(r.revoked_at),
    overLimit: r.over_limit === true || r.over_limit === 1,
    releaseKid: (r.release_kid as string | null) ?? null,
  };
}

function enrollmentOf(r: Readonly<Record<string, unknown>>): EnrollmentRecord {
  return {
    ts: Number(r.ts),
    keyId: (r.key_id as string | null) ?? null,
    address: (r.address as string | null) ?? null,
    releaseKid: (r.release_kid as string | null) ?? null,
    outcome: r.outcome as EnrollOutcome,
    installId: (r.install_id as string | null) ?? null,
    reason: (r.reason as string | null) ?? null,
  };
}

/** The statements, written with `?` (PostgreSQL's `$n` are numbered from them). */
const SQL = {
  countInstalls: 'SELECT COUNT(*) n FROM installs WHERE key_id = ? AND revoked_at IS NULL',
  countEnrollments: 'SELECT COUNT(*) n, MIN(created) oldest FROM installs WHERE key_id = ? AND created >= ?',
  createInstall:
    'INSERT INTO installs (iid, key_id, install_key, ekid, challenge, created, revoked_at, over_limit, release_kid) ' +
    'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  install: 'SELECT * FROM installs WHERE iid = ?',
  listInstalls: 'SELECT * FROM installs WHERE key_id = ? ORDER BY created DESC, iid LIMIT ?',
  revokeInstall: 'UPDATE installs SET revoked_at = ? WHERE iid = ? AND revoked_at IS NULL',
  revokeReleaseInstalls: 'UPDATE installs SET revoked_at = ? WHERE release_kid = ? AND revoked_at IS NULL RETURNING *',
  recordEnrollment:
    'INSERT INTO enrollments (ts, key_id, address, release_kid, outcome, install_id, reason) ' +
    'VALUES (?, ?, ?, ?, ?, ?, ?)',
  installsPerKey:
    'SELECT key_id, COUNT(*) installs, SUM(CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END) revoked, ' +
    'SUM(CASE WHEN over_limit THEN 1 ELSE 0 END) over_limit, MAX(created) newest ' +
    'FROM installs GROUP BY key_id ORDER BY COUNT(*) DESC, key_id LIMIT ?',
} as const;

/** An install's values in {@link SQL.createInstall}'s order (`bool` writes a flag as the backend keeps it). */
function installValues(row: InstallRow, bool: (b: boolean) => unknown): unknown[] {
  const { iid, keyId, installKey, ekid, challenge, created, revokedAt, overLimit, releaseKid } = row;
  return [iid, keyId, installKey, ekid, challenge, created, revokedAt, bool(overLimit), releaseKid];
}

/** The WHERE clause of an enrollment query, values bound. */
function enrollmentWhere(query: EnrollmentQuery): { where: string; params: unknown[] } {
  const clauses: string[] = [];
  const params: unknown[] = [];
  const add = (clause: string, value: unknown) => {
    clauses.push(clause);
    params.push(value);
  };
  if (query.keyId !== undefined) add('key_id = ?', query.keyId);
  if (query.outcome !== undefined) add('outcome = ?', query.outcome);
  if (query.since !== undefined) add('ts >= ?', query.since);
  return { where: clauses.length === 0 ? '' : `WHERE ${clauses.join(' AND ')}`, params };
}

const keyPerKey = (r: Readonly<Record<string, unknown>>): KeyInstalls => ({
  keyId: r.key_id as string,
  installs: Number(r.installs),
  revoked: Number(r.revoked ?? 0),
  overLimit: Number(r.over_limit ?? 0),
  newest: Number(r.newest),
});

/** The installs store on the verifier's SQLite database (challenges in the same file). */
export class SqliteInstallStore implements InstallStore {
  readonly #db: import('better-sqlite3').Database;

  readonly #statements = new Map<string, import('better-sqlite3').Statement>();

  constructor(db: import('better-sqlite3').Database) {
    this.#db = db;
    db.exec(installsSchemaSql('sqlite') + SQLITE_CHALLENGES);
  }

  /** A statement, prepared once. */
  #sql(text: string): import('better-sqlite3').Statement {
    let statement = this.#statements.get(text);
    if (statement === undefined) {
      statement = this.#db.prepare(text);
      this.#statements.set(text, statement);
    }
    return statement;
  }

  issueChallenge(challenge: string, credential: string, expiresAt: number, max = Number.POSITIVE_INFINITY): boolean {
    const open = this.#sql('SELECT COUNT(*) n FROM enroll_challenges WHERE credential = ? AND expires > ?').get(
      credential,
      Date.now(),
    ) as {
      n: number;
    };
    if (open.n >= max) return false;
    this.#sql('INSERT OR REPLACE INTO enroll_challenges (challenge, credential, expires) VALUES (?, ?, ?)').run(
      challenge,
      credential,
      expiresAt,
    );
    return true;
  }

  consumeChallenge(challenge: string, credential: string, now = Date.now()): boolean {
    // One statement: a challenge is deleted by exactly one of two racing enrollments.
    const sql = 'DELETE FROM enroll_challenges WHERE challenge = ? AND credential = ? AND expires > ?';
    return this.#sql(sql).run(challenge, credential, now).changes === 1;
  }

  countInstalls(keyId: string): number {
    return Number((this.#sql(SQL.countInstalls).get(keyId) as { n: number }).n);
  }

  countEnrollments(keyId: string, since: number): { count: number; oldest: number | null } {
    const r = this.#sql(SQL.countEnrollments).get(keyId, since) as { n: number; oldest: number | null };
    return { count: Number(r.n), oldest: r.oldest === null ? null : Number(r.oldest) };
  }

  createInstall(row: InstallRow): void {
    this.#sql(SQL.createInstall).run(...installValues(row, (b) => (b ? 1 : 0)));
  }

  install(iid: string): InstallRow | undefined {
    const r = this.#sql(SQL.install).get(iid) as Record<string, unknown> | undefined;
    return r === undefined ? undefined : installOf(r);
  }

  listInstalls(keyId: string, limit = 1000): InstallRow[] {
    return (this.#sql(SQL.listInstalls).all(keyId, limit) as Array<Record<string, unknown>>).map(installOf);
  }

  revokeInstall(iid: string, at = Date.now()): InstallRow | undefined {
    this.#sql(SQL.revokeInstall).run(at, iid);
    return this.install(iid);
  }

  revokeReleaseInstalls(releaseKid: string, at = Date.now()): InstallRow[] {
    return (this.#sql(SQL.revokeReleaseInstalls).all(at, releaseKid) as Array<Record<string, unknown>>).map(installOf);
  }

  recordEnrollment(e: EnrollmentRecord): void {
    this.#sql(SQL.recordEnrollment).run(e.ts, e.keyId, e.address, e.releaseKid, e.outcome, e.installId, e.reason);
  }

  enrollments(query: EnrollmentQuery): EnrollmentRecord[] {
    const { where, params } = enrollmentWhere(query);
    const sql = `SELECT * FROM enrollments ${where} ORDER BY ts DESC, seq DESC LIMIT ?`;
    return (this.#sql(sql).all(...params, query.limit ?? 100) as Array<Record<string, unknown>>).map(enrollmentOf);
  }

  installsPerKey(limit = 100): KeyInstalls[] {
    return (this.#sql(SQL.installsPerKey).all(limit) as Array<Record<string, unknown>>).map(keyPerKey);
  }

  sweepChallenges(now = Date.now()): number {
    return this.#sql('DELETE FROM enroll_challenges WHERE expires <= ?').run(now).changes;
  }
}

const DECR_IF_EXISTS = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end return 0";

/** `?` placeholders numbered for PostgreSQL. */
export function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

/** The installs store on PostgreSQL, challenges in Redis (`SET … PX`, spent by `DEL`: atomic across replicas). */
export class PgInstallStore implements InstallStore {
  readonly #pool: pg.Pool;
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(pool: pg.Pool, redis: Redis, prefix: string) {
    this.#pool = pool;
    this.#redis = redis;
    this.#prefix = `${prefix}enroll:`;
  }

  async #rows(sql: string, params: unknown[]): Promise<Array<Record<string, unknown>>> {
    return (await this.#pool.query(numbered(sql), params)).rows as Array<Record<string, unknown>>;
  }

  async issueChallenge(
    challenge: string,
    credential: string,
    expiresAt: number,
    max = Number.POSITIVE_INFINITY,
  ): Promise<boolean> {
    const ttl = Math.max(1, expiresAt - Date.now());
    // Open challenges of this credential: counted up here, down when one is spent, and forgotten one
    // lifetime after the first (so challenges that expire unused are not counted for longer).
    const counter = `${this.#prefix}count:${credential}`;
    const counted = await this.#redis.multi().incr(counter).pexpire(counter, ttl, 'NX').exec();
    if (counted === null) throw new Error('redis transaction aborted');
    if (Number(counted[0]?.[1]) > max) {
      // Refused: not an open challenge.
      await this.#redis.eval(DECR_IF_EXISTS, 1, counter);
      return false;
    }
    await this.#redis.set(`${this.#prefix}${challenge}:${credential}`, '1', 'PX', ttl);
    return true;
  }

  async consumeChallenge(challenge: string, credential: string): Promise<boolean> {
    // DEL answers 1 to exactly one caller, whichever replica it runs on; Redis has expired it when it is late.
    if ((await this.#redis.del(`${this.#prefix}${challenge}:${credential}`)) !== 1) return false;
    // One open challenge fewer (the counter is left alone once it expired, so it never outlives its lifetime).
    await this.#redis.eval(DECR_IF_EXISTS, 1, `${this.#prefix}count:${credential}`);
    return true;
  }

  async countInstalls(keyId: string): Promise<number> {
    return Number((await this.#rows(SQL.countInstalls, [keyId]))[0]?.n ?? 0);
  }

  async countEnrollments(keyId: string, since: number): Promise<{ count: number; oldest: number | null }> {
    const r = (await this.#rows(SQL.countEnrollments, [keyId, since]))[0] ?? {};
    return { count: Number(r.n ?? 0), oldest: r.oldest === null || r.oldest === undefined ? null : Number(r.oldest) };
  }

  async createInstall(row: InstallRow): Promise<void> {
    await this.#rows(
      SQL.createInstall,
      installValues(row, (b) => b),
    );
  }

  async install(iid: string): Promise<InstallRow | undefined> {
    const r = (await this.#rows(SQL.install, [iid]))[0];
    return r === undefined ? undefined : installOf(r);
  }

  async listInstalls(keyId: string, limit = 1000): Promise<InstallRow[]> {
    return (await this.#rows(SQL.listInstalls, [keyId, limit])).map(installOf);
  }

  async revokeInstall(iid: string, at = Date.now()): Promise<InstallRow | undefined> {
    await this.#rows(SQL.revokeInstall, [at, iid]);
    return this.install(iid);
  }

  async revokeReleaseInstalls(releaseKid: string, at = Date.now()): Promise<InstallRow[]> {
    return (await this.#rows(SQL.revokeReleaseInstalls, [at, releaseKid])).map(installOf);
  }

  async recordEnrollment(e: EnrollmentRecord): Promise<void> {
    await this.#rows(SQL.recordEnrollment, [e.ts, e.keyId, e.address, e.releaseKid, e.outcome, e.installId, e.reason]);
  }

  async enrollments(query: EnrollmentQuery): Promise<EnrollmentRecord[]> {
    const { where, params } = enrollmentWhere(query);
    const sql = `SELECT * FROM enrollments ${where} ORDER BY ts DESC, seq DESC LIMIT ?`;
    return (await this.#rows(sql, [...params, query.limit ?? 100])).map(enrollmentOf);
  }

  async installsPerKey(limit = 100): Promise<KeyInstalls[]> {
    return (await this.#rows(SQL.installsPerKey, [limit])).map(keyPerKey);
  }

  sweepChallenges(): number {
    return 0;
  }
}
