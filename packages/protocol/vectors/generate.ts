/**
 * Generates the cross-language test vectors in this folder from the case inputs below and
 * the TypeScript implementation (built to ../dist). Every other implementation — the Python
 * reference in ../python, a partner's — must reproduce the expected values byte for byte.
 *
 *   node vectors/generate.ts          rewrite the JSON files
 *   node vectors/generate.ts --check  fail if a file differs from what would be written
 *
 * Expected values are checked independently: the Python implementation is written from
 * SPEC.md alone, and src/vectors.test.ts pins hand-computed values for a few cases.
 */
import { createHash, createHmac } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ed25519 } from '@noble/curves/ed25519.js';
import * as p from '../dist/index.js';
import {
  attribution121,
  enroll121,
  envelope121,
  fingerprint121,
  gateway121,
  negotiation121,
  signature121,
  stamp121,
  telemetry121,
} from './cases-1.2.1.ts';
import { enroll120, envelope120, negotiation120, stamp120 } from './cases-1.2.ts';
import { attempt, type Case, fromHex, hex, REQUEST, stamped } from './support.ts';

const here = dirname(fileURLToPath(import.meta.url));
const SPEC_VERSION = p.SPEC_VERSION;

// ---------------------------------------------------------------------------------------
// attribution.json

function attributionCases(): Case[] {
  const parse: Array<[string, unknown]> = [
    ['full block', 'x-moat: v=1; cv=1.4.2; fp=a3f; ep=cli;'],
    ['minimal block: v and cv only', 'x-moat: v=1; cv=1.4.2;'],
    ['no fingerprint', 'x-moat: v=1; cv=2.0.0-beta.1; ep=sdk;'],
    ['fingerprint without entrypoint', 'x-moat: v=1; cv=0.0.1; fp=000;'],
    ['unknown fields after known ones are kept in order', 'x-moat: v=1; cv=1.4.2; fp=a3f; ep=cli; build=abc123; zz=1;'],
    ['unknown entrypoint token passes through', 'x-moat: v=1; cv=1.4.2; ep=vscode_ext;'],
    ['build metadata in cv', 'x-moat: v=1; cv=1.4.2+build.7; fp=fff; ep=ide;'],
    ['longest key and value', `x-moat: v=1; cv=${'9'.repeat(64)}; ${'k'.repeat(32)}=${'V'.repeat(64)};`],
    ['not a string: number', 42],
    ['not a string: null', null],
    ['not a string: object', { text: 'x-moat: v=1; cv=1;' }],
    ['longer than 512 UTF-8 bytes', `x-moat: v=1; cv=1.4.2; pad=${'a'.repeat(64)};${' x=1;'.repeat(100)}`],
    ['multi-byte characters count in bytes', `x-moat: v=1; cv=1; x=${'é'.repeat(260)};`],
    ['wrong prefix case', 'X-Moat: v=1; cv=1.4.2;'],
    ['prefix without colon', 'x-moat v=1; cv=1.4.2;'],
    ['empty string', ''],
    ['prefix only', 'x-moat:'],
    ['no space after prefix', 'x-moat:v=1; cv=1.4.2;'],
    ['two spaces before a field', 'x-moat:  v=1; cv=1.4.2;'],
    ['missing final semicolon', 'x-moat: v=1; cv=1.4.2'],
    ['trailing space', 'x-moat: v=1; cv=1.4.2; '],
    ['trailing text after the last semicolon', 'x-moat: v=1; cv=1.4.2;x'],
    ['field without "="', 'x-moat: v=1; cv;'],
    ['empty value', 'x-moat: v=1; cv=;'],
    ['space inside a value', 'x-moat: v=1; cv=1 2;'],
    ['uppercase key', 'x-moat: v=1; CV=1.4.2;'],
    ['key starting with a digit', 'x-moat: v=1; cv=1; 9x=1;'],
    ['key longer than 32 characters', `x-moat: v=1; cv=1; ${'k'.repeat(33)}=1;`],
    ['value longer than 64 characters', `x-moat: v=1; cv=${'9'.repeat(65)};`],
    ['non-ASCII value', 'x-moat: v=1; cv=1.é;'],
    ['duplicate known field', 'x-moat: v=1; cv=1.4.2; cv=1.4.3;'],
    ['duplicate unknown field', 'x-moat: v=1; cv=1; a=1; a=2;'],
    ['v not first', 'x-moat: cv=1.4.2; v=1;'],
    ['known fields out of order', 'x-moat: v=1; cv=1.4.2; ep=cli; fp=a3f;'],
    ['known field after an unknown one', 'x-moat: v=1; cv=1.4.2; zz=1; fp=a3f;'],
    ['unsupported version', 'x-moat: v=2; cv=1.4.2;'],
    ['version with leading zero', 'x-moat: v=01; cv=1.4.2;'],
    ['version not a number', 'x-moat: v=one; cv=1.4.2;'],
    ['missing cv', 'x-moat: v=1; fp=a3f; ep=cli;'],
    ['uppercase fingerprint', 'x-moat: v=1; cv=1.4.2; fp=A3F;'],
    ['fingerprint of four digits', 'x-moat: v=1; cv=1.4.2; fp=a3f0;'],
    ['fingerprint not hex', 'x-moat: v=1; cv=1.4.2; fp=xyz;'],
    ['uppercase entrypoint', 'x-moat: v=1; cv=1.4.2; ep=CLI;'],
    ['newline before a field', 'x-moat:\nv=1; cv=1.4.2;'],
  ];
  const cases: Case[] = parse.map(([name, input]) => {
    const r = attempt(() => p.parseAttribution(input));
    if (!r.ok) return { name, op: 'parse', input, valid: false, error: r.error };
    const fields = { ...r.value, extensions: r.value.extensions.map(([k, v]) => [k, v]) };
    return { name, op: 'parse', input, valid: true, fields, serialized: p.serializeAttribution(r.value) };
  });
  const serialize: Array<[string, p.AttributionFields]> = [
    ['serialize all fields', { cv: '1.4.2', fp: 'a3f', ep: 'cli' }],
    ['serialize cv only', { cv: '3.0.0' }],
    [
      'serialize with extensions',
      {
        cv: '1.4.2',
        ep: 'cli',
        extensions: [
          ['build', 'abc'],
          ['os', 'linux'],
        ],
      },
    ],
    ['serialize rejects an extension named like a known field', { cv: '1.4.2', extensions: [['fp', 'a3f']] }],
    ['serialize rejects a bad fingerprint', { cv: '1.4.2', fp: 'ABC' }],
    ['serialize rejects an empty cv', { cv: '' }],
    ['serialize rejects a value with a semicolon', { cv: '1;2' }],
  ];
  for (const [name, fields] of serialize) {
    const r = attempt(() => p.serializeAttribution(fields));
    const input = { ...fields, ...(fields.extensions ? { extensions: fields.extensions.map(([k, v]) => [k, v]) } : {}) };
    cases.push(
      r.ok
        ? { name, op: 'serialize', fields: input, valid: true, serialized: r.value }
        : { name, op: 'serialize', fields: input, valid: false, error: r.error },
    );
  }
  return cases;
}

// ---------------------------------------------------------------------------------------
// envelope.json

const STAMP32 = '0123456789abcdef0123456789abcdef';
const PLACEHOLDER = `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}`;
const R1_PLACEHOLDER = `r1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}`;

