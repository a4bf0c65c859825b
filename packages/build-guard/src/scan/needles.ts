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

const enc = new TextEncoder();
const ascii = (s: string) => enc.encode(s);
const hex2 = (n: number) => n.toString(16).padStart(2, '0');
const hex4 = (n: number) => n.toString(16).padStart(4, '0');

function utf16(text: string, littleEndian: boolean): Uint8Array {
  const out = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) {
    const u = text.charCodeAt(i);
    out[2 * i + (littleEndian ? 0 : 1)] = u & 0xff;
    out[2 * i + (littleEndian ? 1 : 0)] = u >> 8;
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

/**
 * Every needle for one codename: plain text, and unless `plainOnly`, the encoded forms
 * people use to slip past a plain grep. With `ignoreCase`, plain and UTF-16 forms compare
 * case-insensitively, and the encoded forms of the codename as given, lowercased and
 * uppercased are all searched.
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` for a codename shorter than 4 characters or with line breaks.
 */
export function needlesFor(codename: string, options: NeedleOptions = {}): Needle[] {
  if ([...codename].length < MIN_CODENAME_LENGTH || /[\r\n]/.test(codename)) {
    throw new BuildGuardError(
      'ERR_SCAN_CONFIG',
      `expected a codename of at least ${MIN_CODENAME_LENGTH} characters on one line, got ${JSON.stringify(codename)}`,
    );
  }
  const fold = options.ignoreCase === true;
  const wholeWord = options.wholeWord === true;
  const out: Needle[] = [];
  const seen = new Set<string>();
  const add = (bytes: Uint8Array, encoding: Encoding, folded = false) => {
    const key = `${folded ? 'f' : 'x'}:${Buffer.from(bytes).toString('latin1')}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push({ bytes, codename, encoding, fold: folded, wholeWord: wholeWord && encoding === 'plain' });
  };
  add(ascii(codename), 'plain', fold);
  if (options.plainOnly) return out;
  const variants = fold ? [...new Set([codename, codename.toLowerCase(), codename.toUpperCase()])] : [codename];
  add(utf16(codename, true), 'utf16le', fold);
  add(utf16(codename, false), 'utf16be', fold);
  for (const v of variants) {
    const bytes = ascii(v);
    const hex = Buffer.from(bytes).toString('hex');
    add(ascii(hex), 'hex');
    add(ascii(hex.toUpperCase()), 'hex');
    for (const core of base64Cores(bytes)) {
      add(ascii(core), 'base64');
      add(ascii(core.replaceAll('+', '-').replaceAll('/', '_')), 'base64url');
    }
    const x = [...bytes].map((b) => `\\x${hex2(b)}`).join('');
    add(ascii(x), 'escape-x');
    add(ascii(x.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => `\\x${h.toUpperCase()}`)), 'escape-x');
    const units = Array.from({ length: v.length }, (_, i) => v.charCodeAt(i));
    const u = units.map((n) => `\\u${hex4(n)}`).join('');
    add(ascii(u), 'escape-u');
    add(ascii(u.replace(/\\u([0-9a-f]{4})/g, (_, h: string) => `\\u${h.toUpperCase()}`)), 'escape-u');
    const points = [...v].map((c) => c.codePointAt(0) as number);
    const ub = points.map((n) => `\\u{${n.toString(16)}}`).join('');
    add(ascii(ub), 'escape-u-brace');
    add(ascii(ub.replace(/\{([0-9a-f]+)\}/g, (_, h: string) => `{${h.toUpperCase()}}`)), 'escape-u-brace');
    const pct = [...bytes].map((b) => `%${hex2(b).toUpperCase()}`).join('');
    add(ascii(pct), 'percent');
    add(ascii(pct.toLowerCase()), 'percent');
    for (const sep of [',', ', ']) {
      add(ascii(units.join(sep)), 'charcodes');
      add(ascii(units.map((n) => `0x${n.toString(16)}`).join(sep)), 'charcodes');
      add(ascii(units.map((n) => `0x${n.toString(16).toUpperCase()}`).join(sep)), 'charcodes');
    }
  }
  return out;
}
