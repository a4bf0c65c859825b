import { randomBytes } from 'node:crypto';
import { decoyPeriod, decoyTools } from '@moat/distill-guard/server';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decoysFor, toolsWithDecoys } from './rewrite-request.js';

const secret = randomBytes(32);

describe('decoysFor', () => {
  it('gives what decoyTools gives for the key, the period and the real tools, however often asked', () => {
    const period = decoyPeriod();
    const own = decoyTools({ secret, apiKeyId: 'key_a', period }).map((d) => d.tool.name);
    fc.assert(
      fc.property(
        fc.constantFrom('key_a', 'key_b', 'key_c'),
        fc.array(fc.oneof(fc.constantFrom(...own), fc.string({ maxLength: 12 })), { maxLength: 4 }),
        (key, names) => {
          const real = names.map((name) => ({ name }));
          const expected = decoyTools({ secret, apiKeyId: key, period, avoid: names });
          expect(decoysFor(secret, key, period, real)).toEqual(expected);
          expect(decoysFor(secret, key, period, real)).toEqual(expected);
        },
      ),
    );
  });

  it('makes the decoys of another period anew, and shares frozen decoys between requests', () => {
    const period = decoyPeriod();
    const now = decoysFor(secret, 'key_a', period, []);
    expect(decoysFor(secret, 'key_a', period, [])).toBe(now);
    expect(Object.isFrozen(now[0]?.tool.input_schema)).toBe(true);
    expect(decoysFor(secret, 'key_a', period + 1, [])).toEqual(decoyTools({ secret, apiKeyId: 'key_a', period: period + 1 }));
    expect(decoysFor(randomBytes(32), 'key_a', period, [])).not.toEqual(now);
  });
});

describe('toolsWithDecoys', () => {
  it('gives the text JSON.stringify gives for the real tools then the decoys, cached set or not, however often asked', () => {
    const period = decoyPeriod();
    fc.assert(
      fc.property(
        fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
        fc.constantFrom('key_a', 'key_b'),
        fc.boolean(),
        fc.boolean(),
        (real, key, cached, none) => {
          const decoys = none ? [] : cached ? decoysFor(secret, key, period, []) : decoyTools({ secret, apiKeyId: key, period });
          const expected = JSON.stringify([...real, ...decoys.map((d) => d.tool)]);
          expect(toolsWithDecoys(real, decoys).text).toBe(expected);
          expect(toolsWithDecoys(real, decoys).text).toBe(expected);
        },
      ),
    );
  });
});