function envelopeCases(): Case[] {
  const parse: Array<[string, unknown]> = [
    ['placeholder', PLACEHOLDER],
    ['128-bit stamp', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['256-bit stamp', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32.repeat(2)}`],
    ['192-bit stamp', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}${'ab'.repeat(8)}`],
    ['key id with dash and underscore, 32 characters', `v1.${'K_-'.repeat(10)}ab.0000000000.0000000000000000.${STAMP32}`],
    ['not a string', 1764000000],
    ['empty', ''],
    ['four parts', `v1.k2026a.1764000000.${STAMP32}`],
    ['six parts', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}.x`],
    ['unsupported version', `v2.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['not a version', `x1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['empty key id', `v1..1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['key id of 33 characters', `v1.${'k'.repeat(33)}.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['key id with a space', `v1.k 1.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['timestamp of 9 digits', `v1.k2026a.176400000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['timestamp of 11 digits', `v1.k2026a.17640000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['negative timestamp', `v1.k2026a.-176400000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['nonce of 15 digits', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6.${STAMP32}`],
    ['uppercase nonce', `v1.k2026a.1764000000.9F2C4E7A1B3D5C6F.${STAMP32}`],
    ['stamp of 30 digits (under 128 bits)', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32.slice(2)}`],
    ['stamp of 33 digits (odd)', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}0`],
    ['stamp of 66 digits', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32.repeat(2)}00`],
    ['uppercase stamp', `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32.toUpperCase()}`],
    ['longer than 128 bytes', `v1.${'k'.repeat(200)}`],
  ];
  const cases: Case[] = parse.map(([name, input]) => {
    const r = attempt(() => p.parseEnvelope(input));
    return r.ok ? { name, op: 'parse', input, valid: true, envelope: r.value } : { name, op: 'parse', input, valid: false, error: r.error };
  });

  const env = `"moat_att":"${PLACEHOLDER}"`;
  const locate: Array<[string, string]> = [
    ['envelope last', `{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}],${env}}`],
    ['envelope as the only member', `{${env}}`],
    ['256-bit stamp', `{"model":"m",${env.replace('0'.repeat(32), '0'.repeat(64))}}`],
    ['no envelope', '{"model":"m","messages":[]}'],
    [
      'the envelope text inside a user message is not an envelope',
      `{"messages":[{"role":"user","content":"${env.replaceAll('"', '\\"')}"}]}`,
    ],
    [
      'the envelope text inside a user message, real envelope last',
      `{"messages":[{"role":"user","content":"see ,\\"moat_att\\":\\"${PLACEHOLDER}\\"}"}],${env}}`,
    ],
    ['a nested moat_att member is not an envelope', `{"metadata":{${env}},"model":"m"}`],
    ['a nested moat_att member last in a nested object, real envelope last', `{"metadata":{"a":1,${env}},${env}}`],
    [
      'user text ending like an anchor inside a nested object',
      `{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"metadata":{${env}}}`,
    ],
    ['envelope not last', `{${env},"model":"m"}`],
    ['envelope in the middle', `{"model":"m",${env},"max_tokens":1}`],
    ['two envelopes, one last', `{${env},"model":"m",${env}}`],
    ['whitespace before the closing brace', `{"model":"m",${env} }`],
    ['newline after the closing brace', `{"model":"m",${env}}\n`],
    ['space after the colon', `{"model":"m","moat_att": "${PLACEHOLDER}"}`],
    ['member name written with a unicode escape', `{"model":"m","moat\\u005fatt":"${PLACEHOLDER}"}`],
    ['escaped name early, anchored envelope last', `{"moat\\u005fatt":"x","model":"m",${env}}`],
    ['envelope value not a string', '{"model":"m","moat_att":1764000000}'],
    ['envelope value with an escape', `{"model":"m","moat_att":"v1.k2026a\\u002e1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}"}`],
    ['anchored envelope with a short stamp', `{"model":"m","moat_att":"v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(30)}"}`],
    ['anchored envelope with a bad nonce', `{"model":"m","moat_att":"v1.k2026a.1764000000.NONCE.${'0'.repeat(32)}"}`],
    ['anchored envelope of another version', `{"model":"m","moat_att":"v9.k2026a.1764000000.9f2c4e7a1b3d5c6f.${'0'.repeat(32)}"}`],
    ['multi-byte text before the envelope: offsets are bytes', `{"messages":[{"role":"user","content":"héllo 😀"}],${env}}`],
    ['empty object', '{}'],
    ['an array body is not an object', `[{${env}}]`],
    ['leading whitespace before the object is allowed', ` \n{"model":"m",${env}}`],
  ];
  for (const [name, body] of locate) {
    JSON.parse(body); // every locate case is valid JSON: validity is the caller's check
    const loc = p.locateEnvelope(p.utf8(body));
    const expected =
      loc.status === 'found'
        ? {
            status: 'found',
            envelope: loc.envelope,
            memberStart: loc.memberStart,
            valueStart: loc.valueStart,
            valueEnd: loc.valueEnd,
            stampStart: loc.stampStart,
            stampEnd: loc.stampEnd,
          }
        : loc.status === 'missing'
          ? { status: 'missing' }
          : { status: loc.status, error: loc.error.code };
    cases.push({ name, op: 'locate', body, ...expected });
  }

  const append: Array<[string, string, string]> = [
    ['append to a compact body', '{"model":"m","max_tokens":16}', PLACEHOLDER],
    ['append to an empty object', '{}', PLACEHOLDER],
    [
      'append keeps the prefix byte for byte',
      '{"system":[{"type":"text","text":"x-moat: v=1; cv=1.4.2;"}],"messages":[{"role":"user","content":"é😀"}]}',
      PLACEHOLDER,
    ],
    ['append refuses a body that already has an envelope', `{"model":"m",${env}}`, PLACEHOLDER],
    ['append refuses an array body', '[1,2]', PLACEHOLDER],
    ['append refuses trailing whitespace', '{"model":"m"} ', PLACEHOLDER],
    ['append refuses an unbalanced body', '{"model":"m"', PLACEHOLDER],
    ['append refuses a malformed envelope', '{"model":"m"}', 'v1.k.1.2.3'],
  ];
  for (const [name, body, envelope] of append) {
    const r = attempt(() => p.appendEnvelope(body, envelope));
    cases.push(
      r.ok
        ? { name, op: 'append', body, envelope, valid: true, result: r.value }
        : { name, op: 'append', body, envelope, valid: false, error: r.error },
    );
  }
  cases.push(...requestBoundEnvelopeCases());
  return cases;
}

/** 1.1.0: the `r1` scheme, whose stamp also covers the request (§4.1, §5.3). */
function requestBoundEnvelopeCases(): Case[] {
  const cases: Case[] = [];
  const parse: Array<[string, string]> = [
    ['r1: a request-bound envelope', `r1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['r1 at the 128-byte limit', `r1.${'k'.repeat(32)}.1764000000.9f2c4e7a1b3d5c6f.${STAMP32.repeat(2)}`],
    ['r2 is not a scheme', `r2.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['uppercase R1 is not a scheme', `R1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['v1r is not a scheme', `v1r.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['r1 with a bad nonce', `r1.k2026a.1764000000.9f2c4e7a1b3d5c6.${STAMP32}`],
  ];
  for (const [name, input] of parse) {
    const r = attempt(() => p.parseEnvelope(input));
    cases.push(
      r.ok ? { name, op: 'parse', input, valid: true, envelope: r.value } : { name, op: 'parse', input, valid: false, error: r.error },
    );
  }
  const body = `{"model":"m",${`"moat_att":"${R1_PLACEHOLDER}"`}}`;
  const loc = p.locateEnvelope(p.utf8(body));
  if (loc.status !== 'found') throw new Error('r1 locate case: not found');
  cases.push({
    name: 'r1: locate a request-bound envelope',
    op: 'locate',
    body,
    status: 'found',
    envelope: loc.envelope,
    memberStart: loc.memberStart,
    valueStart: loc.valueStart,
    valueEnd: loc.valueEnd,
    stampStart: loc.stampStart,
    stampEnd: loc.stampEnd,
  });
  cases.push({
    name: 'r1: append a request-bound placeholder',
    op: 'append',
    body: '{"model":"m","max_tokens":16}',
    envelope: R1_PLACEHOLDER,
    valid: true,
    result: p.appendEnvelope('{"model":"m","max_tokens":16}', R1_PLACEHOLDER),
  });
  return cases;
}

// ---------------------------------------------------------------------------------------
// stamp.json

// A public test key, bytes 0x00…0x1f: vectors must be reproducible, so no secret belongs here.
const TEST_KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => i)).toString('hex');
const TEST_KEY_2 = 'a0'.repeat(32);

function stampBody(extra: string, stampHex = 32): string {
  const envelope = p.placeholderEnvelope({ kid: 'k2026a', ts: 1764000000, nonce: '9f2c4e7a1b3d5c6f', stampHexLength: stampHex });
  return p.appendEnvelope(
    `{"model":"claude-test","max_tokens":64,"messages":[{"role":"user","content":${JSON.stringify(extra)}}]}`,
    envelope,
  );
}

function stampCases(): Case[] {
  const cases: Case[] = [];
  const compute: Array<[string, string, string]> = [
    ['128-bit stamp', TEST_KEY, stampBody('Hello, world')],
    ['256-bit stamp', TEST_KEY, stampBody('Hello, world', 64)],
    ['another key gives another stamp', TEST_KEY_2, stampBody('Hello, world')],
    ['the stamp covers the user text', TEST_KEY, stampBody('Hello, world!')],
    ['the stamp covers multi-byte text', TEST_KEY, stampBody('héllo 😀 — 中文')],
    ['user text containing the envelope text', TEST_KEY, stampBody(`,"moat_att":"${PLACEHOLDER}"}`)],
    ['key of 64 bytes', 'ff'.repeat(64), stampBody('x')],
    ['key shorter than 32 bytes is refused', 'ab'.repeat(31), stampBody('x')],
  ];
  for (const [name, key, body] of compute) {
    const loc = p.locateEnvelope(p.utf8(body));
    if (loc.status !== 'found') throw new Error(`stamp case ${name}: envelope not found`);
    const r = attempt(() => p.computeStamp(fromHex(key), p.utf8(body), loc.stampStart, loc.stampEnd));
    if (!r.ok) {
      cases.push({ name, op: 'compute', key, body, valid: false, error: r.error });
      continue;
    }
    const bytes = p.utf8(body);
    const stamped = Buffer.concat([bytes.subarray(0, loc.stampStart), Buffer.from(r.value), bytes.subarray(loc.stampEnd)]).toString('utf8');
    // Independent check with node:crypto: HMAC over the body with the placeholder in place.
    const reference = createHmac('sha256', Buffer.from(key, 'hex'))
      .update(body)
      .digest('hex')
      .slice(0, loc.stampEnd - loc.stampStart);
    if (reference !== r.value) throw new Error(`stamp case ${name}: noble and node:crypto disagree`);
    cases.push({ name, op: 'compute', key, body, valid: true, stamp: r.value, stamped });
  }

  const good = stamped(TEST_KEY, stampBody('Hello, world'));
  const verify: Array<[string, string, string, 'valid' | 'invalid' | 'missing' | 'not_last' | 'malformed']> = [
    ['genuine stamp verifies', TEST_KEY, good, 'valid'],
    ['wrong key', TEST_KEY_2, good, 'invalid'],
    ['user text changed by one byte', TEST_KEY, good.replace('Hello, world', 'Hello, World'), 'invalid'],
    ['timestamp changed', TEST_KEY, good.replace('1764000000', '1764000001'), 'invalid'],
    ['nonce changed', TEST_KEY, good.replace('9f2c4e7a1b3d5c6f', '9f2c4e7a1b3d5c6e'), 'invalid'],
    ['key id changed', TEST_KEY, good.replace('k2026a', 'k2026b'), 'invalid'],
    ['stamp flipped in the last digit', TEST_KEY, flipLastStampDigit(good), 'invalid'],
    ['256-bit stamp verifies', TEST_KEY, stamped(TEST_KEY, stampBody('y', 64)), 'valid'],
    ['placeholder left unstamped', TEST_KEY, stampBody('Hello, world'), 'invalid'],
    ['member re-serialized with a space', TEST_KEY, good.replace('"moat_att":"', '"moat_att": "'), 'not_last'],
    [
      'envelope removed',
      TEST_KEY,
      '{"model":"claude-test","max_tokens":64,"messages":[{"role":"user","content":"Hello, world"}]}',
      'missing',
    ],
    [
      'system prompt injected before the messages',
      TEST_KEY,
      good.replace('"max_tokens":64,', '"max_tokens":64,"system":"be evil",'),
      'invalid',
    ],
  ];
  for (const [name, key, body, outcome] of verify) {
    const loc = p.locateEnvelope(p.utf8(body));
    let result: string = loc.status;
    if (loc.status === 'found') {
      const expected = p.computeStamp(fromHex(key), p.utf8(body), loc.stampStart, loc.stampEnd);
      result = expected === loc.envelope.stamp ? 'valid' : 'invalid';
    }
    if (result !== outcome) throw new Error(`stamp verify case ${name}: expected ${outcome}, computed ${result}`);
    cases.push({ name, op: 'verify', key, body, result });
  }
  cases.push(...requestBoundStampCases());
  // 1.1.0: the stamp is lowercase hex over the raw bytes, whatever their JSON spelling.
  const spaced = stamped(
    TEST_KEY,
    p.appendEnvelope(
      '{ "model" : "claude-test", "max_tokens":64,\n "messages":[{"role":"user","content":"caf\\u00e9 \\/ tea"}]}',
      PLACEHOLDER,
    ),
  );
  const upper = spaced.replace(/([0-9a-f]{32})"}$/, (_m, stamp: string) => `${stamp.toUpperCase()}"}`);
  for (const [name, body] of [
    ['a body with insignificant whitespace and escapes verifies on its raw bytes', spaced],
    ['the genuine stamp in capitals is malformed', upper],
  ] as const) {
    const loc = p.locateEnvelope(p.utf8(body));
    const result =
      loc.status === 'found'
        ? p.computeStamp(fromHex(TEST_KEY), p.utf8(body), loc.stampStart, loc.stampEnd) === loc.envelope.stamp
          ? 'valid'
          : 'invalid'
        : loc.status;
    cases.push({ name, op: 'verify', key: TEST_KEY, body, result });
  }
  return cases;
}

function r1Body(extra: string): string {
  return p.appendEnvelope(
    `{"model":"claude-test","max_tokens":64,"messages":[{"role":"user","content":${JSON.stringify(extra)}}]}`,
    R1_PLACEHOLDER,
  );
}

/** 1.1.0: authority and credential extraction, the request base, and `r1` stamps (§5.3). */
function requestBoundStampCases(): Case[] {
  const cases: Case[] = [];
  const authority: Array<[string, string]> = [
    ['authority: host is lowercased', 'https://API.Example.COM/v1/messages'],
    ['authority: the default https port is left out', 'https://api.example.com:443/v1/messages'],
    ['authority: the default http port is left out', 'http://api.example.com:80/v1/messages'],
    ['authority: another port is kept', 'http://127.0.0.1:8787/v1/messages'],
    ['authority: 443 over http is not a default port', 'http://api.example.com:443/v1/messages'],
    ['authority: leading zeros of a port are dropped', 'http://api.example.com:08787/'],
    ['authority: IPv6 literal in brackets', 'http://[::1]:8787/v1/messages'],
    ['authority: IPv6 literal is compressed', 'http://[0:0:0:0:0:0:0:1]/'],
    ['authority: user info is not part of it', 'https://user:secret@api.example.com/v1/messages'],
    ['authority: an international name in punycode', 'https://bücher.example/v1/messages'],
    ['authority: a trailing dot is kept', 'https://api.example.com./v1/messages'],
    ['authority: percent-encoded host is decoded', 'https://api%2Eexample.com/v1/messages'],
  ];
  for (const [name, url] of authority) cases.push({ name, op: 'authority', url, authority: p.authorityOf(url) });
  // The hard cases of the WHATWG URL Standard (§5.3): each answer as that standard gives it.
  const hard: Array<[string, string]> = [
    ['authority: a backslash ends the authority like a slash', 'https://api.example.com\\v1\\messages'],
    ['authority: any run of slashes and backslashes after the scheme', 'https:\\\\/api.example.com/v1'],
    ['authority: the last @ ends the user info', 'https://a@b@api.example.com/v1'],
    ['authority: IPv4 in hexadecimal and short forms', 'http://0x7f.1/v1'],
    ['authority: IPv4 in octal', 'http://0177.0.0.01:8080/'],
    ['authority: an IPv4-mapped IPv6 address', 'http://[::ffff:127.0.0.1]/'],
    ['authority: an empty port is no port', 'https://api.example.com:/v1'],
    ['authority: a port over 65535 is refused', 'https://api.example.com:65536/v1'],
    ['authority: a port with letters is refused', 'https://api.example.com:44x/v1'],
    ['authority: an IPv4 part over 255 is refused', 'http://1.2.3.256/'],
    ['authority: a percent-encoded space is refused', 'https://api%20example.com/'],
    ['authority: another scheme is refused', 'ftp://api.example.com/'],
  ];
  for (const [name, url] of hard) cases.push(authorityCase(name, url));

  const credential: Array<[string, Array<[string, string]>]> = [
    ['credential: x-api-key', [['x-api-key', 'sk-ant-test-0001']]],
    ['credential: bearer token', [['authorization', 'Bearer sk-ant-oat-0002']]],
    ['credential: the bearer scheme is case-insensitive', [['authorization', 'bearer tok']]],
    [
      'credential: x-api-key wins over authorization',
      [
        ['authorization', 'Bearer tok'],
        ['x-api-key', 'key'],
      ],
    ],
    [
      'credential: an empty x-api-key falls back to the bearer token',
      [
        ['x-api-key', ''],
        ['authorization', 'Bearer tok'],
      ],
    ],
    ['credential: surrounding spaces are trimmed', [['x-api-key', '  key  ']]],
    ['credential: basic authorization is no credential', [['authorization', 'Basic dXNlcjpwdw==']]],
    ['credential: none', []],
  ];
  for (const [name, headers] of credential) {
    const map = new Map(headers);
    cases.push({ name, op: 'credential', headers, credential: p.credentialOf((h) => map.get(h)) });
  }

  const base: Array<[string, p.RequestComponents]> = [
    ['request base', REQUEST],
    ['request base without a credential', { ...REQUEST, credential: '' }],
    ['request base: multi-byte credential counts in bytes', { ...REQUEST, credential: 'clé-😀' }],
    ['request base refuses an uppercase authority', { ...REQUEST, authority: 'API.example.com' }],
    ['request base refuses a path with a query', { ...REQUEST, path: '/v1/messages?beta=true' }],
    ['request base refuses a relative path', { ...REQUEST, path: 'v1/messages' }],
    ['request base refuses a method with a space', { ...REQUEST, method: 'PO ST' }],
    ['request base refuses an empty authority', { ...REQUEST, authority: '' }],
  ];
  for (const [name, request] of base) {
    const r = attempt(() => hex(p.requestBase(request)));
    if (r.ok) {
      // Independent check: lp() spelled out with node:crypto's SHA-256.
      const items = [
        'moat-req/1',
        request.method,
        request.authority,
        request.path,
        createHash('sha256').update(request.credential).digest('hex'),
      ];
      const reference = Buffer.concat(
        items.map((item) => {
          const bytes = Buffer.from(item, 'utf8');
          const length = Buffer.alloc(4);
          length.writeUInt32BE(bytes.length);
          return Buffer.concat([length, bytes]);
        }),
      ).toString('hex');
      if (reference !== r.value) throw new Error(`request base case ${name}: reference disagrees`);
    }
    cases.push(
      r.ok
        ? { name, op: 'request_base', request, valid: true, base: r.value }
        : { name, op: 'request_base', request, valid: false, error: r.error },
    );
  }

  const compute: Array<[string, string, p.RequestComponents]> = [
    ['r1 stamp over body and request', r1Body('Hello, world'), REQUEST],
    ['r1 stamp for another path', r1Body('Hello, world'), { ...REQUEST, path: '/v1/messages/count_tokens' }],
    ['r1 stamp for another credential', r1Body('Hello, world'), { ...REQUEST, credential: 'sk-ant-test-0002' }],
  ];
  for (const [name, body, request] of compute) {
    const bytes = p.utf8(body);
    const loc = p.locateEnvelope(bytes);
    if (loc.status !== 'found') throw new Error(`stamp case ${name}: envelope not found`);
    const stamp = p.computeStamp(fromHex(TEST_KEY), bytes, loc.stampStart, loc.stampEnd, request);
    const reference = createHmac('sha256', Buffer.from(TEST_KEY, 'hex'))
      .update(p.requestBase(request))
      .update(body)
      .digest('hex')
      .slice(0, loc.stampEnd - loc.stampStart);
    if (reference !== stamp) throw new Error(`stamp case ${name}: reference disagrees`);
    cases.push({ name, op: 'compute', key: TEST_KEY, body, request, valid: true, stamp, stamped: stamped(TEST_KEY, body, request) });
  }

  const good = stamped(TEST_KEY, r1Body('Hello, world'), REQUEST);
  const goodV1 = stamped(TEST_KEY, stampBody('Hello, world'));
  const verify: Array<[string, string, p.RequestComponents, 'valid' | 'invalid']> = [
    ['r1: genuine request verifies', good, REQUEST, 'valid'],
    ['r1: another path', good, { ...REQUEST, path: '/v1/complete' }, 'invalid'],
    ['r1: another host', good, { ...REQUEST, authority: 'relay.example.net' }, 'invalid'],
    ['r1: another port', good, { ...REQUEST, authority: 'api.example.com:8443' }, 'invalid'],
    ['r1: another API key', good, { ...REQUEST, credential: 'sk-ant-relay-9999' }, 'invalid'],
    ['r1: no API key', good, { ...REQUEST, credential: '' }, 'invalid'],
    ['r1: another method', good, { ...REQUEST, method: 'PUT' }, 'invalid'],
    [
      'r1 relabelled v1 (downgrade) does not verify',
      `${good.slice(0, good.indexOf('"moat_att":"r1.'))}"moat_att":"v1.${good.slice(good.indexOf('"moat_att":"r1.') + 15)}`,
      REQUEST,
      'invalid',
    ],
    ['v1 stamp ignores the request', goodV1, { ...REQUEST, credential: 'anything' }, 'valid'],
  ];
  for (const [name, body, request, outcome] of verify) {
    const bytes = p.utf8(body);
    const loc = p.locateEnvelope(bytes);
    if (loc.status !== 'found') throw new Error(`stamp verify case ${name}: not found`);
    const expected = p.computeStamp(
      fromHex(TEST_KEY),
      bytes,
      loc.stampStart,
      loc.stampEnd,
      loc.envelope.binding === 'request' ? request : undefined,
    );
    const result = expected === loc.envelope.stamp ? 'valid' : 'invalid';
    if (result !== outcome) throw new Error(`stamp verify case ${name}: expected ${outcome}, computed ${result}`);
    cases.push({ name, op: 'verify', key: TEST_KEY, body, request, result });
  }
  return cases;
}

function flipLastStampDigit(body: string): string {
  const i = body.length - 3;
  const digit = body[i] === '0' ? '1' : '0';
  return body.slice(0, i) + digit + body.slice(i + 1);
}

// ---------------------------------------------------------------------------------------
// fingerprint.json

function userText(content: unknown): unknown {
  return { model: 'm', max_tokens: 1, messages: [{ role: 'user', content }] };
}

function fingerprintCases(): Case[] {
  const salt = 'moat-test-salt';
  const version = '1.4.2';
  const list: Array<[string, unknown, string?, string?]> = [
    ['ASCII text', userText('Hello, how are you doing today?')],
    ['empty message', userText('')],
    ['shorter than 5 code points: all three missing', userText('Hey')],
    ['exactly 5 code points: index 4 present', userText('abcde')],
    ['exactly 8 code points: indices 4 and 7', userText('abcdefgh')],
    ['exactly 20 code points: index 20 missing', userText('abcdefghijklmnopqrst')],
    ['exactly 21 code points: all present', userText('abcdefghijklmnopqrstu')],
    ['astral emoji before index 4 shifts by code points, not UTF-16 units', userText('😀😀😀😀abcdefghijklmnopqrstuvwxyz')],
    ['astral characters at the sampled indices', userText('0123😀56𝄞89012345678901🎉3')],
    ['ZWJ emoji sequence before index 20 counts each code point', userText('I 👩‍👩‍👧‍👦 love this family photo, really')],
    ['flag emoji (regional indicators) count as two code points', userText('Hi 🇩🇪🇫🇷 guys, how is it going now?')],
    ['combining mark is its own code point', userText('cafe\u0301 au lait, s’il vous plaît')],
    ['precomposed é differs from e + combining acute', userText('café au lait, s’il vous plaît')],
    ['CJK text', userText('你好，世界！这是一个测试消息，用于验证指纹算法。')],
    ['lone high surrogate at index 4 is read as U+FFFD', userText('abcd\ud800efghijklmnopqrstuvwxyz')],
    ['lone low surrogate at index 7', userText('abcdefg\udc00ijklmnopqrstuvwxyz')],
    ['reversed surrogate pair is two code points', userText('abcd\udc00\ud800fghijklmnopqrstuvwxyz')],
    ['NUL and control characters are ordinary code points', userText('a\u0000b\tc\nd\re\u0001fghijklmnopqrstu')],
    ['text block content', userText([{ type: 'text', text: 'Hello, how are you doing today?' }])],
    [
      'first text block after an image block',
      userText([
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } },
        { type: 'text', text: 'Describe this image in detail please' },
        { type: 'text', text: 'ignored second block' },
      ]),
    ],
    [
      'content blocks without a text block',
      userText([{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } }]),
    ],
    ['empty content array', userText([])],
    [
      'text block whose text is not a string',
      userText([
        { type: 'text', text: 42 },
        { type: 'text', text: 'second' },
      ]),
    ],
    ['content of another type', userText(42)],
    ['no messages member', { model: 'm' }],
    ['messages not an array', { model: 'm', messages: 'hello there, friend of mine' }],
    ['no user message', { model: 'm', messages: [{ role: 'assistant', content: 'I am the assistant speaking first' }] }],
    [
      'first user message counts, not the last',
      {
        model: 'm',
        messages: [
          { role: 'user', content: 'first message here, long enough' },
          { role: 'assistant', content: 'ok' },
          { role: 'user', content: 'second message, also long enough' },
        ],
      },
    ],
    [
      'assistant message before the first user message is skipped',
      {
        model: 'm',
        messages: [
          { role: 'assistant', content: 'prefill from the assistant side' },
          { role: 'user', content: 'the actual user question text' },
        ],
      },
    ],
    [
      'first user message holds only a tool_result: empty text',
      {
        model: 'm',
        messages: [
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't1', content: 'result text long enough' }] },
          { role: 'user', content: 'later user text long enough' },
        ],
      },
    ],
    [
      'non-object entries in messages are skipped',
      { model: 'm', messages: [null, 'x', { role: 'user', content: 'Hello, how are you doing today?' }] },
    ],
    [
      'the system prompt does not count',
      { model: 'm', system: 'You are a helpful assistant with a long prompt', messages: [{ role: 'user', content: 'Hey' }] },
    ],
    ['request not an object', 'just a string'],
    ['non-ASCII salt and version', userText('Hello, how are you doing today?'), 'sel-ünïcode-🧂', '2.0.0-β'],
    ['empty salt', userText('Hello, how are you doing today?'), '', '1.4.2'],
    ['another client version changes the fingerprint', userText('Hello, how are you doing today?'), salt, '1.4.3'],
  ];
  return list.map(([name, request, s = salt, v = version]) => {
    const text = p.firstUserText(request);
    return {
      name,
      op: 'fingerprint',
      request,
      salt: s,
      version: v,
      text,
      chars: p.fingerprintChars(text),
      fp: p.fingerprintRequest(request, { salt: s, version: v }),
    };
  });
}

