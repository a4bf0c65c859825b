// Randomized calls into every entry point of the addon that takes untrusted bytes, from a
// seeded generator: the JSON object check, the request builder (body copy, envelope append,
// header lines, stamping), the verifier's stamp check, and the literal scanner (compile,
// packed compile, serialized databases (also corrupted or another set's), scan, regex,
// needle forms, whole-file prefilter), and the install state files (installOpen on mutated files,
// installActivate's arguments). Each call either returns what a plain JavaScript oracle says or
// throws a typed error (`code` ERR_NATIVE_*); anything else is a finding. Under the
// sanitizer build (scripts/sanitize.sh) a memory error ends the process with its report.
//
//   node test/fuzz.ts                      # MOAT_FUZZ_CASES cases per target (default 4000)
//   MOAT_FUZZ_CASES=1000000 MOAT_FUZZ_SEED=7 node test/fuzz.ts    # a long run, by hand
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { computeStamp } from '@moat/protocol';
import { native } from '../index.js';

type Native = NonNullable<typeof native>;

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)] as T;
  const bytes = (n: number, alphabet?: readonly number[]) => {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = alphabet === undefined ? int(256) : pick(alphabet);
    return out;
  };
  return { next, int, pick, bytes, chance: (p: number) => next() < p };
}
type Gen = ReturnType<typeof generator>;

/** A finding: what was called with what, and what came back. */
export class FuzzFinding extends Error {
  readonly code = 'ERR_FUZZ_FINDING';
}

/** Calls `fn`; a throw must be a typed error of the addon (or `allowed`), anything else is a finding. */
function typed<T>(what: string, fn: () => T, allowed: readonly string[] = []): T | undefined {
  try {
    return fn();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_NATIVE')) return undefined;
    if (e instanceof Error && allowed.includes(e.message)) return undefined;
    throw new FuzzFinding(`${what}: expected a typed ERR_NATIVE_* error, got ${String(e)}`);
  }
}

const JSON_PIECES = ['{', '}', '[', ']', ':', ',', '"', '\\', '"moat_att"', '"moat\\u005fatt"', 'true', 'null', '1e5', '-0', ' ', '\n'];
const JSON_PIECES_BYTES = JSON_PIECES.map((p) => Buffer.from(p));
const UTF8_EDGES = [[0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xef, 0xbb, 0xbf], [0xe2, 0x82], [0xff], [0x00]].map((b) =>
  Buffer.from(b),
);

/** Text that is often almost JSON: pieces, strings, nesting, and now and then invalid UTF-8. */
function jsonish(g: Gen): Buffer {
  const parts: Buffer[] = [Buffer.from('{')];
  const n = g.int(24);
  for (let i = 0; i < n; i++) {
    const r = g.int(10);
    if (r < 5) parts.push(g.pick(JSON_PIECES_BYTES));
    else if (r < 7) parts.push(Buffer.from(JSON.stringify(g.bytes(g.int(12)).toString('latin1'))));
    else if (r < 8) parts.push(Buffer.from('['.repeat(g.int(600))));
    else if (r < 9) parts.push(g.pick(UTF8_EDGES));
    else parts.push(Buffer.from(`"k${i}":${g.int(1000)}`));
  }
  if (g.chance(0.8)) parts.push(Buffer.from('}'));
  return Buffer.concat(parts);
}

/** jsonObject(bytes): 0 or 1 only for a JSON object text (JSON.parse agrees), in strict UTF-8. */
function fuzzJsonObject(addon: Native, g: Gen): void {
  const bytes = g.chance(0.15) ? g.bytes(g.int(64)) : jsonish(g);
  const result = addon.jsonObject(bytes);
  if (result === 2) return;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes));
  } catch (e) {
    throw new FuzzFinding(`jsonObject(${bytes.toString('hex')}) = ${result}, yet JSON.parse says ${String(e)}`);
  }
  const isObject = typeof value === 'object' && value !== null && !Array.isArray(value);
  if (!isObject || (result === 1) !== (Object.keys(value as object).length === 0))
    throw new FuzzFinding(`jsonObject(${bytes.toString('hex')}) = ${result} for ${JSON.stringify(value)}`);
}

