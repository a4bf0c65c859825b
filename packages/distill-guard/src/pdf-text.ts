import { pdfDecryptor } from './pdf-crypt.js';
import { decodeStream, streamFilters } from './pdf-filters.js';
import { hexBytes, literalString, unescapeNames } from './pdf-strings.js';

/**
 * Why a read left part of a document unread, so a trace can say it was not whole:
 * - `pdf_stream_cap`: a PDF stream decoded past 16 MiB (the rest of it not read);
 * - `pdf_inflate_budget`: the bytes a PDF, or all the PDFs of a request, may inflate were spent;
 * - `pdf_stream_count`: a PDF of more than 20,000 streams (the rest not read);
 * - `pdf_encrypted`: an encrypted PDF this reader cannot decrypt (RC4, a user password), not read
 *   (AES under the empty user password, which every reader opens, is decrypted and read);
 * - `gzip_inflate_budget`: gzip hidden in base64 in the conversation was not inflated, or not
 *   whole, since the request's decode budget (shared with its PDFs) was spent;
 * - `gzip_stream_cap`: gzip hidden in base64 inflating past 1 MiB (not read);
 * - `chars`: the characters a trace reads were spent.
 */
export type TextCut =
  | 'pdf_stream_cap'
  | 'pdf_inflate_budget'
  | 'pdf_stream_count'
  | 'pdf_encrypted'
  | 'gzip_inflate_budget'
  | 'gzip_stream_cap'
  | 'chars';

/** Bounds on what one PDF may cost to read: its streams inflated, and the text taken from them. */
export interface PdfTextLimits {
  /** Bytes inflated from all of its streams together (default 32 MiB): a zip bomb stops here. */
  readonly maxInflatedBytes?: number;
  /** Characters of text returned (default 16 Mi: no padding text pushes the rest out before the decode budget does). */
  readonly maxChars?: number;
  /**
   * Bytes several reads may still inflate together, counted down by each (a request of many
   * PDFs shares one): a read inflates at most the smaller of this and `maxInflatedBytes`.
   */
  readonly shared?: { inflateLeft: number };
  /** Where the read was cut, added to as it goes (several reads may share one set). */
  readonly cuts?: Set<TextCut>;
}

/** The most streams of one PDF decoded (a document of thousands of pages has about as many). */
const MAX_STREAMS = 20_000;
/** The most one stream is decoded to; past it, the rest is cut. */
const STREAM_BYTES = 16 * 1024 * 1024;

/** One font's ToUnicode map: the width of its codes in bytes, and code → text. */
interface UnicodeMap {
  readonly width: 1 | 2;
  readonly map: Map<number, string>;
}

// Every run below is bounded, or anchored where it starts (`(?<!\d)`): hostile bytes cost one
// pass, never a search from each position to the end.
const STREAM_RE = /stream\r?\n/g;
const OBJ_RE = /(?<!\d)(\d{1,10})[ \t\r\n]{1,16}(\d{1,5})[ \t\r\n]{1,16}obj\b/g;
const FONT_DICT_RE = /\/Font\s{0,16}<<([^>]{0,4096})>>/g;
const FONT_ENTRY_RE = /\/([^\s/<>[\]()]{1,127})\s{1,16}(\d{1,10})\s{1,16}\d{1,5}\s{1,16}R/g;
const SKIPPED_STREAM_RE = /\/Length[123]\b|\/Subtype\s{0,16}\/(Image|Type1C|CIDFontType0C|OpenType)\b/;
const TO_UNICODE_RE = /\/ToUnicode\s{1,16}(\d{1,10})\s{1,16}\d{1,5}\s{1,16}R/;
const HEX = '<([0-9a-fA-F\\s]{0,64})>';
const CODESPACE_RE = new RegExp(`begincodespacerange\\s{0,16}${HEX}`);
const BFCHAR_RE = new RegExp(`${HEX}\\s{0,16}${HEX}`, 'g');
const BFRANGE_RE = new RegExp(`${HEX}\\s{0,16}${HEX}\\s{0,16}(?:<([0-9a-fA-F\\s]{0,64})>|(\\[))`, 'g');
const HEX_ITEM_RE = /<([0-9a-fA-F\s]{0,64})>/g;
/** A map of every two-byte code and then some: enough for any font; more is an attack on memory. */
const MAX_MAPPED_CODES = 1 << 17;