// ---------------------------------------------------------------------------------------
// signature.json

// A public test key spelled out in ASCII, for the same reason.
const HS_KEY = Buffer.from('Moat-test-signing-key-not-a-secret').toString('hex');
// Derived from a public label so no private key sits in the repository: anyone can recompute it.
const ED_SEED = createHash('sha256').update('moat test-vector Ed25519 seed: public, never a deployment key').digest('hex');

function signatureCases(): Case[] {
  const cases: Case[] = [];
  const hsSig = Buffer.alloc(32, 7);
  const edSig = Buffer.alloc(64, 9);
  const parse: Array<[string, unknown]> = [
    ['hs256, key scope', `ms1.hs256.s2026a.k.${hsSig.toString('base64url')}`],
    ['ed25519, conversation scope', `ms1.ed25519.ed1.c.${edSig.toString('base64url')}`],
    ['not a string', 12],
    ['wrong prefix', `ms2.hs256.s2026a.k.${hsSig.toString('base64url')}`],
    ['four parts', `ms1.hs256.k.${hsSig.toString('base64url')}`],
    ['unknown algorithm', `ms1.rs256.s2026a.k.${hsSig.toString('base64url')}`],
    ['uppercase algorithm', `ms1.HS256.s2026a.k.${hsSig.toString('base64url')}`],
    ['empty key id', `ms1.hs256..k.${hsSig.toString('base64url')}`],
    ['unknown scope', `ms1.hs256.s2026a.x.${hsSig.toString('base64url')}`],
    ['standard base64 with padding', `ms1.hs256.s2026a.k.${hsSig.toString('base64')}`],
    ['hs256 signature of 31 bytes', `ms1.hs256.s2026a.k.${Buffer.alloc(31, 7).toString('base64url')}`],
    ['ed25519 signature of 32 bytes', `ms1.ed25519.ed1.k.${hsSig.toString('base64url')}`],
    ['non-canonical trailing bits', `ms1.hs256.s2026a.k.${hsSig.toString('base64url').slice(0, -1)}9`],
    ['longer than 256 characters', `ms1.hs256.s2026a.k.${'A'.repeat(300)}`],
  ];
  for (const [name, input] of parse) {
    const r = attempt(() => p.parseBlockSignature(input));
    cases.push(
      r.ok
        ? {
            name,
            op: 'parse',
            input,
            valid: true,
            signature: { alg: r.value.alg, kid: r.value.kid, scope: r.value.scope, sig: hex(r.value.sig) },
          }
        : { name, op: 'parse', input, valid: false, error: r.error },
    );
  }

  const history = [
    { role: 'user', content: 'What is 2 + 2?' },
    {
      role: 'assistant',
      content: [
        { type: 'thinking', thinking: 'Simple.', signature: 'x' },
        { type: 'text', text: '4' },
      ],
    },
    {
      role: 'user',
      content: [
        { type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: 'ok' }, { type: 'image' }] },
        { type: 'text', text: 'And 3 + 3?' },
      ],
    },
  ];
  const digestList: Array<[string, unknown[]]> = [
    ['empty conversation', []],
    ['one user message', [history[0]]],
    ['string content equals one text block', [{ role: 'user', content: [{ type: 'text', text: 'What is 2 + 2?' }] }]],
    [
      'extra JSON members do not change the digest',
      [{ role: 'user', content: [{ type: 'text', text: 'What is 2 + 2?', cache_control: { type: 'ephemeral' } }], id: 'x' }],
    ],
    ['full history with thinking, tool_result and text', history],
    [
      'tool_use binds id and name only',
      [{ role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] }],
    ],
    ['unknown block types bind their type only', [{ role: 'user', content: [{ type: 'document', source: {} }] }]],
    ['non-object message and block', [null, { role: 'user', content: [null, 'x'] }]],
    [
      "Moat's signature in front of redacted_thinking data does not change the digest",
      [{ role: 'assistant', content: [{ type: 'redacted_thinking', data: `ms1.hs256.s2026a.k.${'A'.repeat(43)}~EmwKAhgBEgy3` }] }],
    ],
    ['the same conversation without it', [{ role: 'assistant', content: [{ type: 'redacted_thinking', data: 'EmwKAhgBEgy3' }] }]],
  ];
  for (const [name, messages] of digestList) {
    cases.push({ name, op: 'conversation_digest', messages, digest: p.conversationDigest(messages) });
  }

  const thinking = { type: 'thinking', thinking: 'Let me add the numbers: 2 + 2 = 4.', signature: '' };
  const redacted = { type: 'redacted_thinking', data: 'EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP' };
  const connector = { type: 'connector_text', text: 'Text from a connector, with unicode: é 😀' };
  const ctxK = { alg: 'hs256' as const, kid: 's2026a', apiKeyId: 'key_7f3a', model: 'claude-test-1' };
  const ctxC = { ...ctxK, context: p.conversationDigest(history) };
  const inputs: Array<[string, unknown, p.SigningContext]> = [
    ['thinking block, key scope', thinking, ctxK],
    ['thinking block, conversation scope', thinking, ctxC],
    ['redacted_thinking signs its data', redacted, ctxK],
    [
      "redacted_thinking signs its data without Moat's signature in front",
      { ...redacted, data: `ms1.hs256.s2026a.k.${'A'.repeat(43)}~${redacted.data}` },
      ctxK,
    ],
    ["a '~' past 256 characters is part of the data", { ...redacted, data: `ms1.${'x'.repeat(300)}~${redacted.data}` }, ctxK],
    ['connector_text signs its text', connector, ctxK],
    ['another model changes the input', thinking, { ...ctxK, model: 'claude-test-2' }],
    ['another API key changes the input', thinking, { ...ctxK, apiKeyId: 'key_0000' }],
    ['empty thinking text', { type: 'thinking', thinking: '' }, ctxK],
    ['text blocks are not signed', { type: 'text', text: 'hi' }, ctxK],
    ['thinking without a string thinking member', { type: 'thinking', thinking: 5 }, ctxK],
    ['not an object', 'thinking', ctxK],
  ];
  for (const [name, block, ctx] of inputs) {
    const r = attempt(() => p.signingInput(block, ctx));
    cases.push(
      r.ok
        ? { name, op: 'signing_input', block, context: ctx, valid: true, input: hex(r.value) }
        : { name, op: 'signing_input', block, context: ctx, valid: false, error: r.error },
    );
  }

  const signList: Array<[string, unknown, p.SigningContext]> = [
    ['hs256 thinking, key scope', thinking, ctxK],
    ['hs256 thinking, conversation scope', thinking, ctxC],
    ['hs256 redacted_thinking', redacted, ctxK],
    ['hs256 connector_text', connector, ctxK],
  ];
  for (const [name, block, ctx] of signList) {
    const mac = createHmac('sha256', Buffer.from(HS_KEY, 'hex')).update(p.signingInput(block, ctx)).digest();
    const signature = p.serializeBlockSignature({
      alg: 'hs256',
      kid: ctx.kid,
      scope: ctx.context === undefined ? 'k' : 'c',
      sig: new Uint8Array(mac),
    });
    cases.push({ name, op: 'sign_hs256', key: HS_KEY, block, context: ctx, input: hex(p.signingInput(block, ctx)), signature });
  }

  const seed = fromHex(ED_SEED);
  const publicKey = hex(ed25519.getPublicKey(seed));
  const edCtx = { ...ctxK, alg: 'ed25519' as const, kid: 'ed2026a' };
  const edList: Array<
    [string, unknown, p.SigningContext, (sig: string) => { block: unknown; context: p.SigningContext; signature: string }]
  > = [
    ['ed25519 thinking verifies', thinking, edCtx, (signature) => ({ block: thinking, context: edCtx, signature })],
    [
      'ed25519 connector_text, conversation scope, verifies',
      connector,
      { ...edCtx, context: ctxC.context },
      (signature) => ({ block: connector, context: { ...edCtx, context: ctxC.context }, signature }),
    ],
    [
      'ed25519 signature presented for another model fails',
      thinking,
      edCtx,
      (signature) => ({ block: thinking, context: { ...edCtx, model: 'claude-test-2' }, signature }),
    ],
    [
      'ed25519 signature presented for another API key fails',
      thinking,
      edCtx,
      (signature) => ({ block: thinking, context: { ...edCtx, apiKeyId: 'key_0000' }, signature }),
    ],
    [
      'ed25519 thinking text edited fails',
      thinking,
      edCtx,
      (signature) => ({ block: { ...thinking, thinking: `${thinking.thinking} ` }, context: edCtx, signature }),
    ],
  ];
  for (const [name, block, ctx, present] of edList) {
    const sig = ed25519.sign(p.signingInput(block, ctx), seed);
    const signature = p.serializeBlockSignature({ alg: 'ed25519', kid: ctx.kid, scope: ctx.context === undefined ? 'k' : 'c', sig });
    const shown = present(signature);
    const input = p.signingInput(shown.block, shown.context);
    const valid = ed25519.verify(p.parseBlockSignature(signature).sig, input, fromHex(publicKey));
    cases.push({ name, op: 'verify_ed25519', publicKey, block: shown.block, context: shown.context, signature, input: hex(input), valid });
  }
  // 1.1.0: an empty sig part has no wrong character, only the wrong length.
  for (const [name, input] of [
    ['empty sig part', 'ms1.hs256.s2026a.k.'],
    ['sig part of one character', 'ms1.hs256.s2026a.k.A'],
  ] as const) {
    const r = attempt(() => p.parseBlockSignature(input));
    if (r.ok) throw new Error(`signature case ${name}: parsed`);
    cases.push({ name, op: 'parse', input, valid: false, error: r.error });
  }
  return cases;
}