const HEADER_NAMES = ['x-api-key', 'authorization', 'host', 'content-length', 'transfer-encoding', 'connection', 'x-a', 'te', 'Expect'];

/** A header line, often valid, now and then with what a line must not hold. */
function headerLine(g: Gen): unknown {
  const r = g.int(20);
  if (r === 0) return g.int(10);
  if (r === 1) return `${g.pick(HEADER_NAMES)}:${g.bytes(g.int(8)).toString('latin1')}`;
  if (r === 2) return g.bytes(g.int(40)).toString('latin1');
  if (r === 3) return `x-b: ${'v'.repeat(g.int(70_000))}`;
  return `${g.pick(HEADER_NAMES)}: ${g.chance(0.1) ? '' : `v${g.int(1e6)}`}${g.chance(0.05) ? '\r\nx-c: 1' : ''}`;
}

/** An envelope value, mostly well formed for this addon's key id. */
function envelopeValue(g: Gen, kid: string): unknown {
  const r = g.int(12);
  if (r === 0) return g.int(5);
  if (r === 1) return g.bytes(g.int(200)).toString('latin1');
  if (r === 2) return `v1.${kid}.1764000000.0011223344556677.${'0'.repeat(32)}\0","x":"`;
  const stamp = '0'.repeat(g.pick([0, 31, 32, 48, 64, 65]));
  return `${g.pick(['v1', 'r1', 'x1'])}.${g.chance(0.9) ? kid : 'other'}.1764000000.${g.bytes(8).toString('hex')}.${stamp}`;
}

/** A body: a JSON object (often with a placeholder at its end), random bytes, or a string. */
function requestBody(g: Gen, kid: string): unknown {
  const r = g.int(10);
  if (r === 0) return undefined;
  if (r === 1) return g.int(3) === 0 ? 7 : g.bytes(g.int(300));
  const pad = g.chance(0.05) ? 'z'.repeat(40_000 + g.int(40_000)) : g.bytes(g.int(40)).toString('hex');
  const tail = g.chance(0.6) ? `,"moat_att":"${g.pick(['v1', 'r1'])}.${kid}.1764000000.0011223344556677.${'0'.repeat(32)}"` : '';
  const text = g.chance(0.1) ? jsonish(g).toString('latin1') : `{"model":"m","pad":"${pad}"${tail}}`;
  return g.chance(0.4) ? text : Buffer.from(text);
}

/** request(options) built from random parts, then aborted at once (or sent, now and then). */
function fuzzRequest(addon: Native, g: Gen, url: string, pending: Array<Promise<unknown>>): void {
  const headers = g.chance(0.05) ? 'x: y' : Array.from({ length: g.int(g.chance(0.02) ? 600 : 6) }, () => headerLine(g));
  const options: Record<string, unknown> = {
    method: g.chance(0.9) ? g.pick(['POST', 'GET', 'PUT']) : g.pick(['', 'PO ST', 'P'.repeat(40), 'GE\0T']),
    url: g.chance(0.95) ? `${url}${g.pick(['', 'v1/messages', '?a=1', '%zz'])}` : g.pick(['', 'nope', `${url}\0x`, `http://[::1`]),
    headers,
    body: requestBody(g, addon.keyId()),
    envelope: g.chance(0.3) ? envelopeValue(g, addon.keyId()) : undefined,
    timeoutMs: g.chance(0.9) ? 5000 : g.pick([-1, Number.NaN, Number.POSITIVE_INFINITY, 1e300, '5']),
  };
  if (g.chance(0.03)) {
    Object.defineProperty(options, 'url', {
      get() {
        throw new Error('hostile getter');
      },
    });
  }
  const send = g.chance(0.03);
  let handle: { abort(): void } | undefined;
  const ended = new Promise<void>((resolve) => {
    handle = typed(
      'request',
      () =>
        addon.request(options as never, (event) => {
          if (event === 'end' || event === 'error') resolve();
        }),
      ['hostile getter'],
    );
    if (handle === undefined) resolve();
  });
  if (!send) handle?.abort();
  pending.push(ended);
}

