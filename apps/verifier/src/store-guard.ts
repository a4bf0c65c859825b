import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { RecordStoreError, SpoolError, unavailable } from './errors.js';
import type { RecordSpool } from './spool.js';
import type { RequestRecord, Storage } from './storage.js';
import { isContentError } from './store-boundary.js';
import { Supervisor } from './supervise.js';

export { RecordStoreError } from './errors.js';

/** How a record was kept: in the store, in the spool (store down), or in the quarantine (the store refused its content). */
export type Kept = 'stored' | 'spooled' | 'quarantined';

/** Options of {@link StoreGuard}. */
export interface StoreGuardOptions {
  /** How often the store is probed while down, at most (default 1 s). */
  readonly probeMs?: number;
  /** Runs the probe; one of the guard's own when not given. */
  readonly supervisor?: Supervisor;
  /** Where the guard's series go (`moat_verifier_records_spooled`, `moat_verifier_records_quarantined`). */
  readonly registry?: Registry;
}

/**
 * Guards the record store: a write that fails goes to the local spool and marks the store
 * down; while it is down, Moat-checked requests are refused before they are forwarded (503
 * with `retry-after`), their records spooled; a supervised probe of the same write path
 * finds it back, drains the spool and lets requests through again — no restart needed. A
 * record the store refuses for its content is quarantined (kept in the spool file, counted,
 * logged, reported by `/readyz`) and never blocks the records after it.
 */
export class StoreGuard {
  readonly #storage: Storage;
  readonly #spool: RecordSpool;
  readonly #log: Logger;
  readonly #probeMs: number;
  readonly #supervisor: Supervisor;
  readonly #ownSupervisor: boolean;
  readonly #quarantinedTotal: Counter | undefined;
  readonly #unrecordedTotal: Counter | undefined;
  readonly #responses: Counter<'status' | 'kept'> | undefined;
  #down: string | undefined;
  #probing = false;
  #restoring = false;
  #unrecorded = 0;

