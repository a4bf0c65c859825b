import { randomBytes } from 'node:crypto';
import { DECOY_PERIOD_MS, decoyPeriod, decoyTools } from '@moat/distill-guard/server';
import { describe, expect, it } from 'vitest';
import { DecoyIndexCache } from './decoy-index.js';
import type { Storage } from './storage.js';

const DAY = 86_400_000;
const secret = randomBytes(32);

/** A record store that knows only its API keys: all the index reads. */
function keysOnly(ids: string[]): Storage {
  return { listApiKeys: () => ids.map((id) => ({ id, label: id, created: 0 })) } as unknown as Storage;
}

/** The text of a turn that calls the decoy `key` was served at `when`. */
function callOf(key: string, when: number): string {
  const [decoy] = decoyTools({ secret, apiKeyId: key, period: decoyPeriod(when) });
  return `tool_use ${decoy?.tool.name} {"id":"${decoy?.canary}"}`;
}

describe('DecoyIndexCache', () => {
  it('traces a decoy served 30 days ago to its key, over a 90-day window by default', async () => {
    const now = Date.now();
    const cache = new DecoyIndexCache(keysOnly(['key_a', 'key_b']), secret, { now: () => now });
    await cache.refresh(true);
    const traced = cache.current()?.trace(callOf('key_b', now - 30 * DAY), 0.7);
    expect(traced?.map((t) => t.apiKeyId)).toEqual(['key_b']);
    expect(cache.current()?.trace(callOf('key_a', now - 89 * DAY), 0.7)[0]?.apiKeyId).toBe('key_a');
    // Older than the window: nobody is named.
    expect(cache.current()?.trace(callOf('key_a', now - 120 * DAY - DECOY_PERIOD_MS), 0.7)).toEqual([]);
    // Thirteen periods back, and the next one: decoys served from its first second are traced.
    expect(cache.stats.periods).toHaveLength(15);
    expect(cache.current()?.trace(callOf('key_a', now + DECOY_PERIOD_MS), 0.7)[0]?.apiKeyId).toBe('key_a');
  });

  it('keeps a configured window: 7 days traces last week, not last month', async () => {
    const now = Date.now();
    const cache = new DecoyIndexCache(keysOnly(['key_a']), secret, { retentionDays: 7, now: () => now });
    await cache.refresh(true);
    expect(cache.current()?.trace(callOf('key_a', now - 7 * DAY), 0.7)[0]?.apiKeyId).toBe('key_a');
    expect(cache.current()?.trace(callOf('key_a', now - 30 * DAY), 0.7)).toEqual([]);
  });

  it('slides with the rotation period: the new week is added, the one that left the window dropped', async () => {
    let now = Date.now();
    const keys = ['key_a'];
    const cache = new DecoyIndexCache(keysOnly(keys), secret, { retentionDays: 14, now: () => now });
    await cache.refresh(true);
    const first = cache.stats.periods;
    const old = callOf('key_a', now - 14 * DAY);
    expect(cache.current()?.trace(old, 0.7)).toHaveLength(1);
    now += DECOY_PERIOD_MS;
    keys.push('key_b');
    await cache.refresh();
    expect(cache.stats.periods).toEqual([...first.slice(1), (first.at(-1) as number) + 1]);
    expect(cache.stats.keys).toBe(2);
    expect(cache.current()?.trace(callOf('key_b', now), 0.7)[0]?.apiKeyId).toBe('key_b');
    expect(cache.current()?.trace(old, 0.7)).toEqual([]);
  });
});

describe('DecoyIndexCache checks for new keys', () => {
  it('lists the keys at most once per 10 s when nothing changed, however many requests ask', async () => {
    let now = Date.now();
    let listed = 0;
    const storage = {
      listApiKeys: () => {
        listed++;
        return [{ id: 'key_a', label: 'a', created: 0 }];
      },
    } as unknown as Storage;
    const tasks: Array<Promise<void>> = [];
    const cache = new DecoyIndexCache(storage, secret, { now: () => now, background: (_, task) => tasks.push(task()) });
    await cache.refresh(true);
    expect(listed).toBe(1);
    now += 11_000;
    for (let i = 0; i < 100; i++) {
      cache.current();
      await Promise.all(tasks.splice(0));
      now += 10; // requests keep coming, 1 s in all
    }
    // One check found nothing new; the requests after it do not list the keys again.
    expect(listed).toBe(2);
    now += 10_000;
    cache.current();
    await Promise.all(tasks.splice(0));
    expect(listed).toBe(3);
  });
});
