/**
 * The request record's one schema, shared by SQLite and PostgreSQL: its columns (the fixed
 * ones and one per recorded signal of the registry), the table, the migration that gives an
 * existing database the columns of newer signals, the row ↔ record mapping, the filters of
 * `/admin/records` and the per-key aggregates of `/admin/activity`. The backends only run it.
 */
import type { Verdict } from '@moat/protocol';
import { VerifierConfigError, VerifierTableError } from './errors.js';
import { type ActivityField, RECORDED_SIGNALS, type RecordedSignals } from './signals.js';

/** The two SQL backends. */
export type Dialect = 'sqlite' | 'postgres';

/** One request as recorded: signals, verdict and outcome. */
export type RequestRecord = RecordedSignals & {
  readonly id: string;
  readonly ts: number;
  readonly keyId: string | null;
  readonly model: string | null;
  /** Gateway rule ids seen on the request. */
  readonly gateway: readonly string[];
  /** Relay signals besides known gateway headers (`forwarded_chain`, `ua_mismatch`, …). */
  readonly relay: readonly string[];
  readonly verdict: Verdict;
  readonly reasons: readonly string[];
  readonly status: number | null;
  readonly latencyMs: number | null;
  /** Decoy tools injected into the request. */
  readonly decoys: number;
  /** The record of the Message Batch create this request belongs to (the create, its items, its retrievals); `null` otherwise. */
  readonly batch: string | null;
  /** The install that stamped the request (`i1`), `null` otherwise; absent in records made before installs existed. */
  readonly installId?: string | null;
};

/**
 * Which records to read: a time range (Unix ms, `since` inclusive, `until` exclusive), a key,
 * a verdict, signal values.
 */
export type RecordQuery = Partial<RecordedSignals> & {
  readonly limit?: number;
  readonly keyId?: string;
  readonly since?: number;
  readonly until?: number;
  readonly verdict?: Verdict;
  /** A gateway rule id the record lists. */
  readonly gateway?: string;
  /** The record id of a Message Batch create: its own record, its items' and its retrievals'. */
  readonly batch?: string;
  /** An install id: the requests it stamped. */
  readonly installId?: string;
};

/** One API key's traffic in a time range, for the dashboard's risk table; the signal counts come from the registry. */
export type KeyActivity = { readonly [F in ActivityField]: number } & {
  readonly keyId: string;
  readonly requests: number;
  readonly allow: number;
  readonly flag: number;
  readonly block: number;
  /** Gateway rule ids seen on this key's requests. */
  readonly gateways: readonly string[];
  /** The newest request's time (Unix ms). */
  readonly last: number;
};

type Kind = 'id' | 'time' | 'text' | 'optional text' | 'optional int' | 'count' | 'list' | 'signal';
interface Column {
  readonly field: keyof RequestRecord;
  readonly column: string;
  readonly kind: Kind;
  /** A signal's value before its evidence, and what older rows get when the column is added. */
  readonly initial?: string;
}

const TYPES: Readonly<Record<Kind, Readonly<Record<Dialect, string>>>> = {
  id: { sqlite: 'TEXT PRIMARY KEY', postgres: 'TEXT PRIMARY KEY' },
  time: { sqlite: 'INTEGER NOT NULL', postgres: 'BIGINT NOT NULL' },
  text: { sqlite: 'TEXT NOT NULL', postgres: 'TEXT NOT NULL' },
  'optional text': { sqlite: 'TEXT', postgres: 'TEXT' },
  'optional int': { sqlite: 'INTEGER', postgres: 'INTEGER' },
  count: { sqlite: 'INTEGER NOT NULL DEFAULT 0', postgres: 'INTEGER NOT NULL DEFAULT 0' },
  list: { sqlite: 'TEXT NOT NULL', postgres: 'JSONB NOT NULL' },
  signal: { sqlite: 'TEXT NOT NULL', postgres: 'TEXT NOT NULL' },
};

