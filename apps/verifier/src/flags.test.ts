import { GrowthBook } from '@growthbook/growthbook';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_FEATURES, type FeatureDefinition, Flags } from './flags.js';

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
