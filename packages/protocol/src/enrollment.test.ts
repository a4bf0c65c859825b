import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as p from './index.js';

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');
const IID = 'i0123456789abcdef01234567';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (error instanceof p.ProtocolError) return error.code;
    throw error;
  }
  return undefined;
}

/** An install and a verifier key pair, both sides' inputs to deriveInstallKey. */
function pair(challenge = new Uint8Array(randomBytes(32))) {
  const install = x25519.keygen();
  const verifier = x25519.keygen();
  const installPublicKey = b64(install.publicKey);
  const common = { challenge, installId: IID, ekid: 'e2026a', installPublicKey };
  return {
    install,
    verifier,
    client: { ...common, privateKey: install.secretKey, peerPublicKey: verifier.publicKey },
    server: { ...common, privateKey: verifier.secretKey, peerPublicKey: install.publicKey },
  };
}

// RFC 7748 §6.1 / libsodium's list: points whose X25519 product is all zero for every scalar.
const LOW_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
];

describe('deriveInstallKey', () => {
  it('gives both sides the same 32-byte key', () => {
    const { client, server } = pair();
    const k = p.deriveInstallKey(client);
    expect(k).toHaveLength(32);
    expect(b64(p.deriveInstallKey(server))).toBe(b64(k));
  });

  it('equals X25519 and HKDF-SHA-256 computed by @noble (an independent implementation)', () => {
    const { install, client } = pair();
    const z = x25519.getSharedSecret(install.secretKey, client.peerPublicKey);
    const info = p.lengthPrefixed(['moat-install/1', IID, 'e2026a', client.installPublicKey]);
    expect(b64(p.deriveInstallKey(client))).toBe(b64(hkdf(sha256, z, client.challenge, info, 32)));
  });

  it('depends on the challenge, the install id, the ekid and the install key text', () => {
    const { client } = pair();
    const base = b64(p.deriveInstallKey(client));
    const variants = [
      { ...client, challenge: new Uint8Array(32).fill(7) },
      { ...client, installId: 'i0123456789abcdef01234568' },
      { ...client, ekid: 'e2026b' },
      { ...client, installPublicKey: b64(x25519.keygen().publicKey) },
    ];
    for (const v of variants) expect(b64(p.deriveInstallKey(v))).not.toBe(base);
  });

  it('refuses every low-order peer key (all-zero shared secret) with ERR_ENROLLMENT', () => {
    const { client, server } = pair();
    for (const point of LOW_ORDER) {
      const low = new Uint8Array(Buffer.from(point, 'hex'));
      expect(
        codeOf(() => p.deriveInstallKey({ ...client, peerPublicKey: low })),
        point,
      ).toBe('ERR_ENROLLMENT');
      expect(
        codeOf(() => p.deriveInstallKey({ ...server, peerPublicKey: low })),
        point,
      ).toBe('ERR_ENROLLMENT');
    }
  });

  it('refuses inputs outside their grammar', () => {
    const { client } = pair();
    const bad = [
      { ...client, privateKey: new Uint8Array(31) },
      { ...client, peerPublicKey: new Uint8Array(33) },
      { ...client, challenge: new Uint8Array(16) },
      { ...client, challenge: 'abc' as unknown as Uint8Array },
      { ...client, installId: 'I0123456789abcdef01234567' },
      { ...client, installId: 'i0123456789abcdef0123456' },
      { ...client, ekid: 'e.1' },
      { ...client, installPublicKey: `${client.installPublicKey}=` },
    ];
    for (const input of bad) expect(codeOf(() => p.deriveInstallKey(input))).toBe('ERR_ENROLLMENT');
  });

  it('x25519PublicKey gives the public key @noble computes', () => {
    const { install } = pair();
    expect(p.x25519PublicKey(install.secretKey)).toBe(b64(install.publicKey));
  });
});

