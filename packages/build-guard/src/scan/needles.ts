import { BuildGuardError } from '../errors.js';

/** The forms a codename is searched in. */
export const ENCODINGS = [
  'plain',
  'utf16le',
  'utf16be',
  'hex',
  'base64',
  'base64url',
  'escape-x',
  'escape-u',
  'escape-u-brace',
  'percent',
  'charcodes',
  'split-literal',
] as const;
export type Encoding = (typeof ENCODINGS)[number];

/** How a finding's message names a form: `in plain text`, `encoded as base64`, … */
export function formPhrase(encoding: Encoding): string {
  return encoding === 'plain' ? 'in plain text' : `encoded as ${encoding}`;
}

/** One byte string to search for, and what it stands for. */
export interface Needle {
  readonly bytes: Uint8Array;
  readonly codename: string;
  readonly encoding: Encoding;
  /** Compare ASCII letters case-insensitively. */
  readonly fold: boolean;
  /** Require non-word bytes (or the edges) around the match. */
  readonly wholeWord: boolean;
}

/** Options that decide which needles a codename gives. */
export interface NeedleOptions {
  readonly ignoreCase?: boolean;
  readonly wholeWord?: boolean;
  /** Plain text only: no encodings (split literals are off too). */
  readonly plainOnly?: boolean;
}

/** Shortest codename accepted: shorter ones match everywhere. */
export const MIN_CODENAME_LENGTH = 4;

// Byte to hex digits by table: 22,000 needles are derived per scan.
const HEX2 = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));
const HEX2_UPPER = HEX2.map((h) => h.toUpperCase());
const hex4 = (n: number) => (n < 256 ? `00${HEX2[n]}` : n.toString(16).padStart(4, '0'));
/** Whether every character of a string is ASCII (no control-character range in a pattern). */
const isAscii = (text: string) => !/[^\p{ASCII}]/u.test(text);

/** UTF-8 bytes of `text`. */
function utf8(text: string): Uint8Array {
  if (!isAscii(text)) return Buffer.from(text, 'utf8');
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** Bytes as a Latin-1 string: one character per byte. */
function latin1(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += String.fromCharCode(b);
  return out;
}

/** UTF-16 code units of `text` as a Latin-1 string of their bytes. */
function utf16(text: string, littleEndian: boolean): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const u = text.charCodeAt(i);
    out += littleEndian ? String.fromCharCode(u & 0xff, u >> 8) : String.fromCharCode(u >> 8, u & 0xff);
  }
  return out;
}

/**
 * The base64 text that stays the same whatever bytes surround `bytes`, for each of the
 * three alignments a value can start at inside a larger base64 string. Alignments whose
 * stable core is under 8 characters (codenames under 7 bytes) are skipped.
 */
export function base64Cores(bytes: Uint8Array): string[] {
  const cores: string[] = [];
  for (let k = 0; k < 3; k++) {
    const padded = new Uint8Array(k + bytes.length);
    padded.set(bytes, k);
    const text = Buffer.from(padded).toString('base64');
    const first = Math.ceil((8 * k) / 6);
    const last = Math.floor((8 * (k + bytes.length)) / 6); // exclusive
    // Cores under 8 characters would match random base64 too often (and slow the matcher).
    if (last - first >= 8) cores.push(text.slice(first, last));
  }
  return cores;
}

/** @internal A needle's bytes as a Latin-1 string (one character per byte), and what it stands for. */
export interface NeedleForm {
  readonly text: string;
  readonly encoding: Encoding;
  readonly fold: boolean;
}

