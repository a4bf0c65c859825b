/**
 * A direct literal set (`literalsCompilePacked(…, direct = true)`: no libhs database) reports
 * exactly what libhs reports for the same literals: every occurrence of every literal,
 * overlapping ones too, with ASCII case folding where asked and literals that start with
 * NULs (UTF-16BE forms), on random haystacks that plant them.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { native } from '../index.js';

const LIBHS = native?.literalsVersion() !== undefined;

function pack(literals: readonly Uint8Array[]) {
  return {
    packed: Buffer.concat(literals),
    lengths: Uint32Array.from(literals, (l) => l.length),
  };
}

/**
 * The direct set's matches of `literals` (`folds[i]`: literal i folds ASCII case) in the bytes
 * of `parts` (a number: that literal planted), checked against libhs's; how many there were.
 */
function sameAsLibhs(literals: readonly Uint8Array[], folds: readonly boolean[], parts: ReadonlyArray<number | number[]>): number {
  const { packed, lengths } = pack(literals);
  const caseless = Uint8Array.from(literals, (_, i) => (folds[i] ? 1 : 0));
  const haystack = Buffer.concat(
    parts.map((p) => (typeof p === 'number' ? Buffer.from(literals[p % literals.length] as Uint8Array) : Buffer.from(p))),
  );
  const direct = native?.literalsCompilePacked(packed, lengths, caseless, undefined, true);
  const compiled = native?.literalsCompilePacked(packed, lengths, caseless);
  const expected = [...(native?.literalsScan(compiled, haystack) ?? [])];
  expect([...(native?.literalsScan(direct, haystack) ?? [])]).toEqual(expected);
  return expected.length / 2;
}

describe.skipIf(!LIBHS)('direct literal sets', () => {
  it('report what libhs reports, on random literals planted in random bytes', () => {
    // A small alphabet makes prefixes shared and matches overlapping.
    const byte = fc.oneof(fc.constantFrom(0, 0x41, 0x61, 0x5c, 0x78, 0x30), fc.integer({ min: 0, max: 255 }));
    const literal = fc
      .uint8Array({ minLength: 4, maxLength: 12 })
      .chain((l) => fc.array(byte, { minLength: l.length, maxLength: l.length }).map((b) => Uint8Array.from(b)));
    fc.assert(
      fc.property(
        fc.uniqueArray(literal, { minLength: 1, maxLength: 30, selector: (l) => Buffer.from(l).toString('hex') }),
        fc.array(fc.boolean(), { maxLength: 30 }),
        fc.array(fc.oneof(fc.array(byte, { maxLength: 20 }), fc.nat(29)), { maxLength: 30 }),
        (literals, folds, parts) => {
          sameAsLibhs(literals, folds, parts);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('report what libhs reports when every literal is long enough to be probed at every 2nd to 4th position only', () => {
    // All literals of at least S + 3 bytes: the set is probed at every S-th position (S up to 4),
    // each literal entered under its blocks at offsets 0..S-1. Planted at every alignment, at the
    // data's first and last bytes, overlapping, and folding case.
    const byte = fc.oneof(fc.constantFrom(0, 0x41, 0x61, 0x5c, 0x78, 0x30), fc.integer({ min: 0, max: 255 }));
    let runs = 0;
    let planted = 0;
    fc.assert(
      fc.property(
        fc.integer({ min: 5, max: 9 }).chain((shortest) =>
          fc.uniqueArray(
            fc.array(byte, { minLength: shortest, maxLength: shortest + 8 }).map((b) => Uint8Array.from(b)),
            { minLength: 1, maxLength: 40, selector: (l) => Buffer.from(l).toString('hex') },
          ),
        ),
        // Half the sets fold no case: only those are probed eight positions at a time (AVX2).
        fc.oneof(fc.constant([]), fc.array(fc.boolean(), { maxLength: 40 })),
        fc.array(fc.oneof(fc.array(byte, { maxLength: 9 }), fc.nat(39)), { minLength: 1, maxLength: 40 }),
        (literals, folds, parts) => {
          runs++;
          planted += sameAsLibhs(literals, folds, parts);
        },
      ),
      { numRuns: 400 },
    );
    expect(runs).toBe(400);
    expect(planted).toBeGreaterThan(1000);
  });

  it('says which sets it probes with a stride: small ones whose every literal spans a block at one probed position', () => {
    const stride = (...lengths: number[]) => native?.literalsDirectStride?.(Uint32Array.from(lengths));
    expect(stride(4, 30)).toBe(1); // a 4-byte literal: every position
    expect(stride(5)).toBe(2);
    expect(stride(6, 9)).toBe(3);
    expect(stride(7, 20)).toBe(4);
    expect(stride(40)).toBe(4);
    // At most 8,192 entries (a literal is entered once per offset): the stride shrinks with the set.
    expect(stride(...Array(2048).fill(8))).toBe(4);
    expect(stride(...Array(3000).fill(8))).toBe(2);
    expect(stride(...Array(4097).fill(8))).toBe(1);
    for (const bad of [new Uint32Array(0), [8], new Uint8Array([8]), undefined])
      expect(() => native?.literalsDirectStride?.(bad as Uint32Array)).toThrow(expect.objectContaining({ code: 'ERR_NATIVE_OPTIONS' }));
  });

  it('refuses literals under 4 bytes and cannot be serialized', () => {
    const short = pack([Buffer.from('abc')]);
    expect(() => native?.literalsCompilePacked(short.packed, short.lengths, new Uint8Array(1), undefined, true)).toThrow(/4 bytes/);
    const ok = pack([Buffer.from('abcd')]);
    const set = native?.literalsCompilePacked(ok.packed, ok.lengths, new Uint8Array(1), undefined, true);
    expect(() => native?.literalsSerialize(set)).toThrow();
  });

  it('derives needle forms only from well-formed arguments (literalsForms), with a typed error otherwise', () => {
    const units = Uint16Array.from('Capybara', (c) => c.charCodeAt(0));
    const one = Uint32Array.of(8);
    const forms = native?.literalsForms(units, one, Uint32Array.of(1), 0);
    expect(forms?.packed.toString('latin1', 0, 8)).toBe('Capybara');
    expect(forms?.sources).toBe(1);
    expect(forms?.lengths.length).toBeGreaterThan(10);
    const typed = (f: () => unknown, kind: typeof TypeError | typeof RangeError) => {
      expect(f).toThrow(kind);
      try {
        f();
      } catch (error) {
        expect((error as { code?: string }).code).toBe('ERR_NATIVE_OPTIONS');
      }
    };
    // Lengths that do not add up to the units, spellings that do not add up to the strings, empty strings.
    typed(() => native?.literalsForms(units, Uint32Array.of(9), Uint32Array.of(1), 0), RangeError);
    typed(() => native?.literalsForms(units, one, Uint32Array.of(2), 0), RangeError);
    typed(() => native?.literalsForms(units, Uint32Array.of(8, 0), Uint32Array.of(2), 0), RangeError);
    typed(() => native?.literalsForms(units, one, Uint32Array.of(0, 1), 0), RangeError);
    // Not the typed arrays asked for.
    typed(() => native?.literalsForms(Buffer.from('Capybara') as unknown as Uint16Array, one, Uint32Array.of(1), 0), TypeError);
    typed(() => native?.literalsForms(units, [8] as unknown as Uint32Array, Uint32Array.of(1), 0), TypeError);
    typed(() => native?.literalsForms(units, one, Uint32Array.of(1), 'x' as unknown as number), TypeError);
  });
});
