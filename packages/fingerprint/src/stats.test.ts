import { MoatError } from '@moat/protocol/support';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FingerprintStatsError } from './errors.js';
import { FingerprintStats, wilson } from './stats.js';

const signal = fc.constantFrom('match' as const, 'mismatch' as const, 'missing' as const);

describe('wilson', () => {
  it('matches published values', () => {
    // 3/100 at 95%: [0.01026, 0.08452]; 0/10: [0, 0.27753].
    const a = wilson(3, 100);
    expect(a.low).toBeCloseTo(0.01026, 4);
    expect(a.high).toBeCloseTo(0.08452, 4);
    const b = wilson(0, 10);
    expect(b.low).toBe(0);
    expect(b.high).toBeCloseTo(0.27753, 4);
    expect(wilson(0, 0)).toEqual({ low: 0, high: 1 });
  });

  it('always contains the observed rate', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 100_000 }), fc.nat(), (n, k0) => {
        const k = k0 % (n + 1);
        const { low, high } = wilson(k, n);
        expect(low).toBeLessThanOrEqual(k / n + 1e-12);
        expect(high).toBeGreaterThanOrEqual(k / n - 1e-12);
      }),
    );
  });
});

describe('FingerprintStats', () => {
  it('rejects impossible options with a typed error', () => {
    expect(() => new FingerprintStats({ p0: 0.1, p1: 0.05 })).toThrow(FingerprintStatsError);
    // One base class for every Moat error: callers catch MoatError and read its code.
    expect(() => new FingerprintStats({ p0: 0.1, p1: 0.05 })).toThrow(
      expect.objectContaining({ code: 'ERR_STATS_OPTIONS', message: expect.stringMatching(/^ERR_STATS_OPTIONS: expected /) }),
    );
    expect(new FingerprintStatsError('ERR_STATS_FORMAT', 'x', 'y')).toBeInstanceOf(MoatError);
    expect(() => new FingerprintStats({ alpha: 0 })).toThrow(/ERR_STATS_OPTIONS: expected 0 < alpha, beta < 0.5/);
  });

  it('decides tampering on a run of mismatches and keeps it', () => {
    const stats = new FingerprintStats();
    let classification = stats.record('k', 'mismatch');
    expect(classification).toBe('suspicious');
    for (let i = 0; i < 10 && classification !== 'tampering'; i++) classification = stats.record('k', 'mismatch');
    expect(classification).toBe('tampering');
    const at = stats.report('k')?.tamperingAt;
    expect(at).toBeGreaterThan(1);
    for (let i = 0; i < 10_000; i++) stats.record('k', 'match');
    expect(stats.report('k')?.classification).toBe('tampering');
    stats.reset('k');
    expect(stats.report('k')).toBeUndefined();
  });

  it('accepts clean keys and restarts the test', () => {
    const stats = new FingerprintStats();
    for (let i = 0; i < 2_000; i++) stats.record('k', 'match');
    const r = stats.report('k');
    expect(r?.classification).toBe('clean');
    expect(r?.cleanDecisions).toBeGreaterThan(1);
    expect(r?.llr).toBeGreaterThan(r?.bounds.clean ?? 0);
  });

  it('counts missing fingerprints apart from the test', () => {
    const stats = new FingerprintStats();
    stats.record('k', 'missing');
    expect(stats.report('k')).toMatchObject({ n: 0, missing: 1, classification: 'clean' });
  });

  it('evicts the least recently seen key beyond maxKeys', () => {
    const stats = new FingerprintStats({ maxKeys: 2 });
    stats.record('a', 'match');
    stats.record('b', 'match');
    stats.record('a', 'match');
    stats.record('c', 'match');
    expect([...stats.keys()]).toEqual(['a', 'c']);
    expect(stats.evicted).toBe(1);
  });

  it('round-trips through JSON exactly', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('a', 'b', 'c'), signal), { maxLength: 300 }), (events) => {
        const stats = new FingerprintStats();
        events.forEach(([key, s], i) => {
          stats.record(key, s, i);
        });
        const copy = FingerprintStats.fromJSON(JSON.parse(JSON.stringify(stats)));
        expect(copy.toJSON()).toEqual(stats.toJSON());
      }),
    );
  });

  it('merging two replicas gives the same counts as one replica seeing everything', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('a', 'b'), signal, fc.boolean()), { maxLength: 400 }), (events) => {
        const one = new FingerprintStats();
        const left = new FingerprintStats();
        const right = new FingerprintStats();
        events.forEach(([key, s, toLeft], i) => {
          one.record(key, s, i);
          (toLeft ? left : right).record(key, s, i);
        });
        const merged = left.merge(right.toJSON());
        for (const key of ['a', 'b']) {
          const m = merged.report(key);
          const o = one.report(key);
          expect(m?.n).toBe(o?.n);
          expect(m?.mismatches).toBe(o?.mismatches);
          expect(m?.missing).toBe(o?.missing);
          expect(m?.lastSeen).toBe(o?.lastSeen);
          // A key the single replica calls tampering is tampering after the merge too when
          // the evidence is all mismatches; in general the combined test may decide earlier.
          if (o !== undefined && o.mismatches === o.n && o.classification === 'tampering') expect(m?.classification).toBe('tampering');
        }
      }),
    );
  });

  it('refuses to merge statistics made with other parameters', () => {
    const a = new FingerprintStats();
    const b = new FingerprintStats({ p1: 0.02 });
    expect(() => a.merge(b)).toThrow(/ERR_STATS_OPTIONS/);
  });

  it('rejects malformed snapshots with the reason, never loading half of one', () => {
    const good = new FingerprintStats();
    good.record('k', 'mismatch');
    const doc = JSON.parse(JSON.stringify(good));
    const cases: Array<[unknown, RegExp]> = [
      [null, /expected an object/],
      [{ ...doc, format: 'v0' }, /format/],
      [{ ...doc, options: { ...doc.options, p0: 'x' } }, /options.p0 as a number/],
      [{ ...doc, keys: { k: { ...doc.keys.k, n: -1 } } }, /n as a non-negative integer/],
      [{ ...doc, keys: { k: { ...doc.keys.k, mismatches: 5 } } }, /mismatches ≤ n/],
      [{ ...doc, keys: { k: { ...doc.keys.k, tamperingAt: 'soon' } } }, /tamperingAt/],
    ];
    for (const [input, message] of cases) {
      const target = new FingerprintStats();
      expect(() => target.merge(input)).toThrow(message);
      expect(target.size).toBe(0);
    }
  });
});
