import { describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { compareVersions, releaseFeatures, requireRequestBinding } from './releases.js';

const table = [
  { kid: 'k1_5', features: ['request_binding' as const] },
  { minCv: '1.6.0', features: ['request_binding' as const] },
  { cv: '0.9.9-internal', features: ['telemetry' as const] },
];

describe('the release table', () => {
  it('compares dotted versions as numbers', () => {
    expect(compareVersions('1.10.0', '1.9.3')).toBe(1);
    expect(compareVersions('1.6', '1.6.0')).toBe(0);
    expect(compareVersions('1.5.9', '1.6.0')).toBe(-1);
    expect(compareVersions('x', '0')).toBe(-1);
  });

  it('names a release by key id, exact version or lowest version', () => {
    expect([...releaseFeatures(table, { kid: 'k1_5', cv: '1.0.0' })]).toEqual(['request_binding']);
    expect([...releaseFeatures(table, { kid: 'k1_4', cv: '1.10.2' })]).toEqual(['request_binding']);
    expect([...releaseFeatures(table, { kid: 'k1_4', cv: '1.5.9' })]).toEqual([]);
    expect([...releaseFeatures(table, { cv: '0.9.9-internal' })]).toEqual(['telemetry']);
  });

  it('scores a valid v1 stamp from a binding release invalid, and leaves r1 and 1.0 releases alone', () => {
    const v1 = { signal: 'valid', kid: 'k1_5', binding: 'body' } as const;
    expect(requireRequestBinding(v1, '1.5.0', table)).toMatchObject({ signal: 'invalid', binding: 'none', reason: /k1_5, cv 1.5.0/ });
    expect(requireRequestBinding({ ...v1, kid: 'k1_4' }, '1.4.2', table)).toEqual({ ...v1, kid: 'k1_4' });
    expect(requireRequestBinding({ ...v1, binding: 'request' }, '1.7.0', table).signal).toBe('valid');
    expect(requireRequestBinding(v1, '1.5.0', [])).toBe(v1);
    // No attribution block (a relay trimmed `attribution` from discovery): no cv to look up.
    expect(requireRequestBinding({ ...v1, kid: 'k1_4' }, undefined, table)).toMatchObject({
      signal: 'invalid',
      reason: /without an attribution block/,
    });
    expect(requireRequestBinding({ ...v1, kid: 'k1_4' }, undefined, [table[0] as (typeof table)[0]])).toEqual({ ...v1, kid: 'k1_4' });
  });

  it('is read from the releases setting, each row checked', () => {
    const env = devEnvironment();
    expect(loadConfig({ ...env, MOAT_VERIFIER_RELEASES: '[{"minCv":"1.6.0","features":["request_binding"]}]' }).releases).toEqual([
      { minCv: '1.6.0', features: ['request_binding'] },
    ]);
    expect(() => loadConfig({ ...env, MOAT_VERIFIER_RELEASES: '[{"kid":"k1","cv":"1.0","features":[]}]' })).toThrow(
      /releases\[0\].*exactly one of kid, cv, minCv/,
    );
    expect(() => loadConfig({ ...env, MOAT_VERIFIER_RELEASES: '[{"minCv":"1.x","features":[]}]' })).toThrow(/a dotted version/);
    expect(() => loadConfig({ ...env, MOAT_VERIFIER_RELEASES: '[{"kid":"k1","features":["time_travel"]}]' })).toThrow(/one of attribution/);
  });
});
