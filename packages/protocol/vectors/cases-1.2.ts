/**
 * Cases added by protocol 1.2 (per-install keys): `i1` envelopes and stamps, discovery's
 * `enrollment`, the envelope a client chooses, and enroll.json. generate.ts writes them.
 *
 * X25519 keys here are derived from public labels (or are RFC 7748's own test keys): test
 * values, never deployment keys. Public keys are computed with @noble/curves, not by the code
 * under test.
 */
import { createHash } from 'node:crypto';
import { x25519 } from '@noble/curves/ed25519.js';
import * as p from '../dist/index.js';
import { attempt, type Case, fromHex, hex, REQUEST, stamped } from './support.ts';

const STAMP32 = '0123456789abcdef0123456789abcdef';
const label = (text: string) => createHash('sha256').update(text).digest();

export const INSTALL_PRIVATE = hex(label('moat test-vector X25519 install key: public, never a deployment key'));
export const VERIFIER_PRIVATE = hex(
  label('moat test-vector X25519 verifier enrollment key: public, never a deployment key'),
);
const INSTALL_PUBLIC = hex(x25519.getPublicKey(fromHex(INSTALL_PRIVATE)));
const VERIFIER_PUBLIC = hex(x25519.getPublicKey(fromHex(VERIFIER_PRIVATE)));
const INSTALL_KEY_TEXT = Buffer.from(INSTALL_PUBLIC, 'hex').toString('base64url');
const CHALLENGE = hex(label('moat test-vector enrollment challenge'));
const CHALLENGE_TEXT = Buffer.from(CHALLENGE, 'hex').toString('base64url');
const IID = 'i5f3a0c9e12b4d6a8f0e1c2d3';
const EKID = 'e2026a';
const I1_PLACEHOLDER = `i1.${IID}.1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}`;

/** The install key of the vectors (hex): what `enroll.derive` gives for the install side. */
export function installKeyHex(): string {
  return hex(
    p.deriveInstallKey({
      privateKey: fromHex(INSTALL_PRIVATE),
      peerPublicKey: fromHex(VERIFIER_PUBLIC),
      challenge: fromHex(CHALLENGE),
      installId: IID,
      ekid: EKID,
      installPublicKey: INSTALL_KEY_TEXT,
    }),
  );
}

function parseCase(op: string, name: string, input: unknown, parse: (v: unknown) => unknown, member: string): Case {
  const r = attempt(() => parse(input));
  return r.ok ? { name, op, input, valid: true, [member]: r.value } : { name, op, input, valid: false, error: r.error };
}