/** stampMatches on random keys, bases, bodies and regions; a stamp the protocol computed must match. */
function fuzzStamp(addon: Native, g: Gen): void {
  const keyBytes = g.bytes(g.pick([0, 16, 31, 32, 33, 64, 1024, 1025]));
  const key = typed('stampKey', () => addon.stampKey(keyBytes));
  if (key === undefined) return;
  const stampLength = g.pick([30, 32, 33, 48, 64, 66]);
  const body = Buffer.from(`{"a":"${g.bytes(g.int(30)).toString('hex')}","moat_att":"v1.k.1.0011223344556677.${'0'.repeat(stampLength)}"}`);
  const start = body.length - 2 - stampLength;
  if (g.chance(0.5) && stampLength >= 32 && stampLength <= 64 && stampLength % 2 === 0) {
    const stamp = computeStamp(keyBytes, body, start, start + stampLength);
    body.write(stamp, start, 'latin1');
    if (addon.stampMatches(key, null, body, start, start + stampLength) !== true)
      throw new FuzzFinding(`stampMatches refused the protocol's own stamp over ${body.toString()}`);
    body[start] = body[start] === 0x30 ? 0x31 : 0x30;
    if (addon.stampMatches(key, null, body, start, start + stampLength) !== false)
      throw new FuzzFinding('stampMatches took a tampered stamp');
    return;
  }
  const base = g.chance(0.5) ? null : g.bytes(g.int(200));
  const at = (): unknown =>
    g.pick([start, start + stampLength, -1, 0.5, Number.NaN, body.length, body.length + 1, 2 ** 53, g.int(body.length + 4)]);
  typed('stampMatches', () => addon.stampMatches(key, base, g.chance(0.1) ? g.bytes(g.int(100)) : body, at() as number, at() as number));
  if (g.chance(0.05))
    typed('stampMatches(not a key)', () => addon.stampMatches(g.pick([{}, null, 1, addon.regexCompile(['a'])]), null, body, 0, 32));
}

/** Every (index, start) where a literal occurs: the oracle for literalsScan. */
function naiveScan(patterns: Buffer[], caseless: boolean[], data: Buffer): string[] {
  const fold = (b: number) => (b >= 0x41 && b <= 0x5a ? b + 32 : b);
  const out: string[] = [];
  patterns.forEach((p, index) => {
    for (let start = 0; start + p.length <= data.length; start++) {
      let k = 0;
      while (k < p.length && (caseless[index] ? fold(data[start + k] as number) === fold(p[k] as number) : data[start + k] === p[k])) k++;
      if (k === p.length) out.push(`${index}@${start}`);
    }
  });
  return out.sort();
}

function pairs(found: Int32Array, width: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < found.length; i += width) out.push(`${found[i]}@${found[i + 1]}`);
  return out.sort();
}

const LITERAL_ALPHABET = [0x00, 0x41, 0x42, 0x61, 0x62, 0x2e, 0xff, 0x0a];

