/**
 * Cases added by protocol 1.2.1: the boundaries, wrong JSON types, error orders and lenient
 * parsers that an implementation written from SPEC.md alone got wrong while passing every
 * earlier case (off-by-one limits, booleans read as integers, Unicode digits, base64 in the
 * wrong alphabet or padded, bodies only a lenient JSON parser accepts), and the answers SPEC.md
 * now states where it left a choice. generate.ts appends them after each file's earlier cases.
 *
 * Each expected answer is the TypeScript kit operation's answer (KIT_OPERATIONS: the library
 * behind the stdio interface of §15), so a case pins exactly what the kit then compares.
 */
import { createHmac } from 'node:crypto';
import { answerConformanceRequest, KIT_OPERATIONS, REQUEST_REFUSED } from '../dist/conformance.js';
import * as p from '../dist/index.js';
import { type Case, REQUEST, stamped } from './support.ts';

const ENVELOPE = `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}`;
const R1_ENVELOPE = `r1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}`;
const TEST_KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => i)).toString('hex');
const CHALLENGE = Buffer.from(Array.from({ length: 32 }, (_, i) => i)).toString('base64url');

/**
 * One case of `file`'s `op`: the request members as given, and the kit's answer as the
 * expected one. A request the interface cannot read expects `{"error": "ERR_CONFORMANCE_REQUEST"}`,
 * which the kit compares by that code alone (§15).
 */
function kitCase(file: string, op: string, name: string, request: Record<string, unknown>): Case {
  const operation = `${file}.${op}`;
  const answer = answerConformanceRequest({ op: operation, ...KIT_OPERATIONS[operation]?.defaults, ...request });
  const refused = typeof answer.error === 'string' && answer.error.startsWith(REQUEST_REFUSED);
  return { name, op, ...request, ...(refused ? { error: REQUEST_REFUSED } : answer) };
}

function casesOf(file: string, op: string, member: string, list: ReadonlyArray<readonly [string, unknown]>): Case[] {
  return list.map(([name, value]) => kitCase(file, op, name, { [member]: value }));
}

/** An attribution block of exactly `bytes` bytes: v, cv, then extension fields of up to 64 `a`s. */
function blockOf(bytes: number): string {
  let text = 'x-moat: v=1; cv=1;';
  for (let i = 0; text.length < bytes; i++) {
    const room = bytes - text.length - ` k${String(i).padStart(2, '0')}=;`.length;
    // Leave room for one more field (at least 8 bytes) unless this one fills the block.
    const value = room <= 64 ? room : Math.min(64, room - 8);
    text += ` k${String(i).padStart(2, '0')}=${'a'.repeat(value)};`;
  }
  if (p.utf8(text).length !== bytes) throw new Error(`attribution block of ${bytes} bytes: got ${text.length}`);
  return text;
}

export function attribution121(): Case[] {
  return [
    ...casesOf('attribution', 'parse', 'input', [
      ['exactly 512 bytes is accepted', blockOf(512)],
      ['513 bytes is too long', blockOf(513)],
      ['a value ending in a newline is refused', 'x-moat: v=1; cv=1.4.2\n;'],
      ['cv as the first field: v must be first', 'x-moat: cv=1.4.2;'],
      ['v of ten digits is a bad value, not another version', 'x-moat: v=1234567890; cv=1;'],
      ['ep of 32 characters is accepted', `x-moat: v=1; cv=1; ep=${'a'.repeat(32)};`],
      ['ep of 33 characters is refused', `x-moat: v=1; cv=1; ep=${'a'.repeat(33)};`],
      ['a repeated key with a bad value: the value is checked first', 'x-moat: v=1; cv=1; cv=!;'],
      ['fields end at any ";", not only at "; "', 'x-moat: v=1; cv=1; cv=2;x;'],
    ]),
    ...casesOf('attribution', 'serialize', 'fields', [
      ['serialize refuses an extension value that is a number', { cv: '1', extensions: [['x', 5]] }],
      ['serialize takes null extensions as none', { cv: '1', extensions: null }],
      ['serialize refuses extensions that are a string', { cv: '1', extensions: 'ab' }],
      ['serialize refuses extensions that are an object', { cv: '1', extensions: { a: '1' } }],
      ['serialize refuses an extension that is not a pair', { cv: '1', extensions: [5] }],
      ['serialize refuses an extension of one item', { cv: '1', extensions: [['a']] }],
      ['serialize refuses an extension of three items', { cv: '1', extensions: [['a', '1', '2']] }],
      ['serialize checks extensions in order: a known key before a malformed entry', { cv: '1', extensions: [['fp', 'a3f'], 5] }],
    ]),
  ];
}

