import { isUtf8 } from 'node:buffer';
import { gunzipSync, constants as zlibConstants } from 'node:zlib';
import { base64Text, utf16Of } from './base64-text.js';
import { decoyTools } from './decoys.js';
import { DistillGuardError } from './errors.js';
import type { TextCut } from './pdf-text.js';

/** Evidence that ties a text to a key. */
export interface TraceEvidence {
  readonly kind: 'canary' | 'name';
  readonly token: string;
  readonly period: number;
  /** How many keys share this token (a name can collide; canaries practically never do). */
  readonly sharedBy: number;
  /** Whether the text spelled it exactly; else respelled (case, joiners, a longer identifier, a canary's random part). */
  readonly exact: boolean;
}

/** A key named by {@link CanaryIndex.trace}. */
export interface Attribution {
  readonly apiKeyId: string;
  /** 0..1: 1 − Π(1 − wᵢ) over distinct tokens, each weight divided by the keys sharing it. */
  readonly confidence: number;
  readonly evidence: readonly TraceEvidence[];
}

/** Options of {@link CanaryIndex}. */
export interface CanaryIndexOptions {
  readonly secret: Uint8Array;
  /** The API-key identities to consider. */
  readonly keys: Iterable<string>;
  /** Rotation periods to consider (decoys of each key in each period are indexed). */
  readonly periods: readonly number[];
  /** Decoys per key and period, as served (default 3). */
  readonly count?: number;
}

/** Length bounds of a traced token: a run of word characters (`[A-Za-z0-9_]`) of 6 to 80. */
const TOKEN_MIN = 6;
const TOKEN_MAX = 80;

/** Whether UTF-16 code unit `c` is one of `[A-Za-z0-9_]`. */
function isWordUnit(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f;
}

/**
 * Calls `found` with every token of `text` whose length `lengths` flags: the matches of
 * `/[A-Za-z0-9_]{6,80}/g`, found by one pass over the code units instead of a regular
 * expression, and sliced only when a token of that length exists (a long conversation holds
 * tens of thousands of words, and almost none can be a decoy).
 */
function scanTokens(text: string, lengths: Uint8Array, found: (token: string) => void): void {
  const n = text.length;
  let i = 0;
  while (i < n) {
    if (!isWordUnit(text.charCodeAt(i))) {
      i++;
      continue;
    }
    let end = i + 1;
    while (end < n && isWordUnit(text.charCodeAt(end))) end++;
    // The regular expression's greedy pieces of a run: 80 characters each, the rest if it is long enough.
    for (let at = i; end - at >= TOKEN_MIN; at += TOKEN_MAX) {
      const to = Math.min(at + TOKEN_MAX, end);
      if (lengths[to - at] === 1) found(text.slice(at, to));
    }
    i = end;
  }
}

/**
 * Characters that join the words of one identifier as a writer may spell it: the underscore,
 * dashes and dots, and the invisible ones (zero-width space, joiners, word joiner, BOM, soft
 * hyphen) and the fullwidth low line that make a token look whole and match nothing.
 */
function isJoiner(c: number): boolean {
  return (
    c === 0x5f ||
    c === 0x2d ||
    c === 0x2e ||
    c === 0xad ||
    (c >= 0x200b && c <= 0x200d) ||
    (c >= 0x2010 && c <= 0x2015) ||
    c === 0x2060 ||
    c === 0x2212 ||
    c === 0xfeff ||
    c === 0xff3f
  );
}

const isLower = (c: number) => c >= 0x61 && c <= 0x7a;
const isUpper = (c: number) => c >= 0x41 && c <= 0x5a;
const isAlnum = (c: number) => isLower(c) || isUpper(c) || (c >= 0x30 && c <= 0x39);

/**
 * FNV-1a, continued from `seed`, over the code units of `text[start, end)` with ASCII letters
 * lowercased: a word's hash without slicing it. Cut to 30 bits, so the sets of hashes hold
 * small integers.
 */
function foldedHash(text: string, start: number, end: number, seed = FNV_SEED): number {
  let h = seed;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    h = Math.imul(h ^ (isUpper(c) ? c + 32 : c), 0x01000193);
  }
  return h & 0x3fffffff;
}

const FNV_SEED = 0x811c9dc5;
/** The hash of `_` continued from `h`: folded words are joined by `_`. */
const joinHash = (h: number) => Math.imul(h ^ 0x5f, 0x01000193);

/** The hash {@link foldedHash} gives a folded spelling (lowercase words joined by `_`). */
const spellingHash = (spelling: string) => {
  let h = FNV_SEED;
  for (const [i, word] of spelling.split('_').entries()) h = foldedHash(word, 0, word.length, i === 0 ? h : joinHash(h));
  return h;
};

/**
 * The end of the word starting at `start`: a run of ASCII letters and digits, cut where a
 * lowercase letter meets an uppercase one (`camelCase` is two words).
 */
function wordEnd(text: string, start: number): number {
  let i = start + 1;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (!isAlnum(c) || (isUpper(c) && isLower(text.charCodeAt(i - 1)))) break;
    i++;
  }
  return i;
}

/** Where the word after position `from` starts when only joiners lie between, else -1. */
function joinedWordAt(text: string, from: number): number {
  let i = from;
  while (i < text.length && isJoiner(text.charCodeAt(i))) i++;
  return i < text.length && isAlnum(text.charCodeAt(i)) && (i > from || isUpper(text.charCodeAt(i))) ? i : -1;
}

/**
 * What may disguise ASCII: any character outside it (a combining mark, an invisible format
 * character, a fullwidth, mathematical, circled, superscript or accented letter, a ligature, a
 * Greek or Cyrillic look-alike) but the letters of CJK, kana and Hangul, and the escapes of
 * URLs (`%5F`) and HTML (`&#95;`, `&lowbar;`). A text without any is read as it is; one with some is read once more,
 * {@link undisguised}, when that changes it.
 */
const MAYBE_DISGUISED = /[\u0080-\u3040\u3100-\u33ff\u4dc0-\u4dff\ua000-\uabff\ud7a4-\uffff]|%[0-7][0-9A-Fa-f]|&#?[0-9A-Za-z]{2,8};/g;

