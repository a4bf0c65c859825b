/**
 * TypeScript and Python agree everywhere: for every operation of the conformance kit,
 * fast-check generates hostile inputs (near-misses of every grammar, arbitrary Unicode with
 * lone surrogates, hostile URLs), the TypeScript implementation answers them in process and
 * the Python reference through its stdio interface, and the answers must be the same
 * canonical JSON — 10,000 cases per operation, 0 disagreements. The seed is fixed so a
 * failure reproduces; the first disagreements are printed with their input.
 */
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { x25519 } from '@noble/curves/ed25519.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { answerConformanceRequest, canonicalJson, KIT_OPERATIONS } from './conformance.js';
import * as p from './index.js';

const CASES_PER_OPERATION = Number(process.env.MOAT_DIFFERENTIAL_CASES ?? 10_000);
const SEED = Number(process.env.MOAT_DIFFERENTIAL_SEED ?? 20261127);
const python = ['-B', new URL('../python/conformance.py', import.meta.url).pathname];

/** Strings that mix the characters that trip implementations: astral, combining, lone surrogates, controls. */
const nasty = fc.string({
  unit: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...'aZ09 ;=.-_+,:/\\?#@[]%"\t') },
    {
      weight: 2,
      arbitrary: fc.constantFrom('é', 'ß', 'Ü', '😀', '𝄞', '\u0301', '\u00a0', '\u000b', '\u3000', '\uff5e', '\u0000', '\u007f'),
    },
    { weight: 1, arbitrary: fc.constantFrom('\ud800', '\udfff') },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }) },
  ),
  maxLength: 40,
});
const token = (alphabet: string, max = 12, min = 0) => fc.string({ unit: fc.constantFrom(...alphabet), minLength: min, maxLength: max });
const lowerHex = (min: number, max: number) => token('0123456789abcdef', max, min);
const anyJson = fc.oneof(fc.jsonValue({ maxDepth: 2 }), nasty);

const attributionText = fc.oneof(
  fc
    .tuple(
      fc.constantFrom('x-moat:', 'X-Moat:', 'x-moat: ', 'x-moat:'),
      fc.array(
        fc.tuple(
          fc.constantFrom('v', 'cv', 'fp', 'ep', 'zz', 'build', 'V', 'k1', ''),
          fc.oneof(token('0123456789abcdefABC.+-_', 6), nasty),
        ),
        { maxLength: 6 },
      ),
      fc.constantFrom('', ';', ' ', ';\n'),
    )
    .map(([prefix, fields, tail]) => `${prefix}${fields.map(([k, v]) => ` ${k}=${v};`).join('')}${tail}`),
  fc.constantFrom('x-moat: v=1; cv=1.4.2; fp=a3f; ep=cli;', 'x-moat: v=1; cv=1.4.2;'),
  anyJson,
);

const scheme = fc.constantFrom('v1', 'r1', 'i1', 'v2', 'r2', 'i2', 'V1', 'I1', 'v1r', 'x1', '');
const kid = fc.oneof(token('abcK_-019', 34), nasty);
const envelopeValue = fc.oneof(
  fc
    .tuple(scheme, kid, token('0123456789', 11), lowerHex(0, 17), fc.oneof(lowerHex(0, 66), token('0123456789ABCDEFG', 34)))
    .map((parts) => parts.join('.')),
  anyJson,
);
const goodEnvelope = fc
  .tuple(fc.constantFrom('v1', 'r1', 'i1'), token('abc019_-', 8, 1), token('0123456789', 10, 10), lowerHex(16, 16))
  .map(([s, k, ts, n]) => `${s}.${k}.${ts}.${n}.${'0'.repeat(32)}`);