  constructor(storage: Storage, spool: RecordSpool, log: Logger, options: StoreGuardOptions = {}) {
    this.#storage = storage;
    this.#spool = spool;
    this.#log = log;
    this.#probeMs = options.probeMs ?? 1_000;
    this.#ownSupervisor = options.supervisor === undefined;
    this.#supervisor = options.supervisor ?? new Supervisor(log);
    if (options.registry !== undefined) {
      this.#quarantinedTotal = new Counter({
        name: 'moat_verifier_records_quarantined_total',
        help: 'Records the store refused for their content, kept in the quarantine of the spool file',
        registers: [options.registry],
      });
      new Gauge({
        name: 'moat_verifier_records_spooled',
        help: 'Records waiting in the local spool for the record store',
        registers: [options.registry],
        collect() {
          this.set(spool.count());
        },
      });
      this.#unrecordedTotal = new Counter({
        name: 'moat_verifier_records_unrecorded_total',
        help: 'Records neither the store nor the spool could take (refusals during an outage with the spool full): lost',
        registers: [options.registry],
      });
      this.#responses = new Counter({
        name: 'moat_responses_total',
        help: 'Answers by the HTTP status their record says (every route that records), and how the record was kept (stored, spooled, quarantined, lost)',
        labelNames: ['status', 'kept'],
        registers: [options.registry],
      });
    }
    if (!spool.reserveHeld) this.#restoreReserve();
  }

  /** Records lost since start: neither the store nor the spool took them. */
  get unrecorded(): number {
    return this.#unrecorded;
  }

  /** Why the store is down, or `undefined` when it takes writes. */
  get down(): string | undefined {
    return this.#down;
  }

  /** The spool behind the guard (for readiness and the admin API). */
  get spool(): RecordSpool {
    return this.#spool;
  }

  /**
   * Writes a record: to the store, or when that fails (and `spool` is not `false`) to the
   * spool. `upsert` replaces a stored record of the same id (a reserved record, finished).
   *
   * @throws {SpoolError} when neither can take it; {@link RecordStoreError} when the
   * store cannot and the spool is not wanted.
   */
  async write(record: RequestRecord, options: { readonly spool?: boolean; readonly upsert?: boolean } = {}): Promise<Kept> {
    if (this.#down === undefined) {
      try {
        await this.#storage.insertRecord(record, { upsert: options.upsert === true });
        return 'stored';
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        if (isContentError(error)) return this.#keep(record, reason);
        this.markDown(reason);
      }
    }
    if (options.spool === false)
      throw new RecordStoreError('ERR_RECORD_STORE', `expected the record store to take ${record.id}, got: ${this.#down}`);
    // A reserved record's finish completes an answer already paid for: it may use the spool's reserve.
    try {
      this.#spool.append(record, { finish: options.upsert === true });
    } catch (error) {
      this.#unrecorded++;
      this.#unrecordedTotal?.inc();
      this.#log.error({ id: record.id, status: record.status, err: error instanceof Error ? error.message : String(error) }, 'record lost');
      throw error;
    } finally {
      if (!this.#spool.reserveHeld) this.#restoreReserve();
    }
    return 'spooled';
  }

  /** Counts a request's final record by its status and where it went. */
  finished(record: RequestRecord, kept: Kept | 'lost'): void {
    this.#responses?.inc({ status: String(record.status), kept });
  }

  /** Makes the spool's reserve again as soon as there is room; until then nothing is forwarded. */
  #restoreReserve(): void {
    if (this.#restoring) return;
    this.#restoring = true;
    this.#log.error('record spool reserve given up (disk full): refusing Moat-checked requests until it is back');
    this.#supervisor.run(
      'spool-reserve',
      () => {
        if (!this.#spool.restoreReserve()) throw new Error('no room on the disk for the record spool reserve');
        this.#restoring = false;
        this.#log.warn('record spool reserve back');
      },
      { baseMs: Math.min(250, this.#probeMs), maxMs: this.#probeMs },
    );
  }

  #keep(record: RequestRecord, reason: string): Kept {
    this.#spool.keep(record, reason);
    this.#quarantinedTotal?.inc();
    this.#log.error({ id: record.id, reason }, 'record refused by the store for its content: quarantined in the spool file');
    return 'quarantined';
  }

  /**
   * Refuses, retryably, while the store is down or the spool has given up its reserve:
   * nothing is forwarded that cannot be recorded.
   *
   * @throws {ApiError} 503 `overloaded_error` with `retry-after`.
   */
  assertWritable(): void {
    if (this.#down !== undefined) throw unavailable('the record store');
    if (!this.#spool.reserveHeld) throw unavailable('the record spool (disk full)');
  }

  /** Marks the store down (a failed write) and starts probing for its return. */
  markDown(reason: string): void {
    if (this.#down === undefined) this.#log.error({ reason }, 'record store down: refusing Moat-checked requests, spooling their records');
    this.#down = reason;
    if (this.#probing) return;
    this.#probing = true;
    this.#supervisor.run('record-store', () => this.#probe(), { baseMs: Math.min(250, this.#probeMs), maxMs: this.#probeMs });
  }

  /** Drains what an earlier run spooled; when the store cannot take it yet, marks it down (and keeps trying). */
  async recover(): Promise<void> {
    if (this.#spool.count() === 0) return;
    try {
      const result = await this.#spool.drain(this.#storage);
      this.#log.warn(result, 'records spooled by an earlier run written to the store');
    } catch (error) {
      this.markDown(error instanceof Error ? error.message : String(error));
    }
  }

  /** One probe: throws while the store cannot take the write path's write or the spool does not drain. */
  async #probe(): Promise<void> {
    const checks = await this.#storage.readiness();
    const records = checks.find((c) => c.name === 'records');
    if (records !== undefined && !records.ok) throw new Error(`record store still down: ${records.error}`);
    const result = await this.#spool.drain(this.#storage);
    if (result.quarantined > 0) this.#quarantinedTotal?.inc(result.quarantined);
    this.#log.warn(result, 'record store back: spooled records written');
    this.#down = undefined;
    this.#probing = false;
    // A record spooled between the drain's last read and now waits for no outage.
    if (this.#spool.count() > 0) this.#supervisor.run('spool-drain', () => this.#spool.drain(this.#storage));
  }

  /** Stops probing. */
  close(): void {
    this.#probing = false;
    this.#restoring = false;
    if (this.#ownSupervisor) this.#supervisor.close();
  }
}

export { SpoolError };
