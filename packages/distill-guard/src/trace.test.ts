import { randomBytes } from 'node:crypto';
import { deflateSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decoyPeriod, decoyTools } from './decoys.js';
import type { TextCut } from './pdf-text.js';
import { CanaryIndex, combineAttributions, conversationPrelude, decoyTraceText, decoyTraceTexts } from './trace.js';

const secret = randomBytes(32);
const period = decoyPeriod();
const keys = ['key_a', 'key_b', 'key_c'];
const index = new CanaryIndex({ secret, keys, periods: [period] });
const decoys = keys.flatMap((apiKeyId) => decoyTools({ secret, apiKeyId, period }));
const decoyTokens = new Set(decoys.flatMap((d) => [d.tool.name, d.canary]));

/** The decoy tokens in a text as the regular expression reads it, once each. */
function exactTokens(text: string): string[] {
  const out: string[] = [];
  for (const [token] of text.matchAll(/[A-Za-z0-9_]{6,80}/g)) if (decoyTokens.has(token) && !out.includes(token)) out.push(token);
  return out;
}

/** Each decoy's folded spellings: the name and the canary lowercase, the canary's random part alone. */
const foldedSpellings = new Map(
  decoys.flatMap((d) => [
    [d.tool.name, d.tool.name],
    [d.canary, d.canary],
    [d.canary.slice(d.canary.indexOf('_') + 1), d.canary],
  ]),
);
const JOINED = /^[-_.\u00ad\u200b-\u200d\u2010-\u2015\u2060\u2212\ufeff\uff3f]+$/;

/** The decoys respelled in a text, found the naive way: every run of 1–3 joined words, lowercased. */
function foldedTokens(text: string): string[] {
  const words: Array<{ word: string; start: number; end: number }> = [];
  for (const m of text.matchAll(/[A-Za-z0-9]+/g)) {
    let at = m.index;
    for (const part of m[0].split(/(?<=[a-z])(?=[A-Z])/)) {
      words.push({ word: part.toLowerCase(), start: at, end: at + part.length });
      at += part.length;
    }
  }
  const out: string[] = [];
  // A run of letters and digits in mixed case is one word too (a canary's random part, any case).
  for (const m of text.matchAll(/[A-Za-z0-9]+/g)) {
    const token = foldedSpellings.get(m[0].toLowerCase());
    if (token !== undefined && !out.includes(token)) out.push(token);
  }
  for (let i = 0; i < words.length; i++)
    for (let k = 1; k <= 3 && i + k <= words.length; k++) {
      const run = words.slice(i, i + k);
      const joined = run.every((w, j) => j === 0 || w.start === run[j - 1]?.end || JOINED.test(text.slice(run[j - 1]?.end, w.start)));
      if (!joined) break;
      const token = foldedSpellings.get(run.map((w) => w.word).join('_'));
      if (token !== undefined && !out.includes(token)) out.push(token);
    }
  return out;
}

/**
 * The text without escapes, compatibility forms, marks and invisible characters, when it has
 * any character outside ASCII or a URL or HTML escape of one inside it: what `trace` reads
 * once more. The generator makes zero-width spaces, fullwidth low lines, accents and escapes.
 */