/** Compile (plain, packed or from a serialized database, sometimes corrupted or another set's), then scan against the oracle. */
function fuzzLiterals(addon: Native, g: Gen): void {
  const n = 1 + g.int(8);
  const mode = g.int(6);
  // A direct set (mode 5) takes literals of 4 bytes or more; longer ones are probed with a stride (every 2nd to 4th position).
  const patterns = Array.from({ length: n }, () => g.bytes(mode === 5 ? 4 + g.int(9) : 1 + g.int(5), LITERAL_ALPHABET));
  // Half the direct sets fold no case: only those are probed eight positions at a time (AVX2).
  const folding = mode !== 5 || g.chance(0.5);
  const caseless = patterns.map(() => folding && g.chance(0.5));
  const data = g.bytes(g.int(400), LITERAL_ALPHABET);
  for (const p of patterns) if (g.chance(0.5)) p.copy(data, g.int(Math.max(1, data.length - p.length)));
  let handle: unknown;
  let exact = true;
  if (mode === 5) {
    const lengths = Uint32Array.from(patterns.map((p) => p.length));
    handle = typed('literalsCompilePacked(direct)', () =>
      addon.literalsCompilePacked(Buffer.concat(patterns), lengths, Uint8Array.from(caseless.map(Number)), undefined, true),
    );
  } else if (mode === 0) {
    handle = typed('literalsCompile', () => addon.literalsCompile(patterns, caseless));
  } else if (mode === 1) {
    const lengths = Uint32Array.from(patterns.map((p) => p.length));
    handle = typed('literalsCompilePacked', () =>
      addon.literalsCompilePacked(Buffer.concat(patterns), lengths, Uint8Array.from(caseless.map(Number))),
    );
  } else {
    // A database from a cache: this set's, another (larger) set's, or damaged bytes.
    const other = mode === 3 ? [...patterns, ...patterns.map((p) => Buffer.concat([p, p]))] : patterns;
    const source = typed('literalsCompile', () => addon.literalsCompile(other, [...caseless, ...caseless].slice(0, other.length)));
    if (source === undefined) return;
    const serialized = addon.literalsSerialize(source);
    if (mode === 4) for (let k = 0; k < 1 + g.int(4); k++) serialized[g.int(serialized.length)] = g.int(256);
    exact = mode === 2;
    handle = typed('literalsCompile(serialized)', () => addon.literalsCompile(patterns, caseless, serialized));
  }
  if (handle === undefined) return;
  const found = typed('literalsScan', () => addon.literalsScan(handle, data));
  if (found === undefined || !exact) return;
  const got = pairs(found, 2);
  const want = naiveScan(patterns, caseless, data);
  if (got.join() !== want.join())
    throw new FuzzFinding(`literalsScan(${patterns.map((p) => p.toString('hex'))}) on ${data.toString('hex')}: ${got} != ${want}`);
}

const REGEX_PIECES = ['a', 'b', '.', '*', '+', '?', '(', ')', '[', ']', '|', '\\', '{2}', '^', '$', '\\x00', '\\d', '\0'];

/** regexCompile of random (often invalid) expressions, then a scan; hostile arrays too. */
function fuzzRegex(addon: Native, g: Gen): void {
  let patterns: unknown[] = Array.from({ length: 1 + g.int(4) }, () =>
    Array.from({ length: 1 + g.int(8) }, () => g.pick(REGEX_PIECES)).join(''),
  );
  if (g.chance(0.05)) patterns = Array(70).fill('a');
  if (g.chance(0.05)) {
    patterns.length += 1;
    Object.defineProperty(patterns, patterns.length - 1, {
      get() {
        throw new Error('hostile getter');
      },
    });
  }
  if (g.chance(0.05)) patterns.push(5);
  const handle = typed('regexCompile', () => addon.regexCompile(patterns as string[]), ['hostile getter']);
  if (handle === undefined) return;
  const found = typed('literalsScan(regex)', () => addon.literalsScan(handle, g.bytes(g.int(300), [0x61, 0x62, 0x30, 0x00])));
  if (found !== undefined && found.length % 3 !== 0) throw new FuzzFinding('a regex scan gave a partial triple');
  if (g.chance(0.1)) typed('literalsSerialize(regex)', () => addon.literalsSerialize(handle));
}

/**
 * regexCompileAsync against regexCompile on the same random (often invalid) expressions: the
 * same refusal, by code (thrown at once for bad arguments, rejected for what libhs refuses),
 * or two sets that find the same matches in the same random bytes.
 */