/** ASCII white space: no decoy, respelled or not, spans it. */
function isSpace(code: number): boolean {
  return code === 0x20 || (code >= 0x09 && code <= 0x0d);
}

/**
 * The runs between ASCII white space that may hold a disguise, joined by line breaks: all a
 * second reading needs, since neither a token nor a respelling spans white space.
 */
function disguisedChunks(text: string): string {
  MAYBE_DISGUISED.lastIndex = 0;
  let out = '';
  let end = 0;
  for (let m = MAYBE_DISGUISED.exec(text); m !== null; m = MAYBE_DISGUISED.exec(text)) {
    let start = m.index;
    while (start > end && !isSpace(text.charCodeAt(start - 1))) start--;
    end = MAYBE_DISGUISED.lastIndex;
    while (end < text.length && !isSpace(text.charCodeAt(end))) end++;
    out += (out === '' ? '' : '\n') + text.slice(start, end);
    MAYBE_DISGUISED.lastIndex = end;
  }
  return out;
}

/** HTML's named escapes of the characters a decoy is written with. */
const HTML_NAMED: Readonly<Record<string, string>> = { lowbar: '_', UnderBar: '_', hyphen: '-', dash: '-', period: '.', nbsp: ' ' };

/** URL and HTML escapes of ASCII characters, decoded; any other left as it is. */
function unescaped(text: string): string {
  return text
    .replace(/%([0-7][0-9A-Fa-f])/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)))
    .replace(/&#(?:[xX]([0-9A-Fa-f]{1,6})|([0-9]{1,7}));|&([A-Za-z]{2,8});/g, (escaped, hex?: string, dec?: string, name?: string) => {
      if (name !== undefined) return HTML_NAMED[name] ?? escaped;
      const code = hex !== undefined ? Number.parseInt(hex, 16) : Number(dec);
      return code < 0x80 ? String.fromCharCode(code) : escaped;
    });
}

/** Greek and Cyrillic letters drawn like Latin ones, as the Latin letter. */
const LOOKALIKES: Readonly<Record<string, string>> = Object.fromEntries(
  [
    ['аеорсухіјѕԁһӏ', 'aeopcyxijsdhl'],
    ['АВЕКМНОРСТХУІЈЅ', 'ABEKMHOPCTXYIJS'],
    ['αοριυνκτ', 'aopiuvkt'],
    ['ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ', 'ABEZHIKMNOPTYX'],
  ].flatMap(([from, to]) => [...(from as string)].map((c, i) => [c, (to as string)[i] as string])),
);

/** What disguises a character, taken off: compatibility form, marks, format and blank characters. */
const HIDDEN = /\p{M}|\p{Cf}|[\u115f\u1160\u2800\u3164\uffa0]/gu;

/** Most characters outside ASCII whose undisguised form is remembered. */
const UNDISGUISED_CACHE_LIMIT = 8_192;
const undisguisedChars = new Map<number, string>();

/**
 * One character outside ASCII undisguised: NFKD, marks and invisible characters removed,
 * look-alikes as Latin. A character that does not become ASCII (or nothing) stays as it is: a
 * decoy is written in ASCII, so only what turns into ASCII can hide one, and a script's own
 * letters (a Hangul syllable's jamo, a kana's voicing mark) are not read again for nothing.
 */
function undisguisedChar(codePoint: number): string {
  const known = undisguisedChars.get(codePoint);
  if (known !== undefined) return known;
  const original = String.fromCodePoint(codePoint);
  let plain = '';
  for (const c of original.normalize('NFKD').replace(HIDDEN, '')) plain += LOOKALIKES[c] ?? c;
  if (/[\u0080-\uffff]/.test(plain)) plain = original;
  if (undisguisedChars.size < UNDISGUISED_CACHE_LIMIT) undisguisedChars.set(codePoint, plain);
  return plain;
}

/**
 * Whether a character is a letter of a script with no ASCII look-alike or compatibility form:
 * kana, CJK ideographs, Hangul syllables (not Hangul's blank fillers, nor CJK compatibility
 * forms such as `㎑`).
 */
function isUnlikeAscii(code: number): boolean {
  return (
    (code >= 0x3041 && code <= 0x30ff) ||
    (code >= 0x3400 && code <= 0x4dbf) ||
    (code >= 0x4e00 && code <= 0x9fff) ||
    (code >= 0xac00 && code <= 0xd7a3)
  );
}

/**
 * `text` with its disguises taken off: URL and HTML escapes of ASCII decoded, compatibility
 * forms as their ASCII letters (NFKD: fullwidth, mathematical, circled, ligatures), accents,
 * other combining marks, invisible format characters and blank fillers removed, look-alike
 * Greek and Cyrillic letters as Latin ones. Character by character, as NFKD decomposes: marks
 * are removed, so their order does not matter, and each character is worked out once.
 */
function undisguised(text: string): string {
  const unescapedText = unescaped(text);
  let out = '';
  let from = 0;
  for (let i = 0; i < unescapedText.length; i++) {
    const code = unescapedText.charCodeAt(i);
    if (code < 0x80 || isUnlikeAscii(code)) continue;
    const codePoint = unescapedText.codePointAt(i) as number;
    const wide = codePoint > 0xffff;
    const plain = undisguisedChar(codePoint);
    if (plain.length !== (wide ? 2 : 1) || plain.charCodeAt(0) !== code) {
      out += unescapedText.slice(from, i) + plain;
      from = i + (wide ? 2 : 1);
    }
    if (wide) i++;
  }
  return from === 0 ? unescapedText : out + unescapedText.slice(from);
}

/** Most words in one indexed identifier (a decoy name: verb, qualifier, noun). */
const FOLDED_WORDS = 3;

/**
 * Most runs one trace follows from a first word (a decoy verb, a canary prefix or random
 * part): a text made of decoy words, each one a run, costs no more than this many.
 */
export const FOLDED_RUN_LIMIT = 2_048;

/** The hashes a folded search looks for: of the first words, and of whole spellings. */
interface FoldedHashes {
  readonly firsts: ReadonlySet<number>;
  /** Whether a first word of each length (up to {@link TOKEN_MAX}) exists: other words are not even hashed. */
  readonly firstLengths: Uint8Array;
  readonly spellings: ReadonlySet<number>;
}