export function envelope121(): Case[] {
  const append: Array<[string, string]> = [
    ['append refuses NaN', '{"a":NaN}'],
    ['append refuses Infinity', '{"a":-Infinity}'],
    ['append refuses a member without a value', '{"a":}'],
    ['append refuses a number with a leading zero', '{"a":01}'],
    ['append refuses a trailing comma', '{"a":1,}'],
    ['append refuses a raw tab in a string', '{"a":"x\ty"}'],
    ['append refuses an unknown escape', '{"a":"\\x"}'],
    ['append refuses a comment', '{"a":1/*c*/}'],
    ['append refuses single quotes', "{'a':1}"],
    ['append: moat_att inside a string or a nested object is no envelope', '{"note":"the \\"moat_att\\" member","x":{"moat_att":1}}'],
    ['append refuses a top-level member named moat_att with an escape', '{"moat\\u005fatt":1}'],
    ['append to an object holding only whitespace gives exactly one member', '{ \n }'],
    ['append keeps an escaped unpaired surrogate as written', '{"a":"\\ud800"}'],
    ['append keeps a raw unpaired surrogate as given', '{"a":"x\ud800y"}'],
  ];
  return [
    ...casesOf('envelope', 'parse', 'input', [
      [
        'a timestamp of Arabic-Indic digits is refused',
        `v1.k.\u0661\u0667\u0666\u0664\u0660\u0660\u0660\u0660\u0660\u0660.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}`,
      ],
      ['a bad key id and a bad timestamp: the key id is checked first', `v1.k!.17.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}`],
      ['an unsupported scheme and three parts: the part count is checked first', 'v2.a.b'],
    ]),
    kitCase('envelope', 'locate', 'a space before the member name: not anchored', {
      body: `{"a":1, "moat_att":"${ENVELOPE}"}`,
    }),
    ...append.map(([name, body]) => kitCase('envelope', 'append', name, { body, envelope: ENVELOPE })),
  ];
}