function plainOf(text: string): string | undefined {
  if (!/[\u0080-\uffff]|%[0-7][0-9A-Fa-f]|&#?[0-9A-Za-z]{2,8};/.test(text)) return undefined;
  let plain = '';
  // URL escapes of ASCII one by one, then HTML's, as a browser would show them.
  for (let i = 0; i < text.length; i++) {
    const hex = text.slice(i + 1, i + 3);
    if (text[i] === '%' && /^[0-7][0-9A-Fa-f]$/.test(hex)) {
      plain += String.fromCharCode(Number.parseInt(hex, 16));
      i += 2;
    } else plain += text[i];
  }
  const named: Record<string, string> = { lowbar: '_', UnderBar: '_', hyphen: '-', dash: '-', period: '.', nbsp: ' ' };
  plain = plain.replace(/&(#[xX][0-9A-Fa-f]{1,6}|#[0-9]{1,7}|[A-Za-z]{2,8});/g, (escaped, body: string) => {
    if (!body.startsWith('#')) return named[body] ?? escaped;
    const code = /^#[xX]/.test(body) ? Number.parseInt(body.slice(2), 16) : Number(body.slice(1));
    return code < 0x80 ? String.fromCharCode(code) : escaped;
  });
  return plain.normalize('NFKD').replace(/\p{M}|\p{Cf}/gu, '');
}

/** What `trace` must find: the exact tokens and the respelled ones, in the text and in it undisguised. */
function expectedTokens(text: string): string[] {
  const plain = plainOf(text);
  const again = plain === undefined ? [] : [...exactTokens(plain), ...foldedTokens(plain)];
  return [...new Set([...exactTokens(text), ...foldedTokens(text), ...again])];
}

/** The distinct tokens `trace` used as evidence. */
function tracedTokens(text: string | readonly string[]): string[] {
  const out: string[] = [];
  for (const a of index.trace(text, 0)) for (const e of a.evidence) if (!out.includes(e.token)) out.push(e.token);
  return out;
}

/** Text pieces: decoy tokens, word runs (some longer than 80), separators, escapes and other characters. */
const respelled = decoys.flatMap((d) => {
  const words = d.tool.name.split('_');
  const random = d.canary.slice(d.canary.indexOf('_') + 1);
  return [
    d.tool.name.toUpperCase(),
    words.join('-'),
    words.map((w, i) => (i === 0 ? w : w.charAt(0).toUpperCase() + w.slice(1))).join(''),
    words.join('\u200b_'),
    words.join('\uff3f'),
    words.join(' '),
    d.canary.toUpperCase(),
    random,
    `${words.join('_')}_v2`,
  ];
});
const piece = fc.oneof(
  fc.constantFrom(...decoyTokens),
  fc.constantFrom(...respelled),
  fc.constantFrom(
    '_',
    'a',
    'Z',
    '9',
    'x'.repeat(74),
    'y'.repeat(80),
    'z'.repeat(160),
    'é',
    '\u{1F600}',
    ' ',
    '\n',
    '"',
    '-',
    '.',
    '%5F',
    '%00',
    '%2',
    '&#95;',
    '&lowbar;',
    '&#x72;',
    '&amp;',
  ),
  fc.string({ maxLength: 12 }),
);
const text = fc.array(piece, { maxLength: 40 }).map((parts) => parts.join(''));

describe('CanaryIndex.trace', () => {
  it('finds exactly the decoy tokens /[A-Za-z0-9_]{6,80}/g finds and the respelled ones a naive search finds, whatever the text', () => {
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

  it('finds a decoy however it is respelled, and not its words apart or inside other words', () => {
    const decoy = decoys[0] as (typeof decoys)[number];
    const { name } = decoy.tool;
    const words = name.split('_');
    const camel = words.map((w, i) => (i === 0 ? w : w.charAt(0).toUpperCase() + w.slice(1))).join('');
    const random = decoy.canary.slice(decoy.canary.indexOf('_') + 1);
    for (const text of [
      name.toUpperCase(),
      `call ${words.join('-')} now`,
      camel,
      `${camel.charAt(0).toUpperCase()}${camel.slice(1)}`,
      words.join('\u200b_'),
      words.join('\u200d'),
      words.join('\uff3f'),
      words.join('.'),
      `my_${name}_v2`,
      `ToolsLike${camel.charAt(0).toUpperCase()}${camel.slice(1)}`,
    ])
      expect(tracedTokens(text), text).toEqual([name]);
    const mixed = [...random].map((c, i) => (i % 2 === 1 ? c.toUpperCase() : c)).join('');
    for (const text of [decoy.canary.toUpperCase(), `id ${random}`, `id=${random.toUpperCase()}`, `acct-${random}`, `id ${mixed}`])
      expect(tracedTokens(text), text).toEqual([decoy.canary]);
    // Disguised letters: fullwidth, mathematical bold, look-alike Cyrillic, accents, combining marks, invisible characters inside words.
    const fullwidth = [...name].map((c) => (c === '_' ? c : String.fromCodePoint((c.codePointAt(0) as number) + 0xfee0))).join('');
    const bold = [...name].map((c) => (c === '_' ? c : String.fromCodePoint(0x1d41a + (c.codePointAt(0) as number) - 0x61))).join('');
    for (const text of [
      fullwidth,
      bold,
      name.replaceAll('a', '\u0430').replaceAll('e', '\u0435').replaceAll('o', '\u043e'),
      name.replaceAll('e', 'e\u0301'),
      [...name].join('\u200b'),
      [...name].join('\u00ad'),
      `\u202e${name}\u202c`,
      [...name].join('\ufe0f'),
      encodeURIComponent(name).replaceAll('_', '%5F'),
      [...name].map((c) => `%${c.charCodeAt(0).toString(16)}`).join(''),
      name.replaceAll('_', '&#95;'),
      name.replaceAll('_', '&#x5F;'),
      name.replaceAll('_', '&lowbar;'),
      // Precomposed accents, circled letters, superscripts, a ligature, a blank filler: no mark or format character among them.
      name.replaceAll('e', '\u00e9').replaceAll('a', '\u00e0'),
      [...name].map((c) => (c === '_' ? c : String.fromCodePoint(0x24d0 + (c.codePointAt(0) as number) - 0x61))).join(''),
      name.replaceAll('i', '\u2071').replaceAll('n', '\u207f'),
      name.replaceAll('fi', '\ufb01').replaceAll('l', '\u2113'),
      [...name].join('\u3164'),
      // Inside text of a script that is never read again (CJK, Hangul), with its own punctuation.
      `请调用${fullwidth}工具，谢谢。`,
      `도구 ${name.replaceAll('e', '\u00e9')}를 호출하세요`,
    ])
      expect(tracedTokens(text), JSON.stringify(text)).toEqual([name]);
    expect(index.trace(fullwidth, 0)[0]?.evidence[0]).toMatchObject({ token: name, exact: false });
    for (const text of [words.join(' '), `x${name}`, `${name.replaceAll('_', '')}`, `${words[0]}_${words[2]}`, `${random}x`])
      expect(tracedTokens(text), text).toEqual([]);
  });

  it('weighs a respelled name below a hit alone, and a respelled canary as an exact one', () => {
    const [one, two] = decoyTools({ secret, apiKeyId: 'key_c', period });
    const camel = (name: string) => name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const confidence = (text: string) => index.trace(text, 0).find((a) => a.apiKeyId === 'key_c')?.confidence ?? 0;
    expect(confidence(camel(one?.tool.name as string))).toBeCloseTo(0.6);
    expect(confidence(one?.tool.name as string)).toBeCloseTo(0.75);
    expect(confidence(`${camel(one?.tool.name as string)} ${camel(two?.tool.name as string)}`)).toBeCloseTo(1 - 0.4 * 0.4);
    expect(confidence(String(one?.canary).toUpperCase())).toBeCloseTo(0.95);
    expect(index.trace(camel(one?.tool.name as string), 0)[0]?.evidence[0]).toMatchObject({ kind: 'name', exact: false });
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
  it('finds a decoy split across blocks or turns, in base64 inside a text, or in rot13; nothing in clean text', () => {
    const secret = new Uint8Array(32).fill(9);
    const period = 2900;
    const index = new CanaryIndex({ secret, keys: ['key_a', 'key_b'], periods: [period] });
    const [decoy] = decoyTools({ secret, apiKeyId: 'key_a', period });
    const name = decoy?.tool.name as string;
    const cut = Math.floor(name.length / 2);
    const b64 = Buffer.from(`called ${name} today`).toString('base64');
    const hidden: Array<[string, unknown]> = [
      [
        'split across the end of the system prompt and the first message',
        { system: `You are helpful. ${name.slice(0, cut)}`, messages: [{ role: 'user', content: `${name.slice(cut)} please` }] },
      ],
      [
        'split across the system prompt’s last block and the first message',
        {
          system: [
            { type: 'text', text: 'You are helpful.' },
            { type: 'text', text: `Also ${name.slice(0, cut)}` },
          ],
          messages: [{ role: 'user', content: [{ type: 'text', text: `${name.slice(cut)} please` }] }],
        },
      ],
      [
        'split across two text blocks',
        {
          messages: [
            {
              role: 'user',
              content: [
                { type: 'text', text: `see ${name.slice(0, cut)}` },
                { type: 'text', text: `${name.slice(cut)} now` },
              ],
            },
          ],
        },
      ],
      [
        'split across two turns',
        {
          messages: [
            { role: 'user', content: `see ${name.slice(0, cut)}` },
            { role: 'assistant', content: 'ok' },
            { role: 'user', content: `${name.slice(cut)}` },
          ].filter((_, i) => i !== 1),
        },
      ],
      [
        'split in three pieces',
        {
          messages: [
            { role: 'user', content: [name.slice(0, 4), name.slice(4, 9), name.slice(9)].map((text) => ({ type: 'text', text })) },
          ],
        },
      ],
      [
        'split around an unrelated block',
        {
          messages: [
            {
              role: 'user',
              content: [
                { type: 'text', text: `see ${name.slice(0, cut)}` },
                { type: 'text', text: 'something else entirely.' },
                { type: 'text', text: `${name.slice(cut)} now` },
              ],
            },
          ],
        },
      ],
      ['base64 inside a text', { messages: [{ role: 'user', content: `decode this: ${b64} please` }] }],
      [
        'base64url inside a tool input',
        {
          messages: [
            { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't', content: Buffer.from(`x ${name}`).toString('base64url') }] },
          ],
        },
      ],
      ['hex inside a text', { messages: [{ role: 'user', content: `bytes ${Buffer.from(`x ${name}`).toString('hex')}` }] }],
      ['base64 of UTF-16 inside a text', { messages: [{ role: 'user', content: Buffer.from(`x ${name}`, 'utf16le').toString('base64') }] }],
      ['base64 of base64 inside a text', { messages: [{ role: 'user', content: Buffer.from(b64).toString('base64') }] }],
      [
        'rot13',
        {
          messages: [
            {
              role: 'user',
              content: `the tool ${name.replace(/[a-z]/g, (c) => String.fromCharCode(((c.charCodeAt(0) - 97 + 13) % 26) + 97))} again`,
            },
          ],
        },
      ],
      ['base64 after a stray letter', { messages: [{ role: 'user', content: `decode X${b64} please` }] }],
      ['base64 after two stray letters', { messages: [{ role: 'user', content: `decode Qz${b64} please` }] }],
      [
        'base64 wrapped at 10 columns',
        { messages: [{ role: 'user', content: `decode:\n${(b64.match(/.{1,10}/g) ?? []).join('\n')}\nthanks` }] },
      ],
      [
        'base64 wrapped at 76 columns with CRLF',
        {
          messages: [
            {
              role: 'user',
              content: (
                Buffer.from(`${'padding words '.repeat(12)}${name} end`)
                  .toString('base64')
                  .match(/.{1,76}/g) ?? []
              ).join('\r\n'),
            },
          ],
        },
      ],
      ['base64 of gzip', { messages: [{ role: 'user', content: `blob ${gzipSync(`called ${name} today`).toString('base64')}` }] }],
      [
        'tag characters (invisible, read by models) after a visible text',
        {
          messages: [
            { role: 'user', content: `Summarize this.${[...name].map((c) => String.fromCodePoint(0xe0000 + c.charCodeAt(0))).join('')}` },
          ],
        },
      ],
    ];
    for (const [where, request] of hidden) {
      const hits = index.trace(decoyTraceTexts(request), 0.7);
      expect(
        hits.map((h) => h.apiKeyId),
        where,
      ).toEqual(['key_a']);
    }
    // Clean text, code and base64 of binary data name no key.
    const clean = {
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'const user_id = read_config(path_name);' },
            { type: 'text', text: 'return user_id;' },
          ],
        },
        { role: 'user', content: `blob ${Buffer.from(new Uint8Array(64).map((_, i) => (i * 37) % 256)).toString('base64')} end` },
        // A flag emoji's tag sequence (England: U+1F3F4, tags "gbeng", cancel tag).
        { role: 'user', content: 'go \u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F} team' },
      ],
    };
    expect(index.trace(decoyTraceTexts(clean), 0.5)).toEqual([]);
    // Tag characters interleaved with a visible decoy's letters are still passed over, as before.
    const interleaved = [...name].join('\u{E0020}');
    expect(index.trace(decoyTraceTexts({ messages: [{ role: 'user', content: interleaved }] }), 0.5).map((h) => h.apiKeyId)).toEqual([
      'key_a',
    ]);
  });

  it('joins the conversation’s start with what came before it, read apart (options.before)', () => {
    const [decoy] = decoyTools({ secret, apiKeyId: 'key_a', period });
    const name = decoy?.tool.name as string;
    const request = { messages: [{ role: 'user', content: `${name.slice(8)} please` }] };
    expect(index.trace(decoyTraceTexts(request), 0.7)).toEqual([]);
    const before = conversationPrelude({ system: [{ type: 'text', text: `Be brief. ${name.slice(0, 8)}` }] });
    expect(before).toBe(`Be brief. ${name.slice(0, 8)}`);
    expect(index.trace(decoyTraceTexts(request, Number.POSITIVE_INFINITY, { before }), 0.7).map((h) => h.apiKeyId)).toEqual(['key_a']);
    expect(['', 'x', { system: 7 }, { system: [] }, { system: [{ type: 'image' }] }].map(conversationPrelude)).toEqual([
      '',
      '',
      '',
      '',
      '',
    ]);
  });

  it('lists the conversation’s texts, then the other members a decoy can hide in, and joins to decoyTraceText', () => {
    const request = {
      model: 'not read',
      tools: [{ name: 'defined_here_tool', description: 'defined' }],
      system: 'sys',
      metadata: { user_id: 'meta' },
      stop_sequences: ['stop'],
      tool_choice: { type: 'tool', name: 'chosen' },
      messages: [
        { role: 'user', content: 'first' },
        { role: 'assistant', content: [{ type: 'tool_use', name: 'some_tool', input: { q: 'query' } }] },
      ],
    };
    const texts = decoyTraceTexts(request);
    expect(texts.slice(0, 13)).toEqual([
      'user',
      'first',
      'assistant',
      'tool_use',
      'some_tool',
      'query',
      'sys',
      'defined_here_tool',
      'defined',
      'tool',
      'chosen',
      'meta',
      'stop',
    ]);
    // Then what the conversation's texts may hide (not the app's own system prompt and tools): each
    // boundary's identifier characters joined (the API's own values passed over), the system
    // prompt's end with the conversation's start among them, snake case in rot13.
    expect(texts).toHaveLength(15);
    expect(texts[13]?.split('\n')).toEqual([
      'sysfirst',
      'firstsome_tool',
      'syssome_tool',
      'some_toolquery',
      'firstquery',
      'firstsome_toolquery',
    ]);
    expect(texts[14]).toBe('fbzr_gbby');
    const document = {
      type: 'document',
      source: { type: 'base64', media_type: 'text/plain', data: Buffer.from('hidden words').toString('base64') },
    };
    expect(decoyTraceTexts({ messages: [{ role: 'user', content: [document] }] })).toContain('hidden words');
    for (const mediaType of ['text/plain; charset=utf-8', 'TEXT/PLAIN', 'text/csv', 'application/json', 'application/ld+json'])
      expect(
        decoyTraceTexts({
          messages: [{ role: 'user', content: [{ ...document, source: { ...document.source, media_type: mediaType } }] }],
        }),
        mediaType,
      ).toContain('hidden words');
    // Text under another media type, or none, is read all the same; an image is not decoded.
    for (const mediaType of ['image/png', 'application/pdf', 'application/octet-stream', undefined])
      expect(
        decoyTraceTexts({
          messages: [{ role: 'user', content: [{ ...document, source: { ...document.source, media_type: mediaType } }] }],
        }),
        String(mediaType),
      ).toContain('hidden words');
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from('hidden words')]);
    expect(
      decoyTraceTexts({
        messages: [
          { role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: png.toString('base64') } }] },
        ],
      }).join(' '),
    ).not.toContain('hidden words');
    // Member names, newer and unknown members are read too; the API's own member names are not.
    expect(
      decoyTraceTexts({
        messages: [{ role: 'assistant', content: [{ type: 'tool_use', id: 't', name: 'x', input: { acct_token12: 1, content: 2 } }] }],
        mcp_servers: [{ type: 'url', url: 'https://mcp.example', name: 'server_name' }],
        container: 'container_text',
        future_member: { nested: 'future_text' },
      }),
    ).toEqual([
      'assistant',
      'tool_use',
      't',
      'x',
      'acct_token12',
      'url',
      'https://mcp.example',
      'server_name',
      'container',
      'container_text',
      'future_member',
      'nested',
      'future_text',
      'xacct_token12\ntacct_token12\ntxacct_token12',
      'nppg_gbxra12',
    ]);
    expect(decoyTraceText(request)).toBe(texts.join('\n'));
    expect(decoyTraceTexts(null)).toEqual([]);
    expect(decoyTraceTexts({ messages: 'x'.repeat(10) })).toEqual(['x'.repeat(10)]);
  });

  it('says where it was cut, when asked: the characters spent; a whole read adds nothing', () => {
    const request = { messages: [{ role: 'user', content: 'a'.repeat(60) }], system: 'the system prompt', metadata: { user_id: 'u' } };
    const cutsOf = (limit: number) => {
      const cuts = new Set<TextCut>();
      decoyTraceTexts(request, limit, { cuts });
      return [...cuts];
    };
    expect(cutsOf(Number.POSITIVE_INFINITY)).toEqual([]);
    expect(cutsOf(10_000)).toEqual([]);
    expect(cutsOf(30)).toEqual(['chars']); // the conversation itself cut
    expect(cutsOf(60)).toEqual(['chars']); // the conversation whole, the system prompt left out
  });

  it('shares one decode budget over requests read together, and says when it ran out', () => {
    // A PDF whose one Flate stream inflates to 8 MB of padding, then shows a word.
    const bomb = (word: string) => {
      const data = deflateSync(Buffer.from(`BT (${'a'.repeat(8_000_000)}) Tj ET BT (${word}) Tj ET`, 'latin1'));
      const pdf = Buffer.concat([
        Buffer.from(`%PDF-1.4\n1 0 obj\n<</Filter /FlateDecode /Length ${data.length}>> stream\n`),
        data,
        Buffer.from('\nendstream\nendobj\n%%EOF\n'),
      ]);
      const document = { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: pdf.toString('base64') } };
      return { messages: [{ role: 'user', content: [document] }] };
    };
    const inflate = { inflateLeft: 20_000_000 };
    const read = Array.from({ length: 4 }, (_, i) => {
      const cuts = new Set<TextCut>();
      const found = decoyTraceTexts(bomb(`word${i}`), Number.POSITIVE_INFINITY, { cuts, inflate }).some((t) => t.includes(`word${i}`));
      return [found, [...cuts]];
    });
    // Two fit in 20 MB; the third finds too little left, which spends it; the fourth inflates nothing.
    expect(read).toEqual([
      [true, []],
      [true, []],
      [false, ['pdf_inflate_budget']],
      [false, ['pdf_inflate_budget']],
    ]);
    // Alone, each request has a budget of its own.
    expect(decoyTraceTexts(bomb('alone'), Number.POSITIVE_INFINITY).some((t) => t.includes('alone'))).toBe(true);
  });

  it('inflates the gzip hidden in base64 within the request’s decode budget, shared with its PDFs, and says when it ran out', () => {
    const name = (decoys[0] as (typeof decoys)[number]).tool.name;
    // About 1 KiB of base64 each, inflating to nearly 1 MiB of words: a small body, much text.
    const padding = gzipSync(`${'word '.repeat(200_000)}end`).toString('base64');
    const marked = gzipSync(`called ${name} today`).toString('base64');
    const charsOf = (texts: string[]) => texts.reduce((n, t) => n + t.length, 0);
    const read = (blobs: string[], inflate?: { inflateLeft: number }) => {
      const cuts = new Set<TextCut>();
      const texts = decoyTraceTexts({ messages: [{ role: 'user', content: blobs.join(' ') }] }, Number.POSITIVE_INFINITY, {
        cuts,
        ...(inflate === undefined ? {} : { inflate }),
      });
      return { chars: charsOf(texts), cuts: [...cuts], found: index.trace(texts, 0.7).map((h) => h.apiKeyId) };
    };
    // Within the budget: each one read, nothing cut.
    const two = read([padding, padding, marked]);
    expect(two).toMatchObject({ cuts: [], found: ['key_a'] });
    expect(two.chars).toBeGreaterThan(2_000_000);
    // 40 of them would be 40 MB of text from a 40 KB body: the 32 MiB budget stops it, and says so.
    const many = read(Array.from({ length: 40 }, () => padding));
    expect(many.cuts).toEqual(['gzip_inflate_budget']);
    expect(many.chars).toBeLessThanOrEqual(2 * 32 * 1024 * 1024); // the text and one more copy of it at most
    expect(many.chars).toBeGreaterThan(30 * 1024 * 1024);
    // One budget with the batch's other items: spent by them, the decoy behind it goes unread, and that is said.
    const inflate = { inflateLeft: 1_500_000 };
    expect(read([padding], inflate)).toMatchObject({ cuts: [] });
    expect(read([padding, marked], inflate)).toMatchObject({ cuts: ['gzip_inflate_budget'], found: [] });
    expect(inflate.inflateLeft).toBeLessThanOrEqual(0);
    // One gzip past 1 MiB is not read, and that is said too.
    expect(read([gzipSync(`${'word '.repeat(300_000)}${name}`).toString('base64')])).toMatchObject({
      cuts: ['gzip_stream_cap'],
      found: [],
    });
  });
});