describe('i1 envelopes and stamps', () => {
  const i1 = `i1.${IID}.1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}`;

  it('parses, serializes and makes placeholders with binding install', () => {
    const env = p.parseEnvelope(i1);
    expect(env).toEqual({
      binding: 'install',
      kid: IID,
      ts: 1764000000,
      nonce: '9f2c4e7a1b3d5c6f',
      stamp: '0'.repeat(32),
    });
    expect(p.serializeEnvelope(env)).toBe(i1);
    expect(p.placeholderEnvelope({ kid: IID, ts: 1764000000, nonce: '9f2c4e7a1b3d5c6f', binding: 'install' })).toBe(i1);
    expect(p.placeholderEnvelopes({ kid: IID, binding: 'install' })(1764000000, '9f2c4e7a1b3d5c6f')).toBe(i1);
    expect(p.envelopeScheme('install')).toBe('i1');
    expect(p.ENVELOPE_SCHEMES).toContain('i1');
  });

  it('refuses i1 with a part outside its grammar, and i2 and I1', () => {
    expect(codeOf(() => p.parseEnvelope(i1.replace('9f2c', '9f2')))).toBe('ERR_ENVELOPE_NONCE');
    expect(codeOf(() => p.parseEnvelope(i1.replace(IID, 'i.x')))).toBe('ERR_ENVELOPE_SYNTAX');
    expect(codeOf(() => p.parseEnvelope(`i2${i1.slice(2)}`))).toBe('ERR_ENVELOPE_SYNTAX');
    expect(codeOf(() => p.parseEnvelope(`I1${i1.slice(2)}`))).toBe('ERR_ENVELOPE_SYNTAX');
  });

  it('stamps with the derived key over the request and the body; the verifier side verifies it', () => {
    const { client, server } = pair();
    const request = { method: 'POST', authority: 'api.example.com', path: '/v1/messages', credential: 'sk-test' };
    const body = p.utf8(p.appendEnvelope('{"model":"m"}', i1));
    const loc = p.locateEnvelope(body);
    if (loc.status !== 'found') throw new Error('not found');
    expect(loc.envelope.binding).toBe('install');
    const stamp = p.computeStamp(p.deriveInstallKey(client), body, loc.stampStart, loc.stampEnd, request);
    body.set(p.utf8(stamp), loc.stampStart);
    const k = p.deriveInstallKey(server);
    expect(p.verifyStamp(k, body, loc.stampStart, loc.stampEnd, request)).toBe(true);
    expect(p.verifyStamp(k, body, loc.stampStart, loc.stampEnd, { ...request, credential: 'sk-other' })).toBe(false);
    expect(p.verifyStamp(k, body, loc.stampStart, loc.stampEnd)).toBe(false);
  });
});

describe('enrollment messages', () => {
  const key = b64(new Uint8Array(32).fill(1));
  const challenge = b64(new Uint8Array(32).fill(2));
  const good = { v: 1, install_key: key, challenge, ekid: 'e2026a' };

  it('parses a request, ignoring unknown members and the envelope', () => {
    expect(p.parseEnrollmentRequest({ ...good, extra: [1], moat_att: 'r1.x' })).toEqual({
      v: 1,
      installKey: key,
      challenge,
      ekid: 'e2026a',
    });
  });

  it('refuses each broken member with ERR_ENROLLMENT', () => {
    const bad: unknown[] = [
      null,
      [good],
      'x',
      { ...good, v: 2 },
      { ...good, v: '1' },
      { ...good, install_key: undefined },
      { ...good, install_key: key.slice(1) },
      { ...good, install_key: `${key.slice(0, 42)}B` },
      { ...good, install_key: `${key}=` },
      { ...good, challenge: b64(new Uint8Array(31)) },
      { ...good, ekid: '' },
      { ...good, ekid: 'k'.repeat(33) },
    ];
    for (const body of bad) expect(codeOf(() => p.parseEnrollmentRequest(body))).toBe('ERR_ENROLLMENT');
  });

  it('enrollmentRequestBody writes the members in order, and it parses back', () => {
    const body = p.enrollmentRequestBody({ installKey: key, challenge, ekid: 'e2026a' });
    expect(body).toBe(`{"v":1,"install_key":"${key}","challenge":"${challenge}","ekid":"e2026a"}`);
    expect(p.parseEnrollmentRequest(JSON.parse(body))).toEqual({ v: 1, installKey: key, challenge, ekid: 'e2026a' });
    expect(codeOf(() => p.enrollmentRequestBody({ installKey: key, challenge, ekid: 'a"b' }))).toBe('ERR_ENROLLMENT');
  });

  it('parses answers and refuses broken ones', () => {
    expect(p.parseEnrollmentAnswer({ install_id: IID, ekid: 'e2026a', x: 1 })).toEqual({
      installId: IID,
      ekid: 'e2026a',
    });
    expect(p.parseChallengeAnswer({ challenge, expires_in: 60 })).toEqual({ challenge, expiresIn: 60 });
    const badAnswers: unknown[] = [
      [],
      { install_id: IID.toUpperCase(), ekid: 'e' },
      { install_id: `${IID}0`, ekid: 'e' },
      { install_id: IID },
    ];
    for (const a of badAnswers) expect(codeOf(() => p.parseEnrollmentAnswer(a))).toBe('ERR_ENROLLMENT');
    const badChallenges: unknown[] = [
      null,
      { challenge },
      { challenge, expires_in: 0 },
      { challenge, expires_in: 301 },
      { challenge, expires_in: 1.5 },
      { challenge: key.slice(2), expires_in: 60 },
    ];
    for (const a of badChallenges) expect(codeOf(() => p.parseChallengeAnswer(a))).toBe('ERR_ENROLLMENT');
  });

  it('round-trips any well-formed request, and throws only ProtocolError on anything', () => {
    const bytes32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(b64);
    const kid = fc.stringMatching(/^[A-Za-z0-9_-]{1,32}$/);
    fc.assert(
      fc.property(bytes32, bytes32, kid, (installKey, ch, ekid) => {
        const body = p.enrollmentRequestBody({ installKey, challenge: ch, ekid });
        expect(p.parseEnrollmentRequest(JSON.parse(body))).toEqual({ v: 1, installKey, challenge: ch, ekid });
      }),
    );
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        for (const parse of [p.parseEnrollmentRequest, p.parseEnrollmentAnswer, p.parseChallengeAnswer]) {
          const code = codeOf(() => parse(value));
          if (code !== undefined) expect(code).toBe('ERR_ENROLLMENT');
        }
      }),
    );
  });

  it('names the paths, the label and the error codes', () => {
    expect([p.ENROLLMENT_CHALLENGE_PATH, p.ENROLLMENT_PATH, p.INSTALL_KEY_LABEL]).toEqual([
      '/v1/moat/enroll/challenge',
      '/v1/moat/enroll',
      'moat-install/1',
    ]);
    expect(p.isKeyId(IID) && p.isInstallId(IID)).toBe(true);
    expect(p.PROTOCOL_ERROR_CODES).toEqual(
      expect.arrayContaining(['ERR_ENROLLMENT', 'ERR_ENROLL_CHALLENGE', 'ERR_ENROLL_LIMIT']),
    );
    expect(p.INSTALL_SIGNALS).toEqual(['known', 'new', 'revoked', 'over_limit', 'release_only', 'none']);
    expect(p.BINDING_SIGNALS).toContain('install');
  });
});