/** UTF-16BE bytes (a CMap's destination) as text. */
function utf16be(bytes: Buffer): string {
  return Buffer.from(bytes.subarray(0, bytes.length & ~1))
    .swap16()
    .toString('utf16le');
}

/** The text between each `begin` and its `end` keyword (the last one to the end of the text), found in one pass. */
function sections(text: string, begin: string, end: string): string[] {
  const out: string[] = [];
  for (let at = text.indexOf(begin); at !== -1; ) {
    const from = at + begin.length;
    const to = text.indexOf(end, from);
    out.push(text.slice(from, to === -1 ? text.length : to));
    if (to === -1) break;
    at = text.indexOf(begin, to + end.length);
  }
  return out;
}

/** Reads a ToUnicode CMap's `bfchar` and `bfrange` sections (ranges bounded to 65,536 codes). */
function parseCMap(text: string): UnicodeMap | undefined {
  if (!text.includes('begincmap')) return undefined;
  const space = CODESPACE_RE.exec(text);
  const width: 1 | 2 = space !== null && hexBytes(space[1] as string).length === 1 ? 1 : 2;
  const map = new Map<number, string>();
  const code = (hex: string) => hexBytes(hex).reduce((n, b) => n * 256 + b, 0);
  for (const section of sections(text, 'beginbfchar', 'endbfchar'))
    for (const pair of section.matchAll(BFCHAR_RE)) {
      map.set(code(pair[1] as string), utf16be(hexBytes(pair[2] as string)));
      if (map.size > MAX_MAPPED_CODES) return { width, map };
    }
  for (const section of sections(text, 'beginbfrange', 'endbfrange')) {
    // `<lo> <hi>` then a destination: `<start>`, or `[<d1> <d2> …]` found by one search for its `]`.
    const range = new RegExp(BFRANGE_RE.source, 'g');
    for (let m = range.exec(section); m !== null; m = range.exec(section)) {
      const lo = code(m[1] as string);
      const hi = Math.min(code(m[2] as string), lo + 65_535);
      if (m[4] === '[') {
        const close = section.indexOf(']', range.lastIndex);
        if (close === -1) break;
        const items = [...section.slice(range.lastIndex, close).matchAll(HEX_ITEM_RE)];
        range.lastIndex = close + 1;
        for (let c = lo; c <= hi && c - lo < items.length; c++) map.set(c, utf16be(hexBytes(items[c - lo]?.[1] as string)));
      } else {
        const start = hexBytes(m[3] ?? '');
        // The last byte counts up through the range.
        for (let c = lo; c <= hi; c++) {
          const bytes = Buffer.from(start);
          if (bytes.length > 0) bytes[bytes.length - 1] = ((bytes.at(-1) ?? 0) + (c - lo)) & 0xff;
          map.set(c, utf16be(bytes));
        }
      }
      if (map.size > MAX_MAPPED_CODES) return { width, map };
    }
  }
  return { width, map };
}

/** A string's bytes (a Latin-1 text) shown in a font as text: through its ToUnicode map when it has one, else as they are (the simple fonts' WinAnsi, near enough for names). */
function shown(bytes: string, font: UnicodeMap | undefined): string {
  if (font === undefined) return bytes;
  let out = '';
  for (let i = 0; i + font.width <= bytes.length; i += font.width) {
    const code = font.width === 2 ? (bytes.charCodeAt(i) << 8) | bytes.charCodeAt(i + 1) : bytes.charCodeAt(i);
    out += font.map.get(code) ?? '';
  }
  return out;
}