describe('CanaryIndex.retain', () => {
  it('keeps a decoy name a key was served in two periods while the later one is kept', () => {
    // About 1 key in 100 draws one name in two of 15 periods: find one.
    const repeated = (() => {
      for (let k = 0; k < 5_000; k++) {
        // Each name's periods, oldest first.
        const periodsOf = new Map<string, number[]>();
        for (let p = period - 14; p <= period; p++)
          for (const decoy of decoyTools({ secret, apiKeyId: `key_${k}`, period: p }))
            periodsOf.set(decoy.tool.name, [...(periodsOf.get(decoy.tool.name) ?? []), p]);
        for (const [name, periods] of periodsOf)
          if (periods.length >= 2) return { apiKeyId: `key_${k}`, name, first: periods[0] as number, last: periods.at(-1) as number };
      }
      throw new Error('no key drew one name twice');
    })();
    const periods = Array.from({ length: 15 }, (_, i) => period - i);
    // Built once, and grown a period at a time as a verifier does: the name stays until its later period goes.
    const once = new CanaryIndex({ secret, keys: [repeated.apiKeyId], periods });
    const grown = new CanaryIndex({ secret, keys: [repeated.apiKeyId], periods: [] });
    for (let p = period - 14; p <= period; p++) grown.add([repeated.apiKeyId], [p]);
    for (const index of [once, grown]) {
      index.retain(repeated.first + 1);
      expect(index.trace(`we called ${repeated.name}`, 0.7).map((t) => t.apiKeyId)).toEqual([repeated.apiKeyId]);
      index.retain(repeated.last + 1);
      expect(index.trace(`we called ${repeated.name}`, 0.7)).toEqual([]);
    }
  });
});

