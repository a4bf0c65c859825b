import { describe, expect, it } from 'vitest';
import { ApiKeyCache } from './key-cache.js';

describe('ApiKeyCache', () => {
  it('reuses a found key until its time is up, then asks again', async () => {
    let now = 1_000;
    let lookups = 0;
    const store = new Map([['sk-a', 'key_a']]);
    const lookup = (k: string) => {
      lookups++;
      return store.get(k);
    };
    const cache = new ApiKeyCache({ ttlMs: 5_000, now: () => now });
    expect(await cache.resolve('sk-a', lookup)).toBe('key_a');
    expect(await cache.resolve('sk-a', lookup)).toBe('key_a');
    expect(lookups).toBe(1);
    store.delete('sk-a'); // revoked
    now += 4_999;
    expect(await cache.resolve('sk-a', lookup)).toBe('key_a');
    now += 1;
    expect(await cache.resolve('sk-a', lookup)).toBeUndefined();
    expect(lookups).toBe(2);
    expect(cache.size).toBe(0);
  });

  it('never caches unknown keys and stays within its bound', async () => {
    const cache = new ApiKeyCache({ maxEntries: 3 });
    for (let i = 0; i < 100; i++) expect(await cache.resolve(`sk-unknown-${i}`, () => undefined)).toBeUndefined();
    expect(cache.size).toBe(0);
    for (let i = 0; i < 10; i++) await cache.resolve(`sk-${i}`, (k) => `id-${k}`);
    expect(cache.size).toBe(3);
    const asked: string[] = [];
    const fresh = (k: string) => {
      asked.push(k);
      return 'fresh';
    };
    expect(await cache.resolve('sk-9', fresh)).toBe('id-sk-9');
    expect(await cache.resolve('sk-0', fresh)).toBe('fresh'); // evicted as the oldest
    expect(asked).toEqual(['sk-0']);
    cache.clear();
    expect(cache.size).toBe(0);
  });
});