/** Every column of `records`, in insert order: the fixed ones, then one per recorded signal. */
export const RECORD_COLUMNS: readonly Column[] = [
  { field: 'id', column: 'id', kind: 'id' },
  { field: 'ts', column: 'ts', kind: 'time' },
  { field: 'keyId', column: 'key_id', kind: 'optional text' },
  { field: 'model', column: 'model', kind: 'optional text' },
  { field: 'gateway', column: 'gateway', kind: 'list' },
  { field: 'relay', column: 'relay', kind: 'list' },
  { field: 'verdict', column: 'verdict', kind: 'text' },
  { field: 'reasons', column: 'reasons', kind: 'list' },
  { field: 'status', column: 'status', kind: 'optional int' },
  { field: 'latencyMs', column: 'latency_ms', kind: 'optional int' },
  { field: 'decoys', column: 'decoys', kind: 'count' },
  { field: 'batch', column: 'batch', kind: 'optional text' },
  { field: 'installId', column: 'install_id', kind: 'optional text' },
  ...RECORDED_SIGNALS.map((row) => ({
    field: row.name,
    column: row.column,
    kind: 'signal' as const,
    initial: row.initial,
  })),
];

// Names and initial values are written into SQL: they come from code, and are checked here once.
for (const c of RECORD_COLUMNS)
  if (!/^[a-z_]+$/.test(c.column) || (c.initial !== undefined && !/^[a-z_]+$/.test(c.initial)))
    throw new VerifierTableError(
      'ERR_VERIFIER_TABLE',
      `record column: expected [a-z_]+ names and values, got ${c.column} = ${c.initial}`,
    );

const definition = (c: Column, dialect: Dialect) =>
  `${c.column} ${TYPES[c.kind][dialect]}${c.initial === undefined ? '' : ` DEFAULT '${c.initial}'`}`;

/** `CREATE TABLE records` and its indexes (PostgreSQL adds `seq`, the insertion order SQLite keeps in `rowid`). */
export function recordsTableSql(dialect: Dialect): string {
  const columns = RECORD_COLUMNS.map((c) => definition(c, dialect));
  if (dialect === 'postgres') columns.push('seq BIGSERIAL');
  return `CREATE TABLE IF NOT EXISTS records (${columns.join(', ')});
    CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
    CREATE INDEX IF NOT EXISTS records_key ON records (key_id, ts);`;
}

/** Indexes on columns a migration may have added: created after it. */
export function recordsIndexSql(): string {
  return (
    'CREATE INDEX IF NOT EXISTS records_batch ON records (batch) WHERE batch IS NOT NULL;' +
    'CREATE INDEX IF NOT EXISTS records_install ON records (install_id, ts) WHERE install_id IS NOT NULL;'
  );
}

/** The query that lists the columns `records` has now. */
export const EXISTING_COLUMNS_SQL: Readonly<Record<Dialect, string>> = {
  sqlite: "SELECT name FROM pragma_table_info('records')",
  postgres:
    'SELECT column_name AS name FROM information_schema.columns ' +
    "WHERE table_schema = current_schema() AND table_name = 'records'",
};

/** Columns a migration can add to a table with rows: those with a default, or that may be null. */
const ADDABLE: ReadonlySet<Kind> = new Set<Kind>(['signal', 'count', 'optional text', 'optional int']);

/**
 * The migration: `ALTER TABLE … ADD COLUMN` for every column the table lacks (a signal added
 * after the database was made); its older rows get the signal's initial value.
 *
 * @throws {VerifierConfigError} when the table lacks a column no migration can add (not a
 * records table of ours).
 */
export function migrationSql(dialect: Dialect, existing: Iterable<string>): string[] {
  const have = new Set(existing);
  const missing = RECORD_COLUMNS.filter((c) => !have.has(c.column));
  const fixed = missing.find((c) => !ADDABLE.has(c.kind));
  if (fixed !== undefined)
    throw new VerifierConfigError('database', `a records table with a column ${fixed.column}`, 'a table without it');
  const exists = dialect === 'postgres' ? 'IF NOT EXISTS ' : '';
  return missing.map((c) => `ALTER TABLE records ADD COLUMN ${exists}${definition(c, dialect)}`);
}