async function fuzzRegexAsync(addon: Native, g: Gen): Promise<void> {
  const patterns = Array.from({ length: 1 + g.int(4) }, () => Array.from({ length: 1 + g.int(8) }, () => g.pick(REGEX_PIECES)).join(''));
  const codeOf = (e: unknown) => {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== 'string' || !code.startsWith('ERR_NATIVE'))
      throw new FuzzFinding(`regexCompileAsync: expected a typed ERR_NATIVE_* error, got ${String(e)}`);
    return code;
  };
  let compiled: unknown;
  let compiledCode: string | undefined;
  try {
    compiled = addon.regexCompile(patterns);
  } catch (e) {
    compiledCode = codeOf(e);
  }
  let started: unknown;
  let startedCode: string | undefined;
  try {
    started = await addon.regexCompileAsync?.(patterns);
  } catch (e) {
    startedCode = codeOf(e);
  }
  if (startedCode !== compiledCode)
    throw new FuzzFinding(
      `regexCompileAsync(${JSON.stringify(patterns)}): ${startedCode ?? 'a set'}, regexCompile: ${compiledCode ?? 'a set'}`,
    );
  if (compiledCode !== undefined) return;
  const bytes = g.bytes(g.int(300), [0x61, 0x62, 0x30, 0x00]);
  if (String(addon.literalsScan(started, bytes)) !== String(addon.literalsScan(compiled, bytes)))
    throw new FuzzFinding(`regexCompileAsync(${JSON.stringify(patterns)}) scans otherwise than regexCompile`);
}

/** literalsCompile with arrays whose elements run JavaScript: a getter that throws, or one that detaches an earlier buffer. */
/**
 * literalsForms on random UTF-16 (lone surrogates, NULs, high units) cut into random strings
 * and spellings, now and then malformed: a typed error, or a literal set whose lengths,
 * offsets and indexes hold together, whose plain forms (plain only) are the strings' UTF-8.
 */
function fuzzForms(addon: Native, g: Gen): void {
  const unit = () => g.pick([0, 0x41, 0x61, 0xdf, 0x130, 0xd800, 0xdc00, 0xd83d, 0xde00, 0xffff, g.int(0x10000)]);
  const strings = Array.from({ length: 1 + g.int(6) }, () => Array.from({ length: g.int(8) }, unit));
  const units = Uint16Array.from(strings.flat());
  const lengths = Uint32Array.from(strings, (s) => s.length + (g.chance(0.05) ? 1 : 0));
  const spellings: number[] = [];
  for (let left = strings.length; left > 0; ) {
    const n = Math.min(left, 1 + g.int(3));
    spellings.push(n);
    left -= n;
  }
  if (g.chance(0.05)) spellings.push(g.int(3));
  const flags = g.chance(0.05) ? g.int(256) : g.int(4);
  const set = typed('literalsForms', () => addon.literalsForms(units, lengths, Uint32Array.from(spellings), flags));
  if (set === undefined) return;
  const fail = (what: string) => {
    throw new FuzzFinding(`literalsForms(${JSON.stringify({ strings, spellings, flags })}): ${what}`);
  };
  let at = 0;
  for (let i = 0; i < set.lengths.length; i++) {
    if (set.offsets[i] !== at || (set.lengths[i] as number) === 0 || (set.lengths[i] as number) > set.maxLength) fail('offsets');
    if ((set.owners[i] as number) >= spellings.length) fail('owners');
    at += set.lengths[i] as number;
  }
  if (at !== set.packed.length || set.sources > set.lengths.length || set.regex.length % 3 !== 0) fail('sizes');
  for (let r = 0; r < set.regex.length; r += 3)
    if ((set.regex[r] as number) >= set.sources || (set.regex[r + 1] as number) >= spellings.length) fail('regex');
  if ((flags & 2) !== 0 && spellings.every((n) => n === 1)) {
    const text = (i: number) => Buffer.from(String.fromCharCode(...(strings[i] as number[])), 'utf8');
    for (let r = 0; r < set.regex.length; r += 3) {
      const k = set.regex[r] as number;
      const got = set.packed.subarray(set.offsets[k], (set.offsets[k] as number) + (set.lengths[k] as number));
      if (!got.equals(text(set.regex[r + 1] as number))) fail('plain form');
    }
  }
}