describe('combineAttributions', () => {
  it('gives what one trace of all the parts gives, whatever the parts, each token once', () => {
    const tokens = [...decoyTokens];
    const word = fc.oneof(
      fc.constantFrom(...tokens),
      fc.constantFrom(...tokens).map((t) => t.toUpperCase().replaceAll('_', '-')), // respelled
      fc.constantFrom('the', 'report', 'const x = 1;', 'quarterly_totals_v2'),
    );
    const part = fc.array(word, { maxLength: 6 }).map((words) => words.join(' '));
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 4 }), fc.constantFrom(0, 0.5, 0.7, 0.9), (parts, threshold) => {
        const combined = combineAttributions(
          parts.map((p) => index.trace(p, 0)),
          threshold,
        );
        const whole = index.trace(parts, threshold);
        const view = (list: ReturnType<typeof index.trace>) =>
          list.map((a) => ({ apiKeyId: a.apiKeyId, confidence: a.confidence.toFixed(12), tokens: a.evidence.map((e) => e.token).sort() }));
        expect(view(combined)).toEqual(view(whole));
      }),
      { numRuns: 300 },
    );
  });

  it('finds two respelled names apart, each below the threshold alone', () => {
    const [first, second] = decoys.filter((d) => index.trace(d.tool.name, 0.7)[0]?.apiKeyId === 'key_b').map((d) => d.tool.name);
    const respell = (name = '') => name.toUpperCase().replaceAll('_', '-');
    const parts = [index.trace(`uses ${respell(first)}`, 0), index.trace(`and ${respell(second)}`, 0)];
    expect(parts.map((p) => p[0]?.confidence)).toEqual([0.6, 0.6]);
    expect(parts.map((p) => combineAttributions([p], 0.7))).toEqual([[], []]);
    expect(combineAttributions(parts, 0.7).map((a) => a.apiKeyId)).toEqual(['key_b']);
  });
});

