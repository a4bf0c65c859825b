import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseAttribution, serializeAttribution } from './attribution.js';
import { envelopeScheme } from './envelope.js';
import { codeOf } from './error-code.test-util.js';
import { parseTelemetryBatch } from './telemetry.js';

/** Names an `Object.prototype` lookup would find: a field of that name is data all the same. */
const PROTOTYPE_NAMES = Object.getOwnPropertyNames(Object.prototype);
const KEY_RE = /^[a-z][a-z0-9_]{0,31}$/;
const KNOWN = ['v', 'cv', 'fp', 'ep'];

const extensionName = fc
  .oneof(fc.stringMatching(KEY_RE), fc.constantFrom(...PROTOTYPE_NAMES, 'constructor', 'prototype', 'then'))
  .filter((k) => !KNOWN.includes(k));
const value = fc.stringMatching(/^[A-Za-z0-9._+-]{1,64}$/);

describe('attribution fields named like Object.prototype members', () => {
  it('keeps "constructor" as an extension and holds the field order around it', () => {
    expect(parseAttribution('x-moat: v=1; cv=1; constructor=x;').extensions).toEqual([['constructor', 'x']]);
    expect(codeOf(() => parseAttribution('x-moat: v=1; ep=cli; constructor=x; cv=1;'))).toBe('ERR_ATTRIBUTION_FIELD_ORDER');
    expect(codeOf(() => parseAttribution('x-moat: v=1; cv=1; constructor=x; fp=abc;'))).toBe('ERR_ATTRIBUTION_FIELD_ORDER');
    expect(codeOf(() => parseAttribution('x-moat: v=1; constructor=x; cv=1;'))).toBe('ERR_ATTRIBUTION_FIELD_ORDER');
    expect(codeOf(() => parseAttribution('x-moat: v=1; cv=1; constructor=x; constructor=y;'))).toBe('ERR_ATTRIBUTION_DUPLICATE_FIELD');
    expect(codeOf(() => parseAttribution('x-moat: constructor=x; v=1; cv=1;'))).toBe('ERR_ATTRIBUTION_FIELD_ORDER');
    const text = serializeAttribution({ cv: '1', extensions: [['constructor', 'x']] });
    expect(text).toBe('x-moat: v=1; cv=1; constructor=x;');
    expect(parseAttribution(text).extensions).toEqual([['constructor', 'x']]);
  });

  it('round-trips any extension name through serialize and parse, or refuses it on both sides', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(extensionName, value), { selector: ([k]) => k, maxLength: 4 }),
        fc.option(fc.constant('a3f'), { nil: undefined }),
        fc.option(fc.constant('cli'), { nil: undefined }),
        (extensions, fp, ep) => {
          const fields = { cv: '1.4.2', fp, ep, extensions };
          const text = ['x-moat: v=1; cv=1.4.2;', fp && ` fp=${fp};`, ep && ` ep=${ep};`, ...extensions.map(([k, v]) => ` ${k}=${v};`)]
            .filter(Boolean)
            .join('');
          if (extensions.every(([k]) => KEY_RE.test(k))) {
            expect(serializeAttribution(fields)).toBe(text);
            const block = parseAttribution(text);
            expect(block.extensions).toEqual(extensions);
            expect(block.fp).toBe(fp);
            expect(block.ep).toBe(ep);
          } else {
            expect(codeOf(() => serializeAttribution(fields))).toBe('ERR_ATTRIBUTION_SYNTAX');
            expect(codeOf(() => parseAttribution(text))).toBe('ERR_ATTRIBUTION_SYNTAX');
          }
        },
      ),
    );
  });

  it('refuses an extension before any known field, whatever its name', () => {
    fc.assert(
      fc.property(
        extensionName.filter((k) => KEY_RE.test(k)),
        value,
        fc.integer({ min: 0, max: 3 }),
        fc.subarray([' fp=a3f;', ' ep=cli;']),
        (name, v, at, optional) => {
          const known = [' v=1;', ' cv=1.4.2;', ...optional];
          // Before the last known field is out of order; after it, in order.
          const position = Math.min(at, known.length - 1);
          const parts = [...known];
          parts.splice(position, 0, ` ${name}=${v};`);
          expect(codeOf(() => parseAttribution(`x-moat:${parts.join('')}`))).toBe('ERR_ATTRIBUTION_FIELD_ORDER');
          expect(parseAttribution(`x-moat:${[...known, ` ${name}=${v};`].join('')}`).extensions).toEqual([[name, v]]);
        },
      ),
    );
  });
});

describe('other tables looked up by text from outside', () => {
  it('finds no prototype member for an envelope binding or a telemetry event type', () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      expect(codeOf(() => envelopeScheme(name as never))).toBe('ERR_ENVELOPE_SYNTAX');
      const batch = parseTelemetryBatch({ v: 1, client: { cv: '1', ep: 'cli' }, events: [{ type: name, ts: 1, x: 1 }] });
      expect(batch.events).toEqual([{ type: name, ts: 1 }]);
    }
    expect(envelopeScheme(undefined)).toBe('v1');
    expect(envelopeScheme('install')).toBe('i1');
  });
});

describe('serializer extensions that are not [key, value] pairs', () => {
  it('refuses them with ERR_ATTRIBUTION_SYNTAX, never a TypeError nor a pair read as far as it goes', () => {
    for (const extensions of ['ab', { a: '1' }, 5, [5], [null], [['a']], [['a', '1', '2']], [{ 0: 'a', 1: '1' }]])
      expect(
        codeOf(() => serializeAttribution({ cv: '1', extensions } as never)),
        JSON.stringify(extensions),
      ).toBe('ERR_ATTRIBUTION_SYNTAX');
  });

  it('takes absent and null extensions as none, and checks entries in order', () => {
    expect(serializeAttribution({ cv: '1', extensions: null } as never)).toBe('x-moat: v=1; cv=1;');
    expect(serializeAttribution({ cv: '1' })).toBe('x-moat: v=1; cv=1;');
    expect(codeOf(() => serializeAttribution({ cv: '1', extensions: [['fp', 'a3f'], 5] } as never))).toBe(
      'ERR_ATTRIBUTION_DUPLICATE_FIELD',
    );
  });
});