/** JSON object texts, compact or spaced, sometimes with escapes, with or without an envelope member in various places. */
const objectText = fc
  .tuple(
    fc.dictionary(fc.oneof(token('abcmoat_', 8), fc.constant('moat_att')), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
    fc.constantFrom(0, 1),
    fc.option(goodEnvelope),
    fc.constantFrom('last', 'first', 'escaped', 'spaced'),
  )
  .map(([obj, indent, envelope, place]) => {
    let text = JSON.stringify(obj, null, indent);
    if (envelope !== null) {
      const member = `"moat_att":"${envelope}"`;
      const body = text.slice(1, -1).trim();
      if (place === 'last') text = `{${body}${body === '' ? '' : ','}${member}}`;
      else if (place === 'first') text = `{${member}${body === '' ? '' : ','}${body}}`;
      else if (place === 'escaped') text = `{${body}${body === '' ? '' : ','}"moat\\u005fatt":"${envelope}"}`;
      else text = `{${body}${body === '' ? '' : ','} "moat_att": "${envelope}" }`;
    }
    return text;
  })
  .filter((t) => {
    try {
      JSON.parse(t);
      return true;
    } catch {
      return false;
    }
  });

const components = fc.record({
  method: fc.oneof(fc.constantFrom('POST', 'GET', 'post', 'PO ST', ''), nasty),
  authority: fc.oneof(fc.constantFrom('api.example.com', '127.0.0.1:8787', '[::1]', 'API.example.com', '', 'a b', 'x/y'), nasty),
  path: fc.oneof(fc.constantFrom('/v1/messages', '/', 'v1', '/a?b', '/a#b', '/a b'), nasty),
  credential: nasty,
});

/** A body with an anchored envelope, stamped correctly (with the request for r1 and i1) or not. */
const stampedBody = fc
  .tuple(objectText, goodEnvelope, fc.boolean(), components, fc.constantFrom(32, 48, 64), fc.nat(200))
  .map(([text, envelope, stamp, request, digits, flip]) => {
    const env = envelope.replace('0'.repeat(32), '0'.repeat(digits));
    const { moat_att: _drop, ...rest } = JSON.parse(text) as Record<string, unknown>;
    const body = p.appendEnvelope(JSON.stringify(rest, null, digits === 48 ? 1 : 0), env);
    if (!stamp) return { body, request };
    const bytes = p.utf8(body);
    const loc = p.locateEnvelope(bytes);
    if (loc.status !== 'found') return { body, request };
    try {
      const bound = loc.envelope.binding !== undefined;
      const good = p.computeStamp(new Uint8Array(32).fill(7), bytes, loc.stampStart, loc.stampEnd, bound ? request : undefined);
      bytes.set(p.utf8(good), loc.stampStart);
      // Some stamps get one digit wrong (the body stays valid JSON: §4.3 locates only in JSON texts).
      if (flip % 5 === 0) bytes[loc.stampStart + (flip % (loc.stampEnd - loc.stampStart))] = bytes[loc.stampStart] === 0x30 ? 0x31 : 0x30;
    } catch {
      // an invalid request for r1: left unstamped
    }
    return { body: new TextDecoder().decode(bytes), request };
  });

const hostLabel = fc.oneof(
  token('abcXYZ019-', 10),
  fc.constantFrom('ü', 'Ü', 'é', 'ß', 'жук', '中文', 'straße', '%2e', '%41', '%20', 'xn', '0x7f', '0', '08', '256', '4294967295'),
  // International names beyond the Latin-1 letters: UTS #46 would map or refuse each, §5.3 refuses them.
  fc.constantFrom('ｅｘ', 'a\u212Ab', 'so\u00adft', 'a\u200db', 'e\u0301', 'İ', 'ǅ', '①', 'Ⅸ', 'ÿ', '÷', 'ø', 'µ', 'ª'),
  fc.constantFrom('%C3%BC', '%C3%9C', '%EF%BD%85', '%C3', '%FF', 'xn--bcher-kva', 'xn--a', 'XN--ZCA', 'xn--'),
);
const hostileUrl = fc
  .tuple(
    fc.constantFrom('http', 'https', 'HTTP', 'ftp', 'ws', 'mailto', ''),
    fc.constantFrom('://', ':/', ':\\\\', ':', ':///', '://\\'),
    fc.option(fc.constantFrom('user:pw@', '@', 'a@b@')),
    fc.oneof(
      fc.array(hostLabel, { minLength: 1, maxLength: 4 }).map((labels) => labels.join('.')),
      fc.constantFrom(
        '[::1]',
        '[0:0:0:0:0:0:0:1]',
        '[1:0:1:0:0:1:0:1]',
        '[::ffff:1.2.3.4]',
        '[1::]',
        '[::]',
        '[1:2:3:4:5:6:7:8:9]',
        '[fe80::1%25x]',
        '[::1',
        '[G::]',
      ),
      fc.constantFrom('127.1', '0x7f.0.0.1', '017.0.0.1', '1.2.3.4.5', '1.2.3.256', '1.2.3.4.', 'example.com.', 'a..b', ''),
    ),
    fc.option(fc.constantFrom(':', ':80', ':443', ':8080', ':0080', ':65535', ':65536', ':x', ':99999999999')),
    fc.constantFrom('', '/', '/v1/messages', '\\v1', '?q', '#f', '/a\\b'),
    fc.constantFrom('', ' ', '\t', '\n'),
  )
  .map(([s, sep, user, host, port, path, pad]) => `${pad}${s}${sep}${user ?? ''}${host}${port ?? ''}${path}${pad}`);

const headerPairs = fc.array(
  fc.tuple(
    fc.oneof(
      fc.constantFrom('x-api-key', 'X-Api-Key', 'authorization', 'Authorization', 'x-litellm-call-id', 'Helicone-Id', 'x-litellm-😀'),
      // Names that only Unicode case mapping would turn into a known one (§2: ASCII lowercasing only).
      fc.constantFrom('x-api-\u212Aey', 'X-API-KEY', 'authorİzation', 'x-lite\u017Fllm-id', 'HELICONE-ID'),
      nasty,
    ),
    fc.oneof(fc.constantFrom('Bearer tok', 'bearer  tok ', 'Basic xyz', '  key\t', '', 'Bearer'), nasty),
  ),
  { maxLength: 5 },
);

const block = fc.oneof(
  fc.record({
    type: fc.constantFrom('thinking', 'connector_text', 'text', 'tool_use'),
    thinking: nasty,
    text: nasty,
    signature: fc.constant(''),
  }),
  fc.record({
    type: fc.constant('redacted_thinking'),
    data: fc.oneof(
      nasty,
      fc.constant('ms1.hs256.k.k.AAAA~data'),
      // "within its first 257 bytes" (§8.1): a signature part of 250 to 262 bytes, some of them two-byte characters.
      fc.tuple(fc.integer({ min: 118, max: 131 }), fc.boolean()).map(([n, wide]) => `ms1.${(wide ? 'é' : 'ee').repeat(n)}~data`),
    ),
  }),
  anyJson,
);
const signingContext = fc.record(
  {
    alg: fc.constantFrom('hs256', 'ed25519', 'rs256'),
    kid: fc.oneof(fc.constantFrom('s2026a', 'ed2026a'), nasty),
    apiKeyId: nasty,
    model: nasty,
    context: lowerHex(64, 64),
  },
  { requiredKeys: ['alg', 'kid', 'apiKeyId', 'model'] },
);
const messages = fc.array(
  fc.oneof(
    fc.record({ role: fc.constantFrom('user', 'assistant', 'x'), content: fc.oneof(nasty, fc.array(block, { maxLength: 3 })) }),
    anyJson,
  ),
  { maxLength: 4 },
);
const signatureText = fc.oneof(
  fc
    .tuple(
      fc.constantFrom('ms1', 'ms2', 'MS1'),
      fc.constantFrom('hs256', 'ed25519', 'HS256', 'rs256'),
      fc.constantFrom('s2026a', 'ed2026a', '', 'k k'),
      fc.constantFrom('k', 'c', 'x'),
      fc.uint8Array({ minLength: 30, maxLength: 66 }).map((b) => Buffer.from(b).toString('base64url')),
    )
    .map((parts) => parts.join('.')),
  anyJson,
);

const ruleTable = fc.oneof(
  fc.record({
    version: fc.constantFrom(1, 2, '1'),
    revision: fc.constantFrom('2026.12.01', '2026.12.01.1', '2026.1.1', 'x'),
    rules: fc.array(
      fc.record(
        {
          id: fc.oneof(token('abc019-', 8), nasty),
          name: fc.oneof(token('Acme ', 10), nasty),
          headerPrefixes: fc.array(fc.oneof(token('x-acme.', 8), nasty), { maxLength: 3 }),
          hostSuffixes: fc.array(fc.oneof(fc.constantFrom('.acme.example', 'acme.example', '*.x.y', 'a.b'), nasty), { maxLength: 3 }),
        },
        { requiredKeys: ['id', 'name', 'headerPrefixes', 'hostSuffixes'] },
      ),
      { maxLength: 3 },
    ),
  }),
  anyJson,
);

const telemetryBatch = fc.oneof(
  fc.record({
    v: fc.constantFrom(1, 2),
    client: fc.record({ cv: fc.oneof(nasty, token('x', 300)), ep: nasty }),
    events: fc.array(
      fc.oneof(
        fc.record({
          type: fc.constantFrom('gateway_detected', 'harden_status', 'attestation_unavailable', 'layer_degraded', 'future'),
          ts: fc.oneof(fc.nat(), fc.constant(-1), fc.constant(1.5)),
          gateways: fc.array(nasty, { maxLength: 3 }),
          evidence: fc.array(nasty, { maxLength: 2 }),
          dumpable: fc.oneof(fc.boolean(), fc.constant('no')),
          platform: nasty,
          reason: fc.oneof(nasty, token('😀', 70)),
          layer: nasty,
        }),
        anyJson,
      ),
      { maxLength: 3 },
    ),
  }),
  anyJson,
);

/** Base64url texts around the 32-byte grammar: canonical, padded, one short, non-canonical last character, standard alphabet. */
const key32 = fc
  .tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.constantFrom('ok', 'ok', 'ok', 'pad', 'short', 'bits', 'std', 'long'))
  .map(([bytes, how]) => {
    const t = Buffer.from(bytes).toString('base64url');
    if (how === 'pad') return `${t}=`;
    if (how === 'short') return t.slice(0, 42);
    if (how === 'bits') return `${t.slice(0, 42)}${t[42] === 'B' ? 'C' : 'B'}`;
    if (how === 'std') return Buffer.from(bytes).toString('base64');
    if (how === 'long') return `${t}A`;
    return t;
  });