/** @internal The encoded forms of one spelling `v` of a codename, in the order {@link needlesFor} gives them. */
function encodedForms(v: string, add: (text: string, encoding: Encoding) => void): void {
  const bytes = utf8(v);
  let hex = '';
  let x = '';
  let xUpper = '';
  let pct = '';
  for (const b of bytes) {
    const h = HEX2[b] as string;
    const upper = HEX2_UPPER[b] as string;
    hex += h;
    x += `\\x${h}`;
    xUpper += `\\x${upper}`;
    pct += `%${upper}`;
  }
  add(hex, 'hex');
  add(hex.toUpperCase(), 'hex');
  for (const core of base64Cores(bytes)) {
    add(core, 'base64');
    add(core.replaceAll('+', '-').replaceAll('/', '_'), 'base64url');
  }
  add(x, 'escape-x');
  add(xUpper, 'escape-x');
  const units = Array.from({ length: v.length }, (_, i) => v.charCodeAt(i));
  if (!isAscii(v)) {
    // JavaScript escapes code units, not UTF-8 bytes: `\xC4` is "Ä". Bundlers that print ASCII
    // only (esbuild's default, terser's ascii_only) escape just the other characters: "\xC4rger".
    const js = (n: number, upper: boolean, keepAscii: boolean) => {
      if (keepAscii && n < 0x80) return String.fromCharCode(n);
      const h = n <= 0xff ? `\\x${HEX2[n] as string}` : `\\u${hex4(n)}`;
      return upper ? h.replace(/[a-f]/g, (c) => c.toUpperCase()) : h;
    };
    for (const upper of [false, true])
      for (const keepAscii of [false, true]) add(units.map((n) => js(n, upper, keepAscii)).join(''), 'escape-x');
  }
  add(units.map((n) => `\\u${hex4(n)}`).join(''), 'escape-u');
  add(units.map((n) => `\\u${hex4(n).toUpperCase()}`).join(''), 'escape-u');
  const points = Array.from(v, (c) => (c.codePointAt(0) as number).toString(16));
  add(points.map((h) => `\\u{${h}}`).join(''), 'escape-u-brace');
  add(points.map((h) => `\\u{${h.toUpperCase()}}`).join(''), 'escape-u-brace');
  add(pct, 'percent');
  add(pct.toLowerCase(), 'percent');
  const dec = units.map(String);
  const lower = units.map((n) => `0x${n.toString(16)}`);
  const upper = units.map((n) => `0x${n.toString(16).toUpperCase()}`);
  for (const sep of [',', ', ']) {
    add(dec.join(sep), 'charcodes');
    add(lower.join(sep), 'charcodes');
    add(upper.join(sep), 'charcodes');
  }
}

/**
 * @internal Refuses a codename no needle can be made of.
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` for a codename under {@link MIN_CODENAME_LENGTH} characters or with a line break.
 */
export function checkCodename(codename: string): void {
  // Code points counted only where UTF-16 units could be too few: a list of thousands is checked in a cold process.
  const short = codename.length < 2 * MIN_CODENAME_LENGTH && [...codename].length < MIN_CODENAME_LENGTH;
  if (short || codename.includes('\n') || codename.includes('\r')) {
    throw new BuildGuardError(
      'ERR_SCAN_CONFIG',
      `expected a codename of at least ${MIN_CODENAME_LENGTH} characters on one line, got ${JSON.stringify(codename)}`,
    );
  }
}

/**
 * @internal {@link needlesFor}'s needles as Latin-1 strings, without a buffer per needle: a
 * literal set of 1,000 codenames (22,000 needles) is derived in milliseconds.
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` as {@link needlesFor}.
 */
export function needleForms(codename: string, options: NeedleOptions = {}): NeedleForm[] {
  checkCodename(codename);
  const fold = options.ignoreCase === true;
  const out: NeedleForm[] = [];
  const seen = new Set<string>();
  const add = (text: string, encoding: Encoding, folded = false) => {
    const key = `${folded ? 'f' : 'x'}:${text}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push({ text, encoding, fold: folded });
  };
  add(isAscii(codename) ? codename : latin1(utf8(codename)), 'plain', fold);
  if (options.plainOnly) return out;
  add(utf16(codename, true), 'utf16le', fold);
  add(utf16(codename, false), 'utf16be', fold);
  const variants = fold ? [...new Set([codename, codename.toLowerCase(), codename.toUpperCase()])] : [codename];
  for (const v of variants) encodedForms(v, (text, encoding) => add(text, encoding));
  return out;
}

/**
 * Every needle for one codename: plain text, and unless `plainOnly`, the encoded forms
 * people use to slip past a plain grep. With `ignoreCase`, plain and UTF-16 forms compare
 * case-insensitively, and the encoded forms of the codename as given, lowercased and
 * uppercased are all searched.
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` for a codename shorter than 4 characters or with line breaks.
 */
export function needlesFor(codename: string, options: NeedleOptions = {}): Needle[] {
  const wholeWord = options.wholeWord === true;
  return needleForms(codename, options).map((f) => ({
    bytes: Buffer.from(f.text, 'latin1'),
    codename,
    encoding: f.encoding,
    fold: f.fold,
    wholeWord: wholeWord && f.encoding === 'plain',
  }));
}
