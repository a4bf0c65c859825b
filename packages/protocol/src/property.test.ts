import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as p from './index.js';

const key = fc.stringMatching(/^[a-z][a-z0-9_]{0,31}$/).filter((k) => !['v', 'cv', 'fp', 'ep'].includes(k));
const value = fc.stringMatching(/^[A-Za-z0-9._+-]{1,64}$/);
const hexDigits = (n: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`));

const attributionFields = fc.record(
  {
    cv: value,
    fp: hexDigits(3),
    ep: fc.stringMatching(/^[a-z0-9_-]{1,32}$/),
    extensions: fc.uniqueArray(fc.tuple(key, value), { selector: ([k]) => k, maxLength: 4 }),
  },
  { requiredKeys: ['cv'] },
);

/** Any JSON-ish value, plus strings that look almost right. */
const junk = fc.oneof(
  fc.jsonValue(),
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.constantFrom('x-moat:', 'x-moat: v=1;', 'v1....', 'ms1.hs256.k.k.', '{"moat":{}}'),
  fc
    .tuple(fc.constantFrom('x-moat: v=1; cv=1.4.2;', 'v1.k.1764000000.0011223344556677.', 'ms1.ed25519.k.c.'), fc.string())
    .map(([a, b]) => a + b),
);

function onlyProtocolErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof p.ProtocolError)) throw error;
    expect(error.message).toMatch(/^ERR_[A-Z_]+: expected .+, got /);
    expect(p.PROTOCOL_ERROR_CODES).toContain(error.code);
  }
}

describe('round trips', () => {
  it('parseAttribution ∘ serializeAttribution is the identity on fields, and serialize ∘ parse on text', () => {
    fc.assert(
      fc.property(attributionFields, (fields) => {
        const text = p.serializeAttribution(fields);
        const block = p.parseAttribution(text);
        expect(block.cv).toBe(fields.cv);
        expect(block.fp).toBe(fields.fp);
        expect(block.ep).toBe(fields.ep);
        expect(block.extensions).toEqual(fields.extensions ?? []);
        expect(p.serializeAttribution(block)).toBe(text);
      }),
    );
  });

  it('parseEnvelope ∘ serializeEnvelope is the identity', () => {
    const envelope = fc.record({
      kid: fc.stringMatching(/^[A-Za-z0-9_-]{1,32}$/),
      ts: fc.integer({ min: 0, max: 9_999_999_999 }),
      nonce: hexDigits(16),
      stamp: fc.integer({ min: 16, max: 32 }).chain((bytes) => hexDigits(bytes * 2)),
    });
    fc.assert(
      fc.property(envelope, (env) => {
        const text = p.serializeEnvelope(env);
        expect(p.parseEnvelope(text)).toEqual(env);
      }),
    );
  });

  it('parseBlockSignature ∘ serializeBlockSignature is the identity', () => {
    const signature = fc.oneof(
      fc.record({ alg: fc.constant('hs256' as const), sig: fc.uint8Array({ minLength: 32, maxLength: 32 }) }),
      fc.record({ alg: fc.constant('ed25519' as const), sig: fc.uint8Array({ minLength: 64, maxLength: 64 }) }),
    );
    fc.assert(
      fc.property(signature, fc.stringMatching(/^[A-Za-z0-9_-]{1,32}$/), fc.constantFrom('k' as const, 'c' as const), (s, kid, scope) => {
        const text = p.serializeBlockSignature({ ...s, kid, scope });
        const parsed = p.parseBlockSignature(text);
        expect(parsed).toEqual({ ...s, kid, scope, sig: new Uint8Array(s.sig) });
      }),
    );
  });

  it('placeholderEnvelopes makes what placeholderEnvelope makes, and refuses what it refuses, in the same words', () => {
    const attempt = (fn: () => string): string => {
      try {
        return fn();
      } catch (error) {
        if (!(error instanceof p.ProtocolError)) throw error;
        return error.message;
      }
    };
    let made = 0;
    let refused = 0;
    fc.assert(
      fc.property(
        fc.constantFrom('k1', 'k2026a', 'K_-9'.repeat(8)),
        fc.constantFrom(undefined, 32, 48, 64),
        fc.constantFrom(undefined, 'request' as const, 'install' as const),
        fc.oneof(fc.integer({ min: 0, max: 9_999_999_999 }), fc.integer(), fc.double(), fc.constant(10_000_000_000)),
        fc.oneof(hexDigits(16), fc.string({ maxLength: 18 }), fc.stringMatching(/^[0-9A-F]{16}$/)),
        (kid, stampHexLength, binding, ts, nonce) => {
          const fixed = {
            kid,
            ...(stampHexLength === undefined ? {} : { stampHexLength }),
            ...(binding === undefined ? {} : { binding }),
          };
          const make = p.placeholderEnvelopes(fixed);
          const expected = attempt(() => p.placeholderEnvelope({ ...fixed, ts, nonce }));
          expect(attempt(() => make(ts, nonce))).toBe(expected);
          if (expected.startsWith('ERR_')) refused++;
          else made++;
        },
      ),
      // About one draw in ten makes an envelope: 1,000 runs keep both counts far from the bounds.
      { numRuns: 1000 },
    );
    expect(made).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(50);
    expect(() => p.placeholderEnvelopes({ kid: 'not a kid' })).toThrow(/ERR_ENVELOPE_KID/);
    expect(() => p.placeholderEnvelopes({ kid: 'k1', stampHexLength: 30 })).toThrow(/ERR_ENVELOPE_STAMP/);
  });

  it('appendEnvelope then locateEnvelope finds it, for any JSON object body', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (object) => {
        delete (object as Record<string, unknown>).moat_att;
        const body = JSON.stringify(object);
        const envelope = p.placeholderEnvelope({ kid: 'k1', ts: 1764000000, nonce: '0011223344556677' });
        const out = p.appendEnvelope(body, envelope);
        const bytes = p.utf8(out);
        const loc = p.locateEnvelope(bytes);
        expect(loc.status).toBe('found');
        if (loc.status !== 'found') return;
        expect(Buffer.from(bytes.subarray(loc.valueStart, loc.valueEnd)).toString()).toBe(envelope);
        expect(JSON.parse(out)).toEqual({ ...JSON.parse(body), moat_att: envelope });
      }),
    );
  });

  it('a stamp changes when any byte of the body outside the stamp changes', () => {
    const stampKey = new Uint8Array(32).fill(1);
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 40 }), fc.nat(), (text, at) => {
        const body = p.appendEnvelope(
          JSON.stringify({ messages: [{ role: 'user', content: text }] }),
          p.placeholderEnvelope({ kid: 'k', ts: 1, nonce: '0'.repeat(16) }),
        );
        const bytes = p.utf8(body);
        const loc = p.locateEnvelope(bytes);
        if (loc.status !== 'found') throw new Error('not found');
        const stamp = p.computeStamp(stampKey, bytes, loc.stampStart, loc.stampEnd);
        const i = at % loc.stampStart;
        const tampered = bytes.slice();
        tampered[i] = (tampered[i] as number) ^ 0x01;
        expect(p.computeStamp(stampKey, tampered, loc.stampStart, loc.stampEnd)).not.toBe(stamp);
      }),
    );
  });
});

describe('verifyStamp', () => {
  it('accepts the stamped body and nothing else: any flipped byte, or the stamp in capitals, fails', () => {
    const stampKey = new Uint8Array(32).fill(2);
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), fc.nat(), (text, at) => {
        const bytes = p.utf8(
          p.appendEnvelope(
            JSON.stringify({ messages: [{ role: 'user', content: text }] }),
            p.placeholderEnvelope({ kid: 'k', ts: 1, nonce: '0'.repeat(16) }),
          ),
        );
        const loc = p.locateEnvelope(bytes);
        if (loc.status !== 'found') throw new Error('not found');
        const stamp = p.computeStamp(stampKey, bytes, loc.stampStart, loc.stampEnd);
        bytes.set(p.utf8(stamp), loc.stampStart);
        expect(p.verifyStamp(stampKey, bytes, loc.stampStart, loc.stampEnd)).toBe(true);
        const tampered = bytes.slice();
        const i = at % bytes.length;
        tampered[i] = (tampered[i] as number) ^ 0x01;
        expect(p.verifyStamp(stampKey, tampered, loc.stampStart, loc.stampEnd)).toBe(false);
        if (/[a-f]/.test(stamp)) {
          const upper = bytes.slice();
          upper.set(p.utf8(stamp.toUpperCase()), loc.stampStart);
          expect(p.verifyStamp(stampKey, upper, loc.stampStart, loc.stampEnd)).toBe(false);
        }
      }),
    );
  });
});

describe('request-bound (r1) stamps', () => {
  const request = fc.record({
    method: fc.constantFrom('POST', 'PUT', 'GET', 'post'),
    authority: fc.oneof(
      fc.domain(),
      fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([h, port]) => `${h}:${port}`),
    ),
    path: fc.webPath().map((path) => (path.startsWith('/') ? path : `/${path}`)),
    credential: fc.string({ maxLength: 60 }),
  });
  it('verify for the exact request only: any one component changed fails', () => {
    const stampKey = new Uint8Array(32).fill(3);
    fc.assert(
      fc.property(
        request,
        fc.string({ maxLength: 40 }),
        fc.constantFrom<keyof p.RequestComponents>('method', 'authority', 'path', 'credential'),
        (components, text, changed) => {
          const r = { ...components, authority: components.authority.toLowerCase() };
          const bytes = p.utf8(
            p.appendEnvelope(
              JSON.stringify({ messages: [{ role: 'user', content: text }] }),
              p.placeholderEnvelope({ kid: 'k', ts: 1, nonce: '0'.repeat(16), binding: 'request' }),
            ),
          );
          const loc = p.locateEnvelope(bytes);
          if (loc.status !== 'found' || loc.envelope.binding !== 'request') throw new Error('no r1 envelope');
          bytes.set(p.utf8(p.computeStamp(stampKey, bytes, loc.stampStart, loc.stampEnd, r)), loc.stampStart);
          expect(p.verifyStamp(stampKey, bytes, loc.stampStart, loc.stampEnd, r)).toBe(true);
          const other = {
            ...r,
            [changed]: changed === 'method' ? (r.method === 'POST' ? 'PUT' : 'POST') : `${r[changed]}x`.replace('/x', '/y'),
          };
          expect(p.verifyStamp(stampKey, bytes, loc.stampStart, loc.stampEnd, other)).toBe(false);
          // Body-only verification of an r1 stamp fails too: the base is not optional.
          expect(p.verifyStamp(stampKey, bytes, loc.stampStart, loc.stampEnd)).toBe(false);
        },
      ),
    );
  });

  it('the request base is injective: distinct components never give the same bytes', () => {
    fc.assert(
      fc.property(request, request, (a, b) => {
        const [x, y] = [a, b].map((r) => ({ ...r, authority: r.authority.toLowerCase() }));
        const same = JSON.stringify(x) === JSON.stringify(y);
        expect(Buffer.from(p.requestBase(x as p.RequestComponents)).equals(Buffer.from(p.requestBase(y as p.RequestComponents)))).toBe(
          same,
        );
      }),
    );
  });
});

describe('malformed input only ever raises ProtocolError', () => {
  const parsers: Array<[string, (x: unknown) => unknown]> = [
    ['parseAttribution', p.parseAttribution],
    ['parseEnvelope', p.parseEnvelope],
    ['parseBlockSignature', p.parseBlockSignature],
    ['parseDiscovery', p.parseDiscovery],
    ['parseGatewayRuleTable', p.parseGatewayRuleTable],
    ['parseTelemetryBatch', (x) => p.parseTelemetryBatch(x)],
    ['parseEnrollmentRequest', p.parseEnrollmentRequest],
    ['parseEnrollmentAnswer', p.parseEnrollmentAnswer],
    ['parseChallengeAnswer', p.parseChallengeAnswer],
    ['signingInput', (x) => p.signingInput(x, { alg: 'hs256', kid: 'k', apiKeyId: 'a', model: 'm' })],
  ];
  for (const [name, parse] of parsers) {
    it(name, () => {
      fc.assert(
        fc.property(junk, (input) => onlyProtocolErrors(() => parse(input))),
        { numRuns: 500 },
      );
    });
  }

  it('tryParse* never throw', () => {
    fc.assert(
      fc.property(junk, (input) => {
        for (const r of [
          p.tryParseAttribution(input),
          p.tryParseEnvelope(input),
          p.tryParseBlockSignature(input),
          p.tryParseDiscovery(input),
        ]) {
          if (!r.ok) expect(r.error).toBeInstanceOf(p.ProtocolError);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('locateEnvelope never throws on arbitrary bytes', () => {
    const bodies = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.string().map((s) => p.utf8(`{"moat_att":"${s}"}`)),
      fc.jsonValue().map((v) => p.utf8(`${JSON.stringify(v)},"moat_att":"v1.k.1764000000.0011223344556677.${'0'.repeat(32)}"}`)),
    );
    fc.assert(
      fc.property(bodies, (body) => {
        const loc = p.locateEnvelope(body);
        expect(['found', 'missing', 'not_last', 'malformed']).toContain(loc.status);
      }),
      { numRuns: 1000 },
    );
  });

  it('firstUserText and fingerprintRequest accept any JSON value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (request) => {
        expect(typeof p.firstUserText(request)).toBe('string');
        expect(p.fingerprintRequest(request, { salt: 's', version: '1' })).toMatch(/^[0-9a-f]{3}$/);
      }),
    );
  });
});

describe('fingerprint properties', () => {
  it('depends only on the code points at 4, 7 and 20', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }), { minLength: 21, maxLength: 40 }),
        fc.nat(),
        (chars, at) => {
          const points = [...chars.join('')];
          const i = [0, 1, 2, 3, 5, 6, 8, 9, 10, 11, 12][at % 11] as number;
          const changed = points.slice();
          changed[i] = changed[i] === 'x' ? 'y' : 'x';
          const opts = { salt: 's', version: '1.0.0' };
          expect(p.fingerprint(changed.join(''), opts)).toBe(p.fingerprint(points.join(''), opts));
        },
      ),
    );
  });

  it('utf8Length equals the encoded length, lone surrogates included', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        expect(p.utf8Length(s)).toBe(p.utf8(s).length);
      }),
    );
  });
});

describe('fingerprint of long text', () => {
  it('equals the fingerprint of its first 21 code points', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 0, maxLength: 200 }), (text) => {
        const head = [...text.toWellFormed()].slice(0, 21).join('');
        expect(p.fingerprintChars(text)).toBe(p.fingerprintChars(head));
      }),
    );
  });
});

describe('install keys (i1)', () => {
  const bytes32 = fc.uint8Array({ minLength: 32, maxLength: 32 });
  it('any install and verifier key pair derive one K_i, and an i1 stamp made with it verifies on the other side only', () => {
    fc.assert(
      fc.property(
        bytes32,
        bytes32,
        bytes32,
        hexDigits(24),
        fc.string({ maxLength: 40 }),
        (installPrivate, verifierPrivate, challenge, iid, text) => {
          const installPublicKey = p.x25519PublicKey(installPrivate);
          const verifierPublic = Buffer.from(p.x25519PublicKey(verifierPrivate), 'base64url');
          const agreed = { challenge, installId: `i${iid}`, ekid: 'e1', installPublicKey };
          const client = p.deriveInstallKey({ ...agreed, privateKey: installPrivate, peerPublicKey: verifierPublic });
          const server = p.deriveInstallKey({
            ...agreed,
            privateKey: verifierPrivate,
            peerPublicKey: Buffer.from(installPublicKey, 'base64url'),
          });
          expect(Buffer.from(client).equals(Buffer.from(server))).toBe(true);
          const request = { method: 'POST', authority: 'api.example.com', path: '/v1/messages', credential: 'sk' };
          const envelope = p.placeholderEnvelope({ kid: `i${iid}`, ts: 1764000000, nonce: '0'.repeat(16), binding: 'install' });
          const body = p.utf8(p.appendEnvelope(JSON.stringify({ messages: [{ role: 'user', content: text }] }), envelope));
          const loc = p.locateEnvelope(body);
          if (loc.status !== 'found' || loc.envelope.binding !== 'install') throw new Error('no i1 envelope');
          body.set(p.utf8(p.computeStamp(client, body, loc.stampStart, loc.stampEnd, request)), loc.stampStart);
          expect(p.verifyStamp(server, body, loc.stampStart, loc.stampEnd, request)).toBe(true);
          // Another challenge (another enrollment) gives another key, which does not verify it.
          const other = p.deriveInstallKey({
            ...agreed,
            challenge: challenge.map((b) => b ^ 1),
            privateKey: verifierPrivate,
            peerPublicKey: Buffer.from(installPublicKey, 'base64url'),
          });
          expect(p.verifyStamp(other, body, loc.stampStart, loc.stampEnd, request)).toBe(false);
        },
      ),
      { numRuns: 200 },
    );
  });
});