const installId = fc.oneof(
  { weight: 4, arbitrary: lowerHex(24, 24).map((h) => `i${h}`) },
  {
    weight: 1,
    arbitrary: fc.oneof(
      lowerHex(23, 25).map((h) => `i${h}`),
      token('iI0123456789abcdefABCDEF', 26),
      nasty,
    ),
  },
);
const discoveryEnrollment = fc.record(
  {
    challenge: fc.oneof(fc.constantFrom('/v1/moat/enroll/challenge', 'v1/c', '/a?b'), nasty),
    enroll: fc.oneof(fc.constantFrom('/v1/moat/enroll', '/x'), anyJson),
    kid: kid,
    key: fc.oneof(key32, anyJson),
  },
  { requiredKeys: ['challenge', 'enroll', 'kid'] },
);
const LOW_ORDER = ['00'.repeat(32), `01${'00'.repeat(31)}`, `ec${'ff'.repeat(30)}7f`];
const x25519Key = fc.oneof(
  { weight: 6, arbitrary: lowerHex(64, 64) },
  { weight: 1, arbitrary: fc.constantFrom(...LOW_ORDER) },
  { weight: 1, arbitrary: lowerHex(0, 66).filter((h) => h.length % 2 === 0) },
);
const enrollmentFacts = fc.record({
  request: fc.constantFrom('valid', 'valid', 'invalid'),
  scheme: fc.constantFrom('v1', 'r1', 'r1', 'i1', 'none'),
  attestation: fc.constantFrom(...p.ATTESTATION_SIGNALS, 'valid', 'valid'),
  ekid: fc.constantFrom('active', 'active', 'unknown'),
  challenge: fc.constantFrom('fresh', 'fresh', 'unknown', 'expired', 'used', 'other_credential'),
  lowOrder: fc.boolean(),
  limit: fc.constantFrom('within', 'over'),
  limitAction: fc.constantFrom('monitor', 'flag', 'block'),
});
const installFacts = fc.record(
  {
    scheme: fc.constantFrom('v1', 'r1', 'i1', 'i1', 'none'),
    attestation: fc.constantFrom(...p.ATTESTATION_SIGNALS),
    install: fc.constantFrom('known', 'new', 'over_limit', 'revoked', 'unknown'),
    releaseSpeaksInstallKeys: fc.boolean(),
  },
  { requiredKeys: ['scheme', 'attestation'] },
);
const FEATURE_NAMES = fc.constantFrom('attestation', 'request_binding', 'install_keys', 'telemetry', 'future');