export function stamp121(): Case[] {
  const body = p.appendEnvelope('{"model":"m","max_tokens":1}', R1_ENVELOPE.replace('0'.repeat(32), '0'.repeat(64)));
  const good = stamped(TEST_KEY, body, REQUEST);
  const at = good.lastIndexOf('"}') - 16;
  const secondHalf = `${good.slice(0, at)}${good[at] === '0' ? '1' : '0'}${good.slice(at + 1)}`;
  const bodyOnly = stamped(TEST_KEY, p.appendEnvelope('{"model":"m","max_tokens":1}', R1_ENVELOPE));
  const base = (name: string, request: Record<string, unknown>) => kitCase('stamp', 'request_base', name, { request });
  const credential = (name: string, headers: Array<[string, string]>) => kitCase('stamp', 'credential', name, { headers });
  return [
    kitCase('stamp', 'verify', 'r1: a 256-bit stamp altered in its second half', { key: TEST_KEY, body: secondHalf, request: REQUEST }),
    kitCase('stamp', 'verify', 'r1 stamped over the body alone, with a request the base refuses', {
      key: TEST_KEY,
      body: bodyOnly,
      request: { ...REQUEST, method: '' },
    }),
    base('request base: a method of 32 characters', { ...REQUEST, method: 'P'.repeat(32) }),
    base('request base refuses a method of 33 characters', { ...REQUEST, method: 'P'.repeat(33) }),
    base('request base refuses an authority with user info', { ...REQUEST, authority: 'user@api.example.com' }),
    base('request base refuses an authority with DEL', { ...REQUEST, authority: 'api\u007f.example.com' }),
    base('request base refuses a path with a space', { ...REQUEST, path: '/v1/a b' }),
    base('request base refuses a credential that is a number', { ...REQUEST, credential: 5 }),
    base('request base refuses a null credential', { ...REQUEST, credential: null }),
    credential('credential: repeated authorization headers are joined before the bearer rule', [
      ['authorization', 'Bearer a'],
      ['Authorization', 'Bearer b'],
    ]),
    credential('credential: Bearer and a tab is no credential', [['authorization', 'Bearer\tabc']]),
    credential('credential: Bearer without a space is no credential', [['authorization', 'Bearerabc']]),
    credential('credential: every space after Bearer goes', [['authorization', 'Bearer   abc']]),
    credential('credential: a tab after the spaces is part of the token', [['authorization', 'Bearer \tabc']]),
    credential('credential: spaces and tabs around the whole value are trimmed', [['authorization', '\t Bearer  abc \t']]),
    ...casesOf('stamp', 'authority', 'url', [
      ['authority: a single zero piece of IPv6 is not compressed', 'http://[1:0:1:1:1:1:1:1]/'],
      ['authority: tabs and newlines inside the URL are removed', 'https://api.exam\tple.com/'],
      ['authority: a Latin-1 letter beside an XN-- label in capitals is refused', 'https://stra\u00dfe.XN--abc.com/'],
      ['authority: a division sign is not a Latin-1 letter', 'https://a\u00f7b.com/'],
      ['authority: a multiplication sign is not a Latin-1 letter', 'https://a\u00d7b.com/'],
      ['authority: the scheme in capitals', 'HTTPS://api.example.com/'],
      ['authority: a port with a plus sign is refused', 'http://a.com:+81/'],
      ['authority: an IPv4 part with an underscore is refused', 'http://1_0.0.0.1/'],
    ]),
  ];
}

export function fingerprint121(): Case[] {
  const request = (role: string, content: string) => ({ messages: [{ role, content }] });
  return [
    kitCase('fingerprint', 'fingerprint', 'leading spaces are part of the text', {
      request: request('user', '  Hello, how are you doing today?'),
      salt: 's',
      version: '1',
    }),
    kitCase('fingerprint', 'fingerprint', 'role "User" is not the user', {
      request: request('User', 'Hello, how are you doing today?'),
      salt: 's',
      version: '1',
    }),
  ];
}

export function signature121(): Case[] {
  const ctx = { alg: 'hs256', kid: 's2026a', apiKeyId: 'key_1', model: 'm' };
  const redacted = (data: string) => ({ type: 'redacted_thinking', data });
  const input = (name: string, block: unknown, context: unknown = ctx) => kitCase('signature', 'signing_input', name, { block, context });
  const block = { type: 'thinking', thinking: 'hi' };
  const mac = createHmac('sha256', Buffer.from(TEST_KEY, 'hex'))
    .update(p.signingInput(block, ctx as p.SigningContext))
    .digest();
  const sig = mac.toString('base64url');
  const last = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.indexOf(sig.at(-1) as string);
  const verify = (name: string, signature: string) =>
    kitCase('signature', 'verify', name, { key: TEST_KEY, block, context: ctx, signature });
  const sigHs = Buffer.alloc(32, 7).toString('base64url');
  return [
    input("a '~' after exactly 257 bytes is part of the data", redacted(`ms1.${'a'.repeat(253)}~data`)),
    input("the data is split at its first '~'", redacted('ms1.x~a~b')),
    input("data not starting with ms1. is not split at '~'", redacted('abc~def')),
    input('a signing context with context null is unreadable', block, { ...ctx, context: null }),
    ...casesOf('signature', 'parse', 'input', [
      ['over 256 bytes in fewer than 256 characters: the length is checked first', `ms1.hs256.kid.k.${'é'.repeat(130)}`],
      ['standard base64 characters are refused', `ms1.hs256.kid.k.${'+'.repeat(42)}A`],
      ['an unknown algorithm and a bad kid: the algorithm is checked first', 'ms1.rs256.k!d.k.AAAA'],
      ['the prefix in capitals is refused', `MS1.hs256.s2026a.k.${sigHs}`],
      ['the scope in capitals is refused', `ms1.hs256.s2026a.K.${sigHs}`],
    ]),
    kitCase('signature', 'sign_hs256', 'a text block and an ed25519 context: the block is checked first', {
      key: TEST_KEY,
      block: { type: 'text', text: 'x' },
      context: { ...ctx, alg: 'ed25519' },
    }),
    verify('hs256 genuine signature verifies', `ms1.hs256.s2026a.k.${sig}`),
    verify('hs256 signature whose kid differs only in case', `ms1.hs256.S2026A.k.${sig}`),
    verify(
      'hs256 signature with non-zero trailing bits',
      `ms1.hs256.s2026a.k.${sig.slice(0, -1)}${'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'[last + 1]}`,
    ),
    kitCase('signature', 'conversation_digest', 'a role that is a number binds as empty', { messages: [{ role: 5, content: 'x' }] }),
    kitCase('signature', 'conversation_digest', 'a block type that is a number binds as empty', {
      messages: [{ role: 'user', content: [{ type: 5 }] }],
    }),
  ];
}

