import { MoatError } from '@moat/protocol/support';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { forwardingHops, GatewayStats, GatewayStatsError, inspectRequest } from './server.js';

const genuine = { 'content-type': 'application/json', 'user-agent': 'moat-chat/1.4.2 (linux; node 24)', 'x-api-key': 'sk-test' };

describe('inspectRequest', () => {
  it('finds nothing on a genuine direct request', () => {
    const evidence = inspectRequest({ headers: genuine, clientVersion: '1.4.2', userAgentProduct: 'moat-chat' });
    expect(evidence).toEqual({ gateways: [], hops: [], userAgent: genuine['user-agent'], signals: [] });
  });

  it('recognises gateway headers a relay adds when forwarding', () => {
    const forwarded = { ...genuine, 'x-portkey-trace-id': 't-1', 'helicone-auth': 'Bearer x' };
    const evidence = inspectRequest({ headers: forwarded });
    expect(evidence.gateways.map((g) => g.id)).toEqual(['helicone', 'portkey']);
    expect(evidence.signals).toEqual(['gateway_headers']);
  });

  it('reads Via, Forwarded and X-Forwarded-For chains', () => {
    const headers = {
      via: '1.1 kong/3.8.0, 1.1 varnish',
      forwarded: 'for=192.0.2.60;proto=https;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"',
      'x-forwarded-for': '198.51.100.7, 10.0.0.2',
    };
    expect(forwardingHops(headers)).toEqual([
      'via:1.1 kong/3.8.0',
      'via:1.1 varnish',
      'forwarded:192.0.2.60',
      'forwarded:[2001:db8:cafe::17]:4711',
      'xff:198.51.100.7',
      'xff:10.0.0.2',
    ]);
    expect(inspectRequest({ headers }).signals).toEqual(['forwarded_chain']);
  });

  it('flags a user agent that disagrees with the claimed client version', () => {
    const claim = { clientVersion: '1.4.2', userAgentProduct: 'moat-chat' };
    expect(inspectRequest({ headers: { 'user-agent': 'python-httpx/0.27.0' }, ...claim }).signals).toEqual(['ua_mismatch']);
    expect(inspectRequest({ headers: { 'user-agent': 'moat-chat/1.4.1' }, ...claim }).signals).toEqual(['ua_mismatch']);
    expect(inspectRequest({ headers: {}, ...claim }).signals).toEqual(['ua_mismatch']);
    expect(inspectRequest({ headers: { 'User-Agent': 'Moat-Chat/1.4.2' }, ...claim }).signals).toEqual([]);
  });

  it('never throws on arbitrary header records', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.array(fc.string()))), (headers) => {
        const evidence = inspectRequest({ headers, clientVersion: '1', userAgentProduct: 'moat-chat' });
        expect(evidence.hops.length).toBeLessThanOrEqual(32);
      }),
    );
  });

  it('skips header values that are not strings, and missing headers, instead of throwing', () => {
    const claim = { clientVersion: '1.4.2', userAgentProduct: 'moat-chat' };
    const none = { gateways: [], hops: [], userAgent: undefined, signals: [] };
    for (const headers of [{ via: 5 }, { via: [5] }, { via: [null] }, { 'user-agent': 5 }, { forwarded: {} }, null, undefined, 5, 'via']) {
      expect(inspectRequest({ headers } as never)).toEqual(none);
      expect(inspectRequest({ headers, ...claim } as never).signals).toEqual(['ua_mismatch']);
    }
    expect(inspectRequest({} as never)).toEqual(none);
    // A header whose value is not a string is skipped whole, its name too.
    const mixed = { via: [5, '1.1 proxy', null], 'x-forwarded-for': '10.0.0.1', 'x-kong-request-id': 7, 'x-bt-id': ['x'] } as never;
    expect(inspectRequest({ headers: mixed })).toEqual({
      gateways: [{ id: 'braintrust', evidence: ['header:x-bt-id'] }],
      hops: ['via:1.1 proxy', 'xff:10.0.0.1'],
      userAgent: undefined,
      signals: ['gateway_headers', 'forwarded_chain'],
    });
    const pairs = [['via', 5], ['via', '1.1 a'], null, ['x-forwarded-for'], 7, [1, 'x'], 'via'] as never;
    expect(inspectRequest({ headers: pairs }).hops).toEqual(['via:1.1 a']);
    expect(inspectRequest({ headers: new Map([['x-kong-id', '1']]) as never }).gateways.map((g) => g.id)).toEqual(['kong']);
    expect(forwardingHops(null as never)).toEqual([]);
    const hostile = new Proxy(
      {},
      {
        ownKeys: () => {
          throw new Error('no keys');
        },
      },
    );
    expect(inspectRequest({ headers: hostile as never })).toEqual(none);
  });

  it('never throws on any value as headers or claim', () => {
    const anything = fc.anything({ withBigInt: true, withNullPrototype: true, withBoxedValues: true, withMap: true, withDate: true });
    fc.assert(
      fc.property(
        fc.oneof(anything, fc.dictionary(fc.constantFrom('via', 'forwarded', 'x-forwarded-for', 'user-agent', 'x-kong-id'), anything)),
        anything,
        anything,
        (headers, clientVersion, userAgentProduct) => {
          const evidence = inspectRequest({ headers, clientVersion, userAgentProduct } as never);
          expect(evidence.hops.length).toBeLessThanOrEqual(32);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('GatewayStats', () => {
  it('counts gateways and signals per key, and client telemetry too', () => {
    const stats = new GatewayStats();
    stats.record('k1', inspectRequest({ headers: { 'x-litellm-call-id': '1' } }), '198.51.100.1', 1);
    stats.record('k1', inspectRequest({ headers: { 'x-litellm-call-id': '2', via: '1.1 proxy' } }), '198.51.100.1', 2);
    stats.recordTelemetry('k1', ['kong'], 3);
    stats.record('k2', inspectRequest({ headers: {} }), '198.51.100.9', 4);
    expect(stats.report('k1')).toMatchObject({
      requests: 2,
      gateways: { litellm: 2, kong: 1 },
      signals: { gateway_headers: 2, forwarded_chain: 1, ua_mismatch: 0, address_fan_in: 0 },
      distinctAddresses: 1,
    });
    expect(stats.totals()).toEqual({ litellm: 2, kong: 1 });
  });

  it('signals fan-in when one key arrives from many addresses in a window', () => {
    const stats = new GatewayStats({ fanInThreshold: 5, windowMs: 1_000 });
    const clean = inspectRequest({ headers: {} });
    const seen: string[][] = [];
    for (let i = 0; i < 6; i++) seen.push([...stats.record('k', clean, `203.0.113.${i}`, 100).signals]);
    expect(seen.slice(0, 4).every((s) => s.length === 0)).toBe(true);
    expect(seen[4]).toEqual(['address_fan_in']);
    // A new window forgets the addresses.
    expect(stats.record('k', clean, '203.0.113.1', 2_000).signals).toEqual([]);
    expect(stats.report('k')?.signals.address_fan_in).toBe(2);
    expect(JSON.stringify(stats)).not.toContain('203.0.113'); // only keyed hashes are kept
  });

  it('merges replicas that share the address secret', () => {
    const addressSecret = new Uint8Array(32).fill(3);
    const a = new GatewayStats({ addressSecret, fanInThreshold: 3 });
    const b = new GatewayStats({ addressSecret, fanInThreshold: 3 });
    const ev = inspectRequest({ headers: { 'cf-aig-log-id': 'x' } });
    a.record('k', ev, '192.0.2.1', 10);
    a.record('k', ev, '192.0.2.2', 10);
    b.record('k', ev, '192.0.2.2', 11);
    b.record('k', ev, '192.0.2.3', 11);
    const merged = new GatewayStats({ addressSecret, fanInThreshold: 3 }).merge(a).merge(JSON.parse(JSON.stringify(b)));
    expect(merged.report('k')).toMatchObject({ requests: 4, gateways: { 'cloudflare-ai-gateway': 4 }, distinctAddresses: 3 });
  });

  it('rejects a malformed snapshot without merging any of it', () => {
    const stats = new GatewayStats();
    for (const bad of [null, { format: 'x', keys: {} }, { format: 'moat-gateway-stats/1', keys: { k: { requests: -1 } } }]) {
      expect(() => stats.merge(bad)).toThrow(GatewayStatsError);
      expect(() => stats.merge(bad)).toThrow(MoatError);
    }
    expect(stats.reports()).toEqual([]);
  });

  it('names what was expected and what came for values JSON cannot print', () => {
    const stats = new GatewayStats();
    const snapshot = (keys: unknown) => ({ format: 'moat-gateway-stats/1', keys });
    const entry = { requests: 1, windowStart: 0, lastSeen: 0, gateways: {}, signals: {}, addresses: [] };
    for (const [bad, message] of [
      [snapshot([Object.create(null)]), 'expected a keys object, got array(1)'],
      [{ format: 10n }, 'expected format "moat-gateway-stats/1", got bigint 10'],
      [{ format: Symbol('f') }, 'expected format "moat-gateway-stats/1", got symbol Symbol(f)'],
      [Symbol('s'), 'expected an object, got symbol Symbol(s)'],
      [snapshot({ k: Object.create(null) }), 'expected keys["k"].requests as a count, got undefined'],
      [snapshot({ k: { ...entry, requests: 10n } }), 'expected keys["k"].requests as a count, got bigint 10'],
      [snapshot({ k: { ...entry, gateways: { a: 1n } } }), 'expected keys["k"].gateways as counts, got object'],
      [snapshot({ k: { ...entry, signals: 'abc' } }), 'expected keys["k"].signals as counts, got "abc"'],
      [snapshot({ k: { ...entry, addresses: [Object.create(null)] } }), 'expected keys["k"].addresses as hash strings, got array(1)'],
    ] as const) {
      expect(() => stats.merge(bad)).toThrow(`ERR_GATEWAY_STATS_FORMAT: ${message}`);
    }
    expect(stats.reports()).toEqual([]);
  });

  it('refuses a merge whose counts would pass Number.MAX_SAFE_INTEGER, merging none of it', () => {
    const max = Number.MAX_SAFE_INTEGER;
    const entry = (requests: number, gateways: Record<string, number> = {}, gateway_headers = 0) => ({
      requests,
      windowStart: 0,
      lastSeen: 0,
      gateways,
      signals: { gateway_headers },
      addresses: [],
    });
    const snapshot = (keys: Record<string, unknown>) => ({ format: 'moat-gateway-stats/1', keys });
    const stats = new GatewayStats().merge(snapshot({ k: entry(max, { kong: max - 1 }, max) }));
    for (const [bad, where] of [
      [snapshot({ a: entry(1), k: entry(1) }), 'keys["k"].requests'],
      [snapshot({ k: entry(0, { kong: 2 }) }), 'keys["k"].gateways.kong'],
      [snapshot({ k: entry(0, {}, 1) }), 'keys["k"].signals.gateway_headers'],
      [snapshot({ n: entry(0, { 'a b': max, 'c d': 1 }) }), 'keys["n"].gateways.other'],
    ] as const) {
      const error = (() => {
        try {
          stats.merge(bad);
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(GatewayStatsError);
      expect(error).toMatchObject({ code: 'ERR_GATEWAY_STATS_OVERFLOW' });
      expect((error as Error).message).toContain(where);
    }
    expect(stats.reports().map((r) => r.key)).toEqual(['k']);
    expect(stats.report('k')).toMatchObject({ requests: max, gateways: { kong: max - 1 }, signals: { gateway_headers: max } });
    // Up to the bound itself is fine.
    stats.merge(snapshot({ k: entry(0, { kong: 1 }) }));
    expect(stats.report('k')?.gateways).toEqual({ kong: max });
    const twice = new GatewayStats().merge(snapshot({ k: entry(max) }));
    expect(() => twice.merge(snapshot({ k: entry(max) }))).toThrow(GatewayStatsError);
    expect(twice.report('k')?.requests).toBe(max);
  });

  it('merge throws nothing but GatewayStatsError on any input, and merges nothing when it throws', () => {
    const anything = fc.anything({
      withBigInt: true,
      withNullPrototype: true,
      withBoxedValues: true,
      withMap: true,
      withSet: true,
      withDate: true,
      withTypedArray: true,
      withSparseArray: true,
    });
    const count = fc.oneof(fc.nat(), fc.constantFrom(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER - 1), anything);
    const entry = fc.record({
      requests: count,
      windowStart: count,
      lastSeen: count,
      gateways: fc.oneof(fc.dictionary(fc.string(), count), anything),
      signals: fc.oneof(fc.dictionary(fc.constantFrom('gateway_headers', 'ua_mismatch', 'x', '__proto__'), count), anything),
      addresses: fc.oneof(fc.array(fc.string({ maxLength: 16 })), anything),
    });
    const snapshot = fc.record({
      format: fc.oneof(fc.constant('moat-gateway-stats/1'), anything),
      keys: fc.oneof(fc.dictionary(fc.string(), fc.oneof(entry, anything)), anything),
    });
    fc.assert(
      fc.property(fc.oneof(anything, snapshot), fc.oneof(anything, snapshot), (first, second) => {
        const stats = new GatewayStats();
        for (const input of [first, second]) {
          const before = JSON.stringify(stats);
          try {
            stats.merge(input);
          } catch (error) {
            expect(error).toBeInstanceOf(GatewayStatsError);
            expect(JSON.stringify(stats)).toBe(before);
          }
        }
        for (const report of stats.reports()) {
          for (const n of [report.requests, ...Object.values(report.gateways), ...Object.values(report.signals)]) {
            expect(Number.isSafeInteger(n) && n >= 0).toBe(true);
          }
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('keeps memory bounded: addresses saturate and old keys are evicted', () => {
    const stats = new GatewayStats({ maxAddresses: 10, maxKeys: 3 });
    const ev = inspectRequest({ headers: {} });
    for (let i = 0; i < 100; i++) stats.record('k', ev, `10.0.${i >> 8}.${i & 255}`, 1);
    expect(stats.report('k')?.distinctAddresses).toBe(10);
    for (const key of ['a', 'b', 'c']) stats.record(key, ev, undefined, 2);
    expect(stats.report('k')).toBeUndefined();
    expect(stats.evicted).toBe(1);
  });
});
