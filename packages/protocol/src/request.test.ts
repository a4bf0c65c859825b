import { describe, expect, it } from 'vitest';
import * as p from './index.js';

const block = 'x-moat: v=1; cv=1.4.2; fp=a3f; ep=cli;';

describe('withAttribution', () => {
  it('puts the block first and keeps a string system prompt after it', () => {
    const out = p.withAttribution({ model: 'm', system: 'Be brief.', messages: [] }, block);
    expect(out.system).toEqual([
      { type: 'text', text: block },
      { type: 'text', text: 'Be brief.' },
    ]);
  });

  it('refuses a system that can hold no block (an object, a number) rather than drop its text', () => {
    for (const system of [{ text: 'SYS-SECRET' }, 5, true])
      expect(() => p.withAttribution({ model: 'm', system, messages: [] } as never, block), JSON.stringify(system)).toThrow(
        expect.objectContaining({ name: 'ProtocolError', code: 'ERR_ATTRIBUTION_TYPE' }),
      );
    const none = p.withAttribution({ model: 'm', system: null, messages: [] } as unknown as p.MessagesRequest, block);
    expect(none.system).toEqual([{ type: 'text', text: block }]);
  });

  it('replaces an existing block instead of stacking a second one', () => {
    const once = p.withAttribution({ model: 'm', system: [{ type: 'text', text: 'Be brief.' }] }, block);
    const twice = p.withAttribution(once, block.replace('a3f', 'b00'));
    expect(twice.system).toEqual([
      { type: 'text', text: block.replace('a3f', 'b00') },
      { type: 'text', text: 'Be brief.' },
    ]);
  });

  it('gives identical system prefixes across the turns of one conversation', () => {
    const turn1 = { model: 'm', messages: [{ role: 'user', content: 'Hello there, how are you?' }] };
    const turn2 = {
      model: 'm',
      messages: [...turn1.messages, { role: 'assistant', content: 'Fine.' }, { role: 'user', content: 'And now?' }],
    };
    const opts = { salt: 's', version: '1.4.2' };
    const b1 = p.serializeAttribution({ cv: '1.4.2', fp: p.fingerprintRequest(turn1, opts), ep: 'cli' });
    const b2 = p.serializeAttribution({ cv: '1.4.2', fp: p.fingerprintRequest(turn2, opts), ep: 'cli' });
    expect(JSON.stringify(p.withAttribution(turn1, b1).system)).toBe(JSON.stringify(p.withAttribution(turn2, b2).system));
  });
});

describe('findAttribution', () => {
  it('finds only a text block at system[0]', () => {
    expect(p.findAttribution({ system: [{ type: 'text', text: block }] })).toEqual({ status: 'present', text: block });
    expect(
      p.findAttribution({
        system: [
          { type: 'text', text: 'x' },
          { type: 'text', text: block },
        ],
      }),
    ).toEqual({ status: 'absent' });
    expect(p.findAttribution({ system: block })).toEqual({ status: 'absent' });
    expect(p.findAttribution(null)).toEqual({ status: 'absent' });
  });
});

describe('stripMoatTags', () => {
  it('removes the block, the envelope and anti_distillation and nothing else', () => {
    const request = {
      model: 'm',
      system: [
        { type: 'text', text: block },
        { type: 'text', text: 'Be brief.' },
      ],
      messages: [{ role: 'user', content: `quoting "moat_att" and ${block}` }],
      anti_distillation: ['fake_tools'],
      moat_att: 'v1.k.1764000000.0011223344556677.00000000000000000000000000000000',
    };
    expect(p.stripMoatTags(request)).toEqual({
      model: 'm',
      system: [{ type: 'text', text: 'Be brief.' }],
      messages: request.messages,
    });
    expect(request.anti_distillation).toEqual(['fake_tools']); // input untouched
  });

  it('drops a system array that held only the block', () => {
    expect(p.stripMoatTags({ model: 'm', system: [{ type: 'text', text: block }] })).toEqual({ model: 'm' });
  });
});

describe('ProtocolError', () => {
  it('says what was expected and what came', () => {
    const r = p.tryParseAttribution('x-moat: v=1; cv=1.4.2; fp=A3F;');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.code).toBe('ERR_ATTRIBUTION_FIELD_VALUE');
    expect(r.error.message).toBe('ERR_ATTRIBUTION_FIELD_VALUE: expected fp of 3 lowercase hex digits, got "A3F"');
    expect(r.error.name).toBe('ProtocolError');
  });

  it('toResult lets non-protocol errors through', () => {
    expect(() =>
      p.toResult(() => {
        throw new TypeError('bug');
      }),
    ).toThrow(TypeError);
  });
});

describe('stamp', () => {
  it('refuses a short key and a region outside the body', () => {
    const body = p.utf8('{"moat_att":"v1.k.1764000000.0011223344556677.00000000000000000000000000000000"}');
    expect(() => p.computeStamp(new Uint8Array(16), body, 0, 32)).toThrow(/ERR_STAMP_KEY/);
    expect(() => p.computeStamp(new Uint8Array(32), body, body.length - 10, body.length + 22)).toThrow(/ERR_ENVELOPE_STAMP/);
  });
});

describe('gateway detection', () => {
  it('accepts Headers, pair lists and records alike', () => {
    const expected = [{ id: 'portkey', evidence: ['header:x-portkey-trace-id'] }];
    expect(p.detectGateways({ headers: new Headers({ 'X-Portkey-Trace-Id': 't' }) })).toEqual(expected);
    expect(p.detectGateways({ headers: [['x-portkey-trace-id', 't']] })).toEqual(expected);
    expect(p.detectGateways({ headers: { 'x-portkey-trace-id': 't' } })).toEqual(expected);
  });

  it('treats an unparsable URL as no host', () => {
    expect(p.normalizeHost('https://[bad')).toBe('');
    expect(p.detectGateways({ baseUrl: 'https://[bad' })).toEqual([]);
  });
});
