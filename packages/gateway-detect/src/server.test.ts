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
