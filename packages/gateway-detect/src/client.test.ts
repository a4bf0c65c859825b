import { GATEWAY_RULES, type TelemetryEvent } from '@moat/protocol';
import { describe, expect, it, vi } from 'vitest';
import { GatewayDetector } from './client.js';

/**
 * Response header sets as each gateway documents them (names matter; values are examples).
 * Each set also carries the upstream's ordinary headers, which must not match anything.
 */
const UPSTREAM = {
  'content-type': 'application/json',
  'request-id': 'req_011CS',
  'anthropic-ratelimit-requests-limit': '50',
  'anthropic-ratelimit-requests-remaining': '49',
  'cf-ray': '8f1e2d3c4b5a6978-FRA',
  server: 'cloudflare',
};
const CAPTURED: Record<string, Record<string, string>> = {
  litellm: {
    'x-litellm-call-id': 'b980db26-9512-45cc-b1da-c511a363b83f',
    'x-litellm-model-id': '2ac3b0e6d6e0d7c1',
    'x-litellm-model-api-base': 'https://api.anthropic.com/v1/messages',
    'x-litellm-version': '1.55.3',
    'x-litellm-response-cost': '0.000125',
    'x-litellm-key-spend': '0.31',
    'llm_provider-request-id': 'req_011CS',
  },
  helicone: { 'helicone-id': '2f3e8c4a-1d2b-4c5e-9f8a-7b6c5d4e3f2a', 'helicone-cache': 'MISS', 'helicone-cache-bucket-idx': '0' },
  portkey: {
    'x-portkey-trace-id': 'trace-7f3a',
    'x-portkey-provider': 'anthropic',
    'x-portkey-cache-status': 'DISABLED',
    'x-portkey-retry-attempt-count': '0',
    'x-portkey-last-used-option-index': 'config.targets[0]',
  },
  'cloudflare-ai-gateway': {
    'cf-aig-cache-status': 'MISS',
    'cf-aig-log-id': '01J8Z0M1Q2R3S4T5',
    'cf-aig-event-id': 'evt_1',
    'cf-aig-step': '0',
  },
  kong: { 'x-kong-upstream-latency': '812', 'x-kong-proxy-latency': '3', 'x-kong-request-id': '4e2a1b0c9d8e7f6a', via: 'kong/3.8.0' },
  braintrust: { 'x-bt-used-endpoint': 'anthropic', 'x-bt-cached': 'MISS' },
  'aws-api-gateway': { 'x-amz-apigw-id': 'ZVvL4H3ZIAMEXAMPLE=', 'x-amzn-requestid': 'c1b2a3d4-0000-4000-8000-000000000000' },
};

describe('GatewayDetector.observe', () => {
  for (const [id, headers] of Object.entries(CAPTURED)) {
    it(`detects ${id} from its documented response headers, and only ${id}`, () => {
      const detections = new GatewayDetector().observe({ headers: new Headers({ ...UPSTREAM, ...headers }) });
      expect(detections.map((d) => d.id)).toEqual([id]);
      expect(detections[0]?.evidence.length).toBeGreaterThan(0);
    });
  }

  it('finds nothing in a direct response from the vendor API', () => {
    expect(new GatewayDetector({ baseUrl: 'https://api.anthropic.com' }).observe({ headers: UPSTREAM })).toEqual([]);
  });

  it('matches hosts of SaaS gateways from the configured base URL', () => {
    for (const [url, id] of [
      ['https://dbc-a1b2c3d4-e5f6.cloud.databricks.com/serving-endpoints/databricks-claude/invocations', 'databricks'],
      ['https://adb-1234567890123456.7.azuredatabricks.net/serving-endpoints', 'databricks'],
      ['https://1234567890123456.7.gcp.databricks.com/serving-endpoints', 'databricks'],
      ['https://gateway.ai.cloudflare.com/v1/acct/gw/anthropic', 'cloudflare-ai-gateway'],
      ['https://anthropic.helicone.ai/v1', 'helicone'],
      ['https://openrouter.ai/api/v1', 'openrouter'],
    ] as const) {
      expect(new GatewayDetector({ baseUrl: url }).observe({ headers: {} }).map((d) => d.id)).toEqual([id]);
    }
  });

  it('reads a 1 MiB base URL in linear time (a backtracking trim took minutes)', () => {
    const spaces = ' '.repeat(1 << 20);
    expect(new GatewayDetector({ baseUrl: `a${spaces}x` }).observe({ headers: {} })).toEqual([]);
    const padded = new GatewayDetector({ baseUrl: `${spaces}openrouter.ai:443${'\t'.repeat(1 << 20)}` });
    expect(padded.observe({ headers: {} })).toEqual([{ id: 'openrouter', evidence: ['host:openrouter.ai'] }]);
    const url = new GatewayDetector({ baseUrl: `https://anthropic.helicone.ai${'\u0001'.repeat(1 << 20)}` });
    expect(url.observe({ headers: {} }).map((d) => d.id)).toEqual(['helicone']);
  });

  it('queues one telemetry event per distinct detection, not one per response', () => {
    const events: TelemetryEvent[] = [];
    const detector = new GatewayDetector({ telemetry: { push: (e) => events.push(e) }, now: () => 1_764_000_000_000 });
    for (let i = 0; i < 5; i++) detector.observe({ headers: CAPTURED.litellm as Record<string, string> });
    detector.observe({ headers: { ...CAPTURED.litellm, ...CAPTURED.kong } });
    expect(events).toHaveLength(2);
    expect(events[0]).toMatchObject({ type: 'gateway_detected', ts: 1_764_000_000, gateways: ['litellm'] });
    expect(events[1]).toMatchObject({ gateways: ['litellm', 'kong'] });
  });

  it('never throws into the request path', () => {
    const onWarning = vi.fn();
    const detector = new GatewayDetector({
      onWarning,
      telemetry: {
        push: () => {
          throw new Error('queue broken');
        },
      },
    });
    expect(detector.observe({ headers: CAPTURED.helicone as Record<string, string> })).toHaveLength(1);
    expect(onWarning).toHaveBeenCalledWith(expect.stringMatching(/queue broken/));
    const hostile = {
      [Symbol.iterator]() {
        throw new Error('bad headers');
      },
    };
    expect(detector.observe({ headers: hostile as unknown as Headers })).toEqual([]);
  });
});