/** The request generator of each kit operation. */
const REQUESTS: Record<string, fc.Arbitrary<Record<string, unknown>>> = {
  'attribution.parse': attributionText.map((input) => ({ input })),
  'attribution.serialize': fc
    .record(
      {
        cv: fc.oneof(token('0123456789.', 6), nasty, fc.constantFrom('1; x=y', '1;', 'a=b')),
        fp: fc.oneof(lowerHex(3, 3), nasty),
        ep: fc.oneof(fc.constantFrom('cli', 'sdk', 'CLI'), nasty),
        extensions: fc.array(fc.tuple(fc.oneof(fc.constantFrom('build', 'fp', 'os', 'X'), nasty), fc.oneof(token('abc.', 6), nasty)), {
          maxLength: 3,
        }),
      },
      { requiredKeys: [] },
    )
    .map((fields) => ({ fields })),
  'envelope.parse': envelopeValue.map((input) => ({ input })),
  'envelope.locate': objectText.map((body) => ({ body })),
  'envelope.append': fc
    .tuple(
      fc.oneof(objectText, fc.constantFrom('{ }', '{}', '{garbage}', '[1]', '{"a":1} ', '{"a":'), nasty),
      fc.oneof(goodEnvelope, envelopeValue),
    )
    .map(([body, envelope]) => ({ body, envelope })),
  'stamp.compute': fc
    .tuple(
      stampedBody,
      fc.constantFrom(7, 31, 32, 64).map((n) => '07'.repeat(n)),
    )
    .map(([{ body, request }, key]) => ({ key, body, request })),
  'stamp.verify': fc
    .tuple(stampedBody, fc.constantFrom('07'.repeat(32), '08'.repeat(32)), fc.boolean())
    .map(([{ body, request }, key, withRequest]) => ({ key, body, ...(withRequest ? { request } : {}) })),
  'stamp.authority': hostileUrl.map((url) => ({ url })),
  'stamp.credential': headerPairs.map((headers) => ({ headers })),
  'stamp.request_base': components.map((request) => ({ request })),
  'fingerprint.fingerprint': fc
    .tuple(fc.record({ messages }), nasty, nasty)
    .map(([request, salt, version]) => ({ request, salt, version })),
  'signature.parse': signatureText.map((input) => ({ input })),
  'signature.conversation_digest': messages.map((m) => ({ messages: m })),
  'signature.signing_input': fc.tuple(block, signingContext).map(([b, context]) => ({ block: b, context })),
  'signature.sign_hs256': fc
    .tuple(
      block,
      signingContext.map((c) => ({ ...c, alg: 'hs256' })),
    )
    .map(([b, context]) => ({ key: '4d'.repeat(32), block: b, context })),
  'signature.verify': fc.tuple(block, signingContext, signatureText, fc.boolean()).map(([b, context, signature, genuine]) => {
    if (genuine && context.alg === 'hs256') {
      try {
        const input = p.signingInput(b, context as p.SigningContext);
        const mac = createHmac('sha256', Buffer.alloc(32, 5)).update(input).digest();
        const scope = context.context === undefined ? 'k' : 'c';
        signature = `ms1.hs256.${context.kid}.${scope}.${mac.toString('base64url')}`;
      } catch {
        // a block that cannot be signed keeps the random signature
      }
    }
    return {
      key: '05'.repeat(32),
      publicKey: '6d3722ca441bf21e4e541b52f526f80f93845686e76f7ed49c445e344772e4a7',
      block: b,
      context,
      signature,
    };
  }),
  'gateway.detect': fc
    .tuple(
      headerPairs,
      fc.option(fc.oneof(hostileUrl, fc.constantFrom('oai.helicone.ai:443', ' OAI.Helicone.AI. ', 'gateway.ai.cloudflare.com'))),
    )
    .map(([headers, baseUrl]) => ({ table: p.GATEWAY_RULES, headers, ...(baseUrl === null ? {} : { baseUrl }) })),
  'gateway.table': ruleTable.map((table) => ({ table })),
  'negotiation.discovery': fc
    .oneof(
      fc.record({
        moat: fc.record({
          versions: fc.oneof(fc.array(fc.oneof(fc.integer({ min: -1, max: 3 }), fc.constant(1.5)), { maxLength: 3 }), anyJson),
          features: fc.array(fc.oneof(fc.constantFrom('attestation', 'request_binding', 'install_keys', 'future'), nasty), {
            maxLength: 4,
          }),
          telemetry: fc.oneof(fc.constantFrom('/v1/telemetry', 'v1', '/a b'), nasty),
          enrollment: fc.oneof(discoveryEnrollment, anyJson),
        }),
      }),
      anyJson,
    )
    .map((input) => ({ input })),
  'negotiation.version_header': fc
    .oneof(
      fc.constant(null),
      nasty,
      fc.array(fc.constantFrom('1', ' 2', '\t3 ', '01', '10000', ''), { maxLength: 3 }).map((a) => a.join(',')),
    )
    .map((input) => ({ input })),
  'negotiation.negotiate': fc
    .tuple(fc.array(fc.integer({ min: 1, max: 5 }), { maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 5 }), { maxLength: 4 }))
    .map(([server, client]) => ({ server, client })),
  'negotiation.scheme': fc.record(
    { features: fc.array(FEATURE_NAMES, { maxLength: 4 }), pinned: fc.array(FEATURE_NAMES, { maxLength: 2 }), enrolled: fc.boolean() },
    { requiredKeys: ['features'] },
  ),
  'enroll.derive': fc
    .tuple(x25519Key, x25519Key, x25519Key, installId, kid, key32, fc.boolean())
    .map(([privateKey, peerPublicKey, challenge, iid, ekid, installPublicKey, real]) => {
      // Half the time a real peer key (any 32 bytes is one, after clamping), so most derivations succeed.
      const peer = real ? Buffer.from(x25519.getPublicKey(new Uint8Array(32).fill(9))).toString('hex') : peerPublicKey;
      return { privateKey, peerPublicKey: peer, challenge, installId: iid, ekid, installPublicKey };
    }),
  'enroll.request': fc
    .oneof(
      fc.record(
        {
          v: fc.constantFrom(1, 1, 1, 2, 0, '1', 1.5, true, null),
          install_key: fc.oneof(key32, anyJson),
          challenge: fc.oneof(key32, key32, anyJson),
          ekid: kid,
          moat_att: envelopeValue,
        },
        { requiredKeys: [] },
      ),
      anyJson,
    )
    .map((input) => ({ input })),
  'enroll.answer': fc
    .oneof(fc.record({ install_id: fc.oneof(installId, anyJson), ekid: kid }, { requiredKeys: [] }), anyJson)
    .map((input) => ({ input })),
  'enroll.challenge': fc
    .oneof(
      fc.record(
        {
          challenge: fc.oneof(key32, anyJson),
          expires_in: fc.oneof(fc.integer({ min: -2, max: 400 }), fc.constantFrom(60, 300, 301, 0, 1.5, '60', null)),
        },
        { requiredKeys: [] },
      ),
      anyJson,
    )
    .map((input) => ({ input })),
  'enroll.outcome': enrollmentFacts.map((facts) => ({ facts })),
  'enroll.signal': installFacts.map((facts) => ({ facts })),
  'telemetry.batch': fc
    .tuple(telemetryBatch, fc.option(fc.constantFrom(10, 65_536, 65_537)))
    .map(([input, byteLength]) => ({ input, ...(byteLength === null ? {} : { byteLength }) })),
};