/**
 * Calls `found` with every run of one to three words of `text` (joined as {@link isJoiner}
 * says, or by a case change) whose hash is a spelling's, spelled the folded way: lowercase,
 * words joined by `_`. Words are hashed in place; only a run whose hash matches is sliced.
 */
function scanFolded(text: string, hashes: FoldedHashes, found: (folded: string) => void, budget: { runs: number }): void {
  const n = text.length;
  let i = 0;
  while (i < n && budget.runs > 0) {
    if (!isAlnum(text.charCodeAt(i))) {
      i++;
      continue;
    }
    const end = wordEnd(text, i);
    // A run in mixed case (`nBbKu65W`) is one word too: a canary's random part, whatever its case.
    if (end < n && isUpper(text.charCodeAt(end)) && (i === 0 || !isAlnum(text.charCodeAt(i - 1)))) {
      let runEnd = end;
      while (runEnd < n && isAlnum(text.charCodeAt(runEnd))) runEnd++;
      if (hashes.firstLengths[runEnd - i] === 1 && hashes.spellings.has(foldedHash(text, i, runEnd)))
        found(text.slice(i, runEnd).toLowerCase());
    }
    if (hashes.firstLengths[end - i] !== 1) {
      i = end;
      continue;
    }
    let h = foldedHash(text, i, end);
    if (hashes.firsts.has(h)) {
      budget.runs--;
      const starts = [i];
      const ends = [end];
      if (hashes.spellings.has(h)) found(foldedRun(text, starts, ends));
      for (let words = 1; words < FOLDED_WORDS; words++) {
        const next = joinedWordAt(text, ends[ends.length - 1] as number);
        if (next < 0) break;
        const nextEnd = wordEnd(text, next);
        starts.push(next);
        ends.push(nextEnd);
        h = foldedHash(text, next, nextEnd, joinHash(h));
        if (hashes.spellings.has(h)) found(foldedRun(text, starts, ends));
      }
    }
    i = end;
  }
}

/** The words at `starts`/`ends`, lowercase, joined by `_`. */
function foldedRun(text: string, starts: readonly number[], ends: readonly number[]): string {
  return starts.map((start, w) => text.slice(start, ends[w]).toLowerCase()).join('_');
}

/** Weight of one canary token (30 random bits) and of one decoy name. */
const CANARY_WEIGHT = 0.95;
const NAME_WEIGHT = 0.75;
/**
 * Weight of a decoy name respelled: below a hit alone, since `invalidateCachedSessions` is
 * an identifier code may hold by chance; two of a key's names, or one with its canary, are a hit.
 */
const RESPELLED_NAME_WEIGHT = 0.6;

/** A decoy token's owner, packed in one number: ((key index × 2¹⁶ + period) × 2 + canary bit). */
type PackedEntry = number;

const pack = (keyIndex: number, period: number, canary: boolean): PackedEntry => (keyIndex * 65_536 + period) * 2 + (canary ? 1 : 0);
const periodOf = (entry: PackedEntry): number => Math.floor(entry / 2) % 65_536;

/**
 * Canary tracing: indexes the decoys every key was served and names the keys whose decoys
 * appear in a suspect text — a dataset, a model's output, a transcript. A decoy name alone
 * gives 0.75, its canary identifier 0.95, several independent tokens more; a token shared by
 * several keys counts for each in proportion. Text that contains no decoy token names no one.
 * The index keeps tokens and packed owners only (no tool definitions); {@link add} indexes
 * only (key, period) pairs it has not seen and {@link retain} drops old periods, so a long
 * retention window is paid for once.
 *
 * @example
 * ```ts
 * const index = new CanaryIndex({ secret, keys: ['key_1', 'key_2'], periods: [decoyPeriod()] });
 * index.trace(transcript); // [{ apiKeyId: 'key_2', confidence: 0.75, evidence: [...] }]
 * ```
 */
export class CanaryIndex {
  readonly #tokens = new Map<string, PackedEntry | PackedEntry[]>();
  /** A canary's random part alone → the canary (a token's own folded spelling is the token). */
  readonly #randomParts = new Map<string, string>();
  /** Hashes of every folded spelling and of its first word. */
  readonly #hashes = { firsts: new Set<number>(), firstLengths: new Uint8Array(TOKEN_MAX + 1), spellings: new Set<number>() };
  /** Whether a token of each length (0..{@link TOKEN_MAX}) is indexed: other runs are not even sliced. */
  readonly #lengths = new Uint8Array(TOKEN_MAX + 1);
  readonly #secret: Uint8Array;
  readonly #count: number | undefined;
  readonly #keys: string[] = [];
  readonly #keyIndex = new Map<string, number>();
  /** Per period, the keys whose decoys are indexed. */
  readonly #indexed = new Map<number, Set<number>>();
  #version = 0;

  constructor(options: CanaryIndexOptions) {
    this.#secret = options.secret;
    this.#count = options.count;
    this.add(options.keys, options.periods);
  }

  /** Keys indexed. */
  get size(): number {
    return this.#keys.length;
  }