// ---------------------------------------------------------------------------------------
// gateway.json

function gatewayCases(): Case[] {
  const cases: Case[] = [];
  const detect: Array<[string, Array<[string, string]>, string?]> = [
    [
      'LiteLLM response headers',
      [
        ['content-type', 'application/json'],
        ['x-litellm-call-id', 'abc'],
        ['x-litellm-model-id', 'm1'],
      ],
    ],
    ['header names are case-insensitive', [['X-LiteLLM-Version', '1.50.0']]],
    ['Helicone', [['Helicone-Id', 'x']]],
    ['Portkey', [['x-portkey-trace-id', 't']]],
    ['Cloudflare AI Gateway', [['cf-aig-cache-status', 'MISS']]],
    [
      'Kong',
      [
        ['X-Kong-Upstream-Latency', '12'],
        ['x-kong-proxy-latency', '1'],
      ],
    ],
    ['Braintrust', [['x-bt-used-endpoint', 'anthropic']]],
    [
      'two gateways at once, in table order',
      [
        ['x-portkey-trace-id', 't'],
        ['x-litellm-call-id', 'c'],
      ],
    ],
    [
      'a prefix must match at the start',
      [
        ['x-my-x-litellm-thing', '1'],
        ['xhelicone-id', '1'],
      ],
    ],
    [
      'plain responses match nothing',
      [
        ['content-type', 'text/event-stream'],
        ['request-id', 'req_1'],
        ['anthropic-ratelimit-requests-limit', '50'],
      ],
    ],
    [
      'duplicate header names count once',
      [
        ['x-litellm-call-id', 'a'],
        ['X-LiteLLM-Call-Id', 'b'],
      ],
    ],
    ['Databricks workspace host', [], 'https://dbc-1234.cloud.databricks.com/serving-endpoints'],
    ['Azure Databricks host with port', [], 'https://adb-1.2.azuredatabricks.net:443/serving-endpoints/claude'],
    ['GCP Databricks host, uppercase, trailing dot', [], 'https://X.GCP.DATABRICKS.COM./v1'],
    ['a suffix with a dot matches the bare domain too', [], 'https://helicone.ai'],
    ['a suffix must match at a label boundary', [], 'https://evilhelicone.ai/v1'],
    ['Cloudflare gateway host matches only itself', [], 'https://gateway.ai.cloudflare.com/v1/acct/gw/anthropic'],
    ['a subdomain of an exact host does not match', [], 'https://x.gateway.ai.cloudflare.com/v1'],
    ['OpenRouter', [], 'https://openrouter.ai/api/v1'],
    ['the vendor API matches nothing', [], 'https://api.anthropic.com'],
    ['host and header evidence combine', [['helicone-id', '1']], 'https://oai.helicone.ai/v1'],
    ['bare host without a scheme', [], 'dbc-1.cloud.databricks.com:8443'],
    [
      'LiteLLM passes upstream headers through as llm_provider-*',
      [
        ['llm_provider-request-id', 'req_1'],
        ['llm_provider-anthropic-ratelimit-requests-limit', '50'],
      ],
    ],
    [
      'Amazon API Gateway',
      [
        ['x-amzn-requestid', 'r'],
        ['x-amz-apigw-id', 'abc='],
      ],
    ],
    ['Snowflake Cortex host', [], 'https://myorg-myaccount.snowflakecomputing.com/api/v2/cortex'],
    ['Vercel AI Gateway host', [], 'https://ai-gateway.vercel.sh/v1'],
  ];
  for (const [name, headers, baseUrl] of detect) {
    const detections = p.detectGateways({ headers, ...(baseUrl === undefined ? {} : { baseUrl }) });
    cases.push({ name, op: 'detect', headers, ...(baseUrl === undefined ? {} : { baseUrl }), detections });
  }
  cases.push({ name: 'the built-in table is valid', op: 'table', table: p.GATEWAY_RULES, valid: true });
  const tables: Array<[string, unknown]> = [
    [
      'a minimal table',
      {
        version: 1,
        revision: '2026.12.01.2',
        rules: [{ id: 'acme', name: 'Acme Gateway', headerPrefixes: ['x-acme-'], hostSuffixes: ['.acme.example'] }],
      },
    ],
    ['not an object', [1]],
    ['unknown table member', { version: 1, revision: '2026.12.01', rules: [], extra: 1 }],
    ['table version 2', { version: 2, revision: '2026.12.01', rules: [] }],
    ['bad revision', { version: 1, revision: '2026-12-01', rules: [] }],
    [
      'rule with regular-expression characters',
      { version: 1, revision: '2026.12.01', rules: [{ id: 'x', name: 'X', headerPrefixes: ['x-.*'], hostSuffixes: [] }] },
    ],
    [
      'rule with an uppercase prefix',
      { version: 1, revision: '2026.12.01', rules: [{ id: 'x', name: 'X', headerPrefixes: ['X-Acme-'], hostSuffixes: [] }] },
    ],
    [
      'rule without patterns',
      { version: 1, revision: '2026.12.01', rules: [{ id: 'x', name: 'X', headerPrefixes: [], hostSuffixes: [] }] },
    ],
    [
      'duplicate rule ids',
      {
        version: 1,
        revision: '2026.12.01',
        rules: [
          { id: 'x', name: 'X', headerPrefixes: ['x-a-'], hostSuffixes: [] },
          { id: 'x', name: 'Y', headerPrefixes: ['x-b-'], hostSuffixes: [] },
        ],
      },
    ],
    [
      'host suffix with a wildcard',
      { version: 1, revision: '2026.12.01', rules: [{ id: 'x', name: 'X', headerPrefixes: [], hostSuffixes: ['*.acme.example'] }] },
    ],
    [
      'unknown rule member',
      { version: 1, revision: '2026.12.01', rules: [{ id: 'x', name: 'X', headerPrefixes: ['x-a-'], hostSuffixes: [], regex: '.*' }] },
    ],
    [
      'too many rules',
      {
        version: 1,
        revision: '2026.12.01',
        rules: Array.from({ length: 257 }, (_, i) => ({ id: `r${i}`, name: 'R', headerPrefixes: ['x-r-'], hostSuffixes: [] })),
      },
    ],
  ];
  for (const [name, table] of tables) {
    const r = attempt(() => p.parseGatewayRuleTable(table));
    cases.push(r.ok ? { name, op: 'table', table, valid: true } : { name, op: 'table', table, valid: false, error: r.error });
  }
  // 1.1.0: evidence is sorted by UTF-8 bytes: U+FF5E (EF BD 9E) before U+1F600 (F0 9F 98 80),
  // which UTF-16 code units would order the other way round.
  const sortHeaders: Array<[string, string]> = [
    ['x-litellm-\u{1F600}', '1'],
    ['x-litellm-\uFF5E', '1'],
    ['x-litellm-z', '1'],
  ];
  // 1.1.0: base URL hosts by the WHATWG URL Standard (§9).
  for (const [name, baseUrl] of [
    ['host after user info and a backslash', 'https://user@OAI.Helicone.AI\\v1'],
    ['a host with a trailing dot and a port', 'https://oai.helicone.ai.:8443/v1'],
    ['a non-http scheme has no host', 'ftp://oai.helicone.ai/'],
    ['a bare host is trimmed and lowercased', ' OAI.HELICONE.AI:443 '],
    ['a bare host with a non-ASCII capital is not lowercased beyond ASCII', 'HELİCONE.AI'],
  ] as const)
    cases.push({ name, op: 'detect', headers: [], baseUrl, detections: p.detectGateways({ headers: [], baseUrl }) });
  cases.push({
    name: 'evidence is sorted by UTF-8 bytes, not UTF-16 code units',
    op: 'detect',
    headers: sortHeaders,
    detections: p.detectGateways({ headers: sortHeaders }),
  });
  return cases;
}

