import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GrowthBook } from '@growthbook/growthbook';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_FEATURES, type FeatureDefinition, Flags, loadFeatures } from './flags.js';

const KEYS = ['f_a', 'f_b', 'f_c', 'f_d'];

/** A feature with no rules, empty rules, or a rule forcing another value for one API key. */
const feature: fc.Arbitrary<FeatureDefinition> = fc.record(
  {
    defaultValue: fc.oneof(fc.constant(null), fc.jsonValue({ maxDepth: 2 })),
    rules: fc.oneof(
      fc.constant([]),
      fc.tuple(fc.constantFrom('key_a', 'key_b'), fc.jsonValue({ maxDepth: 1 })).map(([id, force]) => [{ condition: { id }, force }]),
    ),
  },
  { requiredKeys: ['defaultValue'] },
);

describe('Flags.value', () => {
  it("gives GrowthBook's value for every feature, with or without rules, and the fallback for an unknown one", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.constantFrom(...KEYS), feature),
        fc.constantFrom(...KEYS, 'f_unknown'),
        fc.constantFrom('key_a', 'key_b', 'key_c'),
        fc.jsonValue({ maxDepth: 1 }),
        (features, key, id, fallback) => {
          const gb = new GrowthBook({ features: features as never });
          gb.setAttributes({ id, model: 'claude-mock' });
          const expected = gb.getFeatureValue(key, fallback as never);
          expect(new Flags(features).value(key, fallback, { id, model: 'claude-mock' })).toEqual(expected);
        },
      ),
    );
  });

  it('reads the default policies without evaluating rules, as GrowthBook would', () => {
    const flags = new Flags({ ...DEFAULT_FEATURES });
    const gb = new GrowthBook({ features: DEFAULT_FEATURES as never });
    for (const key of Object.keys(DEFAULT_FEATURES))
      expect(flags.value(key, 'fallback', 'key_a')).toEqual(gb.getFeatureValue(key, 'fallback' as never));
  });
});

describe('loadFeatures', () => {
  const write = (doc: unknown): string => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-flags-')), 'flags.json');
    writeFileSync(file, JSON.stringify(doc));
    return file;
  };
  const policy = (rules: unknown) => ({ features: { 'moat-policy-attestation': { defaultValue: {}, rules } } });

  it('refuses a malformed rule when the file is loaded, naming it, rather than on every request', () => {
    for (const [rules, where, got] of [
      [5, 'moat-policy-attestation.rules', '5'],
      [{ force: {} }, 'moat-policy-attestation.rules', '{"force":{}}'],
      [[null], 'moat-policy-attestation.rules.0', 'null'],
      [['x'], 'moat-policy-attestation.rules.0', '"x"'],
      [[{ condition: 5, force: { invalid: 'block' } }], 'moat-policy-attestation.rules.0.condition', '5'],
      [[{ condition: [], force: {} }], 'moat-policy-attestation.rules.0.condition', '[]'],
      [[{ parentConditions: {}, force: {} }], 'moat-policy-attestation.rules.0.parentConditions', '{}'],
    ] as const)
      expect(() => loadFeatures(write(policy(rules))), where).toThrow(
        expect.objectContaining({
          name: 'VerifierConfigError',
          message: expect.stringMatching(new RegExp(`flagsFile: ${where.replace(/\./g, '\\.')}: .*got ${got.replace(/[[\]{}]/g, '\\$&')}`)),
        }),
      );
  });

  it('loads rules of the documented shapes, and every rule it loads evaluates without throwing (property)', () => {
    const rule = fc.record(
      {
        condition: fc.record({ id: fc.constantFrom('key_a', 'key_b') }),
        force: fc.dictionary(fc.constantFrom('invalid', 'missing', 'valid'), fc.constantFrom('monitor', 'flag', 'block')),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof(fc.array(rule, { maxLength: 3 }), fc.anything()), (rules) => {
        let features: Record<string, FeatureDefinition>;
        try {
          features = loadFeatures(write(policy(rules)));
        } catch (error) {
          expect((error as Error).name).toBe('VerifierConfigError');
          return;
        }
        const flags = new Flags(features);
        for (const id of ['key_a', 'key_c']) expect(['monitor', 'flag', 'block']).toContain(flags.action('attestation', 'invalid', { id }));
      }),
      { numRuns: 300 },
    );
  });
});

