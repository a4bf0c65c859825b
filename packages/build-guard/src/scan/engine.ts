import { MultiMatcher } from './matcher.js';
import { type Encoding, type Needle, type NeedleOptions, needlesFor } from './needles.js';

/** One codename occurrence found in a byte stream. */
export interface RawMatch {
  readonly codename: string;
  readonly encoding: Encoding;
  /** Byte offset in the stream. */
  readonly offset: number;
  readonly length: number;
  /** Printable bytes around the match. */
  readonly context: string;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const WORD = /[A-Za-z0-9_]/;
// Junctions of split string literals: 'a' + 'b', `a${'b'}`, `${'a'}b`. TRIGGER finds where
// one starts (`"}` alone is too common in minified code to start a window); JUNCTION
// removes every junction inside the window.
const TRIGGER = /['"`]\s*\+\s*['"`]|\$\{\s*['"`]/g;
const JUNCTION = /['"`]\s*\+\s*['"`]|\$\{\s*['"`]|['"`]\s*\}/g;
const CONTEXT = 24;

function printable(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.charCodeAt(0);
    out += c >= 0x20 && c < 0x7f ? ch : '.';
  }
  return out;
}

/**
 * The codename search over one stream, fed chunk by chunk with bounded memory: plain text
 * and UTF-16 forms through one regular expression (V8 compiles the literal alternation with
 * a Boyer-Moore prefilter; `i` for case-insensitive), every exact encoded form through a
 * {@link MultiMatcher}, and split string literals by removing literal junctions around each
 * junction and searching again. A `carry` of the longest needle's length joins chunks, so
 * matches across chunk boundaries are found once.
 */
export class CodenameEngine {
  readonly #regex: RegExp | undefined;
  readonly #regexNeedles = new Map<string, Needle>();
  readonly #matcher: MultiMatcher;
  readonly #splitRegex: RegExp | undefined;
  readonly #splitNeedles = new Map<string, Needle>();
  readonly #fold: boolean;
  readonly maxLength: number;

  constructor(codenames: readonly string[], options: NeedleOptions = {}) {
    const needles = codenames.flatMap((c) => needlesFor(c, options));
    this.#fold = options.ignoreCase === true;
    // Case-insensitive forms go through the regular expression (flag i); exact ones through
    // the matcher, whose cost does not grow with the number of needles.
    const viaRegex = needles.filter((n) => n.encoding === 'plain' || n.fold);
    const exact = needles.filter((n) => !viaRegex.includes(n));
    for (const n of viaRegex) this.#regexNeedles.set(this.#key(Buffer.from(n.bytes).toString('latin1')), n);
    const alternatives = [...this.#regexNeedles.keys()].sort((a, b) => b.length - a.length);
    // Keys are folded for case-insensitive needles; the pattern uses the originals.
    const sources = [...new Set(viaRegex.map((n) => Buffer.from(n.bytes).toString('latin1')))].sort((a, b) => b.length - a.length);
    this.#regex = alternatives.length === 0 ? undefined : new RegExp(sources.map(escapeRe).join('|'), this.#fold ? 'gi' : 'g');
    this.#matcher = new MultiMatcher(exact, false);
    if (!options.plainOnly) {
      for (const n of needles.filter((x) => x.encoding === 'plain'))
        this.#splitNeedles.set(this.#key(Buffer.from(n.bytes).toString('latin1')), n);
      this.#splitRegex = new RegExp(
        sources
          .filter((s) => !s.includes('\0'))
          .map(escapeRe)
          .join('|'),
        this.#fold ? 'gi' : 'g',
      );
    }
    this.maxLength = Math.max(1, this.#matcher.maxLength, ...sources.map((s) => s.length));
  }

  #key(s: string): string {
    return this.#fold ? s.toLowerCase() : s;
  }

  /** An independent search state for one stream. */
  stream(onMatch: (match: RawMatch) => void): CodenameStream {
    return new CodenameStream(this, onMatch);
  }

  /** @internal Scans `window` (carry + chunk) and reports matches that end past `carryLength`. */
  scanWindow(window: Buffer, carryLength: number, base: number, onMatch: (m: RawMatch) => void): void {
    const text = window.toString('latin1');
    const report = (codename: string, encoding: Encoding, at: number, length: number) => {
      if (at + length <= carryLength) return;
      const context = printable(text.slice(Math.max(0, at - CONTEXT), Math.min(text.length, at + length + CONTEXT)));
      onMatch({ codename, encoding, offset: base + at, length, context });
    };
    const re = this.#regex;
    if (re !== undefined) {
      re.lastIndex = 0;
      for (let m = re.exec(text); m !== null; m = re.exec(text)) {
        const needle = this.#regexNeedles.get(this.#key(m[0]));
        const at = m.index;
        re.lastIndex = at + 1;
        if (needle === undefined || !this.#asciiEqual(m[0], Buffer.from(needle.bytes).toString('latin1'), needle.fold)) continue;
        if (needle.wholeWord && (WORD.test(text[at - 1] ?? '') || WORD.test(text[at + m[0].length] ?? ''))) continue;
        report(needle.codename, needle.encoding, at, m[0].length);
      }
    }
    this.#matcher.scan(window, 0, window.length, (index, at) => {
      const needle = this.#matcher.needles[index] as Needle;
      report(needle.codename, needle.encoding, at, needle.bytes.length);
    });
    if (this.#splitRegex !== undefined) this.#scanSplit(text, report);
  }

  /** `'Capy' + 'bara'`: around each junction, remove junctions and search the plain forms. */
  #scanSplit(text: string, report: (codename: string, encoding: Encoding, at: number, length: number) => void): void {
    const splitRe = this.#splitRegex as RegExp;
    TRIGGER.lastIndex = 0;
    let lastEnd = -1;
    for (let j = TRIGGER.exec(text); j !== null; j = TRIGGER.exec(text)) {
      if (j.index < lastEnd) continue;
      const start = Math.max(0, j.index - this.maxLength);
      let end = Math.min(text.length, j.index + j[0].length + this.maxLength);
      const raw = text.slice(start, end);
      const kept: number[] = [];
      let joined = '';
      JUNCTION.lastIndex = 0;
      let cursor = 0;
      for (let k = JUNCTION.exec(raw); k !== null; k = JUNCTION.exec(raw)) {
        for (let p = cursor; p < k.index; p++) kept.push(start + p);
        joined += raw.slice(cursor, k.index);
        cursor = k.index + k[0].length;
      }
      for (let p = cursor; p < raw.length; p++) kept.push(start + p);
      joined += raw.slice(cursor);
      end = start + raw.length;
      lastEnd = end - this.maxLength;
      splitRe.lastIndex = 0;
      for (let m = splitRe.exec(joined); m !== null; m = splitRe.exec(joined)) {
        splitRe.lastIndex = m.index + 1;
        const first = kept[m.index] as number;
        const last = kept[m.index + m[0].length - 1] as number;
        if (last - first + 1 === m[0].length) continue; // contiguous: a plain match, reported already
        const needle = this.#splitNeedles.get(this.#key(m[0]));
        if (needle === undefined || !this.#asciiEqual(m[0], Buffer.from(needle.bytes).toString('latin1'), needle.fold)) continue;
        report(needle.codename, 'split-literal', first, last - first + 1);
      }
    }
  }

  #asciiEqual(a: string, b: string, fold: boolean): boolean {
    if (a.length !== b.length) return false;
    if (!fold) return a === b;
    for (let i = 0; i < a.length; i++) {
      let x = a.charCodeAt(i);
      let y = b.charCodeAt(i);
      if (x >= 0x41 && x <= 0x5a) x += 0x20;
      if (y >= 0x41 && y <= 0x5a) y += 0x20;
      if (x !== y) return false;
    }
    return true;
  }
}

/** Feeds one stream's chunks to a {@link CodenameEngine}, keeping the carry between them. */
export class CodenameStream {
  readonly #engine: CodenameEngine;
  readonly #onMatch: (match: RawMatch) => void;
  #carry: Buffer = Buffer.alloc(0);
  #offset = 0;
  readonly #seen = new Set<string>();

  constructor(engine: CodenameEngine, onMatch: (match: RawMatch) => void) {
    this.#engine = engine;
    this.#onMatch = (m) => {
      // A split-literal window can see the same match twice; report each once.
      const key = `${m.offset}:${m.length}:${m.encoding}:${m.codename}`;
      if (this.#seen.has(key)) return;
      if (this.#seen.size > 10_000) this.#seen.clear();
      this.#seen.add(key);
      onMatch(m);
    };
  }

  /** Scans the next chunk of the stream. */
  write(chunk: Uint8Array): void {
    const window =
      this.#carry.length === 0 ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : Buffer.concat([this.#carry, chunk]);
    const base = this.#offset - this.#carry.length;
    this.#engine.scanWindow(window, this.#carry.length, base, this.#onMatch);
    this.#offset += chunk.byteLength;
    const keep = Math.min(window.length, this.#engine.maxLength);
    this.#carry = Buffer.from(window.subarray(window.length - keep));
  }

  /** Bytes seen so far. */
  get bytes(): number {
    return this.#offset;
  }
}