function fuzzHostileLiterals(addon: Native, g: Gen): void {
  const memory = new ArrayBuffer(8);
  const patterns: unknown[] = [Buffer.from(memory, 0, 4).fill(0x61), Buffer.from('bb')];
  Object.defineProperty(patterns, 2, {
    get() {
      if (g.chance(0.5)) throw new Error('hostile getter');
      structuredClone(memory, { transfer: [memory] });
      return Buffer.from('cc');
    },
  });
  const caseless = [false, false, g.chance(0.8) ? false : 'x'];
  const handle = typed('literalsCompile(hostile)', () => addon.literalsCompile(patterns as Buffer[], caseless as boolean[]), [
    'hostile getter',
  ]);
  if (handle !== undefined) typed('literalsScan', () => addon.literalsScan(handle, Buffer.from('aaaabbcc')));
  typed('literalsCompile(empty)', () => addon.literalsCompile([], []));
  typed('literalsScan(not a set)', () => addon.literalsScan(g.pick([{}, addon.stampKey(Buffer.alloc(32, 1)), null]), Buffer.alloc(4)));
}

/** prefilterFiles over files holding a literal or not: a file the oracle finds one in must be flagged. */
async function fuzzPrefilter(addon: Native, g: Gen, dir: string): Promise<void> {
  const patterns = Array.from({ length: 1 + g.int(4) }, () => g.bytes(2 + g.int(6), LITERAL_ALPHABET));
  const caseless = patterns.map(() => g.chance(0.3));
  const literals = typed('literalsCompile', () => addon.literalsCompile(patterns, caseless));
  if (literals === undefined) return;
  const audit = g.chance(0.5) ? addon.regexCompile(['sourceMappingURL', 'a+b']) : null;
  const files = Array.from({ length: 1 + g.int(4) }, (_, i) => {
    const data = g.bytes(g.int(g.chance(0.1) ? 200_000 : 3000), LITERAL_ALPHABET);
    const p = g.pick(patterns);
    if (g.chance(0.5)) p.copy(data, g.int(Math.max(1, data.length - p.length)));
    const path = join(dir, `f${i}`);
    writeFileSync(path, data);
    return { path, data };
  });
  const paths = [...files.map((f) => f.path), ...(g.chance(0.2) ? [join(dir, 'missing'), dir] : [])];
  const chunk = g.pick([1, 7, 64, 4096, 1 << 20, 0]);
  const maxLength = g.pick([0, 8, 64, 70_000]);
  const auditCarry = g.pick([0, 64, 70_000]);
  let result: Awaited<ReturnType<Native['prefilterFiles']>> | undefined;
  try {
    result = await typed('prefilterFiles', () =>
      addon.prefilterFiles(literals, null, audit, paths, chunk, maxLength, auditCarry, 1 + g.int(4)),
    );
  } catch (e) {
    if (e instanceof FuzzFinding) throw e;
    return; // the promise rejected with the prefilter's own error
  }
  // The windows carry maxLength bytes over: a literal longer than that may straddle two.
  if (result === undefined || maxLength < Math.max(...patterns.map((p) => p.length))) return;
  files.forEach((f, i) => {
    if (naiveScan(patterns, caseless, f.data).length > 0 && result.flags[i] === 0)
      throw new FuzzFinding(`prefilterFiles missed a literal in ${f.path} (chunk ${chunk}, maxLength ${maxLength})`);
  });
}

const STATE_PIECES = ['\n', '=', 'moat-install/1', 'origin=', 'public=', 'seal=file', 'seal=keyring:', 'iid=', 'secret=', 'A', '_', '\0'];
const B64URL = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'].map((c) => c.charCodeAt(0));

/** One mutation of a valid state file: bytes flipped, cut, pieces inserted, a value replaced. */
function mutateState(g: Gen, good: Buffer): Buffer {
  const text = Buffer.from(good);
  const r = g.int(6);
  if (r === 0) return text;
  if (r === 1) return text.subarray(0, g.int(text.length));
  if (r === 2) {
    for (let i = 1 + g.int(4); i > 0; i--) text[g.int(text.length)] = g.int(256);
    return text;
  }
  const at = g.int(text.length + 1);
  const piece = r === 3 ? Buffer.from(g.pick(STATE_PIECES)) : g.bytes(g.int(r === 4 ? 90 : 3000), B64URL);
  return Buffer.concat([text.subarray(0, at), piece, text.subarray(r === 5 ? Math.min(text.length, at + g.int(60)) : at)]);
}

