import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { computeStamp, locateEnvelope, type RequestComponents, requestBase, utf8, verifyStamp } from '@moat/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { native } from '../index.js';

// The verifier's stamp check in the addon (stampKey, stampMatches) against the protocol's
// vectors and its node:crypto implementation.
const addon = native as NonNullable<typeof native>;

interface StampCase {
  name: string;
  op: string;
  key: string;
  body: string;
  valid?: boolean;
  stamped?: string;
  request?: RequestComponents;
  result?: string;
}
const vectors = JSON.parse(readFileSync(new URL('../../packages/protocol/vectors/stamp.json', import.meta.url), 'utf8')) as {
  count: number;
  cases: StampCase[];
};

const check = (key: Uint8Array, body: Uint8Array, start: number, end: number, request?: RequestComponents) =>
  addon.stampMatches(addon.stampKey(key), request === undefined ? null : requestBase(request), body, start, end);

describe('the native stamp check', () => {
  it('agrees with every stamp vector (valid, tampered, relabelled, another request)', () => {
    const cases = vectors.cases.filter((c) => c.op === 'verify' || (c.op === 'compute' && c.valid === true));
    expect(vectors.cases.length).toBe(vectors.count);
    let verified = 0;
    let refused = 0;
    for (const c of cases) {
      // stampKey takes keys of 32–1024 bytes only: a shorter key's case is the references' refusal.
      if (c.key.length < 64) continue;
      const body = utf8(c.op === 'compute' ? (c.stamped as string) : c.body);
      const loc = locateEnvelope(body);
      if (loc.status !== 'found') continue;
      // An r1 or i1 envelope without the request it binds is refused by the references before any MAC.
      const bound = loc.envelope.binding === 'request' || loc.envelope.binding === 'install';
      if (bound && c.request === undefined) continue;
      const request = bound ? c.request : undefined;
      // Request parts the references refuse (a method too long, a space in the path) are refused before any MAC too.
      if (request !== undefined) {
        try {
          requestBase(request);
        } catch {
          continue;
        }
      }
      const expected = c.op === 'compute' || c.result === 'valid';
      expect(check(Buffer.from(c.key, 'hex'), body, loc.stampStart, loc.stampEnd, request), c.name).toBe(expected);
      if (expected) verified++;
      else refused++;
    }
    // Both outcomes are exercised; the counts follow the vectors.
    expect(verified).toBeGreaterThanOrEqual(10);
    expect(refused).toBeGreaterThanOrEqual(10);
  });

  it('gives node:crypto’s answer for any body, region, key and request, genuine or changed (fast-check)', () => {
    const component = fc.record({
      method: fc.constantFrom('POST', 'PUT', 'GET'),
      authority: fc.constantFrom('api.example.com', '127.0.0.1:8080', 'xn--bcher-kva.example'),
      path: fc.constantFrom('/v1/messages', '/', '/a/b'),
      credential: fc.string(),
    });
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 64 }),
        fc.uint8Array({ maxLength: 2048 }),
        fc.integer({ min: 16, max: 32 }),
        fc.option(component, { nil: undefined }),
        fc.option(fc.nat(), { nil: undefined }),
        fc.boolean(),
        (key, prefix, half, request, flip, stampIt) => {
          const body = new Uint8Array(prefix.length + 2 * half + 2);
          body.set(prefix);
          body.fill(0x30, prefix.length, prefix.length + 2 * half);
          body.set([0x22, 0x7d], prefix.length + 2 * half);
          const [start, end] = [prefix.length, prefix.length + 2 * half];
          if (stampIt) body.set(utf8(computeStamp(key, body, start, end, request)), start);
          if (flip !== undefined) body[flip % body.length] = (body[flip % body.length] as number) ^ (1 << (flip % 8));
          expect(check(key, body, start, end, request)).toBe(verifyStamp(key, body, start, end, request));
        },
      ),
      { numRuns: 400 },
    );
  });

  it('matches only the lowercase hex spelling, for every stamp length', () => {
    const key = randomBytes(32);
    for (const hex of [32, 34, 48, 64]) {
      const body = Buffer.from(`{"a":"x","moat_att":"v1.k.1764000000.0011223344556677.${'0'.repeat(hex)}"}`);
      const start = body.length - 2 - hex;
      const mac = createHmac('sha256', key).update(body).digest('hex').slice(0, hex);
      body.write(mac, start, 'latin1');
      expect(check(key, body, start, start + hex)).toBe(true);
      body.write(mac.toUpperCase(), start, 'latin1');
      expect(check(key, body, start, start + hex)).toBe(!/[a-f]/.test(mac));
      expect(check(randomBytes(32), Buffer.from(body), start, start + hex)).toBe(false);
    }
  });

  it('refuses what it is not given right, with typed errors', () => {
    const key = addon.stampKey(randomBytes(32));
    const body = utf8(`{"moat_att":"v1.k.1764000000.0011223344556677.${'0'.repeat(32)}"}`);
    const start = body.length - 34;
    const codeOf = (f: () => unknown) => {
      try {
        f();
      } catch (error) {
        return (error as { code?: string }).code;
      }
      return 'no error';
    };
    expect(codeOf(() => addon.stampKey(new Uint8Array(31)))).toBe('ERR_NATIVE_OPTIONS');
    expect(codeOf(() => addon.stampKey('k'.repeat(40) as never))).toBe('ERR_NATIVE_OPTIONS');
    // Another external (a compiled literal set) or a plain object is not a key.
    if (addon.literalsVersion() !== undefined) {
      const set = addon.literalsCompile([Buffer.from('abc')], [false]);
      expect(codeOf(() => addon.stampMatches(set, null, body, start, start + 32))).toBe('ERR_NATIVE_OPTIONS');
    }
    expect(codeOf(() => addon.stampMatches({}, null, body, start, start + 32))).toBe('ERR_NATIVE_OPTIONS');
    expect(codeOf(() => addon.stampMatches(key, 'base' as never, body, start, start + 32))).toBe('ERR_NATIVE_OPTIONS');
    for (const [from, to] of [
      [start, start + 30], // too short
      [start, start + 33], // odd
      [start - 40, start + 32], // too long
      [start, body.length + 1], // past the end
      [-1, 31],
      [start + 0.5, start + 32.5],
      [start + 2, start],
    ] as const)
      expect(
        codeOf(() => addon.stampMatches(key, null, body, from, to)),
        `[${from}, ${to})`,
      ).toBe('ERR_NATIVE_STAMP_REGION');
    expect(addon.stampMatches(key, new Uint8Array(0), body, start, start + 32)).toBe(false);
  });
});