// ---------------------------------------------------------------------------------------
// negotiation.json

function negotiationCases(): Case[] {
  const cases: Case[] = [];
  const docs: Array<[string, unknown]> = [
    [
      'full discovery document',
      {
        moat: {
          versions: [1],
          features: ['attribution', 'attestation', 'fingerprint', 'anti_distillation', 'signed_blocks', 'telemetry'],
          telemetry: '/v1/telemetry',
          flags: '/api/features/moat',
        },
      },
    ],
    ['unknown features are dropped', { moat: { versions: [1, 2], features: ['attestation', 'quantum_stamps'] } }],
    ['features may be omitted', { moat: { versions: [1] } }],
    ['unknown members are ignored', { moat: { versions: [1], features: [], future: { x: 1 } }, other: true }],
    ['no moat member', { versions: [1] }],
    ['moat is an array', { moat: [1] }],
    ['empty versions', { moat: { versions: [] } }],
    ['version zero', { moat: { versions: [0] } }],
    ['version as a string', { moat: { versions: ['1'] } }],
    ['features not strings', { moat: { versions: [1], features: [1] } }],
    ['telemetry not an absolute path', { moat: { versions: [1], telemetry: 'https://elsewhere.example/t' } }],
    ['flags a network-path reference (another host)', { moat: { versions: [1], flags: '//elsewhere.example/f' } }],
  ];
  for (const [name, input] of docs) {
    const r = attempt(() => p.parseDiscovery(input));
    cases.push(
      r.ok
        ? { name, op: 'discovery', input, valid: true, discovery: r.value }
        : { name, op: 'discovery', input, valid: false, error: r.error },
    );
  }
  const headers: Array<[string, string | null]> = [
    ['one version', '1'],
    ['two versions with spaces', '1, 2'],
    ['absent header', null],
    ['empty header', ''],
    ['garbage makes the whole header empty', '1, two'],
    ['leading zero is malformed', '01'],
  ];
  for (const [name, input] of headers) cases.push({ name, op: 'version_header', input, versions: p.parseVersionHeader(input) });
  const negotiate: Array<[string, number[], number[]]> = [
    ['both speak 1', [1], [1]],
    ['highest common version', [1, 2, 3], [2, 1]],
    ['no common version: send no tags', [2], [1]],
    ['server speaks nothing', [], [1]],
  ];
  for (const [name, server, client] of negotiate) {
    cases.push({ name, op: 'negotiate', server, client, version: p.negotiateVersion(server, client) ?? null });
  }
  // 1.1.0: "trimmed" removes spaces and tabs only.
  const trimmed: Array<[string, string]> = [
    ['tabs around a part are trimmed', '\t1,\t2\t'],
    ['a no-break space is not trimmed', '\u00a01'],
    ['a vertical tab is not trimmed', '1\u000b'],
    ['an ideographic space is not trimmed', '1,\u30002'],
  ];
  for (const [name, input] of trimmed) cases.push({ name, op: 'version_header', input, versions: p.parseVersionHeader(input) });
  return cases;
}