describe('GatewayDetector.updateRules', () => {
  const acme = {
    version: 1,
    revision: '2026.12.01',
    rules: [{ id: 'acme', name: 'Acme Relay', headerPrefixes: ['x-acme-'], hostSuffixes: [] }],
  };

  it('accepts a newer valid table and uses it', () => {
    const detector = new GatewayDetector();
    expect(detector.updateRules(acme)).toEqual({ ok: true, revision: '2026.12.01' });
    expect(detector.observe({ headers: { 'X-Acme-Route': 'eu' } }).map((d) => d.id)).toEqual(['acme']);
    expect(detector.observe({ headers: CAPTURED.litellm as Record<string, string> })).toEqual([]);
  });

  it('keeps the current table when the update is not newer', () => {
    const detector = new GatewayDetector();
    expect(detector.updateRules({ ...acme, revision: GATEWAY_RULES.revision })).toEqual({
      ok: false,
      reason: 'not_newer',
      revision: GATEWAY_RULES.revision,
    });
    expect(detector.rules).toBe(GATEWAY_RULES);
  });

  it('rejects hostile updates with a reason and keeps working', () => {
    const onWarning = vi.fn();
    const detector = new GatewayDetector({ onWarning });
    const hostile: Array<[unknown, RegExp]> = [
      [{ ...acme, rules: [{ id: 'x', name: 'X', headerPrefixes: ['(a+)+$'], hostSuffixes: [] }] }, /lowercase literal/],
      [{ ...acme, rules: [{ id: 'x', name: 'X', headerPrefixes: [], hostSuffixes: ['*.evil'] }] }, /hostSuffixes\[0\]/],
      [
        { ...acme, rules: Array.from({ length: 5_000 }, (_, i) => ({ id: `r${i}`, name: 'R', headerPrefixes: ['x-'], hostSuffixes: [] })) },
        /at most 65536 bytes/,
      ],
      [
        { ...acme, rules: [{ id: 'x', name: 'X', headerPrefixes: Array.from({ length: 33 }, (_, i) => `x-${i}-`), hostSuffixes: [] }] },
        /at most 32 entries/,
      ],
      ['{"version":1}', /an object/],
    ];
    for (const [update, reason] of hostile) {
      const result = detector.updateRules(update);
      expect(result.ok).toBe(false);
      if (!result.ok && result.reason === 'invalid') expect(result.error.message).toMatch(reason);
      else throw new Error('expected an invalid update');
    }
    expect(onWarning).toHaveBeenCalledTimes(hostile.length);
    expect(detector.rules).toBe(GATEWAY_RULES);
    expect(detector.observe({ headers: CAPTURED.portkey as Record<string, string> }).map((d) => d.id)).toEqual(['portkey']);
  });
});
