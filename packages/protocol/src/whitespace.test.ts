import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { codeOf } from './error-code.test-util.js';
import { normalizeHost } from './gateway.js';
import { parseVersionHeader } from './negotiation.js';
import { authorityOf, credentialOf } from './stamp.js';

// Header values and URLs come from clients. Trimming them must take time linear in their
// length: each case below is 1 MiB of the shape that made a backtracking pattern quadratic
// (minutes of CPU), so a regression shows as this file running into the test timeout.
const N = 1 << 20;
const spaces = ' '.repeat(N);
const headers =
  (values: Record<string, string>) =>
  (name: string): string | undefined =>
    values[name];

describe('trimming untrusted text over 1 MiB', () => {
  it('parseVersionHeader', () => {
    expect(parseVersionHeader(`1${spaces}x`)).toEqual([]);
    expect(parseVersionHeader(`${spaces}1${spaces},\t2${'\t'.repeat(N)}`)).toEqual([1, 2]);
  });

  it('normalizeHost', () => {
    expect(normalizeHost(`a${spaces}x`)).toBe(`a${spaces}x`);
    expect(normalizeHost(`${spaces}Example.COM.:8443${'\t'.repeat(N)}`)).toBe('example.com');
    expect(normalizeHost(`a:${'1'.repeat(N)}x`)).toBe(`a:${'1'.repeat(N)}x`);
    expect(normalizeHost(`http://a${'\u0001'.repeat(N)}x`)).toBe('');
    expect(normalizeHost(`${'\u0000'.repeat(N)}https://Example.com./v1${' '.repeat(N)}`)).toBe('example.com');
  });

  it('authorityOf', () => {
    expect(codeOf(() => authorityOf(`http://a${'\u0001'.repeat(N)}x`))).toBe('ERR_STAMP_REQUEST');
    expect(authorityOf(`${'\u0001'.repeat(N)}https://Example.com:443/${'\u0020'.repeat(N)}`)).toBe('example.com');
  });

  it('credentialOf', () => {
    expect(credentialOf(headers({ 'x-api-key': `a${spaces}x` }))).toBe(`a${spaces}x`);
    expect(credentialOf(headers({ 'x-api-key': `${spaces}sk-1${' \t'.repeat(N / 2)}` }))).toBe('sk-1');
    expect(credentialOf(headers({ authorization: `Bearer a${spaces}x` }))).toBe(`a${spaces}x`);
    expect(credentialOf(headers({ authorization: `Bearer a${' \t'.repeat(N / 2)}x` }))).toBe(`a${' \t'.repeat(N / 2)}x`);
    expect(credentialOf(headers({ authorization: `\t bearer${spaces}tok${' \t'.repeat(N / 2)}` }))).toBe('tok');
    expect(credentialOf(headers({ authorization: `${spaces}x` }))).toBe('');
  });
});

/** The patterns these functions used to trim with: right, and quick on short text. */
const reference = {
  trim: (text: string) => text.replace(/^[ \t]+|[ \t]+$/g, ''),
  bearer: (text: string) => /^[ \t]*bearer +(.*?)[ \t]*$/is.exec(text)?.[1],
};

const shortText = fc
  .array(fc.constantFrom(' ', '\t', '\n', '\u0001', 'a', 'B', ':', '1', 'bearer', 'BeArEr', 'bearer ', ' x'), { maxLength: 12 })
  .map((parts) => parts.join(''));

describe('trimming, against the patterns it replaces', () => {
  it('credentialOf reads x-api-key and Bearer tokens as before', () => {
    fc.assert(
      fc.property(shortText, shortText, (key, auth) => {
        const trimmed = reference.trim(key);
        const expected = trimmed !== '' ? trimmed : (reference.bearer(auth) ?? '');
        expect(credentialOf(headers({ 'x-api-key': key, authorization: auth }))).toBe(expected);
        expect(credentialOf(headers({ authorization: auth }))).toBe(reference.bearer(auth) ?? '');
      }),
    );
  });

  it('parseVersionHeader and normalizeHost trim spaces and tabs as before', () => {
    fc.assert(
      fc.property(shortText, (text) => {
        const versions = text.split(',').map(reference.trim);
        const expected = versions.every((t) => /^[1-9][0-9]{0,3}$/.test(t)) ? versions.map(Number) : [];
        expect(parseVersionHeader(text)).toEqual(expected);
        if (!text.includes('://')) {
          const host = reference.trim(text).replace(/[A-Z]+/g, (m) => m.toLowerCase());
          expect(normalizeHost(text)).toBe(host.replace(/:[0-9]+$/, '').replace(/\.$/, ''));
        }
      }),
    );
  });
});
