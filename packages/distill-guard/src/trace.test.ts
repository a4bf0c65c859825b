import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decoyPeriod, decoyTools } from './decoys.js';
import { CanaryIndex, decoyTraceText, decoyTraceTexts } from './trace.js';

const secret = randomBytes(32);
const period = decoyPeriod();
const keys = ['key_a', 'key_b', 'key_c'];
const index = new CanaryIndex({ secret, keys, periods: [period] });
const decoys = keys.flatMap((apiKeyId) => decoyTools({ secret, apiKeyId, period }));
const decoyTokens = new Set(decoys.flatMap((d) => [d.tool.name, d.canary]));

/** The decoy tokens in a text as the regular expression reads it, once each. */
function expectedTokens(text: string): string[] {
  const out: string[] = [];
  for (const [token] of text.matchAll(/[A-Za-z0-9_]{6,80}/g)) if (decoyTokens.has(token) && !out.includes(token)) out.push(token);
  return out;
}

/** The distinct tokens `trace` used as evidence. */
function tracedTokens(text: string | readonly string[]): string[] {
  const out: string[] = [];
  for (const a of index.trace(text, 0)) for (const e of a.evidence) if (!out.includes(e.token)) out.push(e.token);
  return out;
}

/** Text pieces: decoy tokens, word runs (some longer than 80), separators and other characters. */
const piece = fc.oneof(
  fc.constantFrom(...decoyTokens),
  fc.constantFrom('_', 'a', 'Z', '9', 'x'.repeat(74), 'y'.repeat(80), 'z'.repeat(160), 'é', '\u{1F600}', ' ', '\n', '"', '-', '.'),
  fc.string({ maxLength: 12 }),
);
const text = fc.array(piece, { maxLength: 40 }).map((parts) => parts.join(''));

describe('CanaryIndex.trace', () => {
  it('finds exactly the decoy tokens /[A-Za-z0-9_]{6,80}/g finds, whatever the text', () => {
    fc.assert(
      fc.property(text, (t) => {
        const traced = [...new Set(tracedTokens(t))];
        expect(traced.sort()).toEqual(expectedTokens(t).sort());
      }),
      { numRuns: 2_000 },
    );
  });

  it('reads texts given apart as if joined by line breaks', () => {
    fc.assert(
      fc.property(fc.array(text, { maxLength: 6 }), (texts) => {
        expect(index.trace(texts, 0)).toEqual(index.trace(texts.join('\n'), 0));
      }),
      { numRuns: 500 },
    );
  });

  it('finds a decoy at the end of a run read in 80-character pieces, and not inside a longer word', () => {
    const name = decoys[0]?.tool.name as string;
    // The run is cut at 80: the name, starting at 80, is the next piece.
    expect(tracedTokens(`${'q'.repeat(80)}${name}`)).toEqual([name]);
    expect(tracedTokens(`${'q'.repeat(79)}${name}`)).toEqual([]);
    expect(tracedTokens(`x${name}`)).toEqual([]);
    expect(tracedTokens(`${name}-`)).toEqual([name]);
  });

  it('scores the same evidence the same, one text or its parts', () => {
    const [decoy] = decoyTools({ secret, apiKeyId: 'key_b', period });
    const parts = ['User: hello', `tool_use ${decoy?.tool.name}`, `{"account_id":"${decoy?.canary}"}`];
    const whole = index.trace(parts.join('\n'));
    expect(whole).toHaveLength(1);
    expect(whole[0]?.apiKeyId).toBe('key_b');
    expect(whole[0]?.evidence).toHaveLength(2);
    expect(index.trace(parts)).toEqual(whole);
  });
});

describe('decoyTraceTexts', () => {
  it('lists the conversation’s texts, tools left out, and joins to decoyTraceText', () => {
    const request = {
      tools: [{ name: 'defined_here_tool', description: 'not evidence' }],
      messages: [
        { role: 'user', content: 'first' },
        { role: 'assistant', content: [{ type: 'tool_use', name: 'some_tool', input: { q: 'query' } }] },
      ],
    };
    const texts = decoyTraceTexts(request);
    expect(texts).toEqual(['user', 'first', 'assistant', 'tool_use', 'some_tool', 'query']);
    expect(decoyTraceText(request)).toBe(texts.join('\n'));
    expect(decoyTraceTexts(null)).toEqual([]);
    expect(decoyTraceTexts({ messages: 'x'.repeat(10) })).toEqual(['x'.repeat(10)]);
  });
});