// ---------------------------------------------------------------------------------------
// telemetry.json

function telemetryCases(): Case[] {
  const client = { cv: '1.4.2', ep: 'cli' };
  const list: Array<[string, unknown, number?]> = [
    [
      'one gateway detection',
      {
        v: 1,
        client,
        events: [{ type: 'gateway_detected', ts: 1764000000, gateways: ['litellm'], evidence: ['header:x-litellm-call-id'] }],
      },
    ],
    [
      'hardening status',
      { v: 1, client, events: [{ type: 'harden_status', ts: 1764000000, dumpable: false, tracer: 0, platform: 'linux', skipped: [] }] },
    ],
    [
      'unknown members of known events are dropped',
      { v: 1, client, events: [{ type: 'attestation_unavailable', ts: 1, reason: 'addon_missing', secret: 'x' }] },
    ],
    ['unknown event types keep type and ts', { v: 1, client, events: [{ type: 'future_event', ts: 2, payload: { a: 1 } }] }],
    ['empty batch', { v: 1, client, events: [] }],
    ['not an object', 'events'],
    ['wrong version', { v: 2, client, events: [] }],
    ['missing client', { v: 1, events: [] }],
    ['empty cv', { v: 1, client: { cv: '', ep: 'cli' }, events: [] }],
    [
      'too many events',
      { v: 1, client, events: Array.from({ length: 101 }, () => ({ type: 'layer_degraded', ts: 1, layer: 'x', reason: 'y' })) },
    ],
    ['negative ts', { v: 1, client, events: [{ type: 'layer_degraded', ts: -1, layer: 'x', reason: 'y' }] }],
    ['wrong member type', { v: 1, client, events: [{ type: 'harden_status', ts: 1, dumpable: 'no', platform: 'linux' }] }],
    ['string over 256 characters', { v: 1, client, events: [{ type: 'layer_degraded', ts: 1, layer: 'x'.repeat(257), reason: 'y' }] }],
    ['batch over 65536 bytes', { v: 1, client, events: [] }, 70_000],
  ];
  return list.map(([name, input, byteLength]) => {
    const r = attempt(() => p.parseTelemetryBatch(input, byteLength));
    const base = { name, op: 'batch', input, ...(byteLength === undefined ? {} : { byteLength }) };
    return r.ok ? { ...base, valid: true, batch: r.value } : { ...base, valid: false, error: r.error };
  });
}