/** `INSERT INTO records`; `upsert` replaces a stored record of the same id (a reserved record finished, a spool drained). */
export function insertRecordSql(dialect: Dialect, mode: 'insert' | 'upsert'): string {
  const names = RECORD_COLUMNS.map((c) => c.column).join(', ');
  const params = RECORD_COLUMNS.map((_, i) => (dialect === 'sqlite' ? '?' : `$${i + 1}`)).join(', ');
  const insert = `INSERT INTO records (${names}) VALUES (${params})`;
  if (mode === 'insert') return insert;
  // A reserved record finished, or a spooled one drained twice: the last write wins, one row stays.
  const updates = RECORD_COLUMNS.filter((c) => c.column !== 'id').map((c) => `${c.column} = excluded.${c.column}`);
  return `${insert} ON CONFLICT (id) DO UPDATE SET ${updates.join(', ')}`;
}

/**
 * PostgreSQL's statement for a group commit of records: `inserts` rows inserted, then
 * `upserts` rows upserted, as one statement (one transaction), their values numbered in
 * that order. The ids must be distinct (a row is not written twice in one statement).
 */
export function insertRecordsSql(inserts: number, upserts: number): string {
  const names = RECORD_COLUMNS.map((c) => c.column).join(', ');
  const width = RECORD_COLUMNS.length;
  const values = (from: number, rows: number) =>
    Array.from(
      { length: rows },
      (_, r) => `(${RECORD_COLUMNS.map((_, c) => `$${from + r * width + c + 1}`).join(', ')})`,
    ).join(', ');
  const updates = RECORD_COLUMNS.filter((c) => c.column !== 'id').map((c) => `${c.column} = excluded.${c.column}`);
  const insert = inserts === 0 ? '' : `INSERT INTO records (${names}) VALUES ${values(0, inserts)}`;
  if (upserts === 0) return insert;
  const upsert =
    `INSERT INTO records (${names}) VALUES ${values(inserts * width, upserts)} ` +
    `ON CONFLICT (id) DO UPDATE SET ${updates.join(', ')}`;
  return inserts === 0 ? upsert : `WITH inserted AS (${insert}) ${upsert}`;
}

/** A record's values in {@link RECORD_COLUMNS} order (lists as JSON text, which both backends take). */
export function rowOf(record: RequestRecord): unknown[] {
  // A record spooled before a column existed lacks it: NULL, or the signal's initial value.
  return RECORD_COLUMNS.map((c) =>
    c.kind === 'list' ? JSON.stringify(record[c.field]) : (record[c.field] ?? c.initial ?? null),
  );
}

/**
 * Finishing a reserved record in place: `UPDATE … WHERE id = ? AND ts = ? AND key_id IS ?`
 * setting every other column, and the parameters it takes from a {@link rowOf} row. The row's
 * id, time and key are what the `records_ts` and `records_key` indexes order; leaving them
 * out of the `SET` list spares those indexes a rewrite. A row whose time or key differs (or
 * none) changes nothing, and the caller then writes the record whole.
 */
export function finishReservedSql(): { readonly sql: string; readonly params: (row: readonly unknown[]) => unknown[] } {
  const kept = new Set(['id', 'ts', 'key_id']);
  const index = (column: string) => RECORD_COLUMNS.findIndex((c) => c.column === column);
  const set = RECORD_COLUMNS.flatMap((c, i) => (kept.has(c.column) ? [] : [[c.column, i] as const]));
  const where = ['id', 'ts', 'key_id'].map(index);
  return {
    sql: `UPDATE records SET ${set.map(([c]) => `${c} = ?`).join(', ')} WHERE id = ? AND ts = ? AND key_id IS ?`,
    params: (row) => [...set.map(([, i]) => row[i]), ...where.map((i) => row[i])],
  };
}

/** A stored row as a record, from either backend (PostgreSQL gives BIGINT as text and JSONB parsed). */
export function recordOf(row: Readonly<Record<string, unknown>>): RequestRecord {
  const out: Record<string, unknown> = {};
  for (const c of RECORD_COLUMNS) {
    const v = row[c.column];
    if (c.kind === 'list') out[c.field] = typeof v === 'string' ? JSON.parse(v) : v;
    else if (c.kind === 'time' || c.kind === 'count' || c.kind === 'optional int')
      out[c.field] = v === null ? null : Number(v);
    else out[c.field] = v;
  }
  return out as RequestRecord;
}