describe('discovery with enrollment', () => {
  const enrollment = {
    challenge: '/v1/moat/enroll/challenge',
    enroll: '/v1/moat/enroll',
    kid: 'e2026a',
    key: b64(new Uint8Array(32).fill(9)),
  };
  const doc = (features: string[], extra: Record<string, unknown>) => ({ moat: { versions: [1], features, ...extra } });

  it('parses enrollment when install_keys is listed, and drops it when not', () => {
    expect(p.FEATURES).toContain('install_keys');
    expect(p.parseDiscovery(doc(['attestation', 'install_keys'], { enrollment })).enrollment).toEqual(enrollment);
    const without = p.parseDiscovery(doc(['attestation'], { enrollment: { junk: true } }));
    expect(without).toEqual({ versions: [1], features: ['attestation'] });
  });

  it('refuses install_keys without a whole enrollment member', () => {
    const bad: unknown[] = [
      undefined,
      null,
      [enrollment],
      { ...enrollment, challenge: 'v1/moat/enroll/challenge' },
      { ...enrollment, enroll: '/v1/moat/enroll?x=1' },
      { ...enrollment, kid: 'e 1' },
      { ...enrollment, key: b64(new Uint8Array(31)) },
      { ...enrollment, key: undefined },
    ];
    for (const e of bad) {
      expect(codeOf(() => p.parseDiscovery(doc(['install_keys'], { enrollment: e })))).toBe('ERR_DISCOVERY');
    }
  });
});

describe('null is not absent in a discovery document (§2)', () => {
  it('refuses features, telemetry and flags given as null; an absent features is []', () => {
    for (const member of ['features', 'telemetry', 'flags'])
      expect(
        codeOf(() => p.parseDiscovery({ moat: { versions: [1], [member]: null } })),
        member,
      ).toBe('ERR_DISCOVERY');
    expect(p.parseDiscovery({ moat: { versions: [1] } })).toEqual({ versions: [1], features: [] });
  });
});

describe('enrollmentOutcome', () => {
  // The facts of the enroll.json case that pins the default: a valid r1 enrollment over a limit.
  const vectors = JSON.parse(readFileSync(new URL('../vectors/enroll.json', import.meta.url), 'utf8')) as {
    cases: Array<{ name: string; facts?: p.EnrollmentFacts }>;
  };
  const facts = vectors.cases.find((c) => c.name.startsWith('outcome: over a limit with no action given'))
    ?.facts as p.EnrollmentFacts;

  it('blocks an enrollment over a limit when the policy names no action (§10.3: block is the default)', () => {
    expect(facts).not.toHaveProperty('limitAction');
    expect(p.enrollmentOutcome({ ...facts, limit: 'over' })).toEqual({ status: 429, reason: 'ERR_ENROLL_LIMIT' });
    expect(p.enrollmentOutcome({ ...facts, limit: 'over', limitAction: undefined })).toEqual({
      status: 429,
      reason: 'ERR_ENROLL_LIMIT',
    });
    expect(p.enrollmentOutcome({ ...facts, limit: 'over', limitAction: 'flag' })).toEqual({
      status: 201,
      install: 'over_limit',
    });
    expect(p.enrollmentOutcome({ ...facts, limit: 'over', limitAction: 'monitor' })).toEqual({
      status: 201,
      install: 'created',
    });
    expect(p.enrollmentOutcome({ ...facts, limit: 'within' })).toEqual({ status: 201, install: 'created' });
  });
});