describe('CanaryIndex.toOptions', () => {
  it('builds an index equal to the one it came from, whose version counts each change', () => {
    const grown = new CanaryIndex({ secret, keys: ['key_a'], periods: [period - 1, period] });
    const v0 = grown.version;
    grown.add(['key_a'], [period]); // nothing new
    expect(grown.version).toBe(v0);
    grown.add(['key_b', 'key_c'], [period]);
    expect(grown.version).toBeGreaterThan(v0);
    const v1 = grown.version;
    grown.retain(period);
    expect(grown.version).toBeGreaterThan(v1);
    const copy = new CanaryIndex(grown.toOptions());
    expect({ keys: copy.size, periods: copy.periods, tokens: copy.tokens }).toEqual({
      keys: grown.size,
      periods: grown.periods,
      tokens: grown.tokens,
    });
    for (const decoy of decoys) {
      const text = `we called ${decoy.tool.name} and ${decoy.canary}`;
      expect(copy.trace(text)).toEqual(grown.trace(text));
    }
    expect(copy.trace('nothing here')).toEqual([]);
  });
});

describe('CanaryIndex.traceLong', () => {
  it('finds what trace finds in a text, and a decoy however far past the trace limit it sits', async () => {
    const name = decoys[0]?.tool.name as string;
    const canary = decoys[1]?.canary as string;
    const padding = 'plain words of a long pasted transcript '.repeat(20_000);
    expect(padding.length).toBeGreaterThan(3 * 262_144);
    const texts = [`${padding}\n${name}`, 'x'.repeat(300_000), `${padding} ${canary.toUpperCase()}`];
    const long = await index.traceLong(texts, 0);
    expect(long.flatMap((a) => a.evidence.map((e) => e.token)).sort()).toEqual([canary, name].sort());
    // Over a short text it is trace, evidence in the same order.
    await fc.assert(
      fc.asyncProperty(fc.array(text, { maxLength: 4 }), async (parts) => {
        expect(await index.traceLong(parts, 0)).toEqual(index.trace(parts, 0));
      }),
      { numRuns: 200 },
    );
  });

  it('gives the event loop a turn between slices', async () => {
    let turns = 0;
    const timer = setInterval(() => turns++, 0);
    await index.traceLong(['word '.repeat(400_000)], 0, 65_536);
    clearInterval(timer);
    expect(turns).toBeGreaterThan(0);
  });
});