/**
 * installOpen on a mutated state file (sometimes open to others) and installActivate with
 * arguments near their shapes: a state, null or a typed error; an unchanged 0600 file opens
 * to the same public key.
 */
function fuzzInstallState(addon: Native, g: Gen, dir: string): void {
  const { installOpen, installActivate, installForget } = addon;
  if (installOpen === undefined || installActivate === undefined || installForget === undefined) return;
  const origin = `https://fuzz${g.int(4)}.example`;
  const home = join(dir, 'installs');
  installForget(origin, home);
  const made = installOpen(home, origin, { keystore: 'file' });
  if (made === null) throw new FuzzFinding('installOpen made no state');
  const file = join(home, readdirSync(home).find((f) => f.endsWith('.install')) ?? '');
  const good = readFileSync(file);
  const text = mutateState(g, good);
  const open = g.chance(0.05);
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, open ? 0o644 : 0o600);
  const got = typed('installOpen', () => installOpen(home, origin, { create: false, keystore: 'file' }));
  if (!open && text.equals(good) && got?.publicKey !== made.publicKey)
    throw new FuzzFinding(`installOpen did not reopen an unchanged state file for ${origin}`);
  const b64 = () => g.bytes(g.pick([0, 42, 43, 44, 80]), B64URL).toString('latin1');
  typed('installActivate', () =>
    installActivate(origin, g.pick(['i0123456789abcdef01234567', 'bad id', b64()]), g.pick(['e1', '']), b64(), b64()),
  );
  installForget(origin, home);
}

/** Case counts per target, and the seed that reproduces them. */
export interface FuzzReport {
  seed: number;
  cases: Record<string, number>;
  total: number;
  ms: number;
}

/** Runs `cases` calls per target (prefilter: a tenth, as it writes files) from `seed`. */
export async function runFuzz(options: { cases: number; seed: number; addon?: Native }): Promise<FuzzReport> {
  const addon = options.addon ?? native;
  if (addon === undefined) throw new Error('the addon is not loaded');
  const g = generator(options.seed);
  const started = performance.now();
  const server = createServer((q, s) => {
    q.resume();
    q.on('end', () => s.end('ok'));
  }).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const dir = mkdtempSync(join(tmpdir(), 'moat-fuzz-'));
  const cases: Record<string, number> = {};
  const count = (name: string) => {
    cases[name] = (cases[name] ?? 0) + 1;
  };
  try {
    for (let i = 0; i < options.cases; i++) {
      fuzzJsonObject(addon, g);
      count('jsonObject');
      fuzzStamp(addon, g);
      count('stampMatches');
      fuzzLiterals(addon, g);
      count('literals');
      fuzzRegex(addon, g);
      count('regexCompile');
      fuzzForms(addon, g);
      count('literalsForms');
      if (i % 10 === 0) {
        fuzzHostileLiterals(addon, g);
        count('hostileArrays');
        await fuzzPrefilter(addon, g, dir);
        count('prefilterFiles');
        await fuzzRegexAsync(addon, g);
        count('regexCompileAsync');
        fuzzInstallState(addon, g, dir);
        count('installState');
      }
    }
    // Requests in batches, each batch ended before the next: aborted at once, or sent.
    for (let i = 0; i < options.cases; ) {
      const pending: Array<Promise<unknown>> = [];
      for (const end = Math.min(options.cases, i + 64); i < end; i++) {
        fuzzRequest(addon, g, url, pending);
        count('request');
      }
      await Promise.all(pending);
    }
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const total = Object.values(cases).reduce((a, b) => a + b, 0);
  return { seed: options.seed, cases, total, ms: Math.round(performance.now() - started) };
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const cases = Number(process.env.MOAT_FUZZ_CASES ?? 4000);
  const seed = Number(process.env.MOAT_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
  try {
    const report = await runFuzz({ cases, seed });
    console.log(`fuzz: ${JSON.stringify(report)}`);
  } catch (e) {
    console.error(`fuzz: seed ${seed}: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  }
}
