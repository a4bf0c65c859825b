import { fingerprintRequest, parseAttribution } from '@moat/protocol';
import { describe, expect, it, vi } from 'vitest';
import { tagFingerprint } from './client.js';

const opts = { salt: 'test-salt', version: '1.4.2', entrypoint: 'cli' };
const request = { model: 'm', max_tokens: 64, messages: [{ role: 'user', content: 'Explain the diff in this commit, please.' }] };

describe('tagFingerprint', () => {
  it('writes the protocol fingerprint into a new attribution block', () => {
    const r = tagFingerprint(request, opts);
    expect(r.status).toBe('tagged');
    if (r.status !== 'tagged') return;
    const block = parseAttribution((r.request.system[0] as { text: string }).text);
    expect(block).toMatchObject({ cv: '1.4.2', ep: 'cli', fp: fingerprintRequest(request, opts) });
    expect(r.fp).toBe(block.fp);
    expect(request).not.toHaveProperty('system'); // input untouched
  });

  it('keeps the fields of an existing block and only sets fp', () => {
    const existing = {
      ...request,
      system: [
        { type: 'text', text: 'x-moat: v=1; cv=1.4.2; ep=ide; build=abc;' },
        { type: 'text', text: 'Be brief.' },
      ],
    };
    const r = tagFingerprint(existing, opts);
    if (r.status !== 'tagged') throw new Error(r.reason);
    expect(r.request.system).toEqual([
      { type: 'text', text: `x-moat: v=1; cv=1.4.2; fp=${r.fp}; ep=ide; build=abc;` },
      { type: 'text', text: 'Be brief.' },
    ]);
  });

  it('gives every turn of a conversation the same block', () => {
    const turn2 = {
      ...request,
      messages: [...request.messages, { role: 'assistant', content: 'Sure.' }, { role: 'user', content: 'More detail?' }],
    };
    const a = tagFingerprint(request, opts);
    const b = tagFingerprint(turn2, opts);
    if (a.status !== 'tagged' || b.status !== 'tagged') throw new Error('not tagged');
    expect(JSON.stringify(a.request.system)).toBe(JSON.stringify(b.request.system));
  });

  it('fails open on an unparsable existing block, warning once', () => {
    const onWarning = vi.fn();
    const broken = { ...request, system: [{ type: 'text', text: 'x-moat: v=2; cv=1;' }] };
    const r = tagFingerprint(broken, { ...opts, onWarning });
    expect(r.status).toBe('skipped');
    expect(r.request).toBe(broken);
    expect(onWarning).toHaveBeenCalledTimes(1);
    expect(onWarning.mock.calls[0]?.[0]).toMatch(/ERR_UNSUPPORTED_VERSION/);
  });

  it('fails open on a version that is not a valid cv', () => {
    const r = tagFingerprint(request, { ...opts, version: '1.4.2 beta' });
    expect(r.status).toBe('skipped');
    if (r.status === 'skipped') expect(r.reason).toMatch(/ERR_ATTRIBUTION_SYNTAX/);
  });
});