const ENCODING_REF_RE = /\/Encoding\s{0,16}(\d{1,10})\s{1,16}\d{1,5}\s{1,16}R/;
const DIFFERENCES_RE = /\/Differences\s{0,16}\[([^\]]{0,65536})\]/;
const DIFFERENCES_ITEM_RE = /(\d{1,3})|\/([^\s/[\]()<>{}%]{1,127})/g;

/**
 * A simple font's codes as text when its encoding has `/Differences` (codes given glyph names
 * of their own, inline or in an encoding object): each named code as its glyph's text, every
 * other code as its byte (the base encodings agree with Latin-1 on what names are made of).
 * `undefined` for a font without differences.
 */
function differencesMap(font: string, objectText: ReadonlyMap<number, string>): UnicodeMap | undefined {
  const ref = ENCODING_REF_RE.exec(font)?.[1];
  const differences = DIFFERENCES_RE.exec(ref === undefined ? font : (objectText.get(Number(ref)) ?? ''))?.[1];
  if (differences === undefined) return undefined;
  const map = new Map<number, string>();
  for (let code = 0; code < 256; code++) map.set(code, String.fromCharCode(code));
  let code = -1;
  for (const item of differences.matchAll(DIFFERENCES_ITEM_RE)) {
    if (item[1] !== undefined) code = Number(item[1]);
    else if (code >= 0 && code < 256) map.set(code++, glyphText(item[2] as string));
  }
  return { width: 1, map };
}

/** The text of a glyph name (the Adobe Glyph List's forms for what identifiers are made of): `a`, `zero`, `underscore`, `uni005F`, `u1F600`, `a.sc`. */
function glyphText(name: string): string {
  const base = name.split('.')[0] as string;
  if (/^[A-Za-z]$/.test(base)) return base;
  const named = GLYPH_NAMES[base];
  if (named !== undefined) return named;
  const uni = /^uni((?:[0-9A-F]{4}){1,8})$/.exec(base);
  if (uni !== null) return String.fromCharCode(...((uni[1] as string).match(/.{4}/g) ?? []).map((h) => Number.parseInt(h, 16)));
  const u = /^u([0-9A-F]{4,6})$/.exec(base);
  if (u !== null) {
    const point = Number.parseInt(u[1] as string, 16);
    return point <= 0x10ffff ? String.fromCodePoint(point) : '';
  }
  return '';
}

/** Glyph names of digits, punctuation and ligatures (the Adobe Glyph List's). */
const GLYPH_NAMES: Readonly<Record<string, string>> = Object.assign(Object.create(null), {
  zero: '0',
  one: '1',
  two: '2',
  three: '3',
  four: '4',
  five: '5',
  six: '6',
  seven: '7',
  eight: '8',
  nine: '9',
  space: ' ',
  underscore: '_',
  hyphen: '-',
  period: '.',
  comma: ',',
  colon: ':',
  semicolon: ';',
  slash: '/',
  backslash: '\\',
  parenleft: '(',
  parenright: ')',
  bracketleft: '[',
  bracketright: ']',
  braceleft: '{',
  braceright: '}',
  quotesingle: "'",
  quotedbl: '"',
  exclam: '!',
  question: '?',
  at: '@',
  numbersign: '#',
  dollar: '$',
  percent: '%',
  ampersand: '&',
  asterisk: '*',
  plus: '+',
  equal: '=',
  less: '<',
  greater: '>',
  bar: '|',
  asciitilde: '~',
  asciicircum: '^',
  grave: '`',
  ff: 'ff',
  fi: 'fi',
  fl: 'fl',
  ffi: 'ffi',
  ffl: 'ffl',
});

/** Where a number written at `i` (a sign, digits, a point; 32 characters at most) ends: one character at least. */
function numberEnd(s: string, i: number): number {
  let end = i + 1;
  const last = Math.min(s.length, i + 32);
  while (end < last) {
    const c = s.charCodeAt(end);
    if (!((c >= 0x30 && c <= 0x39) || c === 0x2e)) break;
    end++;
  }
  return end;
}

/**
 * One line of shown runs as text. Runs of one or two characters each are a line drawn glyph by
 * glyph (monospace text, tracked letters): they are joined as written, with a space only where
 * the move to a run is well past the usual one. Longer runs are words or phrases: joined by
 * spaces.
 */