/** A valid rule table whose compact JSON is exactly `bytes` bytes, every rule named `name`. */
function tableOfBytes(bytes: number, name: string): Record<string, unknown> {
  const rules: Array<{ id: string; name: string; headerPrefixes: string[]; hostSuffixes: string[] }> = [];
  const table = { version: 1, revision: '2026.11.25', rules };
  for (let i = 0; i < 256; i++) {
    const rule = { id: `r${i}`, name, headerPrefixes: [] as string[], hostSuffixes: [] as string[] };
    rules.push(rule);
    for (let j = 0; j < 32; j++) {
      rule.headerPrefixes.push('p'.repeat(128));
      const over = p.utf8(JSON.stringify(table)).length - bytes;
      if (over >= 0 && over < 128) {
        rule.headerPrefixes[j] = 'p'.repeat(128 - over);
        return table;
      }
      if (over >= 128) rule.headerPrefixes.pop();
    }
  }
  throw new Error(`no table of ${bytes} bytes`);
}

export function gateway121(): Case[] {
  const rule = (r: Record<string, unknown>) => ({
    version: 1,
    revision: '2026.11.25',
    rules: [{ id: 'x', name: 'X', headerPrefixes: ['x-a-'], hostSuffixes: [], ...r }],
  });
  const many = (n: number, f: (i: number) => string) => Array.from({ length: n }, (_, i) => f(i));
  const long = (n: number) => `${'a'.repeat(n - 5)}.bcde`;
  const custom = {
    version: 1,
    revision: '2026.12.01',
    rules: [{ id: 'acme', name: 'Acme', headerPrefixes: ['x-acme-'], hostSuffixes: [] }],
  };
  return [
    ...casesOf('gateway', 'table', 'table', [
      ['exactly 65,536 bytes of compact UTF-8 is accepted', tableOfBytes(65536, 'é'.repeat(32))],
      ['65,537 bytes is refused', tableOfBytes(65537, 'é'.repeat(32))],
      ['version "1" is refused', { ...rule({}), version: '1' }],
      ['version true is refused', { ...rule({}), version: true }],
      ['a revision number of five digits is refused', { ...rule({}), revision: '2026.11.25.12345' }],
      ['a revision is digits, not a calendar date', { ...rule({}), revision: '2026.13.45' }],
      ['an id with capitals is refused', rule({ id: 'LiteLLM' })],
      ['an id of 32 characters is accepted', rule({ id: 'a'.repeat(32) })],
      ['an id of 33 characters is refused', rule({ id: 'a'.repeat(33) })],
      ['a name of 64 bytes in 32 characters is accepted', rule({ name: 'é'.repeat(32) })],
      ['a name of 66 bytes in 33 characters is refused', rule({ name: 'é'.repeat(33) })],
      ['an empty name is refused', rule({ name: '' })],
      ['32 header prefixes are accepted', rule({ headerPrefixes: many(32, (i) => `x${i}`) })],
      ['33 header prefixes are refused', rule({ headerPrefixes: many(33, (i) => `x${i}`) })],
      ['a header prefix of 128 characters is accepted', rule({ headerPrefixes: ['x'.repeat(128)] })],
      ['a header prefix of 129 characters is refused', rule({ headerPrefixes: ['x'.repeat(129)] })],
      ['32 host suffixes are accepted', rule({ hostSuffixes: many(32, (i) => `a${i}.com`) })],
      ['33 host suffixes are refused', rule({ hostSuffixes: many(33, (i) => `a${i}.com`) })],
      ['a host suffix of 128 characters is accepted', rule({ hostSuffixes: [long(128)] })],
      ['a host suffix of 129 characters is refused', rule({ hostSuffixes: [long(129)] })],
      ['a host suffix of one label is refused', rule({ hostSuffixes: ['localhost'] })],
      ['a host suffix label ending with "-" is refused', rule({ hostSuffixes: ['a-.com'] })],
    ]),
    kitCase('gateway', 'detect', 'a port of Arabic-Indic digits is not removed', { headers: [], baseUrl: 'helicone.ai:\u0661\u0662' }),
    kitCase('gateway', 'detect', 'a bare host is trimmed of spaces and tabs only', { headers: [], baseUrl: 'oai.helicone.ai\n' }),
    kitCase('gateway', 'detect', 'only one trailing dot is removed', { headers: [], baseUrl: 'oai.helicone.ai..' }),
    kitCase('gateway', 'detect', 'a table of version 2 is refused before detecting', {
      table: { ...p.GATEWAY_RULES, version: 2 },
      headers: [['x-litellm-a', '1']],
    }),
    kitCase('gateway', 'detect', 'detection with a table given in the request', {
      table: custom,
      headers: [
        ['x-acme-trace', '1'],
        ['x-litellm-a', '1'],
      ],
    }),
  ];
}