// ---------------------------------------------------------------------------------------
// 1.1.1: cases that pin what an implementation from SPEC.md alone had to guess, and the
// rules a plausible wrong implementation broke without failing a case. Appended after the
// 1.1.0 cases of each file: cases are never edited in place.

function outcome(fn: () => unknown, ok: (value: never) => Record<string, unknown>): Record<string, unknown> {
  const r = attempt(fn);
  return r.ok ? { valid: true, ...ok(r.value as never) } : { valid: false, error: r.error };
}

function attribution111(): Case[] {
  const parse: Array<[string, unknown]> = [
    ['extension fields out of key order stay in wire order', 'x-moat: v=1; cv=1.4.2; zz=1; build=abc;'],
    ['over 512 bytes and a wrong prefix: the length is checked first', `X-Moat: v=1; cv=${'1'.repeat(600)};`],
  ];
  const serialize: Array<[string, Record<string, unknown>]> = [
    ['serialize refuses a cv that would inject a field', { cv: '1; x=y' }],
    ['serialize refuses fields without cv', { fp: 'a3f' }],
    ['serialize refuses a null cv', { cv: null }],
    ['serialize refuses an extension value that would inject a field', { cv: '1', extensions: [['a', '1; b=2']] }],
    ['serialize refuses an extension key outside the grammar', { cv: '1', extensions: [['A', '1']] }],
    ['serialize leaves out a null fp', { cv: '1', fp: null }],
    ['serialize refuses a block over 512 bytes', { cv: '1', extensions: Array.from({ length: 9 }, (_, i) => [`k${i}`, 'v'.repeat(60)]) }],
  ];
  return [
    ...parse.map(([name, input]) => ({
      name,
      op: 'parse',
      input,
      ...outcome(
        () => p.parseAttribution(input),
        (b: p.AttributionBlock) => ({
          fields: { ...b, extensions: b.extensions.map(([k, v]) => [k, v]) },
          serialized: p.serializeAttribution(b),
        }),
      ),
    })),
    ...serialize.map(([name, fields]) => ({
      name,
      op: 'serialize',
      fields,
      ...outcome(
        () => p.serializeAttribution(fields as unknown as p.AttributionFields),
        (serialized: string) => ({ serialized }),
      ),
    })),
  ];
}

