import { describe, expect, it } from 'vitest';
import { DEFAULT_FEATURES, Flags } from '../flags.js';
import { initialSignals } from '../signals.js';
import { type ActionOf, decide, flagPolicy, type Signals } from './policy.js';

const defaults: ActionOf = (layer, value) => {
  const table = DEFAULT_FEATURES[`moat-policy-${layer}`]?.defaultValue as Record<string, string> | undefined;
  const action = table?.[value];
  return action === 'flag' || action === 'block' ? action : 'monitor';
};

const clean: Signals = {
  ...initialSignals(),
  attestation: 'valid',
  binding: 'request',
  fingerprint: 'match',
  fingerprintClass: 'clean',
  thinking: 'none',
  gateway: [],
  decoy: 'none',
};

describe('decide (the default policy, by table)', () => {
  const table: Array<[Partial<Signals>, string, string[]]> = [
    [{}, 'allow', []],
    [{ attestation: 'missing' }, 'flag', ['flag:attestation=missing']],
    [{ attestation: 'unavailable' }, 'flag', ['flag:attestation=unavailable']],
    [{ attestation: 'invalid' }, 'block', ['block:attestation=invalid']],
    [{ attestation: 'replayed' }, 'block', ['block:attestation=replayed']],
    [{ attestation: 'unknown_key' }, 'block', ['block:attestation=unknown_key']],
    [{ attestation: 'stale' }, 'block', ['block:attestation=stale']],
    [{ binding: 'body' }, 'flag', ['flag:binding=body']],
    [{ attestation: 'missing', binding: 'none' }, 'flag', ['flag:attestation=missing']],
    [{ fingerprint: 'mismatch' }, 'flag', ['flag:fingerprint=mismatch']],
    [{ fingerprint: 'missing' }, 'allow', []],
    [{ fingerprintClass: 'tampering' }, 'flag', ['flag:fingerprint=tampering']],
    [{ fingerprintClass: 'suspicious' }, 'allow', []],
    [{ thinking: 'invalid' }, 'block', ['block:thinking=invalid']],
    [{ thinking: 'valid' }, 'allow', []],
    [{ gateway: ['gateway_headers'] }, 'allow', []],
    [{ gateway: ['ua_mismatch', 'address_fan_in'] }, 'flag', ['flag:gateway=ua_mismatch', 'flag:gateway=address_fan_in']],
    [{ decoy: 'hit' }, 'flag', ['flag:decoy=hit']],
    [{ attestation: 'missing', thinking: 'invalid' }, 'block', ['flag:attestation=missing', 'block:thinking=invalid']],
    [
      { attestation: 'missing', fingerprint: 'mismatch', gateway: ['ua_mismatch'] },
      'flag',
      ['flag:attestation=missing', 'flag:fingerprint=mismatch', 'flag:gateway=ua_mismatch'],
    ],
  ];
  for (const [over, verdict, reasons] of table) {
    it(`${JSON.stringify(over)} → ${verdict}`, () => {
      const decision = decide({ ...clean, ...over }, defaults);
      expect(decision.verdict).toBe(verdict);
      expect(decision.reasons).toEqual(reasons);
    });
  }

  it('the flags policy agrees with the table, and a GrowthBook rule can target any attribute', () => {
    const flags = new Flags({
      ...DEFAULT_FEATURES,
      'moat-policy-attestation': {
        defaultValue: DEFAULT_FEATURES['moat-policy-attestation']?.defaultValue,
        rules: [
          { condition: { ep: 'sdk' }, force: { missing: 'monitor' } },
          { condition: { model: 'claude-secret' }, force: { missing: 'block' } },
        ],
      },
    });
    const missing: Signals = { ...clean, attestation: 'missing' };
    expect(decide(missing, flagPolicy(flags, { id: 'key_1', ep: 'cli' })).verdict).toBe('flag');
    expect(decide(missing, flagPolicy(flags, { id: 'key_1', ep: 'sdk' })).verdict).toBe('allow');
    expect(decide(missing, flagPolicy(flags, { id: 'key_1', model: 'claude-secret' })).verdict).toBe('block');
  });

  it('a policy says how much to trust 1.0 clients: body-only stamps of one release allowed, of the rest flagged', () => {
    const flags = new Flags({
      ...DEFAULT_FEATURES,
      'moat-policy-binding': {
        defaultValue: DEFAULT_FEATURES['moat-policy-binding']?.defaultValue,
        rules: [{ condition: { cv: '1.4.2' }, force: { body: 'monitor' } }],
      },
    });
    const bodyOnly: Signals = { ...clean, binding: 'body' };
    expect(decide(bodyOnly, flagPolicy(flags, { id: 'key_1', cv: '1.4.2', binding: 'body' })).verdict).toBe('allow');
    expect(decide(bodyOnly, flagPolicy(flags, { id: 'key_1', cv: '1.3.0', binding: 'body' })).reasons).toEqual(['flag:binding=body']);
    expect(decide(clean, flagPolicy(flags, { id: 'key_1', cv: '1.3.0', binding: 'request' })).verdict).toBe('allow');
  });
});