export function negotiation121(): Case[] {
  const doc = (moat: Record<string, unknown>) => ({ moat: { versions: [1], features: ['attestation'], ...moat } });
  return [
    ...casesOf('negotiation', 'discovery', 'input', [
      ['a version true is refused', { moat: { versions: [true] } }],
      ['a version 1.5 is refused', { moat: { versions: [1.5] } }],
      ['a version over 2^53 - 1 is refused', { moat: { versions: [2 ** 53] } }],
      ['16 versions are accepted', { moat: { versions: Array.from({ length: 16 }, () => 1) } }],
      ['17 versions are refused', { moat: { versions: Array.from({ length: 17 }, () => 1) } }],
      ['64 features are accepted', doc({ features: Array.from({ length: 64 }, () => 'x') })],
      ['65 features are refused', doc({ features: Array.from({ length: 65 }, () => 'x') })],
      ['features as a string are refused', doc({ features: 'attestation' })],
      ['features null is refused: null is not absent', doc({ features: null })],
      ['repeated features are kept as listed', doc({ features: ['attestation', 'attestation'] })],
      ['a path of 256 characters is accepted', doc({ telemetry: `/${'a'.repeat(255)}` })],
      ['a path of 257 characters is refused', doc({ telemetry: `/${'a'.repeat(256)}` })],
      ['a path with .. segments is accepted by the parser', doc({ telemetry: '/../../evil' })],
      ['telemetry null is refused: null is not absent', doc({ telemetry: null })],
    ]),
    ...casesOf('negotiation', 'version_header', 'input', [
      ['a version of four digits', '9999'],
      ['a version of five digits empties the header', '12345'],
      ['an empty part empties the header', '1,,2'],
      ['an Arabic-Indic digit empties the header', '\u0661'],
      ['a semicolon is no separator', '1;2'],
    ]),
  ];
}