/** `gateway` holds a JSON array of rule ids: the test that it lists one, per backend. */
const GATEWAY_HAS: Readonly<Record<Dialect, (p: string) => string>> = {
  sqlite: (p) => `EXISTS (SELECT 1 FROM json_each(records.gateway) WHERE value = ${p})`,
  postgres: (p) => `gateway @> jsonb_build_array(${p}::text)`,
};

/**
 * The WHERE clause of a {@link RecordQuery}: key, time range, verdict, every recorded signal
 * of the registry, a gateway. Values are always bound, never interpolated.
 */
export function recordWhere(query: RecordQuery, dialect: Dialect): { where: string; params: unknown[] } {
  const clauses: string[] = [];
  const params: unknown[] = [];
  const add = (sql: (p: string) => string, value: unknown) => {
    params.push(value);
    clauses.push(sql(dialect === 'sqlite' ? '?' : `$${params.length}`));
  };
  if (query.keyId !== undefined) add((p) => `key_id = ${p}`, query.keyId);
  if (query.since !== undefined) add((p) => `ts >= ${p}`, query.since);
  if (query.until !== undefined) add((p) => `ts < ${p}`, query.until);
  if (query.verdict !== undefined) add((p) => `verdict = ${p}`, query.verdict);
  for (const row of RECORDED_SIGNALS) {
    const value = query[row.name];
    if (value !== undefined) add((p) => `${row.column} = ${p}`, value);
  }
  if (query.gateway !== undefined) add(GATEWAY_HAS[dialect], query.gateway);
  if (query.batch !== undefined) add((p) => `batch = ${p}`, query.batch);
  if (query.installId !== undefined) add((p) => `install_id = ${p}`, query.installId);
  return { where: clauses.length === 0 ? '' : `WHERE ${clauses.join(' AND ')}`, params };
}

/**
 * A WHERE clause narrowed by one more condition (`where` as {@link recordWhere} makes it,
 * empty or `WHERE …`).
 */
export function andWhere(where: string, condition: string): string {
  return where === '' ? `WHERE ${condition}` : `${where} AND ${condition}`;
}

/**
 * A record is finished once it has the status the client got. One without is in flight, or
 * was reserved before forwarding and never finished (the process was killed): its signals
 * and verdict are the reservation's placeholders, so the summary counts it apart.
 */
export const FINISHED = 'status IS NOT NULL';
export const UNFINISHED = 'status IS NULL';

/** What `Storage.summary` answers: finished records by verdict and attestation, and the unfinished ones. */
export interface RecordSummary {
  readonly verdicts: Record<string, number>;
  readonly attestation: Record<string, number>;
  /** Finished records (the sum of `verdicts`). */
  readonly total: number;
  /** Records without a status: in flight, or reserved by a process that was killed before it answered. */
  readonly unfinished: number;
}

/** The per-key aggregates of {@link KeyActivity}, the same SQL on both backends. */
export const ACTIVITY_COLUMNS = [
  'COUNT(*) requests',
  ...(['allow', 'flag', 'block'] as const).map((v) => `SUM(CASE WHEN verdict = '${v}' THEN 1 ELSE 0 END) "${v}"`),
  ...RECORDED_SIGNALS.flatMap((row) =>
    Object.entries(row.activity ?? {}).map(
      ([field, value]) => `SUM(CASE WHEN ${row.column} = '${value}' THEN 1 ELSE 0 END) "${field}"`,
    ),
  ),
  'MAX(ts) last_ts',
].join(',\n  ');

const ACTIVITY_FIELDS = [
  'requests',
  'allow',
  'flag',
  'block',
  ...RECORDED_SIGNALS.flatMap((row) => Object.keys(row.activity ?? {})),
];

/** A row of {@link ACTIVITY_COLUMNS} (numbers may come back as strings from PostgreSQL). */
export function activityOf(r: Readonly<Record<string, unknown>>, gateways: readonly string[]): KeyActivity {
  const counts = Object.fromEntries(ACTIVITY_FIELDS.map((f) => [f, Number(r[f] ?? 0)]));
  return { ...counts, keyId: r.key_id as string, gateways, last: Number(r.last_ts) } as KeyActivity;
}