  /** Periods indexed, oldest first. */
  get periods(): number[] {
    return [...this.#indexed.keys()].sort((a, b) => a - b);
  }

  /** Tokens indexed (two per decoy, fewer when names collide). */
  get tokens(): number {
    return this.#tokens.size;
  }

  /** Counts the changes made by {@link add} and {@link retain}: two reads at one version see the same index. */
  get version(): number {
    return this.#version;
  }

  /**
   * The options that build an index equal to this one: to trace in another thread (a worker
   * given them builds its own). They hold the secret: keep them in the process.
   */
  toOptions(): CanaryIndexOptions {
    return {
      secret: this.#secret,
      keys: [...this.#keys],
      periods: this.periods,
      ...(this.#count === undefined ? {} : { count: this.#count }),
    };
  }

  /** Indexes the decoys of every key in `keys` for every period in `periods` not indexed yet. */
  add(keys: Iterable<string>, periods: readonly number[]): void {
    for (const apiKeyId of keys) {
      let k = this.#keyIndex.get(apiKeyId);
      if (k === undefined) {
        k = this.#keys.push(apiKeyId) - 1;
        this.#keyIndex.set(apiKeyId, k);
      }
      for (const period of periods) {
        if (!Number.isSafeInteger(period) || period < 0 || period >= 65_536)
          throw new DistillGuardError('ERR_DECOY_PERIOD', `expected a period in 0..65535, got ${period}`);
        let done = this.#indexed.get(period);
        if (done === undefined) {
          done = new Set();
          this.#indexed.set(period, done);
        }
        if (done.has(k)) continue;
        done.add(k);
        this.#version++;
        const count = this.#count === undefined ? {} : { count: this.#count };
        for (const decoy of decoyTools({ secret: this.#secret, apiKeyId, period, ...count })) {
          this.#add(decoy.tool.name, pack(k, period, false));
          this.#add(decoy.canary, pack(k, period, true));
          this.#fold(decoy.tool.name);
          this.#fold(decoy.canary);
          // The canary's random part alone: 40 bits no text holds by chance, whatever its prefix became.
          const random = decoy.canary.slice(decoy.canary.indexOf('_') + 1);
          this.#randomParts.set(random, decoy.canary);
          this.#fold(random);
        }
      }
    }
  }

  /** Forgets the decoys of periods before `fromPeriod` (the retention window's start). */
  retain(fromPeriod: number): void {
    if (!this.periods.some((p) => p < fromPeriod)) return;
    this.#version++;
    for (const p of this.#indexed.keys()) if (p < fromPeriod) this.#indexed.delete(p);
    const kept = (e: PackedEntry) => periodOf(e) >= fromPeriod;
    for (const [token, entry] of this.#tokens) {
      if (typeof entry === 'number') {
        if (!kept(entry)) this.#tokens.delete(token);
        continue;
      }
      const left = entry.filter(kept);
      if (left.length === 0) this.#tokens.delete(token);
      else this.#tokens.set(token, left.length === 1 ? (left[0] as number) : left);
    }
    for (const [random, canary] of this.#randomParts) if (!this.#tokens.has(canary)) this.#randomParts.delete(random);
    this.#hashes.firsts.clear();
    this.#hashes.firstLengths.fill(0);
    this.#hashes.spellings.clear();
    for (const token of this.#tokens.keys()) this.#fold(token);
    for (const random of this.#randomParts.keys()) this.#fold(random);
  }

  /** Makes a spelling (lowercase already: decoys are drawn so) findable by {@link scanFolded}. */
  #fold(spelling: string): void {
    const first = spelling.split('_', 1)[0] as string;
    this.#hashes.spellings.add(spellingHash(spelling));
    this.#hashes.firsts.add(spellingHash(first));
    if (first.length <= TOKEN_MAX) this.#hashes.firstLengths[first.length] = 1;
  }

  #add(token: string, entry: PackedEntry): void {
    if (token.length <= TOKEN_MAX) this.#lengths[token.length] = 1;
    const list = this.#tokens.get(token);
    if (list === undefined) this.#tokens.set(token, entry);
    else {
      const all = typeof list === 'number' ? [list] : list;
      // A token counts once per key (the same name in two periods of one key is one token), under
      // its newest period: {@link retain} drops an old period's entries, and the name must stay
      // while a later period still serves it.
      const key = Math.floor(entry / 131_072);
      const at = all.findIndex((e) => Math.floor(e / 131_072) === key);
      if (at === -1) all.push(entry);
      else if (periodOf(entry) > periodOf(all[at] as number)) all[at] = entry;
      else return;
      this.#tokens.set(token, all.length === 1 ? (all[0] as number) : all);
    }
  }

  /**
   * Names the keys whose decoys appear in `text` (or in any of several texts), most
   * confident first, keeping those at or above `threshold` (default 0.5). A token is a run of
   * 6 to 80 characters of `[A-Za-z0-9_]` (a longer run is read in 80-character pieces); texts
   * given apart are read as if joined by a line break. A decoy is also found however a writer
   * respelled it: in any letter case, its words joined by dashes, dots, invisible characters
   * or case changes (`quarantineOfflineShipments`) instead of underscores, inside a longer
   * identifier (`my_quarantine_offline_shipments_v2`), and a canary by its random part alone.
   * A respelled name weighs 0.6 (not a hit at 0.7 alone: code may hold such an identifier by
   * chance), a respelled canary as much as an exact one. Respellings are looked for in the
   * first {@link FOLDED_RUN_LIMIT} runs that start with a decoy's first word. A text with
   * disguised letters (fullwidth, mathematical, circled, accented, look-alike Greek or
   * Cyrillic, combining marks, invisible characters inside words, URL or HTML escapes) is read
   * once more without them. Words apart (spaces) are not joined:
   * a decoy name's words are common English.
   */
  trace(text: string | readonly string[], threshold = 0.5): Attribution[] {
    const state: TraceState = { seen: new Set(), perKey: new Map() };
    this.#collect(typeof text === 'string' ? [text] : text, state);
    return attributionsOf(state, threshold);
  }

  /**
   * {@link trace} over texts of any length, read in slices of about `sliceChars` characters
   * (default {@link DECOY_TRACE_LIMIT}), the event loop given a turn between slices: what one
   * request of many megabytes costs is spread out, not taken at once. Each slice has its own
   * budget of runs for respellings; evidence is gathered over all of them, each token once. A
   * token a slice boundary cuts is read in neither piece: slices end at a line break when one
   * is near.
   */
  async traceLong(texts: readonly string[], threshold = 0.5, sliceChars = DECOY_TRACE_LIMIT): Promise<Attribution[]> {
    const state: TraceState = { seen: new Set(), perKey: new Map() };
    let slice: string[] = [];
    let size = 0;
    const flush = async () => {
      if (slice.length === 0) return;
      this.#collect(slice, state);
      slice = [];
      size = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    };
    for (const text of texts)
      for (let at = 0; at < text.length; ) {
        let end = Math.min(text.length, at + sliceChars - size);
        // End at a line break or a space near the cut, so no token is cut in two.
        if (end < text.length) {
          const back = Math.max(text.lastIndexOf('\n', end), text.lastIndexOf(' ', end));
          if (back > at && end - back < 4_096) end = back + 1;
        }
        slice.push(text.slice(at, end));
        size += end - at;
        at = end;
        if (size >= sliceChars) await flush();
      }
    await flush();
    return attributionsOf(state, threshold);
  }

  /** Adds what `texts` hold (as if joined by line breaks) to `state`: exact tokens, then respelled ones, then disguised ones. */
  #collect(texts: readonly string[], state: TraceState): void {
    const { seen, perKey } = state;
    const found = (token: string, exact = true) => {
      const entries = this.#tokens.get(token);
      if (entries === undefined || seen.has(token)) return;
      seen.add(token);
      const hits = typeof entries === 'number' ? [entries] : entries;
      for (const entry of hits) {
        const apiKeyId = this.#keys[Math.floor(entry / 131_072)] as string;
        const list = perKey.get(apiKeyId) ?? [];
        const kind = entry % 2 === 1 ? 'canary' : 'name';
        list.push({ kind, token, period: Math.floor(entry / 2) % 65_536, sharedBy: hits.length, exact });
        perKey.set(apiKeyId, list);
      }
    };
    const foundFolded = (folded: string) => {
      const token = this.#tokens.has(folded) ? folded : this.#randomParts.get(folded);
      if (token !== undefined) found(token, false);
    };
    // Exact tokens first, then respelled ones, so the evidence is in the same order for one text or its parts.
    for (const one of texts) scanTokens(one, this.#lengths, found);
    const budget = { runs: FOLDED_RUN_LIMIT };
    for (const one of texts) scanFolded(one, this.#hashes, foundFolded, budget);
    // Disguised text is read once more without its disguises; what only that finds is respelled.
    const plains: string[] = [];
    for (const one of texts) {
      const disguised = disguisedChunks(one);
      if (disguised === '') continue;
      const plain = undisguised(disguised);
      if (plain !== disguised) plains.push(plain);
    }
    const foundUndisguised = (token: string) => found(token, false);
    for (const plain of plains) scanTokens(plain, this.#lengths, foundUndisguised);
    for (const plain of plains) scanFolded(plain, this.#hashes, foundFolded, budget);
  }
}

/** What a trace has found so far: the tokens seen, and the evidence per key. */
interface TraceState {
  readonly seen: Set<string>;
  readonly perKey: Map<string, TraceEvidence[]>;
}

/** The keys named by a trace's evidence at or above `threshold`, most confident first. */
function attributionsOf(state: TraceState, threshold: number): Attribution[] {
  const out: Attribution[] = [];
  for (const [apiKeyId, evidence] of state.perKey) {
    let miss = 1;
    for (const e of evidence)
      miss *= 1 - (e.kind === 'canary' ? CANARY_WEIGHT : e.exact ? NAME_WEIGHT : RESPELLED_NAME_WEIGHT) / e.sharedBy;
    const confidence = 1 - miss;
    if (confidence >= threshold) out.push({ apiKeyId, confidence, evidence });
  }
  return out.sort((a, b) => b.confidence - a.confidence || (a.apiKeyId < b.apiKeyId ? -1 : 1));
}

/**
 * Attributions from traces of parts of one request, combined as one trace of all of them
 * gives them: each key's evidence from every part, a token counted once (exact where any part
 * spelled it exactly), the confidence computed again over it all; keys at or above `threshold`,
 * most confident first. Trace each part with threshold 0, so no evidence below the threshold
 * is lost: two respelled names in two parts are a hit together though neither is alone. Lets
 * a verifier keep the trace of a part that every request repeats (a client's system prompt
 * and tool definitions) and trace only the rest.
 *
 * @example
 * ```ts
 * const hits = combineAttributions([index.trace(conversation, 0), cachedToolsTrace], 0.7);
 * ```
 */
export function combineAttributions(lists: ReadonlyArray<readonly Attribution[]>, threshold = 0.5): Attribution[] {
  const state: TraceState = { seen: new Set(), perKey: new Map() };
  // Exact sightings first, then respelled ones, as one trace reads them.
  for (const exact of [true, false])
    for (const list of lists)
      for (const { apiKeyId, evidence } of list)
        for (const e of evidence) {
          const seen = `${apiKeyId}\u0000${e.token}`;
          if (e.exact !== exact || state.seen.has(seen)) continue;
          state.seen.add(seen);
          const kept = state.perKey.get(apiKeyId) ?? [];
          kept.push(e);
          state.perKey.set(apiKeyId, kept);
        }
  return attributionsOf(state, threshold);
}

/** At most this many characters of a request are traced for decoys. */
export const DECOY_TRACE_LIMIT = 262_144;

function textsOf(value: unknown, out: string[], budget: TextBudget): void {
  if (budget.left <= 0) {
    if (value !== undefined && value !== null && value !== '') budget.cuts?.add('chars');
    return;
  }
  if (typeof value === 'string') {
    if (value.length > budget.left) budget.cuts?.add('chars');
    out.push(value.slice(0, budget.left));
    budget.left -= value.length;
  } else if (Array.isArray(value)) for (const item of value) textsOf(item, out, budget);
  else if (typeof value === 'object' && value !== null) {
    const plain = plainTextOf(value, budget);
    if (plain !== undefined) textsOf(plain, out, budget);
    for (const [name, item] of Object.entries(value)) {
      // A member's name can carry a token as well as its value (`{"bkt_nbbku65w": 1}` in a tool's input).
      if (name.length >= TOKEN_MIN && !API_MEMBER_NAMES.has(name)) textsOf(name, out, budget);
      textsOf(item, out, budget);
    }
  }
}

/** Member names of the Messages API itself: never a decoy, not worth reading. */
const API_MEMBER_NAMES: ReadonlySet<string> = new Set([
  'content',
  'tool_use_id',
  'is_error',
  'media_type',
  'cache_control',
  'signature',
  'thinking',
  'citations',
  'input_schema',
  'description',
  'properties',
  'required',
  'source',
  'user_id',
  'redacted_thinking',
  'document',
  'context',
]);

/**
 * A base64 source (a document or an image, whatever media type it claims), decoded where it
 * carries text ({@link base64Text}: text in UTF-8 or UTF-16, a PDF's shown text): its text is
 * the conversation's as much as a text source's.
 */
function plainTextOf(value: object, budget: TextBudget): string | undefined {
  const source = value as { type?: unknown; media_type?: unknown; data?: unknown };
  if (typeof source.type !== 'string' || source.type.toLowerCase() !== 'base64' || typeof source.data !== 'string') return undefined;
  return base64Text(source.media_type, source.data, {
    ...(Number.isFinite(budget.left) ? { maxChars: budget.left } : {}),
    shared: budget.inflate,
    ...(budget.cuts === undefined ? {} : { cuts: budget.cuts }),
  });
}

/** What one request's texts may still take: characters, and bytes its PDFs and hidden gzip may inflate (32 MiB in all). */
interface TextBudget {
  left: number;
  /** Bytes its PDFs and hidden gzip may still inflate: the request's own, or shared with other reads (a batch's items). */
  readonly inflate: { inflateLeft: number };
  /** Where the trace was cut, when the caller asked. */
  readonly cuts?: Set<TextCut>;
}

/** What {@link decoyTraceTexts} reports and shares beyond its own request. */
export interface TraceTextsOptions {
  /** Where the read was cut ({@link TextCut}), added to as it goes. */
  readonly cuts?: Set<TextCut>;
  /**
   * Bytes the PDFs and the gzip hidden in base64 may still inflate, counted down, shared by several requests read together
   * (the items of one Message Batch: one body, one budget). Default: {@link TRACE_INFLATE_BYTES} for this request.
   */
  readonly inflate?: { inflateLeft: number };
  /**
   * The text that came before the conversation when it is not in `request` (the system prompt
   * read apart: {@link conversationPrelude} of the whole request), for joining its end with the
   * conversation's start. Default: the request's own prelude.
   */
  readonly before?: string;
}

/**
 * The text a request puts just before its conversation: its system prompt's last text (a
 * string, or the last text block), else `''`. A decoy split across it and the first message is
 * joined there, as across two blocks of the conversation.
 */
export function conversationPrelude(request: unknown): string {
  const system = (request as { system?: unknown } | null)?.system;
  if (typeof system === 'string') return system;
  if (!Array.isArray(system)) return '';
  const text = (system.at(-1) as { text?: unknown } | null)?.text;
  return typeof text === 'string' ? text : '';
}

/** Bytes all the PDFs and hidden gzip of one request (or of requests read together, a batch's items) may inflate together. */
export const TRACE_INFLATE_BYTES = 32 * 1024 * 1024;

/** The members of a request besides `messages` a decoy can be hidden in, read after the conversation. */
const TRACED_MEMBERS = ['system', 'tools', 'tool_choice', 'metadata', 'stop_sequences', 'mcp_servers'] as const;

/** Members of a request that hold no text a decoy could hide in, or that were read already. */
const UNTRACED_MEMBERS: ReadonlySet<string> = new Set([
  'messages',
  'model',
  'max_tokens',
  'stream',
  'temperature',
  'top_p',
  'top_k',
  ...TRACED_MEMBERS,
]);

/**
 * The texts of a request where a decoy can surface — the conversation first (tool names and
 * inputs, tool results, documents, any text, and member names), then the system prompt, the
 * tools it defines, `tool_choice`, `metadata`, `stop_sequences`, `mcp_servers` and any other
 * member, known or not — bounded to `limit` characters in all (default
 * {@link DECOY_TRACE_LIMIT}, what one {@link CanaryIndex.trace} should read; pass `Infinity`
 * for {@link CanaryIndex.traceLong}), read apart (no joined copy of a long conversation is
 * made). Pass the request as its client sent it: the decoys a verifier
 * adds to the forwarded copy are its own, not evidence. A base64 source is read decoded
 * wherever it carries text, whatever media type it claims: text in UTF-8 or UTF-16, and what a
 * PDF shows ({@link base64Text}). Where the read was cut — the characters spent, a PDF's
 * decode budget, an encrypted PDF — is added to `options.cuts` ({@link TextCut}), when given:
 * a trace that found nothing in a request not read whole can say so. Requests read together
 * (a batch's items) share one decode budget through `options.inflate`.
 *
 * @example
 * ```ts
 * const hits = index.trace(decoyTraceTexts(request), 0.7); // keys whose decoys the request replays
 * const cuts = new Set<TextCut>();
 * index.traceLong(decoyTraceTexts(request, Infinity, { cuts }), 0.7); // cuts: e.g. {'pdf_encrypted'}
 * ```
 */
export function decoyTraceTexts(request: unknown, limit = DECOY_TRACE_LIMIT, options: TraceTextsOptions = {}): string[] {
  if (typeof request !== 'object' || request === null) return [];
  const members = request as Record<string, unknown>;
  const out: string[] = [];
  const budget: TextBudget = {
    left: limit,
    inflate: options.inflate ?? { inflateLeft: TRACE_INFLATE_BYTES },
    ...(options.cuts === undefined ? {} : { cuts: options.cuts }),
  };
  textsOf(members.messages, out, budget);
  const conversation = out.length;
  for (const name of TRACED_MEMBERS) textsOf(members[name], out, budget);
  // Then any other member, the API's newer ones and unknown ones alike.
  for (const [name, member] of Object.entries(members)) if (!UNTRACED_MEMBERS.has(name)) textsOf({ [name]: member }, out, budget);
  // Hidden forms are looked for in the conversation, where replayed traffic sits: the system
  // prompt and the tools are the app's own, the same long texts on every request.
  const before = options.before ?? conversationPrelude(request);
  for (const hidden of hiddenTexts(out.slice(0, conversation), budget, before)) textsOf(hidden, out, budget);
  return out;
}

/** Values of the API's own (roles, block and source types): not text a decoy is split across. */
const API_VALUES: ReadonlySet<string> = new Set([
  'user',
  'assistant',
  'text',
  'image',
  'document',
  'tool_use',
  'tool_result',
  'thinking',
  'redacted_thinking',
  'server_tool_use',
  'mcp_tool_use',
  'mcp_tool_result',
  'search_result',
  'base64',
  'url',
  'file',
  'content',
  'ephemeral',
]);

/**
 * Where a run of identifier characters (`[A-Za-z0-9_.-]`, at most {@link TOKEN_MAX}) that
 * starts at `from` ends, going `step` (1: forward, the index after it; -1: back, the index
 * before it).
 */
function identifierRun(text: string, from: number, step: 1 | -1): number {
  let at = from;
  while (at >= 0 && at < text.length && Math.abs(at - from) < TOKEN_MAX) {
    const c = text.charCodeAt(at);
    if (!isWordUnit(c) && c !== 0x2e && c !== 0x2d) break;
    at += step;
  }
  return at;
}
/** The shortest base64 run read (12 bytes), and the longest (a run longer is cut: 768 KiB decoded). */
const BASE64_MIN = 16;
const BASE64_MAX = 1 << 20;

/** The base64 characters, standard and URL-safe (`[A-Za-z0-9+/_-]`), by code unit: one lookup a character. */
const BASE64_UNITS = new Uint8Array(128);
for (let c = 0; c < 128; c++) if (isWordUnit(c) || c === 0x2b || c === 0x2f || c === 0x2d) BASE64_UNITS[c] = 1;
const isBase64Unit = (c: number): boolean => c < 128 && BASE64_UNITS[c] === 1;

/** Printable text of at least six characters, nine tenths ASCII at least: what a decoded base64 run must be to be read. */
function printable(bytes: Buffer): string | undefined {
  if (bytes.length < 6) return undefined;
  // Most runs are identifiers and paths, whose bytes decode to binary: the first bytes say so.
  // Text that hides a decoy is mostly ASCII; bytes that only happen to be valid UTF-8 are not.
  let high = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number;
    if ((b < 0x20 && b !== 9 && b !== 10 && b !== 13) || b === 0x7f) return undefined;
    if (b >= 0x80 && ++high * 10 > bytes.length) return undefined;
  }
  // Checked, not decoded and caught: a thrown error per identifier costs more than the scan.
  return isUtf8(bytes) ? bytes.toString('utf8') : undefined;
}

/** Printable text in UTF-16 (as {@link utf16Of} tells its order), nine tenths ASCII at least: base64 of a UTF-16 string. */
function printable16(bytes: Buffer): string | undefined {
  if (bytes.length < 12) return undefined;
  const order = utf16Of(bytes);
  if (order === undefined) return undefined;
  const text = new TextDecoder(order).decode(bytes);
  let high = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 && c !== 9 && c !== 10 && c !== 13) || c === 0x7f || c === 0xfffd) return undefined;
    if (c >= 0x80 && ++high * 10 > text.length) return undefined;
  }
  return text;
}

function rot13(s: string): string {
  const units = new Array<number>(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    units[i] = c >= 0x61 && c <= 0x7a ? ((c - 0x61 + 13) % 26) + 0x61 : c >= 0x41 && c <= 0x5a ? ((c - 0x41 + 13) % 26) + 0x41 : c;
  }
  return String.fromCharCode(...units);
}

/** Bytes gzip made (its magic number first), inflated to this much at most. */
const GZIP_TEXT_BYTES = 1 << 20;

/**
 * The text a run of base64 characters hides: hex first (its digits are base64 characters too),
 * then base64, as printable UTF-8 or UTF-16 — gzip inflated first when the bytes are gzip's —
 * and, when it does not decode so, base64 that one to three characters before it put out of
 * step (a stray letter in front). Each step out of step is tried on the run's first 64
 * characters before the whole run is decoded.
 */
function decodedRun(run: string, spend: InflateSpend): string | undefined {
  if (/^(?:[0-9a-fA-F]{2})+$/.test(run)) {
    const text = textOfBytes(Buffer.from(run, 'hex'), spend);
    if (text !== undefined) return text;
  }
  for (let skip = 0; skip < 4 && run.length - skip >= BASE64_MIN; skip++) {
    const part = run.slice(skip);
    if (skip > 0 && textOfBytes(Buffer.from(part.slice(0, 64 - (64 % 4)), 'base64'), spend, true) === undefined) continue;
    const text = textOfBytes(Buffer.from(part, 'base64'), spend);
    if (text !== undefined) return text;
  }
  return undefined;
}

/** What hidden gzip may still inflate (the request's decode budget, shared with its PDFs), and where a read was cut. */
type InflateSpend = Pick<TextBudget, 'inflate' | 'cuts'>;

/**
 * Decoded bytes as printable text (UTF-8 or UTF-16, gzip inflated first, within the request's
 * decode budget: a few KiB of gzip each inflating to a MiB would otherwise make a small body
 * hundreds of MiB of text); `probe`: a run's start, whose last character may be cut.
 */
function textOfBytes(bytes: Buffer, spend: InflateSpend, probe = false): string | undefined {
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    if (probe) return '';
    const left = Math.max(0, Math.floor(spend.inflate.inflateLeft));
    if (left === 0) {
      spend.cuts?.add('gzip_inflate_budget');
      return undefined;
    }
    const cap = Math.min(GZIP_TEXT_BYTES, left);
    try {
      const inflated = gunzipSync(bytes, { maxOutputLength: cap, finishFlush: zlibConstants.Z_SYNC_FLUSH });
      spend.inflate.inflateLeft -= inflated.length;
      if (inflated.length === cap && cap < GZIP_TEXT_BYTES) spend.cuts?.add('gzip_inflate_budget');
      return printable(inflated) ?? printable16(inflated);
    } catch (error) {
      // Output past the cap: the budget is spent (or the run is past the 1 MiB any run may give).
      if ((error as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') {
        spend.inflate.inflateLeft -= cap;
        spend.cuts?.add(cap < GZIP_TEXT_BYTES ? 'gzip_inflate_budget' : 'gzip_stream_cap');
      }
      return undefined;
    }
  }
  if (probe) return printable(bytes.subarray(0, bytes.length - 3)) ?? printable16(bytes.subarray(0, bytes.length - (bytes.length % 2) - 2));
  return printable(bytes) ?? printable16(bytes);
}

/**
 * Base64 wrapped at a fixed width (MIME's 76, PEM's 64, or any other): two lines or more of
 * base64 characters alone, all but the last of one length, joined and decoded as one run.
 */
function wrappedRuns(text: string, decoded: string[], spend: InflateSpend): void {
  if (!text.includes('\n')) return;
  let lines: string[] = [];
  const flush = () => {
    if (lines.length >= 2) {
      const plain = decodedRun(lines.join('').slice(0, BASE64_MAX), spend);
      if (plain !== undefined) decoded.push(plain);
    }
    lines = [];
  };
  let from = 0;
  while (from <= text.length) {
    let to = text.indexOf('\n', from);
    if (to === -1) to = text.length;
    const line = text.slice(from, text.charCodeAt(to - 1) === 0x0d ? to - 1 : to);
    from = to + 1;
    const body = line.replace(/={0,2}$/, '');
    let whole = body.length >= 4 && body.length <= 1024;
    for (let k = 0; whole && k < body.length; k++) whole = isBase64Unit(body.charCodeAt(k));
    // A line of another length than the ones before ends the block (it may be its last line).
    if (!whole) flush();
    else if (lines.length > 0 && (lines[0] as string).length !== line.length) {
      lines.push(body);
      flush();
    } else {
      lines.push(body);
      if (body.length !== line.length) flush(); // padding: the last line
    }
  }
  flush();
}

/**
 * One pass over `text` for what it may hide: each run of base64 characters of
 * {@link BASE64_MIN} or more decoded (as hex when it is hex), kept when it is printable text
 * in UTF-8 or UTF-16, and read once more for base64 inside; each snake-case
 * identifier of {@link TOKEN_MIN} or more (what decoy names and canaries are) in rot13.
 */
function scanHidden(text: string, decoded: string[], rotated: string[], spend: InflateSpend, depth = 0): void {
  const n = text.length;
  let i = 0;
  while (i < n) {
    if (!isBase64Unit(text.charCodeAt(i))) {
      i++;
      continue;
    }
    let end = i;
    let underscore = false;
    while (end < n) {
      const c = text.charCodeAt(end);
      if (!isBase64Unit(c)) break;
      if (c === 0x5f) underscore = true;
      end++;
    }
    if (end - i >= BASE64_MIN) {
      const plain = decodedRun(text.slice(i, Math.min(end, i + BASE64_MAX)), spend);
      if (plain !== undefined) {
        decoded.push(plain);
        if (depth < 1) scanHidden(plain, decoded, [], spend, depth + 1);
      }
    }
    if (underscore && end - i >= TOKEN_MIN)
      // The identifiers in the run: word characters between its `+`, `/` and `-`.
      for (const word of text.slice(i, end).split(/[+/-]/))
        if (word.length >= TOKEN_MIN && word.includes('_') && !word.startsWith('_') && !word.endsWith('_')) rotated.push(rot13(word));
    i = end;
  }
}

/** The ASCII a text's tag characters carry, in order (each U+E00xx is the ASCII character xx). */
function tagText(text: string): string {
  let out = '';
  for (let i = text.indexOf('\udb40'); i !== -1 && i + 1 < text.length; i = text.indexOf('\udb40', i + 2)) {
    const low = text.charCodeAt(i + 1);
    if (low >= 0xdc20 && low <= 0xdc7e) out += String.fromCharCode(low - 0xdc00);
  }
  return out;
}

/**
 * Text a decoy may be hidden in within the texts themselves, each kind as one more text (none
 * when it is empty): the identifier characters either side of each boundary between
 * consecutive texts joined, also over one text between and through whole texts of identifier
 * characters (a decoy split across two blocks or turns, around an unrelated one, in three
 * pieces or more; the API's own values, roles and block types, are passed over), base64 runs that decode to printable text,
 * snake-case identifiers in rot13, and the ASCII that tag characters carry.
 */
function hiddenTexts(texts: readonly string[], spend: InflateSpend, before = ''): string[] {
  const joins: string[] = [];
  const decoded: string[] = [];
  const rotated: string[] = [];
  // The identifier characters at the end of the text before, of the one before that (a block
  // between the pieces), and of the texts before run together while whole texts are nothing but
  // identifier characters (a decoy in three pieces or more), 80 characters at most. The first
  // text's is the end of what came before the conversation (the system prompt).
  let tail = before.slice(identifierRun(before, before.length - 1, -1) + 1);
  let tailBefore = '';
  let run = '';
  const join = (before: string, head: string) => {
    if (before !== '' && before.length + head.length >= TOKEN_MIN) joins.push(`${before}${head}`);
  };
  for (const text of texts) {
    // Short first: a long text is not hashed to learn it is no API value.
    if (text.length <= 24 && API_VALUES.has(text)) continue;
    const headEnd = identifierRun(text, 0, 1);
    const head = text.slice(0, headEnd);
    if (head !== '') {
      join(tail, head);
      join(tailBefore, head);
      if (run !== tail) join(run, head);
    }
    const whole = headEnd === text.length && text.length > 0;
    tailBefore = tail;
    tail = text.slice(identifierRun(text, text.length - 1, -1) + 1);
    run = whole ? `${run}${text}`.slice(-TOKEN_MAX) : tail;
    scanHidden(text, decoded, rotated, spend);
    wrappedRuns(text, decoded, spend);
    // Tag characters (U+E0020–E007E) carry ASCII no one sees and models read ("ASCII smuggling").
    if (text.includes('\udb40')) {
      const smuggled = tagText(text);
      if (smuggled.length >= TOKEN_MIN) decoded.push(smuggled);
    }
  }
  return [joins, decoded, rotated].filter((kind) => kind.length > 0).map((kind) => kind.join('\n'));
}

/**
 * {@link decoyTraceTexts} joined by line breaks, as one text.
 *
 * @example
 * ```ts
 * const hits = index.trace(decoyTraceText(request), 0.7);
 * ```
 */
export function decoyTraceText(request: unknown): string {
  return decoyTraceTexts(request).join('\n');
}