function envelope111(): Case[] {
  const parse: Array<[string, unknown]> = [
    ['over 128 bytes in fewer than 128 characters', `v1.${'é'.repeat(40)}.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['a scheme in capitals is not v1', `V1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32}`],
    ['ts is the integer its digits spell', `v1.k2026a.0000000001.9f2c4e7a1b3d5c6f.${STAMP32}`],
  ];
  const cases: Case[] = parse.map(([name, input]) => ({
    name,
    op: 'parse',
    input,
    ...outcome(
      () => p.parseEnvelope(input),
      (envelope: unknown) => ({ envelope }),
    ),
  }));
  const body = '[1]';
  const envelope = `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.${STAMP32.slice(2)}`;
  cases.push({
    name: 'a bad envelope and a body that is not an object: the envelope is checked first',
    op: 'append',
    body,
    envelope,
    ...outcome(
      () => p.appendEnvelope(body, envelope),
      (result: string) => ({ result }),
    ),
  });
  return cases;
}

function stamp111(): Case[] {
  const shortKey = '07'.repeat(16);
  const r1 = r1Body('order of checks');
  const cases: Case[] = [
    {
      name: 'a short key and an r1 envelope without request: the key is checked first',
      op: 'compute',
      key: shortKey,
      body: r1,
      valid: false,
      error: 'ERR_STAMP_KEY',
    },
    {
      name: 'a short key and an r1 envelope without request: the key is checked first',
      op: 'verify',
      key: shortKey,
      body: r1,
      valid: false,
      error: 'ERR_STAMP_KEY',
    },
  ];
  const authority: Array<[string, string]> = [
    ['a capital Latin-1 letter is refused (UTS #46 would map it)', 'https://BÜCHER.example/v1/messages'],
    ['a Kelvin sign in a host is refused', 'https://\u212Aelvin.example/'],
    ['fullwidth letters are refused', 'https://ｅｘａｍｐｌｅ.com/'],
    ['a combining mark is refused', 'https://bu\u0308cher.example/'],
    ['Cyrillic is refused: the client maps it with its own URL parser first', 'https://жук.example/'],
    ['a Latin-1 letter beside an xn-- label is refused', 'https://bücher.xn--zca.example/'],
    ['an ASCII xn-- label is lowercased, not decoded', 'https://XN--Bcher-KVA.example/'],
    ['a percent-encoded Latin-1 letter', 'https://b%C3%BCcher.example/'],
    ['a sharp s is kept (nontransitional)', 'https://straße.example/'],
    ['a mailto URL has no authority', 'mailto:api@example.com'],
    ['a relative reference has no authority', '/v1/messages'],
  ];
  for (const [name, url] of authority) cases.push(authorityCase(name, url));
  const credential: Array<[string, Array<[string, string]>, string]> = [
    ['the Bearer scheme name in capitals', [['authorization', 'BEARER tok']], 'tok'],
    [
      'a Kelvin sign in a header name is not x-api-key',
      [
        ['x-api-\u212Aey', 'smuggled'],
        ['authorization', 'Bearer tok'],
      ],
      'tok',
    ],
    [
      'repeated x-api-key headers are joined with a comma and a space',
      [
        ['x-api-key', 'a'],
        ['X-Api-Key', 'b'],
      ],
      'a, b',
    ],
  ];
  for (const [name, headers] of credential) {
    const get = (n: string) => {
      const values = headers.filter(([h]) => h.replace(/[A-Z]/g, (c) => c.toLowerCase()) === n).map(([, v]) => v);
      return values.length === 0 ? undefined : values.join(', ');
    };
    cases.push({ name, op: 'credential', headers, credential: p.credentialOf(get) });
  }
  // An r1 envelope whose stamp covers the body alone (as a v1 stamp would): without the request it is invalid.
  const bodyOnly = stamped(TEST_KEY, r1Body('stamped over the body alone'));
  cases.push({
    name: 'an r1 envelope stamped over the body alone, sent without request, is invalid',
    op: 'verify',
    key: TEST_KEY,
    body: bodyOnly,
    result: 'invalid',
  });
  const lower = { ...REQUEST, method: 'post' };
  cases.push({
    name: 'a lowercase method is kept as sent',
    op: 'request_base',
    request: lower,
    valid: true,
    base: hex(p.requestBase(lower)),
  });
  const body = r1Body('a lowercase method');
  cases.push({
    name: 'a lowercase method is stamped as sent',
    op: 'compute',
    key: TEST_KEY,
    body,
    request: lower,
    valid: true,
    stamp: p.computeStamp(fromHex(TEST_KEY), p.utf8(body), ...stampRegion(body), lower),
    stamped: stamped(TEST_KEY, body, lower),
  });
  return cases;
}

/** A `stamp.authority` case: the authority, or the error. */
function authorityCase(name: string, url: string): Case {
  const r = attempt(() => p.authorityOf(url));
  return r.ok ? { name, op: 'authority', url, authority: r.value } : { name, op: 'authority', url, valid: false, error: r.error };
}

function stampRegion(body: string): [number, number] {
  const loc = p.locateEnvelope(p.utf8(body));
  if (loc.status !== 'found') throw new Error('no envelope');
  return [loc.stampStart, loc.stampEnd];
}

function signature111(): Case[] {
  const ctx = { alg: 'hs256' as const, kid: 's2026a', apiKeyId: 'key_7f3a', model: 'claude-test-1' };
  const thinking = { type: 'thinking', thinking: 'Let me add the numbers: 2 + 2 = 4.', signature: '' };
  const inputs: Array<[string, unknown, Record<string, unknown>]> = [
    [
      "a '~' after 256 bytes but 134 characters is part of the data",
      { type: 'redacted_thinking', data: `ms1.${'é'.repeat(130)}~rest` },
      ctx,
    ],
    ["a '~' after exactly 256 bytes splits", { type: 'redacted_thinking', data: `ms1.${'é'.repeat(126)}~rest` }, ctx],
    ['a signing context with an unknown alg', thinking, { ...ctx, alg: 'rs256' }],
    ['a signing context with a kid no signature can carry', thinking, { ...ctx, kid: 'k k' }],
    ['a block error comes before a context error', { type: 'text', text: 'x' }, { ...ctx, alg: 'rs256' }],
    ['context "" is present: scope c', thinking, { ...ctx, context: '' }],
  ];
  const cases: Case[] = inputs.map(([name, block, context]) => ({
    name,
    op: 'signing_input',
    block,
    context,
    ...outcome(
      () => p.signingInput(block, context as unknown as p.SigningContext),
      (input: Uint8Array) => ({ input: hex(input) }),
    ),
  }));
  cases.push({
    name: 'an ed25519 signing context cannot sign with hs256',
    op: 'sign_hs256',
    key: HS_KEY,
    block: thinking,
    context: { ...ctx, alg: 'ed25519' },
    valid: false,
    error: 'ERR_SIGNATURE_ALGORITHM',
  });
  return cases;
}

function gateway111(): Case[] {
  const list: Array<[string, Array<[string, string]>, string | undefined]> = [
    ['a header name that only contains a prefix does not match', [['y-x-litellm-call-id', '1']], undefined],
    ['a Kelvin sign in a header name is not lowercased to k', [['x-\u212Aong-upstream-latency', '1']], undefined],
    ['a final colon without digits stays', [], 'oai.helicone.ai:'],
    ['a final colon with digits goes', [], 'oai.helicone.ai:8443'],
    ['a base URL whose host has a capital Latin-1 letter has no host', [], 'https://Ü.helicone.ai/'],
  ];
  return list.map(([name, headers, baseUrl]) => ({
    name,
    op: 'detect',
    headers,
    ...(baseUrl === undefined ? {} : { baseUrl }),
    detections: p.detectGateways({ headers, ...(baseUrl === undefined ? {} : { baseUrl }) }),
  }));
}

function negotiation111(): Case[] {
  const discovery = { moat: { versions: [2, 1, 1], features: ['future', 'attestation'], extra: true }, other: 1 };
  return [
    {
      name: 'unknown features and members are dropped, versions kept as listed',
      op: 'discovery',
      input: discovery,
      valid: true,
      discovery: p.parseDiscovery(discovery),
    },
    {
      name: 'header versions in header order, repeats kept',
      op: 'version_header',
      input: '2, 1, 2',
      versions: p.parseVersionHeader('2, 1, 2'),
    },
  ];
}

function telemetry111(): Case[] {
  const client = { cv: '1.4.2', ep: 'cli' };
  const list: Array<[string, unknown]> = [
    [
      '256 two-byte characters are 512 bytes: refused',
      { v: 1, client, events: [{ type: 'layer_degraded', ts: 1, layer: 'é'.repeat(256), reason: 'y' }] },
    ],
    [
      '128 two-byte characters are 256 bytes: kept',
      { v: 1, client, events: [{ type: 'layer_degraded', ts: 1, layer: 'é'.repeat(128), reason: 'y' }] },
    ],
    ['unknown members of the batch and of client are dropped', { v: 1, client: { ...client, os: 'linux' }, events: [], extra: 1 }],
  ];
  return list.map(([name, input]) => ({
    name,
    op: 'batch',
    input,
    ...outcome(
      () => p.parseTelemetryBatch(input),
      (batch: unknown) => ({ batch }),
    ),
  }));
}

// ---------------------------------------------------------------------------------------

const FILES: Record<string, { description: string; cases: () => Case[] }> = {
  attribution: {
    description: 'Attribution block parsing and canonical serialization (SPEC.md §3).',
    cases: () => [...attributionCases(), ...attribution111(), ...attribution121()],
  },
  envelope: {
    description: 'Envelope values, locating the anchored envelope in raw bodies, appending it (SPEC.md §4).',
    cases: () => [...envelopeCases(), ...envelope111(), ...envelope120(), ...envelope121()],
  },
  stamp: {
    description:
      'Attestation stamps: HMAC-SHA-256 over the body with the placeholder in place, and for r1 and i1 over the request base first (SPEC.md §5).',
    cases: () => [...stampCases(), ...stamp111(), ...stamp120(), ...stamp121()],
  },
  fingerprint: {
    description: 'Fingerprint v1 of Messages requests (SPEC.md §6).',
    cases: () => [...fingerprintCases(), ...fingerprint121()],
  },
  signature: {
    description: 'Block signatures: parsing, signing input, conversation digest, hs256 and ed25519 (SPEC.md §8).',
    cases: () => [...signatureCases(), ...signature111(), ...signature121()],
  },
  gateway: {
    description: 'Gateway detection and rule-table validation (SPEC.md §9).',
    cases: () => [...gatewayCases(), ...gateway111(), ...gateway121()],
  },
  negotiation: {
    description: 'Discovery documents, the moat-version header, version choice, the envelope a client sends (SPEC.md §10).',
    cases: () => [...negotiationCases(), ...negotiation111(), ...negotiation120(), ...negotiation121()],
  },
  telemetry: {
    description: 'Telemetry batch validation (SPEC.md §11).',
    cases: () => [...telemetryCases(), ...telemetry111(), ...telemetry121()],
  },
  enroll: {
    description:
      "Per-install keys: the install key's derivation, the enrollment messages, the verifier's answers and the install signal (SPEC.md §5.4, §10.2, §10.3, §13).",
    cases: () => [...enroll120(), ...enroll121()],
  },
};

const check = process.argv.includes('--check');
let stale = 0;
for (const [file, { description, cases }] of Object.entries(FILES)) {
  const list = cases();
  const names = new Set(list.map((c) => `${c.op}:${c.name}`));
  if (names.size !== list.length) throw new Error(`${file}: duplicate case names`);
  const doc = { specVersion: SPEC_VERSION, file, description, count: list.length, cases: list };
  const text = `${JSON.stringify(doc, null, 2)}\n`;
  const path = join(here, `${file}.json`);
  if (check) {
    let current = '';
    try {
      current = readFileSync(path, 'utf8');
    } catch {}
    if (current !== text) {
      stale++;
      console.error(`vectors/${file}.json is out of date: run "pnpm --filter @moat/protocol vectors"`);
    }
  } else {
    writeFileSync(path, text);
    console.log(`vectors/${file}.json: ${list.length} cases`);
  }
}
if (check) {
  if (stale > 0) process.exit(1);
  console.log(`vectors: ${Object.keys(FILES).length} files up to date`);
}