/** The value of the answers that carry no error, result or status: a scheme, an install signal, an enrollment outcome. */
function outcomeOf(answer: Record<string, unknown>): string {
  return JSON.stringify(answer.scheme ?? answer.install ?? answer.outcome ?? '');
}

describe('TypeScript and Python agree on generated hostile input', () => {
  it('covers every kit operation', () => {
    expect(Object.keys(REQUESTS).sort()).toEqual(Object.keys(KIT_OPERATIONS).sort());
  });

  for (const op of Object.keys(KIT_OPERATIONS)) {
    it(`${op}: ${CASES_PER_OPERATION} cases, 0 disagreements`, { timeout: 600_000 }, () => {
      const arbitrary = REQUESTS[op] as fc.Arbitrary<Record<string, unknown>>;
      const requests = fc.sample(arbitrary, { numRuns: CASES_PER_OPERATION, seed: SEED }).map((r) => ({ op, ...r }));
      const run = spawnSync('python3', python, {
        input: requests.map((r, id) => JSON.stringify({ id, ...r })).join('\n'),
        encoding: 'utf8',
        maxBuffer: 512 * 1024 * 1024,
      });
      expect(run.status, run.stderr).toBe(0);
      const answers = run.stdout.trim().split('\n');
      expect(answers).toHaveLength(requests.length);
      const disagreements: string[] = [];
      const outcomes = new Set<string>();
      let unreadable = 0;
      let firstUnreadable = '';
      requests.forEach((request, id) => {
        const { id: _id, ...fromPython } = JSON.parse(answers[id] as string) as Record<string, unknown>;
        const fromTs = answerConformanceRequest(JSON.parse(JSON.stringify(request)));
        // Requests neither side can read (ERR_CONFORMANCE_REQUEST) are refused by both; the wording may differ.
        const unread = (a: Record<string, unknown>) => String(a.error ?? '').startsWith('ERR_CONFORMANCE_REQUEST');
        if (unread(fromTs) && unread(fromPython)) {
          unreadable++;
          if (firstUnreadable === '')
            firstUnreadable = `${JSON.stringify(request).slice(0, 300)} → ${JSON.stringify(fromTs)} / ${JSON.stringify(fromPython)}`;
          return;
        }
        // What kind of answer this was (valid or not, which error, which result), to check the inputs reach every branch.
        outcomes.add(
          `${Object.keys(fromTs).sort().join(',')}:${String(fromTs.error ?? fromTs.result ?? fromTs.status ?? fromTs.valid ?? '')}:${outcomeOf(fromTs)}:${
            Array.isArray(fromTs.versions) ? fromTs.versions.length : Array.isArray(fromTs.detections) ? fromTs.detections.length : ''
          }`,
        );
        if (canonicalJson(fromTs) !== canonicalJson(fromPython))
          disagreements.push(`${JSON.stringify(request)}\n  ts:     ${canonicalJson(fromTs)}\n  python: ${canonicalJson(fromPython)}`);
      });
      expect(disagreements.slice(0, 5).join('\n'), `${disagreements.length} of ${requests.length} disagree`).toBe('');
      // The generated inputs are mostly readable requests, and reach more than one outcome.
      expect(unreadable, `${unreadable} requests neither side could read, e.g. ${firstUnreadable}`).toBeLessThan(requests.length / 5);
      if (!['stamp.credential', 'signature.conversation_digest', 'negotiation.negotiate', 'fingerprint.fingerprint'].includes(op))
        expect(outcomes.size, [...outcomes].join(', ')).toBeGreaterThan(1);
    });
  }
});