function lineText(runs: ReadonlyArray<{ readonly text: string; readonly dx: number | undefined }>): string {
  if (runs.length === 0) return '';
  if (!runs.every((r) => r.text.length <= 2)) return runs.map((r) => r.text).join(' ');
  const moves = runs
    .map((r) => r.dx)
    .filter((dx): dx is number => dx !== undefined && dx > 0)
    .sort((a, b) => a - b);
  const usual = moves[Math.floor(moves.length / 2)];
  return runs.map((r, i) => (i > 0 && usual !== undefined && r.dx !== undefined && r.dx > 1.5 * usual ? ` ${r.text}` : r.text)).join('');
}

/**
 * The text a content stream shows (`Tj`, `TJ`, `'`, `"`): the strings of one `TJ` array joined
 * as one word unless a gap wider than a space separates them; the runs of one line (a text
 * object, `BT`…`ET`, up to a new line or matrix) joined by {@link lineText}; one line from the
 * next apart.
 */
function contentText(s: string, fonts: ReadonlyMap<string, UnicodeMap>, out: string[], budget: { left: number }): void {
  let font: UnicodeMap | undefined;
  let lastName = '';
  let runs: Array<{ text: string; dx: number | undefined }> = [];
  let nextDx: number | undefined;
  // Where the current line's text is placed (the text matrix's translation, as far as Td and Tm move it).
  let x = 0;
  let y = 0;
  // Every run where it is placed, to read the page by position as well as in drawing order.
  const placed: Array<{ x: number; y: number; text: string; order: number; block: number }> = [];
  let block = 0;
  // Whether this text object placed its text (Td, Tm): only placed runs are read by position.
  let positioned = false;
  const numbers: number[] = [];
  const flush = () => {
    const line = lineText(runs);
    if (line.trim() !== '' && budget.left > 0) {
      out.push(line.slice(0, budget.left));
      budget.left -= line.length;
    }
    runs = [];
    nextDx = undefined;
  };
  let pending: string[] = [];
  for (let i = 0; i < s.length && budget.left > 0; ) {
    const c = s[i] as string;
    if (c === '(') {
      const [bytes, next] = literalString(s, i);
      pending.push(shown(bytes, font));
      i = next;
    } else if (c === '<' && s[i + 1] !== '<') {
      const close = s.indexOf('>', i);
      if (close === -1) break;
      pending.push(shown(hexBytes(s.slice(i + 1, close)).toString('latin1'), font));
      i = close + 1;
    } else if (c === '[') {
      // A TJ array: its strings, and the gaps between them (thousandths of a text space; a wide one is a word space).
      const close = s.indexOf(']', i);
      const body = close === -1 ? s.slice(i + 1) : s.slice(i + 1, close);
      let word = '';
      for (let j = 0; j < body.length; ) {
        const d = body[j] as string;
        if (d === '(') {
          const [bytes, next] = literalString(body, j);
          word += shown(bytes, font);
          j = next;
        } else if (d === '<') {
          const end = body.indexOf('>', j);
          if (end === -1) break;
          word += shown(hexBytes(body.slice(j + 1, end)).toString('latin1'), font);
          j = end + 1;
        } else if (d === '-' || (d >= '0' && d <= '9') || d === '.') {
          const end = numberEnd(body, j);
          if (d === '-' && Number(body.slice(j, end)) < -250) word += ' ';
          j = end;
        } else j++;
      }
      pending = [word];
      i = close === -1 ? s.length : close + 1;
    } else if (c === '-' || c === '+' || c === '.' || (c >= '0' && c <= '9')) {
      const end = numberEnd(s, i);
      numbers.push(Number(s.slice(i, end)));
      if (numbers.length > 6) numbers.shift();
      i = end;
    } else if (c === '/') {
      const name = /^\/([^\s/<>[\]()]+)/.exec(s.slice(i, i + 128))?.[1] ?? '';
      lastName = name;
      i += name.length + 1;
    } else if (/[A-Za-z'"]/.test(c)) {
      const op = /^[A-Za-z'"*]+/.exec(s.slice(i, i + 8))?.[0] ?? c;
      if (op === 'Tf') font = fonts.get(lastName);
      else if (op === 'Tj' || op === 'TJ' || op === "'" || op === '"') {
        if (op === "'" || op === '"') flush();
        const text = pending.join('');
        runs.push({ text, dx: nextDx });
        if (positioned && text !== '' && placed.length < MAX_PLACED_RUNS) placed.push({ x, y, text, order: placed.length, block });
        nextDx = undefined;
      } else if (op === 'Td' || op === 'TD') {
        const [dx = 0, dy = 0] = numbers.slice(-2);
        // A move down or up is a new line; along it, the run's offset from the one before.
        if (dy !== 0) flush();
        else nextDx = dx;
        x += dx;
        y += dy;
        positioned = true;
      } else if (op === 'Tm') {
        // A matrix set anew: the same line when it stays at the same height (text placed glyph by glyph), else a new one.
        const [e = 0, f = 0] = numbers.slice(-2);
        if (Math.abs(f - y) > 0.01) flush();
        else nextDx = e - x;
        x = e;
        y = f;
        positioned = true;
      } else if (op === 'BT') {
        x = 0;
        y = 0;
        block++;
        positioned = false;
      } else if (op === 'ET' || op === 'T*') flush();
      pending = [];
      numbers.length = 0;
      i += op.length;
    } else i++;
  }
  flush();
  positionedJoins(placed, out, budget);
}

/** Runs of one content stream placed for reading by position, at most (a page has far fewer). */
const MAX_PLACED_RUNS = 50_000;

/**
 * Text drawn out of reading order — a word's second half drawn before its first, halves in two
 * text objects on one line, letters drawn right to left — as a reader shows it: the runs of
 * each line (one height) in the order of their places, and where their order differs from the
 * drawing's, the identifier characters either side of each boundary between neighbouring runs
 * joined (through runs that are nothing but identifier characters), one more text each.
 */
function positionedJoins(
  placed: ReadonlyArray<{ x: number; y: number; text: string; order: number; block: number }>,
  out: string[],
  budget: { left: number },
): void {
  const lines = new Map<number, Array<{ x: number; text: string; order: number; block: number }>>();
  for (const run of placed) {
    const key = Math.round(run.y);
    const line = lines.get(key);
    if (line === undefined) lines.set(key, [run]);
    else line.push(run);
  }
  for (const line of lines.values()) {
    if (line.length < 2) continue;
    const byPlace = [...line].sort((a, b) => a.x - b.x || a.order - b.order);
    // Drawn in reading order, within one text object: the drawing-order reading has it already.
    const first = byPlace[0] as { block: number };
    if (byPlace.every((run, k) => k === 0 || (run.order === (byPlace[k - 1] as { order: number }).order + 1 && run.block === first.block)))
      continue;
    const joins: string[] = [];
    let through = '';
    for (const [k, run] of byPlace.entries()) {
      const head = run.text.slice(0, identifierEnd(run.text));
      if (k > 0 && head !== '' && through !== '') joins.push(`${through}${head}`);
      const whole = head.length === run.text.length;
      through = whole ? `${through}${run.text}`.slice(-160) : run.text.slice(identifierStart(run.text));
    }
    const text = [byPlace.map((r) => r.text).join(''), ...joins].join(' ');
    if (text.trim() !== '' && budget.left > 0) {
      out.push(text.slice(0, budget.left));
      budget.left -= text.length;
    }
  }
}

const isIdentifierChar = (c: number) =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f || c === 0x2e || c === 0x2d;

/** Where the identifier characters a text starts with end (160 at most). */
function identifierEnd(text: string): number {
  let i = 0;
  while (i < text.length && i < 160 && isIdentifierChar(text.charCodeAt(i))) i++;
  return i;
}

/** Where the identifier characters a text ends with start (160 at most). */
function identifierStart(text: string): number {
  let i = text.length;
  while (i > 0 && text.length - i < 160 && isIdentifierChar(text.charCodeAt(i - 1))) i--;
  return i;
}

/**
 * The text a PDF shows, as far as names and words go: every stream inflated (`FlateDecode`,
 * object streams included), fonts' ToUnicode maps read (`bfchar`, `bfrange`) and matched to
 * the names pages give them, and each content stream's text operators read — literal and hex
 * strings, `TJ` arrays joined into words. Enough to find an identifier a document carries as
 * text, as browsers' and office suites' PDFs do; not layout, not images, not encrypted files.
 * Bounded by `limits` (inflated bytes, characters returned); malformed parts are skipped, never
 * thrown.
 *
 * @example
 * ```ts
 * const texts = pdfText(readFileSync('report.pdf')); // ['Quarterly notes', 'The agent called …']
 * ```
 */
export function pdfText(pdf: Uint8Array, limits: PdfTextLimits = {}): string[] {
  const bytes = Buffer.from(pdf.buffer, pdf.byteOffset, pdf.byteLength);
  const raw = bytes.toString('latin1');
  const shared = limits.shared ?? { inflateLeft: Number.POSITIVE_INFINITY };
  let inflateLeft = Math.min(limits.maxInflatedBytes ?? 32 * 1024 * 1024, shared.inflateLeft);
  const inflateBudget = inflateLeft;
  const cut = (why: TextCut) => limits.cuts?.add(why);
  // Encrypted under the empty user password (what any reader opens): decrypted; else not read.
  let crypt = pdfDecryptor(raw);
  if (crypt === 'unsupported') cut('pdf_encrypted');
  // Every stream, decoded where it can be: its dictionary and its text.
  const streams: Array<{ dict: string; text: string; objnum: number }> = [];
  const objects = [...raw.matchAll(OBJ_RE)].map((m) => ({ num: Number(m[1]), gen: Number(m[2]), at: m.index }));
  let objIndex = 0;
  const streamRe = new RegExp(STREAM_RE.source, 'g');
  for (let m = streamRe.exec(raw); m !== null; m = streamRe.exec(raw)) {
    if (raw.slice(Math.max(0, m.index - 3), m.index) === 'end') continue;
    while (objIndex + 1 < objects.length && (objects[objIndex + 1]?.at ?? Infinity) < m.index) objIndex++;
    const obj = objects[objIndex];
    // The dictionary just before the keyword: from its object's start, 2 KiB back at most.
    const dict = unescapeNames(raw.slice(Math.max(obj !== undefined && obj.at < m.index ? obj.at : 0, m.index - 2048), m.index));
    const start = m.index + m[0].length;
    const end = raw.indexOf('endstream', start);
    if (end === -1) break;
    // The next stream is looked for after this one ends: its data is not searched again.
    streamRe.lastIndex = end + 'endstream'.length;
    // Images and embedded font programs hold no text operators: not inflated at all.
    if (SKIPPED_STREAM_RE.test(dict)) continue;
    if (streams.length >= MAX_STREAMS) {
      cut('pdf_stream_count');
      break;
    }
    let data: Buffer = bytes.subarray(start, end);
    let decrypted = false;
    // Cross-reference streams are never encrypted; every other stream is, under its object's key.
    if (typeof crypt === 'object' && obj !== undefined && !/\/Type\s{0,16}\/XRef\b/.test(dict)) {
      // The data ends before the end-of-line that precedes `endstream`; AES data is whole blocks.
      const trimmed = data.subarray(0, data.length - (data.length % 16));
      const plain = crypt.decrypt(trimmed, obj.num, obj.gen);
      if (plain !== undefined) {
        data = plain;
        decrypted = true;
      } else if (!/\/Type\s{0,16}\/Metadata\b/.test(dict)) {
        // A stream that does not decrypt: the empty password is not this file's, or it is damaged.
        cut('pdf_encrypted');
        crypt = 'unsupported';
        continue;
      }
    } else if (crypt === 'unsupported') continue;
    const filters = streamFilters(dict);
    if (filters.length > 0) {
      if (inflateLeft <= 0) {
        cut('pdf_inflate_budget');
        continue;
      }
      // One stream decodes to 16 MiB at most, the rest cut: a bomb left unused in the file
      // spends that much of the budget, not all of it.
      const cap = Math.min(inflateLeft, STREAM_BYTES);
      const decoded = decodeStream(data, filters, cap);
      if (decoded === undefined) {
        // Decrypted Flate data that does not inflate: the key is not this file's (a user password;
        // AES padding that happened to check out is no proof). Nothing more is read of it.
        if (decrypted && filters[0] === 'FlateDecode') {
          cut('pdf_encrypted');
          crypt = 'unsupported';
        }
        // An image's coding, a crypt filter, bytes that do not decode: nothing this reader can use.
        continue;
      }
      data = decoded.bytes;
      if (decoded.truncated) cut(cap < STREAM_BYTES ? 'pdf_inflate_budget' : 'pdf_stream_cap');
      inflateLeft -= decoded.truncated ? cap : data.length;
    }
    // Names in content (a font's resource name) as the resources spell them out.
    streams.push({ dict, text: unescapeNames(data.toString('latin1')), objnum: obj?.num ?? -1 });
  }
  shared.inflateLeft -= inflateBudget - inflateLeft;
  // Objects kept in object streams (PDF 1.5): font dictionaries and resources live there too.
  const objectText = new Map<number, string>();
  // An object's text runs to the next object's start, 64 KiB at most: no search for each one's end.
  objects.forEach((o, k) => {
    objectText.set(o.num, unescapeNames(raw.slice(o.at, Math.min(objects[k + 1]?.at ?? raw.length, o.at + 65_536))));
  });
  for (const stream of streams) {
    if (!/\/Type\s{0,16}\/ObjStm/.test(stream.dict)) continue;
    const first = Number(/\/First\s{1,16}(\d{1,10})/.exec(stream.dict)?.[1] ?? Number.NaN);
    if (!Number.isFinite(first)) continue;
    // Object numbers and offsets, 100,000 objects at most, each read 64 KiB at most, as above.
    const header = stream.text.slice(0, Math.min(first, 2_000_000)).trim().split(/\s+/).map(Number);
    for (let k = 0; k + 1 < header.length; k += 2) {
      const from = first + (header[k + 1] as number);
      const to = k + 3 < header.length ? first + (header[k + 3] as number) : stream.text.length;
      objectText.set(header[k] as number, stream.text.slice(from, Math.min(to, from + 65_536)));
    }
  }
  // Fonts by the names resources give them, each with its ToUnicode map.
  const maps = new Map<number, UnicodeMap>();
  for (const stream of streams) {
    const map = parseCMap(stream.text);
    if (map !== undefined) maps.set(stream.objnum, map);
  }
  const fonts = new Map<string, UnicodeMap>();
  for (const text of objectText.values())
    for (const dict of text.matchAll(FONT_DICT_RE))
      for (const entry of (dict[1] as string).matchAll(FONT_ENTRY_RE)) {
        const font = objectText.get(Number(entry[2])) ?? '';
        const toUnicode = TO_UNICODE_RE.exec(font)?.[1];
        // A ToUnicode map says what the glyphs are; without one, a simple font's encoding does.
        const map = toUnicode === undefined ? differencesMap(font, objectText) : maps.get(Number(toUnicode));
        if (map !== undefined && !fonts.has(entry[1] as string)) fonts.set(entry[1] as string, map);
      }
  const out: string[] = [];
  const budget = { left: limits.maxChars ?? 16 * 1024 * 1024 };
  for (const stream of streams) {
    if (budget.left <= 0) {
      cut('chars');
      break;
    }
    if (/\/Type\s*\/(ObjStm|XRef|Metadata)/.test(stream.dict)) continue;
    if (stream.text.includes('begincmap') || !/\b(Tj|TJ)\b/.test(stream.text)) continue;
    contentText(stream.text, fonts, out, budget);
  }
  return out;
}
