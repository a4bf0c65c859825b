import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { locateEnvelope, topLevelKeys } from './envelope.js';
import { ProtocolError } from './errors.js';
import { normalizeHost } from './gateway.js';
import { parseVersionHeader } from './negotiation.js';
import { splitRedactedData } from './signature.js';
import { authorityOf } from './stamp.js';

// These parse text a JavaScript caller reads from headers, configuration or a JSON body, where
// a value of another type is a plain possibility: each answers as documented for malformed
// input, or throws its ProtocolError, never a TypeError.
const notText = fc.oneof(
  fc.anything({ withBigInt: true, withBoxedValues: true, withMap: true, withDate: true, withNullPrototype: true }),
  fc.constantFrom(undefined, null, 5, ['1'], { href: 5 }, Symbol('s')),
);

function onlyProtocolErrors(run: () => unknown): void {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ProtocolError);
  }
}

describe('parsers given a value of the wrong type', () => {
  it('answer as for malformed input', () => {
    for (const value of [5, ['1'], {}, Symbol('s'), 10n, null, undefined]) {
      expect(parseVersionHeader(value as never)).toEqual([]);
      expect(normalizeHost(value as never)).toBe('');
      expect(() => authorityOf(value as never)).toThrow(/^ERR_STAMP_REQUEST: expected an http\(s\) URL/);
      expect(() => splitRedactedData(value as never)).toThrow(/^ERR_BLOCK_CONTENT: expected redacted_thinking data as a string/);
      expect(topLevelKeys(value as never)).toBeUndefined();
      const location = locateEnvelope(value as never);
      expect(location.status === 'malformed' && location.error.code).toBe('ERR_BODY_NOT_OBJECT');
    }
    expect(locateEnvelope('{"a":1}' as never).status).toBe('malformed');
    expect(topLevelKeys('{"a":1}' as never)).toBeUndefined();
  });

  it('still read what they read before', () => {
    expect(authorityOf({ href: 'https://Example.com:443/v1' } as never)).toBe('example.com');
    expect(authorityOf(new URL('http://a.example:8080/x'))).toBe('a.example:8080');
    expect(topLevelKeys(Buffer.from('{"a":1}'))).toEqual([{ name: 'a', offset: 1 }]);
    expect(locateEnvelope(new TextEncoder().encode('{"a":1}')).status).toBe('missing');
  });

  it('throw nothing but ProtocolError, whatever they get', () => {
    fc.assert(
      fc.property(notText, (value) => {
        expect(Array.isArray(parseVersionHeader(value as never))).toBe(true);
        expect(typeof normalizeHost(value as never)).toBe('string');
        onlyProtocolErrors(() => authorityOf(value as never));
        onlyProtocolErrors(() => splitRedactedData(value as never));
        onlyProtocolErrors(() => topLevelKeys(value as never));
        onlyProtocolErrors(() => locateEnvelope(value as never));
      }),
    );
  });
});
