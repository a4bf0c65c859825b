import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { DecoyIndexCache } from './decoy-index.js';
import { until } from './services.test-util.js';
import { SqliteStorage, type Storage } from './storage.js';
import { Supervisor } from './supervise.js';

const silent = pino({ level: 'silent' });

/** A storage whose key listing fails while `down.value` is true (PostgreSQL stopped). */
function flakyKeys(down: { value: boolean }): Storage {
  const storage = new SqliteStorage(':memory:', randomBytes(32));
  return new Proxy(storage, {
    get(target, name) {
      if (name === 'listApiKeys' && down.value) return () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:5432'));
      const value = Reflect.get(target, name);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

describe('background tasks', () => {
  it('a decoy index rebuild that fails in the background ends nothing: no unhandled rejection', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const cache = new DecoyIndexCache(flakyKeys({ value: true }), randomBytes(32), { refreshMs: 0 });
      // Each call finds the index due and starts a rebuild off the request path.
      for (let i = 0; i < 3; i++) {
        expect(cache.current()).toBeUndefined();
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(rejections).toEqual([]);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });

  it('supervised: the failure is logged, counted, shown as a readiness check, retried with backoff, and cleared by a success', async () => {
    const registry = new Registry();
    const supervisor = new Supervisor(silent, { registry, backoff: { baseMs: 10, maxMs: 40 } });
    const down = { value: true };
    const cache = new DecoyIndexCache(flakyKeys(down), randomBytes(32), {
      refreshMs: 0,
      background: (name, task) => supervisor.run(name, task),
    });
    cache.current();
    await until(
      async () => ((await registry.getSingleMetric('moat_verifier_background_errors_total')?.get())?.values[0]?.value ?? 0) >= 3,
      'retries',
    );
    expect(supervisor.checks()).toEqual([
      { name: 'background:decoy-index', ok: false, error: expect.stringMatching(/failures in a row: connect ECONNREFUSED/) },
    ]);
    down.value = false;
    await until(() => supervisor.checks().length === 0, 'recovery');
    expect(cache.current()).toBeDefined();
    supervisor.close();
  });

  it('a periodic task that throws keeps running, at its interval once it succeeds again', async () => {
    const supervisor = new Supervisor(silent, { backoff: { baseMs: 5, maxMs: 20 } });
    let runs = 0;
    supervisor.every('flaky', 10, () => {
      runs++;
      if (runs <= 3) throw new Error(`run ${runs} failed`);
    });
    await until(() => runs >= 6, 'six runs');
    expect(supervisor.checks()).toEqual([]);
    supervisor.close();
    const after = runs;
    await new Promise((r) => setTimeout(r, 50));
    expect(runs).toBe(after);
  });
});
