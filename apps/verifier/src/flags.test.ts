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