export function telemetry121(): Case[] {
  const client = { cv: '1.4.2', ep: 'cli' };
  const batch = (events: unknown[], extra: Record<string, unknown> = {}) => ({ v: 1, client, events, ...extra });
  const gateways = (list: unknown[], extra: Record<string, unknown> = {}) =>
    batch([{ type: 'gateway_detected', ts: 1, gateways: list, ...extra }]);
  const harden = (extra: Record<string, unknown>) =>
    batch([{ type: 'harden_status', ts: 1, dumpable: false, platform: 'linux', ...extra }]);
  return [
    ...casesOf('telemetry', 'batch', 'input', [
      ['ts true is refused', batch([{ type: 'x', ts: true }])],
      ['ts of 2^53 - 1 is accepted', batch([{ type: 'x', ts: 2 ** 53 - 1 }])],
      ['ts of 2^53 is refused', batch([{ type: 'x', ts: 2 ** 53 }])],
      ['v true is refused', { ...batch([]), v: true }],
      ['v "1" is refused', { ...batch([]), v: '1' }],
      ['client without ep is refused', { v: 1, client: { cv: '1' }, events: [] }],
      ['32 gateways are accepted', gateways(Array.from({ length: 32 }, () => 'g'))],
      ['33 gateways are refused', gateways(Array.from({ length: 33 }, () => 'g'))],
      ['a gateway that is a number is refused', gateways([5])],
      ['an empty gateway string is refused', gateways([''])],
      ['evidence null is refused: null is not absent', gateways(['g'], { evidence: null })],
      ['dumpable 0 is refused', harden({ dumpable: 0 })],
      ['tracer true is refused', harden({ tracer: true })],
      ['a type of 256 bytes in 128 characters is accepted', batch([{ type: 'é'.repeat(128), ts: 1 }])],
      ['a type of 258 bytes in 129 characters is refused', batch([{ type: 'é'.repeat(129), ts: 1 }])],
    ]),
    kitCase('telemetry', 'batch', 'a body of exactly 65,536 bytes is accepted', { input: batch([]), byteLength: 65536 }),
    kitCase('telemetry', 'batch', 'a body of 65,537 bytes is refused', { input: batch([]), byteLength: 65537 }),
  ];
}

export function enroll121(): Case[] {
  const request = { v: 1, install_key: CHALLENGE, challenge: CHALLENGE, ekid: 'e1' };
  const bits = `${CHALLENGE.slice(0, -1)}${CHALLENGE.at(-1) === '9' ? '8' : '9'}`;
  const facts = { request: 'valid', scheme: 'r1', attestation: 'valid', ekid: 'active', challenge: 'fresh', lowOrder: false };
  return [
    ...casesOf('enroll', 'request', 'input', [
      ['request: v true is refused', { ...request, v: true }],
      ['request: a padded challenge is refused', { ...request, challenge: `${CHALLENGE}=` }],
    ]),
    kitCase('enroll', 'answer', 'answer: an ekid with a dot is refused', { input: { install_id: `i${'0'.repeat(24)}`, ekid: 'e.1' } }),
    ...casesOf('enroll', 'challenge', 'input', [
      ['challenge: expires_in true is refused', { challenge: CHALLENGE, expires_in: true }],
      ['challenge: a padded challenge is refused', { challenge: `${CHALLENGE}=`, expires_in: 60 }],
      ['challenge: non-zero unused bits are refused', { challenge: bits, expires_in: 60 }],
      ['challenge: standard base64 is refused', { challenge: `${'+'.repeat(42)}A`, expires_in: 60 }],
    ]),
    kitCase('enroll', 'outcome', 'outcome: over a limit with no action given: block, the default', { facts: { ...facts, limit: 'over' } }),
    kitCase('enroll', 'outcome', 'outcome: unavailable is answered as unavailable, not missing', {
      facts: { ...facts, attestation: 'unavailable', limit: 'within', limitAction: 'block' },
    }),
  ];
}
