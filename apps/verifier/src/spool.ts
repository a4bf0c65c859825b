import { closeSync, fsyncSync, openSync, readFileSync, statSync, truncateSync, writeSync } from 'node:fs';
import { SpoolError } from './errors.js';
import type { RequestRecord, Storage } from './storage.js';

export { SpoolError } from './errors.js';

/**
 * A bounded, durable local spool for the records of requests answered while the record store
 * cannot be written: one JSON line per record, appended and fsync'ed before the answer goes
 * out, drained into the store (and truncated) once it is back. Keep it on another volume than
 * the database if the disk filling up is the failure to survive.
 */
export class RecordSpool {
  readonly #file: string;
  readonly #maxBytes: number;

  constructor(file: string, maxBytes: number) {
    this.#file = file;
    this.#maxBytes = maxBytes;
  }

  get file(): string {
    return this.#file;
  }

  /** Bytes waiting in the spool. */
  size(): number {
    try {
      return statSync(this.#file).size;
    } catch {
      return 0;
    }
  }

  /**
   * Appends a record durably.
   *
   * @throws {SpoolError} when the spool is full or cannot be written.
   */
  append(record: RequestRecord): void {
    const line = Buffer.from(`${JSON.stringify(record)}\n`);
    if (this.size() + line.length > this.#maxBytes)
      throw new SpoolError('ERR_SPOOL', `expected room in the spool ${this.#file} (${this.#maxBytes} bytes), got a full spool`);
    let fd: number | undefined;
    try {
      fd = openSync(this.#file, 'a', 0o600);
      writeSync(fd, line);
      fsyncSync(fd);
    } catch (error) {
      throw new SpoolError('ERR_SPOOL', `expected to append to ${this.#file}, got ${error instanceof Error ? error.message : 'an error'}`, {
        cause: error,
      });
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  /**
   * Moves every spooled record into the storage, then empties the spool. A record already in
   * the storage (a drain interrupted half way) is not written twice. Throws, keeping the
   * spool, when the storage refuses.
   */
  async drain(storage: Storage): Promise<number> {
    let text: string;
    try {
      text = readFileSync(this.#file, 'utf8');
    } catch {
      return 0;
    }
    const records = text
      .split('\n')
      .filter((line) => line !== '')
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as RequestRecord];
        } catch {
          return []; // a torn last line from a crash mid-append
        }
      });
    for (const record of records) await storage.insertRecord(record, { ignoreDuplicate: true });
    truncateSync(this.#file, 0);
    return records.length;
  }
}