describe('loadFeatures checks every Moat feature', () => {
  const write = (features: unknown): string => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-flags-')), 'flags.json');
    writeFileSync(file, JSON.stringify({ features }));
    return file;
  };
  const refused = (features: unknown, message: RegExp) =>
    expect(() => loadFeatures(write(features)), JSON.stringify(features)).toThrow(
      expect.objectContaining({ name: 'VerifierConfigError', message: expect.stringMatching(message) }),
    );

  it('refuses a misspelt action, signal value or feature name, naming it and what it likely meant', () => {
    refused(
      { 'moat-policy-attestation': { defaultValue: { valid: 'monitr' } } },
      /moat-policy-attestation\.defaultValue\.valid: expected "monitor", "flag" or "block", got "monitr" \(did you mean "monitor"\?\)/,
    );
    refused(
      { 'moat-policy-attestation': { defaultValue: { missing: 'Block' } } },
      /defaultValue\.missing: .*got "Block" \(did you mean "block"\?\)/,
    );
    refused(
      { 'moat-policy-attestation': { defaultValue: { mising: 'block' } } },
      /defaultValue\.mising: expected a value of the signal: valid, invalid, missing, .*got "mising" \(did you mean "missing"\?\)/,
    );
    refused(
      { 'moat-policy-attestaton': { defaultValue: { missing: 'block' } } },
      /flagsFile: moat-policy-attestaton: expected the name of a Moat feature, got an unknown name \(did you mean "moat-policy-attestation"\?\)/,
    );
    refused(
      { 'moat-policy-install': { defaultValue: { revoked: true } } },
      /moat-policy-install\.defaultValue\.revoked: expected "monitor", "flag" or "block", got true/,
    );
    refused({ 'moat-policy-decoy': { defaultValue: 'block' } }, /moat-policy-decoy\.defaultValue: expected a table of signal values/);
    refused(
      { 'moat-policy-gateway': { defaultValue: {}, rules: [{ condition: { id: 'key_a' }, force: { detected: 'blok' } }] } },
      /moat-policy-gateway\.rules\.0\.force\.detected: .*got "blok"/,
    );
    refused(
      { 'moat-policy-binding': { defaultValue: {}, rules: [{ variations: [{ body: 'flag' }, { bdy: 'flag' }] }] } },
      /rules\.0\.variations\.1\.bdy: /,
    );
    refused({ 'moat-policy-decoys': { defaultValue: 'true' } }, /moat-policy-decoys\.defaultValue: expected true or false, got "true"/);
    refused({ 'moat-kill-harden': { defaultValue: 1 } }, /moat-kill-harden\.defaultValue: expected true or false, got 1/);
    refused({ 'moat-revoked-kids': { defaultValue: [] } }, /moat-revoked-kids: .*the verifier serves it from revokedKids/);
    refused(
      { 'moat-policy-enrollment': { defaultValue: { perWindw: 5 } } },
      /moat-policy-enrollment\.defaultValue\.perWindw: .*\(did you mean "perWindow"\?\)/,
    );
    refused(
      { 'moat-policy-enrollment': { defaultValue: { action: 'deny' } } },
      /defaultValue\.action: expected "block" or "flag", got "deny"/,
    );
    refused(
      { 'moat-policy-enrollment': { defaultValue: { installsPerKey: -1 } } },
      /installsPerKey: expected a whole number, 0 or more, got -1/,
    );
    // A name meant for Moat in another spelling is Moat's, checked, never taken for the adopter's own.
    for (const name of ['Moat-Policy-Attestation', 'moat_policy_attestation', ' moat-policy-attestation', 'moat\u2010policy-attestation'])
      refused({ [name]: { defaultValue: { missing: 'block' } } }, /expected the name of a Moat feature, got an unknown name/);
    // Rules: a member GrowthBook does not have, a rule that changes nothing, an attribute the verifier never sets, an operator that does not exist.
    refused(
      { 'moat-policy-attestation': { defaultValue: {}, rules: [{ condition: { id: 'k' }, forse: { missing: 'block' } }] } },
      /rules\.0\.forse: expected a member of a GrowthBook rule, got an unknown name \(did you mean "force"\?\)/,
    );
    refused(
      { 'moat-policy-attestation': { defaultValue: {}, rules: [{ condition: { id: 'k' } }] } },
      /rules\.0: expected a rule with "force" or "variations"/,
    );
    refused(
      { 'moat-policy-attestation': { defaultValue: {}, rules: [{ condition: { modle: 'x' }, force: {} }] } },
      /rules\.0\.condition\.modle: expected an attribute the verifier sets: id, ep, cv, model, attestation, binding, got "modle" \(did you mean "model"\?\)/,
    );
    refused(
      { 'moat-policy-attestation': { defaultValue: {}, rules: [{ condition: { $or: [{ cv: { $regx: '^1' } }] }, force: {} }] } },
      /condition\.\$or\.0\.cv\.\$regx: expected a GrowthBook operator, got "\$regx" \(did you mean "\$regex"\?\)/,
    );
    refused(
      { 'moat-policy-attestation': { defaultValue: {}, rules: [{ condition: { id: { $in: 'key_a' } }, force: {} }] } },
      /condition\.id\.\$in: expected an array, got "key_a"/,
    );
    refused(
      { 'moat-policy-enrollment': { defaultValue: {}, rules: [{ condition: { ep: 'cli' }, force: {} }] } },
      /condition\.ep: expected an attribute the verifier sets: id, got "ep"/,
    );
  });

  it('refuses a feature or a member given twice in the file, instead of keeping the last', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-flags-')), 'flags.json');
    writeFileSync(
      file,
      '{"features":{"moat-policy-attestation":{"defaultValue":{"missing":"block"}},"moat-policy-attestation":{"defaultValue":{}}}}',
    );
    expect(() => loadFeatures(file)).toThrow(
      /flagsFile: expected a JSON features file at .*, got features\.moat-policy-attestation: expected each member name once per object/,
    );
  });

  it('reads a table that names some values over the built-in one, and a rule over the feature it belongs to', () => {
    const features = loadFeatures(
      write({
        'moat-policy-attestation': {
          defaultValue: { missing: 'block' },
          rules: [{ condition: { id: 'key_ci' }, force: { missing: 'monitor' } }],
        },
        'moat-policy-enrollment': { defaultValue: { perWindow: 5 } },
        'my-own-client-flag': { defaultValue: 'anything' },
      }),
    );
    const flags = new Flags(features);
    expect(flags.action('attestation', 'missing', { id: 'key_a' })).toBe('block');
    // The values the table leaves out keep their built-in actions, in the rule too.
    for (const id of ['key_a', 'key_ci']) {
      expect(flags.action('attestation', 'invalid', { id })).toBe('block');
      expect(flags.action('attestation', 'revoked', { id })).toBe('flag');
    }
    expect(flags.action('attestation', 'missing', { id: 'key_ci' })).toBe('monitor');
    expect(flags.value('moat-policy-enrollment', {}, 'key_a')).toEqual({
      installsPerKey: 100,
      perWindow: 5,
      windowSec: 3_600,
      action: 'block',
    });
    expect(flags.value('my-own-client-flag', null, 'key_a')).toBe('anything');
    expect(flags.clientPayload().features['my-own-client-flag']).toEqual({ defaultValue: 'anything' });
  });

  it('accepts every value and action of every policy table', () => {
    const features = Object.fromEntries(
      Object.entries(DEFAULT_FEATURES)
        .filter(([key]) => key.startsWith('moat-policy-') && key !== 'moat-policy-decoys' && key !== 'moat-policy-enrollment')
        .map(([key, def]) => [key, { defaultValue: Object.fromEntries(Object.keys(def.defaultValue as object).map((v) => [v, 'block'])) }]),
    );
    const flags = new Flags(loadFeatures(write(features)));
    expect(flags.action('attestation', 'valid', 'key_a')).toBe('block');
    expect(flags.action('install', 'known', 'key_a')).toBe('block');
  });
});
