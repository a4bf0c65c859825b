import { describe, expect, it } from 'vitest';
import { DASHBOARD_HTML } from './dashboard.js';
import { DEFAULT_FEATURES } from './flags.js';
import { createMetrics } from './metrics.js';
import { decide } from './pipeline/policy.js';
import { dashboardFilters, defaultPolicies, RECORDED_SIGNALS, SIGNAL_ROWS, SIGNALS, type Signals } from './signals.js';

describe('the signal registry', () => {
  it('gives defaults only for entries a value of the signal is judged under', () => {
    for (const row of SIGNAL_ROWS) {
      const judged = new Set(row.values.map((v) => (row.judgedAs === undefined ? v : row.judgedAs(v))));
      for (const entry of Object.keys(row.defaults)) expect(judged, `${row.name}: ${entry}`).toContain(entry);
      expect(row.values, `${row.name}: initial`).toContain(row.initial);
    }
  });

  it('keeps the built-in policy exactly as it was before the registry', () => {
    expect(defaultPolicies()).toEqual({
      'moat-policy-attestation': {
        defaultValue: {
          valid: 'monitor',
          missing: 'flag',
          unavailable: 'flag',
          invalid: 'block',
          replayed: 'block',
          stale: 'block',
          unknown_key: 'block',
          revoked: 'flag',
        },
      },
      'moat-policy-binding': {
        defaultValue: { request: 'monitor', body: 'flag', none: 'monitor', install: 'monitor' },
      },
      'moat-policy-fingerprint': {
        defaultValue: { match: 'monitor', missing: 'monitor', mismatch: 'flag', tampering: 'flag' },
      },
      'moat-policy-thinking': { defaultValue: { valid: 'monitor', none: 'monitor', invalid: 'block' } },
      'moat-policy-gateway': {
        defaultValue: { detected: 'monitor', forwarded_chain: 'monitor', ua_mismatch: 'flag', address_fan_in: 'flag' },
      },
      'moat-policy-decoy': { defaultValue: { hit: 'flag', none: 'monitor' } },
      'moat-policy-install': {
        defaultValue: {
          known: 'monitor',
          new: 'monitor',
          revoked: 'flag',
          over_limit: 'flag',
          release_only: 'flag',
          none: 'monitor',
        },
      },
    });
    for (const [feature, def] of Object.entries(defaultPolicies())) expect(DEFAULT_FEATURES[feature]).toEqual(def);
    expect(DEFAULT_FEATURES['moat-policy-decoys']).toEqual({ defaultValue: true });
  });

  it('judges every signal of a request, in registry order, and nothing else', () => {
    const worst = Object.fromEntries(
      SIGNAL_ROWS.map((row) => {
        const value = row.values.find((v) => {
          const judged = row.judgedAs === undefined ? v : row.judgedAs(v);
          return judged !== undefined && row.defaults[judged] !== undefined && row.defaults[judged] !== 'monitor';
        });
        return [row.name, row.many === true ? [value] : value];
      }),
    ) as unknown as Signals;
    const decision = decide(
      worst,
      (layer, value) => defaultPolicies()[`moat-policy-${layer}`]?.defaultValue[value] ?? 'monitor',
    );
    expect(decision.actions.map((a) => a.signal)).toEqual(SIGNAL_ROWS.map((row) => row.name));
    expect(decision.reasons).toHaveLength(SIGNAL_ROWS.length);
  });

  it('exports a zero series per signal value in /metrics before any request', async () => {
    const text = await createMetrics().registry.metrics();
    for (const row of SIGNAL_ROWS)
      for (const value of row.values)
        expect(text).toContain(`moat_signals_total{layer="${row.metric}",value="${value}"} 0`);
  });

  it('feeds the dashboard its filters and record columns', () => {
    expect(dashboardFilters().map((f) => f.filter)).toEqual(RECORDED_SIGNALS.map((row) => row.filter));
    expect(DASHBOARD_HTML).toContain(JSON.stringify(dashboardFilters()));
    for (const row of RECORDED_SIGNALS) expect(DASHBOARD_HTML).toContain(`<th>${row.label}</th>`);
    expect(SIGNALS.decoy.values).toEqual(['hit', 'none']);
  });
});
