import type { Logger } from 'pino';
import { RecordStoreError, SpoolError, unavailable } from './errors.js';
import type { RecordSpool } from './spool.js';
import type { RequestRecord, Storage } from './storage.js';

export { RecordStoreError } from './errors.js';

/** How a record was kept. */
export type Kept = 'stored' | 'spooled';

/**
 * Guards the record store: a write that fails goes to the local spool and marks the store
 * down; while it is down, Moat-checked requests are refused before they are forwarded (503
 * with `retry-after`), their records spooled; a probe every `probeMs` finds it back, drains
 * the spool and lets requests through again — no restart needed.
 */
export class StoreGuard {
  readonly #storage: Storage;
  readonly #spool: RecordSpool;
  readonly #log: Logger;
  readonly #probeMs: number;
  #down: string | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(storage: Storage, spool: RecordSpool, log: Logger, probeMs = 1_000) {
    this.#storage = storage;
    this.#spool = spool;
    this.#log = log;
    this.#probeMs = probeMs;
  }

  /** Why the store is down, or `undefined` when it takes writes. */
  get down(): string | undefined {
    return this.#down;
  }

  /**
   * Writes a record: to the store, or when that fails (and `spool` is not `false`) to the
   * spool.
   *
   * @throws {SpoolError} when neither can take it; {@link RecordStoreError} when the
   * store cannot and the spool is not wanted.
   */
  async write(record: RequestRecord, options: { readonly spool?: boolean } = {}): Promise<Kept> {
    if (this.#down === undefined) {
      try {
        await this.#storage.insertRecord(record);
        return 'stored';
      } catch (error) {
        this.markDown(error instanceof Error ? error.message : String(error));
      }
    }
    if (options.spool === false)
      throw new RecordStoreError('ERR_RECORD_STORE', `expected the record store to take ${record.id}, got: ${this.#down}`);
    this.#spool.append(record);
    return 'spooled';
  }

  /**
   * Refuses, retryably, while the store is down: nothing is forwarded that cannot be recorded.
   *
   * @throws {ApiError} 503 `overloaded_error` with `retry-after`.
   */
  assertWritable(): void {
    if (this.#down !== undefined) throw unavailable('the record store');
  }

  /** Marks the store down (a failed write) and starts probing for its return. */
  markDown(reason: string): void {
    if (this.#down === undefined) this.#log.error({ reason }, 'record store down: refusing Moat-checked requests, spooling their records');
    this.#down = reason;
    this.#timer ??= setInterval(() => void this.#probe(), this.#probeMs);
    this.#timer.unref();
  }

  async #probe(): Promise<void> {
    const checks = await this.#storage.readiness();
    if (!checks.every((c) => c.ok)) return;
    try {
      const drained = await this.#spool.drain(this.#storage);
      this.#log.warn({ drained }, 'record store back: spooled records written');
    } catch (error) {
      this.#log.error(
        { err: error instanceof Error ? error.message : String(error) },
        'record store back but the spool did not drain; retrying',
      );
      return;
    }
    this.#down = undefined;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Stops probing. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

export { SpoolError };
