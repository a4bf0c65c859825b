import { randomUUID } from 'node:crypto';
import { RECORD_COLUMNS } from '../record-schema.js';
import { cutText, markStorable, storableText } from '../record-text.js';
import { initialRecordedSignals, RECORDED_SIGNALS } from '../signals.js';
import type { RequestRecord } from '../storage.js';
import { type Kept, RecordStoreError } from '../store-guard.js';

/** Where records go: the store, or the spool while the store is down. */
export interface RecordWriter {
  write(record: RequestRecord, options?: { readonly spool?: boolean; readonly upsert?: boolean }): Promise<Kept>;
  /** Told once per request, with its final record: how it was kept, or `lost` when nothing took it. */
  finished?(record: RequestRecord, kept: Kept | 'lost'): void;
}

export { RecordStoreError } from '../store-guard.js';

/** Bounds of what a record stores, whatever the request sent. */
export const RECORD_LIMITS = { model: 200, reason: 200, reasons: 20, list: 20 } as const;

/** A time-ordered request id (milliseconds, then 48 random bits): records append to the id index. */
export function newRequestId(now = Date.now()): string {
  return `req_${now.toString(16).padStart(12, '0')}${randomUUID().slice(-12)}`;
}

const bound = cutText;

/** The record's optional text fields, whatever row adds one: each is cut to 64 unless bounded below. */
const OPTIONAL_TEXT_FIELDS = RECORD_COLUMNS.filter((c) => c.kind === 'optional text').map((c) => c.field);

function boundedOptionalText(record: RequestRecord): Record<string, string | null | undefined> {
  const fields = record as unknown as Record<string, string | null | undefined>;
  return Object.fromEntries(
    OPTIONAL_TEXT_FIELDS.map((field) => {
      const value = fields[field];
      return [field, value === null || value === undefined ? value : bound(value, 64)];
    }),
  );
}

/**
 * A record with every string storable on every backend (no NUL, well-formed Unicode) and cut
 * to {@link RECORD_LIMITS} on whole code points; marked storable, so the store boundary takes
 * it without walking it again.
 */
export function boundedRecord(record: RequestRecord): RequestRecord {
  return markStorable({
    ...record,
    ...boundedOptionalText(record),
    id: storableText(record.id),
    verdict: storableText(record.verdict) as RequestRecord['verdict'],
    // Every recorded signal's value, whatever row adds one (their values come from code; bounded all the same).
    ...Object.fromEntries(RECORDED_SIGNALS.map((row) => [row.name, bound(String(record[row.name]), 64)])),
    model: record.model === null ? null : bound(record.model, RECORD_LIMITS.model),
    batch: record.batch === null ? null : bound(record.batch, 64),
    reasons: record.reasons.slice(0, RECORD_LIMITS.reasons).map((r) => bound(r, RECORD_LIMITS.reason)),
    gateway: record.gateway.slice(0, RECORD_LIMITS.list).map((g) => bound(g, 64)),
    relay: record.relay.slice(0, RECORD_LIMITS.list).map((g) => bound(g, 64)),
  });
}

/**
 * The one record of one request. Stages fill it in as they learn; {@link finish} writes it
 * exactly once, with the status the client got, and resolves when it is durable. Every exit
 * of a request goes through `finish` (the pipeline's `finally` makes sure), so no request
 * leaves no record and none leaves two.
 */
export class RequestLedger {
  #record: RequestRecord;
  readonly #store: RecordWriter;
  readonly #started: number;
  #written: Promise<Kept> | undefined;
  #reserving: Promise<void> | undefined;
  #reserved = false;

  constructor(store: RecordWriter, id: string, started = performance.now()) {
    this.#store = store;
    this.#started = started;
    this.#record = {
      id,
      ts: Date.now(),
      keyId: null,
      model: null,
      ...initialRecordedSignals(),
      gateway: [],
      relay: [],
      verdict: 'allow',
      reasons: [],
      status: null,
      latencyMs: null,
      decoys: 0,
      batch: null,
    };
  }

  get id(): string {
    return this.#record.id;
  }

  get record(): RequestRecord {
    return this.#record;
  }

  /** Whether {@link finish} was called. */
  get finished(): boolean {
    return this.#written !== undefined;
  }

  /** Fills in what a stage learned. Ignored once finished. */
  set(fields: Partial<Omit<RequestRecord, 'id' | 'ts'>>): void {
    if (this.#written === undefined) this.#record = { ...this.#record, ...fields };
  }

  /** Adds a reason (kept in order, bounded). */
  reason(text: string): void {
    this.set({ reasons: [...this.#record.reasons, text] });
  }

  /**
   * Reserves the record in the store before the request is forwarded: written now (status
   * still open) to the store and nowhere else, so an upstream is never paid for an answer
   * that cannot be recorded. {@link finish} then completes it — in the store, or in the spool
   * should the store fail meanwhile — and the answer goes out either way. Called again, it
   * returns the same promise: the pipeline starts it early for a stamped request, so the
   * reservation shares the group commit that spends the stamp's nonce.
   *
   * @throws {ApiError} 503 while the store is known to be down; {@link RecordStoreError}
   * when the store did not take the record.
   */
  reserve(): Promise<void> {
    if (this.#written !== undefined) return Promise.resolve();
    this.#reserving ??= (async () => {
      const kept = await this.#store.write(boundedRecord(this.#record), { spool: false });
      this.#reserved = kept === 'stored';
    })();
    return this.#reserving;
  }

  /** A reservation in flight settles first: a finish then completes the reserved record (an upsert). */
  async #settled(): Promise<void> {
    await this.#reserving?.catch(() => undefined);
  }

  /**
   * Writes the record with the status the client got: to the store, or to the spool while the
   * store is down. The first call writes; later calls return the same promise.
   *
   * @throws {RecordStoreError} when neither the store nor the spool took it.
   */
  finish(status: number): Promise<Kept> {
    return this.#write(status, true);
  }

  /**
   * Writes the record to the store and nowhere else, for an answer that may only go out
   * recorded in the store. When the store is down nothing is written and the ledger stays
   * open, so the refusal the client gets instead can be recorded (spooled) with its own status.
   *
   * @throws {RecordStoreError} when the store did not take it.
   */
  async finishStored(status: number): Promise<void> {
    await this.#settled();
    // Reserved before the upstream was called: the spool may complete it.
    await this.#write(status, this.#reserved);
  }

  #write(status: number, spool: boolean): Promise<Kept> {
    if (this.#written !== undefined) return this.#written;
    const latencyMs = Math.round(performance.now() - this.#started);
    const record = boundedRecord({ ...this.#record, status, latencyMs });
    const written = (async () => {
      await this.#settled();
      try {
        const kept = await this.#store.write(record, { spool, upsert: this.#reserved });
        this.#store.finished?.(record, kept);
        return kept;
      } catch (error) {
        if (!spool) this.#written = undefined;
        else this.#store.finished?.(record, 'lost');
        throw new RecordStoreError(
          'ERR_RECORD_STORE',
          `expected the record of ${record.id} to be written, got ${error instanceof Error ? error.message : 'an error'}`,
          {
            cause: error,
          },
        );
      }
    })();
    this.#record = record;
    this.#written = written;
    return written;
  }
}