/** envelope.json: the `i1` scheme (§4.1). */
export function envelope120(): Case[] {
  const parse: Array<[string, string]> = [
    ['i1: an install envelope', `i1.${IID}.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['i1 at the 128-byte limit', `i1.${'k'.repeat(32)}.1764000000.9f2c4e7a1b3d5c6f.${STAMP32.repeat(2)}`],
    ['uppercase I1 is not a scheme', `I1.${IID}.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['i2 is not a scheme', `i2.${IID}.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['i1 with an empty install id', `i1..1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['i1 with a 9-digit timestamp', `i1.${IID}.176400000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['i1 with an uppercase nonce', `i1.${IID}.1764000000.9F2C4E7A1B3D5C6F.${STAMP32}`],
    ['i1 with an odd-length stamp', `i1.${IID}.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}0`],
  ];
  const cases = parse.map(([name, input]) => parseCase('parse', name, input, p.parseEnvelope, 'envelope'));
  const body = `{"model":"m","moat_att":"${I1_PLACEHOLDER}"}`;
  const loc = p.locateEnvelope(p.utf8(body));
  if (loc.status !== 'found') throw new Error('i1 locate case: not found');
  const { status, envelope, memberStart, valueStart, valueEnd, stampStart, stampEnd } = loc;
  cases.push({
    name: 'i1: locate an install envelope',
    op: 'locate',
    body,
    status,
    envelope,
    memberStart,
    valueStart,
    valueEnd,
    stampStart,
    stampEnd,
  });
  const plain = '{"model":"m","max_tokens":16}';
  cases.push({
    name: 'i1: append an install placeholder',
    op: 'append',
    body: plain,
    envelope: I1_PLACEHOLDER,
    valid: true,
    result: p.appendEnvelope(plain, I1_PLACEHOLDER),
  });
  return cases;
}

function i1Body(text: string): string {
  return p.appendEnvelope(
    `{"model":"claude-test","max_tokens":64,"messages":[{"role":"user","content":${JSON.stringify(text)}}]}`,
    I1_PLACEHOLDER,
  );
}

/** stamp.json: `i1` stamps under the install key of enroll.json (§5.4). */
export function stamp120(): Case[] {
  const key = installKeyHex();
  const body = i1Body('Hello from one install');
  const cases: Case[] = [];
  const compute: Array<[string, string, string, p.RequestComponents | undefined]> = [
    ['i1: stamp under the install key, over the request and the body', key, body, REQUEST],
    ['i1: without request components', key, body, undefined],
    ['i1: a 16-byte key is refused before the request', key.slice(0, 32), body, undefined],
  ];
  for (const [name, k, b, request] of compute) {
    const r = attempt(() => stamped(k, b, request ?? ({} as p.RequestComponents)));
    const stamp = r.ok ? p.locateEnvelope(p.utf8(r.value)) : undefined;
    const base = { name, op: 'compute', key: k, body: b, ...(request === undefined ? {} : { request }) };
    if (r.ok && stamp?.status === 'found')
      cases.push({ ...base, valid: true, stamp: stamp.envelope.stamp, stamped: r.value });
    else cases.push({ ...base, valid: false, error: r.ok ? 'none' : r.error });
  }
  const good = stamped(key, body, REQUEST);
  const bodyOnly = stamped(key, body); // an i1 stamp made without the request base: a v1 stamp in disguise
  const asR1 = good.replace('"moat_att":"i1.', '"moat_att":"r1.');
  const verify: Array<[string, string, string, p.RequestComponents | undefined, 'valid' | 'invalid']> = [
    ['i1: genuine request verifies under the install key', key, good, REQUEST, 'valid'],
    ['i1: another API key', key, good, { ...REQUEST, credential: 'sk-ant-relay-9999' }, 'invalid'],
    ['i1: another path', key, good, { ...REQUEST, path: '/v1/moat/enroll' }, 'invalid'],
    ['i1: relabelled r1 does not verify', key, asR1, REQUEST, 'invalid'],
    [
      'i1: the release key does not verify an install stamp',
      '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
      good,
      REQUEST,
      'invalid',
    ],
    ['i1: without request components is invalid', key, good, undefined, 'invalid'],
    ['i1: a body-only stamp without request components is invalid', key, bodyOnly, undefined, 'invalid'],
  ];
  for (const [name, k, b, request, result] of verify) {
    const loc = p.locateEnvelope(p.utf8(b));
    if (loc.status !== 'found') throw new Error(`${name}: not found`);
    const got =
      request !== undefined &&
      p.computeStamp(fromHex(k), p.utf8(b), loc.stampStart, loc.stampEnd, request) === loc.envelope.stamp;
    if ((got ? 'valid' : 'invalid') !== result) throw new Error(`${name}: expected ${result}`);
    cases.push({ name, op: 'verify', key: k, body: b, ...(request === undefined ? {} : { request }), result });
  }
  return cases;
}

const ENROLLMENT = {
  challenge: '/v1/moat/enroll/challenge',
  enroll: '/v1/moat/enroll',
  kid: EKID,
  key: Buffer.from(VERIFIER_PUBLIC, 'hex').toString('base64url'),
};
const FEATURES = ['attribution', 'attestation', 'fingerprint', 'telemetry', 'request_binding', 'install_keys'];

/** negotiation.json: discovery's `enrollment` (§10.1) and the envelope a client chooses (§10.4). */
export function negotiation120(): Case[] {
  const doc = (enrollment: unknown, features = FEATURES) => ({ moat: { versions: [1], features, enrollment } });
  const key = ENROLLMENT.key;
  const docs: Array<[string, unknown]> = [
    ['install_keys with its enrollment member', doc(ENROLLMENT)],
    ['enrollment: unknown members are dropped', doc({ ...ENROLLMENT, algorithm: 'x25519', extra: [1] })],
    ['enrollment without install_keys is dropped, even broken', doc({ key: 'x' }, ['attestation'])],
    ['install_keys without enrollment', { moat: { versions: [1], features: FEATURES } }],
    ['enrollment null', doc(null)],
    ['enrollment an array', doc([ENROLLMENT])],
    ['enrollment.challenge not an absolute path', doc({ ...ENROLLMENT, challenge: 'https://elsewhere.example/c' })],
    [
      'enrollment.challenge a network-path reference (another host)',
      doc({ ...ENROLLMENT, challenge: '//elsewhere.example/c' }),
    ],
    ['enrollment.enroll with a query', doc({ ...ENROLLMENT, enroll: '/v1/moat/enroll?x=1' })],
    ['enrollment.enroll missing', doc({ ...ENROLLMENT, enroll: undefined })],
    ['enrollment.kid with a dot', doc({ ...ENROLLMENT, kid: 'e.2026' })],
    ['enrollment.kid of 33 characters', doc({ ...ENROLLMENT, kid: 'e'.repeat(33) })],
    ['enrollment.key of 31 bytes', doc({ ...ENROLLMENT, key: Buffer.alloc(31, 7).toString('base64url') })],
    ['enrollment.key padded', doc({ ...ENROLLMENT, key: `${key}=` })],
    [
      'enrollment.key with non-zero trailing bits',
      doc({ ...ENROLLMENT, key: `${key.slice(0, 42)}${key[42] === 'B' ? 'C' : 'B'}` }),
    ],
    ['enrollment.key in standard base64', doc({ ...ENROLLMENT, key: `+${key.slice(1)}` })],
  ];
  const cases = docs.map(([name, input]) =>
    parseCase('discovery', name, JSON.parse(JSON.stringify(input)), p.parseDiscovery, 'discovery'),
  );
  const choices: Array<[string, p.SchemeChoice]> = [
    [
      'scheme: enrolled at an origin that advertises install_keys',
      { features: FEATURES, pinned: ['request_binding', 'install_keys'], enrolled: true },
    ],
    ['scheme: install_keys advertised, not enrolled yet', { features: FEATURES }],
    [
      'scheme: enrolled, discovery edited to drop install_keys (no downgrade)',
      { features: ['attestation', 'request_binding'], pinned: ['install_keys'], enrolled: true },
    ],
    [
      'scheme: enrolled, discovery edited to drop request_binding too',
      { features: ['attestation'], pinned: ['request_binding', 'install_keys'], enrolled: true },
    ],
    [
      'scheme: request_binding pinned, discovery edited to drop it',
      { features: ['attestation'], pinned: ['request_binding'] },
    ],
    ['scheme: attestation only', { features: ['attestation'] }],
    [
      'scheme: no attestation, no envelope even when enrolled',
      { features: ['telemetry'], pinned: ['install_keys'], enrolled: true },
    ],
  ];
  for (const [name, choice] of choices)
    cases.push({ name, op: 'scheme', ...choice, scheme: p.envelopeSchemeFor(choice) ?? null });
  return cases;
}

/** enroll.json: the install key (§5.4), the enrollment messages (§10.2, §10.3), the verifier's answers, the signal. */
export function enroll120(): Case[] {
  return [...deriveCases(), ...messageCases(), ...outcomeCases(), ...signalCases()];
}

// RFC 7748 §6.1 / libsodium's list: points whose X25519 product with any scalar is all zero.
const LOW_ORDER: Array<[string, string]> = [
  ['zero', '0000000000000000000000000000000000000000000000000000000000000000'],
  ['one', '0100000000000000000000000000000000000000000000000000000000000000'],
  ['a point of order 8', 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'],
  ['another point of order 8', '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157'],
  ['p - 1', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
  ['p (zero, not reduced)', 'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
  ['p + 1 (one, not reduced)', 'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
  ['a point of order 8 with the top bit set', 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880'],
];

function deriveCases(): Case[] {
  const install = {
    privateKey: INSTALL_PRIVATE,
    peerPublicKey: VERIFIER_PUBLIC,
    challenge: CHALLENGE,
    installId: IID,
    ekid: EKID,
    installPublicKey: INSTALL_KEY_TEXT,
  };
  const verifier = { ...install, privateKey: VERIFIER_PRIVATE, peerPublicKey: INSTALL_PUBLIC };
  // RFC 7748 §6.1's Alice and Bob, so an X25519 that disagrees with the RFC fails here.
  const alice = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';
  const bob = 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f';
  const lastByte = (Number.parseInt(VERIFIER_PUBLIC.slice(62), 16) | 0x80).toString(16);
  const topBit = `${VERIFIER_PUBLIC.slice(0, 62)}${lastByte}`;
  const inputs: Array<[string, Record<string, string>]> = [
    ['install side: install private key, verifier public key', install],
    ['verifier side: verifier private key, install public key (the same key)', verifier],
    ['RFC 7748 section 6.1 keys', { ...install, privateKey: alice, peerPublicKey: bob }],
    ['another challenge, another key', { ...install, challenge: 'ff'.repeat(32) }],
    ['another install id, another key', { ...install, installId: 'i000000000000000000000001' }],
    ['another ekid, another key', { ...install, ekid: 'e2026b' }],
    ['the top bit of a public key is ignored (RFC 7748 section 5)', { ...install, peerPublicKey: topBit }],
    ['a 31-byte private key', { ...install, privateKey: INSTALL_PRIVATE.slice(2) }],
    ['a 33-byte peer public key', { ...install, peerPublicKey: `${VERIFIER_PUBLIC}00` }],
    ['a 16-byte challenge', { ...install, challenge: CHALLENGE.slice(32) }],
    ['an install id in capitals', { ...install, installId: IID.toUpperCase() }],
    ['an install id of 23 hex digits', { ...install, installId: IID.slice(0, -1) }],
    ['an ekid with a dot', { ...install, ekid: 'e.1' }],
    ['an install public key padded', { ...install, installPublicKey: `${INSTALL_KEY_TEXT}=` }],
    ['an install public key of 31 bytes', { ...install, installPublicKey: INSTALL_KEY_TEXT.slice(0, 41) }],
  ];
  for (const [name, point] of LOW_ORDER) {
    inputs.push([`low-order peer key refused: ${name}`, { ...install, peerPublicKey: point }]);
  }
  const zero = Buffer.alloc(32).toString('base64url');
  inputs.push([
    'low-order install key refused on the verifier side',
    { ...verifier, peerPublicKey: '00'.repeat(32), installPublicKey: zero },
  ]);
  return inputs.map(([name, input]) => {
    const r = attempt(() =>
      p.deriveInstallKey({
        privateKey: fromHex(input.privateKey as string),
        peerPublicKey: fromHex(input.peerPublicKey as string),
        challenge: fromHex(input.challenge as string),
        installId: input.installId as string,
        ekid: input.ekid as string,
        installPublicKey: input.installPublicKey as string,
      }),
    );
    return r.ok
      ? { name, op: 'derive', ...input, valid: true, key: hex(r.value) }
      : { name, op: 'derive', ...input, valid: false, error: r.error };
  });
}

function messageCases(): Case[] {
  const good = { v: 1, install_key: INSTALL_KEY_TEXT, challenge: CHALLENGE_TEXT, ekid: EKID };
  const k = INSTALL_KEY_TEXT;
  const requests: Array<[string, unknown]> = [
    ['a request', good],
    [
      'unknown members and the envelope are ignored',
      { ...good, platform: 'linux', moat_att: 'r1.k.1764000000.0011223344556677.00' },
    ],
    ['not an object', [good]],
    ['null', null],
    ['v missing', { ...good, v: undefined }],
    ['v 2', { ...good, v: 2 }],
    ['v as a string', { ...good, v: '1' }],
    ['install_key missing', { ...good, install_key: undefined }],
    ['install_key of 31 bytes', { ...good, install_key: k.slice(0, 41) }],
    ['install_key padded', { ...good, install_key: `${k}=` }],
    [
      'install_key with non-zero trailing bits',
      { ...good, install_key: `${k.slice(0, 42)}${k[42] === 'B' ? 'C' : 'B'}` },
    ],
    ['install_key in standard base64', { ...good, install_key: `/${k.slice(1)}` }],
    ['challenge of 33 bytes', { ...good, challenge: Buffer.alloc(33, 1).toString('base64url') }],
    ['challenge as bytes', { ...good, challenge: [1, 2, 3] }],
    ['ekid missing', { ...good, ekid: undefined }],
    ['ekid empty', { ...good, ekid: '' }],
    ['ekid of 33 characters', { ...good, ekid: 'e'.repeat(33) }],
    ['v wrong and ekid wrong', { ...good, v: 0, ekid: '' }],
  ];
  const cases = requests.map(([name, input]) =>
    parseCase('request', name, JSON.parse(JSON.stringify(input) ?? 'null'), p.parseEnrollmentRequest, 'request'),
  );
  const answers: Array<[string, unknown]> = [
    ['an answer', { install_id: IID, ekid: EKID }],
    ['unknown members are ignored', { install_id: IID, ekid: EKID, note: 'x' }],
    ['install_id in capitals', { install_id: `i${IID.slice(1).toUpperCase()}`, ekid: EKID }],
    ['install_id of 25 hex digits', { install_id: `${IID}0`, ekid: EKID }],
    ['install_id without its i', { install_id: IID.slice(1), ekid: EKID }],
    ['ekid missing', { install_id: IID }],
    ['not an object', 'i0'],
  ];
  for (const [name, input] of answers) cases.push(parseCase('answer', name, input, p.parseEnrollmentAnswer, 'answer'));
  const challenges: Array<[string, unknown]> = [
    ['a challenge for 60 seconds', { challenge: CHALLENGE_TEXT, expires_in: 60 }],
    ['the longest lifetime, 300 seconds', { challenge: CHALLENGE_TEXT, expires_in: 300 }],
    ['one second', { challenge: CHALLENGE_TEXT, expires_in: 1, other: true }],
    ['301 seconds is too long', { challenge: CHALLENGE_TEXT, expires_in: 301 }],
    ['zero seconds', { challenge: CHALLENGE_TEXT, expires_in: 0 }],
    ['a fraction of a second', { challenge: CHALLENGE_TEXT, expires_in: 59.5 }],
    ['expires_in as a string', { challenge: CHALLENGE_TEXT, expires_in: '60' }],
    ['no expires_in', { challenge: CHALLENGE_TEXT }],
    ['a challenge of 16 bytes', { challenge: Buffer.alloc(16, 3).toString('base64url'), expires_in: 60 }],
    ['not an object', [CHALLENGE_TEXT]],
  ];
  for (const [name, input] of challenges)
    cases.push(parseCase('challenge', name, input, p.parseChallengeAnswer, 'answer'));
  return cases;
}

const FACTS: p.EnrollmentFacts = {
  request: 'valid',
  scheme: 'r1',
  attestation: 'valid',
  ekid: 'active',
  challenge: 'fresh',
  lowOrder: false,
  limit: 'within',
  limitAction: 'block',
};

function outcomeCases(): Case[] {
  const facts: Array<[string, Partial<p.EnrollmentFacts>]> = [
    ['enrolled', {}],
    ['a body that does not parse, whatever else', { request: 'invalid', attestation: 'revoked', challenge: 'used' }],
    ['no envelope', { scheme: 'none', attestation: 'missing' }],
    ['a v1 stamp does not enroll', { scheme: 'v1' }],
    ['an i1 stamp does not enroll', { scheme: 'i1' }],
    ['an invalid release stamp', { attestation: 'invalid' }],
    ['a stale release stamp', { attestation: 'stale' }],
    ['an unknown release key', { attestation: 'unknown_key' }],
    ['a replayed enrollment', { attestation: 'replayed', challenge: 'used' }],
    ['a revoked release cannot enroll', { attestation: 'revoked' }],
    [
      'a revoked release with a used challenge: the release answers first',
      { attestation: 'revoked', challenge: 'used' },
    ],
    ['an unknown ekid', { ekid: 'unknown' }],
    ['an unknown ekid before a used challenge', { ekid: 'unknown', challenge: 'used' }],
    ['a used challenge', { challenge: 'used' }],
    ['an expired challenge', { challenge: 'expired' }],
    ['an unknown challenge', { challenge: 'unknown' }],
    ['a challenge issued to another credential', { challenge: 'other_credential' }],
    ['a used challenge before a low-order key', { challenge: 'used', lowOrder: true }],
    ['a low-order install key', { lowOrder: true }],
    ['a low-order install key before the limit', { lowOrder: true, limit: 'over' }],
    ['over the limit, policy block', { limit: 'over' }],
    ['over the limit, policy flag: created, marked', { limit: 'over', limitAction: 'flag' }],
    ['over the limit, policy monitor: created', { limit: 'over', limitAction: 'monitor' }],
  ];
  return facts.map(([name, f]) => {
    const all = { ...FACTS, ...f };
    return { name, op: 'outcome', facts: all, outcome: p.enrollmentOutcome(all) };
  });
}

function signalCases(): Case[] {
  const facts: Array<[string, p.InstallFacts]> = [
    ['i1 from a known install', { scheme: 'i1', attestation: 'valid', install: 'known' }],
    ['i1 from a new install', { scheme: 'i1', attestation: 'valid', install: 'new' }],
    ['i1 from an install created over a limit', { scheme: 'i1', attestation: 'valid', install: 'over_limit' }],
    ['i1 with a correct MAC under a revoked install', { scheme: 'i1', attestation: 'revoked', install: 'revoked' }],
    ['i1 that does not verify', { scheme: 'i1', attestation: 'invalid', install: 'known' }],
    ['i1 from an install never enrolled', { scheme: 'i1', attestation: 'unknown_key', install: 'unknown' }],
    ['i1 replayed', { scheme: 'i1', attestation: 'replayed', install: 'known' }],
    [
      'r1 from a release that speaks install_keys',
      { scheme: 'r1', attestation: 'valid', releaseSpeaksInstallKeys: true },
    ],
    [
      'v1 from a release that speaks install_keys',
      { scheme: 'v1', attestation: 'valid', releaseSpeaksInstallKeys: true },
    ],
    ['r1 from a 1.1 release', { scheme: 'r1', attestation: 'valid', releaseSpeaksInstallKeys: false }],
    [
      'an invalid r1 from a release that speaks install_keys',
      { scheme: 'r1', attestation: 'invalid', releaseSpeaksInstallKeys: true },
    ],
    ['no envelope', { scheme: 'none', attestation: 'missing' }],
  ];
  return facts.map(([name, f]) => ({ name, op: 'signal', facts: f, install: p.installSignal(f) }));
}
