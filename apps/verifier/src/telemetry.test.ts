/**
 * Client telemetry is untrusted input: event types become statistics keys and metric labels
 * only from the protocol's closed set, gateway names are bounded per key, prototype names are
 * plain data, and control characters never reach `/metrics` raw.
 */
import { GatewayStats } from '@moat/gateway-detect/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { labelValue } from './metrics.js';
import { createVerifier, type Verifier } from './server.js';

let verifier: Verifier;
let base = '';
let apiKey = '';
let admin = '';

beforeAll(async () => {
  const env = devEnvironment();
  admin = env.MOAT_VERIFIER_ADMIN_TOKEN as string;
  verifier = await createVerifier(loadConfig(env), { logLevel: 'silent' });
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('telemetry')).key;
});
afterAll(async () => {
  await verifier.close();
});

const send = (events: unknown[]) =>
  fetch(`${base}/v1/telemetry`, {
    method: 'POST',
    headers: { 'x-api-key': apiKey },
    body: JSON.stringify({ v: 1, client: { cv: '1.4.2', ep: 'cli' }, events }),
  });
const get = async (path: string) => (await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${admin}` } })).text();

describe('telemetry as untrusted input', () => {
  it('keeps 300 invented event types and gateway names out of labels and statistics', async () => {
    const before = (await get('/metrics')).length;
    for (let i = 0; i < 300; i++) {
      const name = `t${i}_${'x'.repeat(200)}`;
      const r = await send([
        { type: name, ts: 1 },
        { type: 'gateway_detected', ts: 1, gateways: [`gw${i}${'y'.repeat(50)}`] },
      ]);
      expect(r.status).toBe(202);
    }
    const summary = JSON.parse(await get('/admin/summary')) as { telemetry: Record<string, number>; gateways: Record<string, number> };
    expect(summary.telemetry).toEqual({ other: 300, gateway_detected: 300 });
    expect(Object.keys(summary.gateways).length).toBeLessThanOrEqual(33);
    expect(Object.values(summary.gateways).reduce((a, b) => a + b, 0)).toBe(300);
    const metrics = await get('/metrics');
    expect(metrics).toContain('moat_telemetry_events_total{type="other"} 300');
    expect(metrics.length - before).toBeLessThan(2_000);
  });

  it('counts the names constructor, toString and __proto__ as numbers, not prototype lookups', async () => {
    const names = ['constructor', 'tostring', '__proto__', 'hasownproperty'];
    for (let i = 0; i < 3; i++) expect((await send([{ type: 'gateway_detected', ts: 1, gateways: names }])).status).toBe(202);
    const stats = new GatewayStats();
    for (let i = 0; i < 3; i++) stats.recordTelemetry('k', [...names, 'toString', 'constructor']);
    const report = stats.report('k')?.gateways ?? {};
    expect(Object.entries(report)).toEqual(
      expect.arrayContaining([
        ['constructor', 3],
        ['tostring', 3],
        ['hasownproperty', 3],
        ['other', 6], // toString and __proto__ are not gateway ids
      ]),
    );
    expect(stats.totals().constructor).toBe(3);
    // A snapshot naming __proto__ (JSON.parse makes it an own member) merges as data.
    const snapshot = JSON.parse(JSON.stringify(stats.toJSON()).replace('"tostring"', '"__proto__"'));
    expect(new GatewayStats({ maxGatewaysPerKey: 64 }).merge(snapshot).report('k')?.gateways.other).toBe(9);
    const merged = new GatewayStats().merge(JSON.parse(JSON.stringify(stats.toJSON())));
    expect(merged.report('k')?.gateways.constructor).toBe(3);
  });

  it('escapes control characters in label values: CR, ESC, BEL, quotes, backslash, line feed', () => {
    const raw = 'a\r\u001b[31m\u0007"\\\nb';
    const safe = labelValue(raw);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the test asserts they are gone
    expect(safe).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f]/);
    expect(safe).toBe('a\\u000d\\u001b[31m\\u0007"\\\\\\u000ab');
    expect(labelValue('valid')).toBe('valid');
    expect(labelValue('z'.repeat(500))).toHaveLength(129);
  });
});
