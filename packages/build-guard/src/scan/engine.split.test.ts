/**
 * The split-literal search looks up each position's candidates instead of running an
 * alternation of every plain form; it must find what that alternation found: per start
 * position the longest source, with the `i` flag's case folding over Latin-1 text.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LongestLiteralAt } from './engine.js';

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The alternation the search replaces, read as before: longest first, resumed one past each match's start. */
function byAlternation(sources: readonly string[], fold: boolean, text: string): Array<[number, number]> {
  const ordered = [...sources].sort((a, b) => b.length - a.length);
  if (ordered.length === 0) return [];
  const re = new RegExp(ordered.map(escapeRe).join('|'), fold ? 'gi' : 'g');
  const found: Array<[number, number]> = [];
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    re.lastIndex = m.index + 1;
    found.push([m.index, m[0].length]);
  }
  return found;
}

function bySearch(sources: readonly string[], fold: boolean, text: string): Array<[number, number]> {
  const found: Array<[number, number]> = [];
  new LongestLiteralAt(sources, fold).forEach(text, (at, length) => found.push([at, length]));
  return found;
}

// Letters whose case the `i` flag folds in Latin-1 (A/a, À/à, Þ/þ), ones it leaves alone
// (ß, µ, ÿ, ×, ÷) and junction characters, so sources overlap, nest and differ only in case.
const ALPHABET = [...'abAB+\'"` ÀàÞþßµÿ×÷\u00ad'];
/** Upper case where it stays Latin-1 (a window's text is Latin-1: µ and ÿ have no upper case there). */
const upperLatin1 = (s: string) =>
  [...s].map((c) => (c.toUpperCase().length === 1 && c.toUpperCase().charCodeAt(0) <= 0xff ? c.toUpperCase() : c)).join('');
const latin1 = (max: number) => fc.array(fc.constantFrom(...ALPHABET), { minLength: 1, maxLength: max }).map((cs) => cs.join(''));

describe('LongestLiteralAt', () => {
  it('finds what the alternation of the same sources finds, at every start, folding case or not', () => {
    let runs = 0;
    let matched = 0;
    fc.assert(
      fc.property(
        fc.array(latin1(6), { minLength: 1, maxLength: 12 }),
        fc.array(fc.oneof(latin1(8), fc.nat()), { maxLength: 12 }),
        fc.boolean(),
        fc.boolean(),
        (given, pieces, fold, short) => {
          runs++;
          // With every source two characters or longer, the search skips positions by their first two.
          const long = given.filter((s) => s.length >= 2);
          const sources = short || long.length === 0 ? given : long;
          // Planted sources (by index) between random text, some in the other case.
          const text = pieces
            .map((p, i) => {
              if (typeof p === 'string') return p;
              const s = sources[p % sources.length] as string;
              return i % 2 === 0 ? s : upperLatin1(s);
            })
            .join('');
          const expected = byAlternation(sources, fold, text);
          matched += expected.length;
          expect(bySearch(sources, fold, text)).toEqual(expected);
        },
      ),
      { numRuns: 3000 },
    );
    expect(runs).toBe(3000);
    // The property compared real matches, not empty lists.
    expect(matched).toBeGreaterThan(3000);
  });

  it('takes the longest source at a position, then moves on by one', () => {
    const search = (text: string, fold = false) => bySearch(['Capy', 'Capybara', 'ybar'], fold, text);
    expect(search('xCapybaraCapy')).toEqual([
      [1, 8],
      [4, 4],
      [9, 4],
    ]);
    expect(search('CAPYBARA')).toEqual([]);
    expect(search('CAPYBARA', true)).toEqual([
      [0, 8],
      [3, 4],
    ]);
    expect(bySearch([], true, 'anything')).toEqual([]);
  });
});
