import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteStorage } from './storage.js';
import { isContentError, StoreContentError, StoreUnavailableError, storeBoundary } from './store-boundary.js';

describe('store boundary', () => {
  it('a closed SQLite store is unavailable (503, retry), not a refusal of the record (quarantine)', async () => {
    const sqlite = new SqliteStorage(join(mkdtempSync(join(tmpdir(), 'moat-boundary-')), 'v.db'), randomBytes(32));
    const storage = storeBoundary(sqlite);
    await sqlite.close();
    expect(() => storage.lookupApiKey('sk-moat-x')).toThrow(StoreUnavailableError);
    await expect(Promise.resolve().then(() => storage.summary())).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  it('tells what the store refuses from the state it is in', () => {
    expect(isContentError(new TypeError('SQLite3 can only bind numbers, strings, bigints, buffers, and null'))).toBe(true);
    expect(isContentError(new TypeError('The database connection is not open'))).toBe(false);
    expect(isContentError(new TypeError('This database connection is busy executing a query'))).toBe(false);
    expect(isContentError(Object.assign(new Error('constraint'), { code: 'SQLITE_CONSTRAINT_PRIMARYKEY' }))).toBe(true);
    expect(isContentError(Object.assign(new Error('locked'), { code: 'SQLITE_BUSY' }))).toBe(false);
    expect(isContentError(Object.assign(new Error('bad value'), { code: '22P02' }))).toBe(true);
    expect(isContentError(Object.assign(new Error('gone'), { code: 'ECONNREFUSED' }))).toBe(false);
    expect(isContentError(new StoreContentError('ERR_STORE_CONTENT', 'x'))).toBe(true);
  });
});
