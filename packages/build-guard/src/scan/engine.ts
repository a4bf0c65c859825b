import type { NativeBinding } from '@moat/protocol/support';
import { MultiMatcher } from './matcher.js';
import { checkCodename, ENCODINGS, type Encoding, type Needle, type NeedleOptions, needleForms } from './needles.js';

// Built-ins through getBuiltinModule, not ES imports: see scanner.ts.
const { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, utimesSync, writeFileSync } =
  process.getBuiltinModule('node:fs');
const { createRequire } = process.getBuiltinModule('node:module');
const { homedir } = process.getBuiltinModule('node:os');
const { join } = process.getBuiltinModule('node:path');

/**
 * The native multi-literal search of `@moat/native` (Hyperscan via dlopen), as its one
 * declaration in `@moat/protocol/support` gives it; the prefilter's functions are optional,
 * since an older addon lacks them.
 */
export type NativeLiterals = Pick<
  NativeBinding,
  'literalsCompile' | 'regexCompile' | 'literalsScan' | 'literalsSerialize' | 'literalsVersion'
> &
  Partial<
    Pick<
      NativeBinding,
      'literalsCompilePacked' | 'prefilterFiles' | 'literalsForms' | 'regexCompileAsync' | 'literalsDirectStride' | 'sha256'
    >
  >;

/**
 * Compiled libhs databases are cached by what they were compiled from and the library
 * version, in `$MOAT_SCAN_CACHE_DIR` (default `$XDG_CACHE_HOME/moat-scan` or
 * `~/.cache/moat-scan`), a directory of this user's only: a database read back must be one
 * this user wrote, since a doctored one could hide a leak. `MOAT_SCAN_CACHE=0` turns the
 * cache off; `undefined` then.
 */
export function cacheDirectory(): string | undefined {
  if (process.env.MOAT_SCAN_CACHE === '0') return undefined;
  return process.env.MOAT_SCAN_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'moat-scan');
}

/**
 * @internal The hex SHA-256 of `parts` back to back: a cache file's name. The addon hashes them
 * where it is loaded (it links libcrypto already), so a warm run does not start `node:crypto`
 * for one hash; the same digest either way, so the cache's files keep their names.
 */
export function cacheName(addon: Pick<NativeLiterals, 'sha256'> | undefined, parts: ReadonlyArray<Uint8Array | string>): string {
  const bytes = parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p));
  if (typeof addon?.sha256 === 'function') return addon.sha256(Buffer.concat(bytes)).toString('hex');
  // node:crypto only with an addon from before `sha256`: loading it costs a cold process about 10 ms.
  const hash = process.getBuiltinModule('node:crypto').createHash('sha256');
  for (const b of bytes) hash.update(b);
  return hash.digest('hex');
}

/** The cache file of a literal set (see {@link cacheDirectory}). */
function cacheFile(addon: NativeLiterals, set: PackedLiterals, version: string): string | undefined {
  const dir = cacheDirectory();
  if (dir === undefined) return undefined;
  const lengths = new Uint8Array(set.lengths.buffer, set.lengths.byteOffset, set.lengths.byteLength);
  return join(dir, `${cacheName(addon, [`moat-scan-literals/2\0${version}\0`, lengths, set.caseless, set.packed])}.hsdb`);
}

/** Whether `path` is a file or directory owned by this user that no one else can write. */
function ownedAndPrivate(path: string, kind: 'file' | 'dir'): boolean {
  try {
    const st = lstatSync(path);
    const uid = process.getuid?.();
    return (kind === 'file' ? st.isFile() : st.isDirectory()) && (uid === undefined || st.uid === uid) && (st.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

/** @internal A cache file's bytes, when this user alone wrote it. */
export function readCache(file: string | undefined): Buffer | undefined {
  if (file === undefined || !ownedAndPrivate(join(file, '..'), 'dir') || !ownedAndPrivate(file, 'file')) return undefined;
  try {
    const bytes = readFileSync(file);
    // Marked as used: pruning removes what no scan has read for a while.
    const now = new Date();
    utimesSync(file, now, now);
    return bytes;
  } catch {
    return undefined;
  }
}

/** Cache files no scan has read or written for this long are removed when a new one is written. */
export const CACHE_MAX_IDLE_MS = 30 * 24 * 3600 * 1000;

/** Removes this cache's files (and leftover temporary files) idle for over {@link CACHE_MAX_IDLE_MS}; never throws. */
function pruneCache(dir: string, keep: string): void {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  const cutoff = Date.now() - CACHE_MAX_IDLE_MS;
  for (const name of entries) {
    if (!/\.(hsdb|moatscan|tmp)$/.test(name) || join(dir, name) === keep) continue;
    try {
      const path = join(dir, name);
      if (lstatSync(path).mtimeMs < cutoff) unlinkSync(path);
    } catch {
      // Gone already, or not ours to remove.
    }
  }
}

/** Temporary cache files this thread has named. */
let tmpCount = 0;

/** @internal Writes a cache file atomically in a directory of this user's only; never throws. */
export function writeCache(file: string | undefined, bytes: Buffer): void {
  if (file === undefined) return;
  try {
    mkdirSync(join(file, '..'), { recursive: true, mode: 0o700 });
    if (!ownedAndPrivate(join(file, '..'), 'dir')) return;
    // The scan's worker threads share the process id and may write at once: a name already
    // taken (`wx`) is one write fewer, never two writers in one file.
    const tmp = `${file}.${process.pid}.${process.hrtime.bigint()}.${++tmpCount}.tmp`;
    writeFileSync(tmp, bytes, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file);
    pruneCache(join(file, '..'), file);
  } catch {
    // A cache that cannot be written costs the next run a compile, nothing else.
  }
}

/** Which search engine runs: `native` when the addon and libhs load, else `js`; forced by `engine`. */
export type EngineKind = 'native' | 'js';

/** Options of {@link CodenameEngine}. */
export interface EngineOptions extends NeedleOptions {
  /**
   * `js` forces the JavaScript matcher; `native` uses libhs whenever it loads (and caches the
   * compiled database); `auto` (the default) uses libhs when it loads and either the literals
   * are few enough for its compile time to pay ({@link NATIVE_AUTO_MAX_LITERALS}) or a
   * database for them is cached.
   */
  readonly engine?: 'auto' | EngineKind;
  /**
   * @internal Literal sets larger than this, with no cached database, are searched directly
   * (no libhs compile) unless `engine` is `native` (default {@link NATIVE_AUTO_MAX_LITERALS}).
   */
  readonly directAbove?: number;
  /** Told once why the native engine is not used, when it was asked for or is missing. */
  readonly onWarning?: (message: string) => void;
}

let nativeLoaded: { addon?: NativeLiterals; reason?: string } | undefined;

/**
 * A known answer, at every alignment of the input: two adjacent occurrences of one literal
 * next to another literal. Vectorscan 5.4.9 (Debian's libvectorscan5) misses the first
 * occurrence at most alignments on AVX-512 machines; a library that misses a match would
 * hide leaks, so it is not used.
 */
function selfTest(addon: NativeLiterals): { addon?: NativeLiterals; reason?: string } {
  const version = (() => {
    try {
      return addon.literalsVersion();
    } catch {
      return undefined;
    }
  })();
  if (version === undefined) return { reason: 'libhs cannot be loaded' };
  try {
    const handle = addon.literalsCompile([Buffer.from('N\u00f6tfall'), Buffer.from('Aada')], [false, false]);
    const haystack = Buffer.from(
      `${[...Buffer.from('n\u00f6tfallN\u00f6tfall')].map((b) => `\\x${b.toString(16)}`).join('')}N\u00f6tfallN\u00f6tfall`,
    );
    const memory = new Uint8Array(haystack.length + 64);
    for (let offset = 0; offset < 64; offset++) {
      const view = memory.subarray(offset, offset + haystack.length);
      view.set(haystack);
      const found = addon.literalsScan(handle, view);
      if (found.length !== 4 || found[1] !== haystack.length - 16 || found[3] !== haystack.length - 8)
        return { reason: `libhs ${version.trim()} misses matches in its self-test (install Intel Hyperscan: libhyperscan5)` };
    }
  } catch (error) {
    return { reason: error instanceof Error ? error.message : String(error) };
  }
  return { addon };
}

/**
 * Most literals `auto` compiles with libhs (about 60 ms of compile time); a larger set, unless
 * cached, is searched directly: built in linear time, searched about as fast.
 */
export const NATIVE_AUTO_MAX_LITERALS = 5_000;

/**
 * Bytes a scan must read for compiling one more literal with libhs to pay, when nothing is
 * cached: libhs compiles about 30 µs per literal and scans about 0.2 ms per MB faster than a
 * direct set (1,000 plain literals: 28 ms of compiling, and 38 ms against 60 ms of CPU over
 * 114 MB), so a set is compiled for the prefilter only when the files hold at least this
 * many bytes per literal.
 */
export const COMPILE_PAYS_BYTES_PER_LITERAL = 150_000;

/** @internal The most literals worth compiling to scan `bytes` bytes once (see {@link COMPILE_PAYS_BYTES_PER_LITERAL}). */
export function compileLimit(bytes: number): number {
  return Math.min(NATIVE_AUTO_MAX_LITERALS, Math.floor(bytes / COMPILE_PAYS_BYTES_PER_LITERAL));
}

/** @internal A literal set back to back: what the addon builds without one object per literal. */
export interface PackedLiterals {
  readonly packed: Buffer;
  readonly lengths: Uint32Array;
  readonly caseless: Uint8Array;
}

/**
 * @internal Whether a set of literals of these `lengths` with no cached database is searched
 * directly rather than compiled: libhs's compile time grows faster than the set (22,000
 * literals take it 2 s, more than scanning 100 MB), the direct set's build is linear (tens of
 * ms). A small set the addon probes at every 2nd to 4th position only (its literals all long
 * enough) is searched directly whatever its size: built in well under a millisecond and
 * searched faster than libhs searches it (20 codenames, every encoding: 2.6 against 4.9 ms
 * per 14 MB), so a compile and its cache would only cost time.
 */
export function searchDirectly(addon: NativeLiterals, lengths: Uint32Array, options: EngineOptions): boolean {
  if (options.engine === 'native' || typeof addon.literalsCompilePacked !== 'function') return false;
  return lengths.length > (options.directAbove ?? NATIVE_AUTO_MAX_LITERALS) || (addon.literalsDirectStride?.(lengths) ?? 1) > 1;
}

/** A compiled native literal set: the regular expression's sources first, then the exact needles. */
interface NativeSet {
  readonly addon: NativeLiterals;
  readonly handle: unknown;
  readonly sources: readonly string[];
}

/** What `@moat/native` exports, as far as the scan uses it. */
interface NativeModule {
  readonly native?: Partial<NativeLiterals> | undefined;
  readonly loadError?: Error | undefined;
}

/**
 * `@moat/native` as the standalone executable imported it: a static import is what lets
 * `bun build --compile` embed the addon, which a `require` resolved at run time cannot find
 * inside the executable.
 */
let providedNative: NativeModule | undefined;

/** @internal Gives the engine the `@moat/native` module an entry point imported (the standalone executable's). */
export function provideNativeModule(mod: NativeModule): void {
  providedNative = mod;
  nativeLoaded = undefined;
}

/** @internal The addon, loaded once and synchronously (the engine is built synchronously); fails open. */
export function nativeLiterals(): { addon?: NativeLiterals; reason?: string } {
  if (nativeLoaded !== undefined) return nativeLoaded;
  if (process.env.MOAT_NATIVE_DISABLE === '1') {
    nativeLoaded = { reason: 'MOAT_NATIVE_DISABLE=1' };
    return nativeLoaded;
  }
  try {
    // Loaded when first needed, not imported: the addon is an optional dependency.
    const mod = providedNative ?? (createRequire(import.meta.url)('@moat/native') as NativeModule);
    const addon = mod.native;
    const missing =
      addon !== undefined &&
      typeof addon.literalsCompile === 'function' &&
      typeof addon.literalsScan === 'function' &&
      typeof addon.literalsSerialize === 'function' &&
      typeof addon.literalsVersion === 'function' &&
      typeof addon.regexCompile === 'function'
        ? undefined
        : { reason: mod.loadError?.message ?? 'the addon has no literal search' };
    nativeLoaded = missing ?? selfTest(addon as NativeLiterals);
  } catch (error) {
    nativeLoaded = { reason: error instanceof Error ? error.message : String(error) };
  }
  return nativeLoaded;
}

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
/** `[A-Za-z0-9_]` by character code (-1, before the start or after the end, is not). */
const isWordCode = (c: number) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f;
// Junctions of split string literals: 'a' + 'b', `a${'b'}`, `${'a'}b`. TRIGGER finds where
// one starts (`"}` alone is too common in minified code to start a window); JUNCTION
// removes every junction inside the window.
const TRIGGER = /['"`]\s*\+\s*['"`]|\$\{\s*['"`]/g;
/**
 * TRIGGER's alternatives in libhs syntax over bytes: JavaScript's `\s`, over Latin-1 text,
 * is exactly tab, LF, VT, FF, CR, space and U+00A0.
 */
const LATIN1_SPACE = '[\\t\\n\\x0b\\x0c\\r \\xa0]';
/** @internal */
export const TRIGGER_SOURCES = [`['"\\x60]${LATIN1_SPACE}*\\+${LATIN1_SPACE}*['"\\x60]`, `\\$\\{${LATIN1_SPACE}*['"\\x60]`];
const JUNCTION = /['"`]\s*\+\s*['"`]|\$\{\s*['"`]|['"`]\s*\}/g;
/** Printable bytes reported on each side of a match. */
const CONTEXT = 24;

/**
 * @internal Bytes a window reads before its own chunk and after it, for a longest needle of
 * `maxLength` bytes: a split literal's trigger region reaches `maxLength` bytes on each side of
 * the trigger, so two of them, and 128 for the context ({@link CONTEXT}) and a trigger's own
 * spaces. A match is then seen whole, with its whole context and the byte after it, in the
 * window where it ends, whatever the chunk size. The prefilter (native/src/literal_scan.c,
 * `split_margin`) searches split literals over the same bounds.
 */
export function windowMargin(maxLength: number): number {
  return 2 * maxLength + 128;
}

function printable(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.charCodeAt(0);
    out += c >= 0x20 && c < 0x7f ? ch : '.';
  }
  return out;
}

/** @internal One needle of a plan, its bytes as a Latin-1 string (one character per byte). */
export interface PlannedNeedle {
  readonly text: string;
  readonly codename: string;
  readonly encoding: Encoding;
  readonly fold: boolean;
  readonly wholeWord: boolean;
}

/** What the engine searches for, derived from the codenames alone. */
export interface LiteralPlan {
  /** Plain and case-insensitive needles, in the order they were derived. */
  readonly regexNeedles: readonly PlannedNeedle[];
  /** Plain and case-insensitive forms: through the regular expression (or libhs), longest first. */
  readonly sources: readonly string[];
  /** How many exact encoded forms there are: through the matcher (or libhs). */
  readonly exactCount: number;
  /** Exact form `i` (0 ≤ i < exactCount), made on demand: a scan reports few of 22,000. */
  exactNeedle(i: number): PlannedNeedle;
  /** The longest needle in bytes: the carry between chunks. */
  readonly maxLength: number;
  /** Whether the needles fold case. */
  readonly fold: boolean;
  /** The set packed ({@link packPlan}), when it was derived packed. */
  readonly packed?: PackedLiterals;
}

/** The longest codename (in UTF-16 units) the addon derives forms of; longer ones, never seen in practice, by the reference. */
const MAX_NATIVE_CODENAME = 65_536;

const viaRegex = (n: { readonly encoding: Encoding; readonly fold: boolean }) => n.encoding === 'plain' || n.fold;

/**
 * @internal The literal set for `codenames` under `options`: derived by the addon where it
 * can ({@link nativePlan}), else by {@link needleForms}, the reference; the same either way.
 * `derive: 'js'` forces the reference.
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` as {@link needleForms}.
 */
export function literalPlan(codenames: readonly string[], options: EngineOptions = {}, derive: 'auto' | 'js' = 'auto'): LiteralPlan {
  const forms = derive === 'js' || options.engine === 'js' ? undefined : nativeLiterals().addon?.literalsForms;
  if (forms !== undefined && codenames.every((c) => c.length <= MAX_NATIVE_CODENAME)) return nativePlan(codenames, options, forms);
  const wholeWord = options.wholeWord === true;
  const needles: PlannedNeedle[] = [];
  let maxLength = 1;
  for (const codename of codenames)
    for (const f of needleForms(codename, options)) {
      needles.push({ text: f.text, codename, encoding: f.encoding, fold: f.fold, wholeWord: wholeWord && f.encoding === 'plain' });
      maxLength = Math.max(maxLength, f.text.length);
    }
  const regexNeedles = needles.filter(viaRegex);
  const sources = [...new Set(regexNeedles.map((n) => n.text))].sort((a, b) => b.length - a.length);
  const exact = needles.filter((n) => !viaRegex(n));
  return {
    regexNeedles,
    sources,
    exactCount: exact.length,
    exactNeedle: (i) => exact[i] as PlannedNeedle,
    maxLength,
    fold: options.ignoreCase === true,
  };
}

/**
 * @internal {@link literalPlan} from the addon's `literalsForms`: every form derived natively
 * in one call, packed as {@link packPlan} packs a plan, with only the plain and
 * case-insensitive forms (a few per codename) made into strings here.
 */
export function nativePlan(
  codenames: readonly string[],
  options: NeedleOptions,
  forms: NonNullable<NativeLiterals['literalsForms']>,
): LiteralPlan {
  const fold = options.ignoreCase === true;
  const spellings = new Uint32Array(codenames.length);
  const strings: string[] = [];
  // Index loops, no spread where there is one spelling: this runs once, in a cold process, over thousands of codenames.
  for (let i = 0; i < codenames.length; i++) {
    const codename = codenames[i] as string;
    checkCodename(codename);
    if (!fold) {
      strings.push(codename);
      spellings[i] = 1;
      continue;
    }
    const variants = [...new Set([codename, codename.toLowerCase(), codename.toUpperCase()])];
    strings.push(...variants);
    spellings[i] = variants.length;
  }
  const joined = strings.join('');
  const units = new Uint16Array(joined.length);
  for (let i = 0; i < joined.length; i++) units[i] = joined.charCodeAt(i);
  const lengths = new Uint32Array(strings.length);
  for (let i = 0; i < strings.length; i++) lengths[i] = (strings[i] as string).length;
  const derived = forms(units, lengths, spellings, (fold ? 1 : 0) | (options.plainOnly === true ? 2 : 0));
  return packDerived(codenames, derived, options);
}

/** The plan of a set the addon derived and packed: only the plain and case-folding forms become strings here. */
function packDerived(
  codenames: readonly string[],
  derived: ReturnType<NonNullable<NativeLiterals['literalsForms']>>,
  options: NeedleOptions,
): LiteralPlan {
  const { packed, lengths, offsets, owners, kinds, regex } = derived;
  const wholeWord = options.wholeWord === true;
  const sources: string[] = [];
  // One decode and a substring each: a toString call per source costs about 3 µs in a cold process.
  let end = 0;
  for (let i = 0; i < derived.sources; i++) end = Math.max(end, (offsets[i] as number) + (lengths[i] as number));
  const text = packed.toString('latin1', 0, end);
  for (let i = 0; i < derived.sources; i++) {
    const at = offsets[i] as number;
    sources.push(text.slice(at, at + (lengths[i] as number)));
  }
  const needle = (text: string, owner: number, kind: number): PlannedNeedle => {
    const encoding = ENCODINGS[kind & 0x7f] as Encoding;
    const codename = codenames[owner] as string;
    return { text, codename, encoding, fold: (kind & 0x80) !== 0, wholeWord: wholeWord && encoding === 'plain' };
  };
  const regexNeedles: PlannedNeedle[] = [];
  for (let r = 0; r < regex.length; r += 3)
    regexNeedles.push(needle(sources[regex[r] as number] as string, regex[r + 1] as number, regex[r + 2] as number));
  const caseless = new Uint8Array(lengths.length);
  if (options.ignoreCase === true) caseless.fill(1, 0, derived.sources);
  const made = new Map<number, PlannedNeedle>();
  const exactNeedle = (i: number): PlannedNeedle => {
    let found = made.get(i);
    if (found === undefined) {
      const k = derived.sources + i;
      const at = offsets[k] as number;
      found = needle(packed.toString('latin1', at, at + (lengths[k] as number)), owners[k] as number, kinds[k] as number);
      made.set(i, found);
    }
    return found;
  };
  return {
    regexNeedles,
    sources,
    exactCount: lengths.length - derived.sources,
    exactNeedle,
    maxLength: derived.maxLength,
    fold: options.ignoreCase === true,
    packed: { packed, lengths, caseless },
  };
}

/** @internal The libhs literal set of a plan, packed: `sources` then the exact forms, and which fold ASCII case. */
export function packPlan(plan: LiteralPlan): PackedLiterals {
  if (plan.packed !== undefined) return plan.packed;
  const { sources } = plan;
  const count = sources.length + plan.exactCount;
  const texts = new Array<string>(count);
  const lengths = new Uint32Array(count);
  // Plain loops: TypedArray.from with a mapping function costs tens of ms on 22,000 literals.
  for (let i = 0; i < count; i++) {
    const text = i < sources.length ? (sources[i] as string) : plan.exactNeedle(i - sources.length).text;
    texts[i] = text;
    lengths[i] = text.length;
  }
  const caseless = new Uint8Array(count);
  if (plan.fold) caseless.fill(1, 0, sources.length);
  return { packed: Buffer.from(texts.join(''), 'latin1'), lengths, caseless };
}

/** @internal {@link packPlan}'s set as one buffer per literal (for an addon without the packed call). */
export function planLiterals(plan: LiteralPlan): { patterns: Buffer[]; caseless: boolean[] } {
  const set = packPlan(plan);
  const patterns: Buffer[] = [];
  let at = 0;
  for (const length of set.lengths) {
    patterns.push(set.packed.subarray(at, at + length));
    at += length;
  }
  return { patterns, caseless: Array.from(set.caseless, (c) => c === 1) };
}

/**
 * @internal Why libhs cannot search a plan, or `undefined`: JavaScript's `i` flag folds
 * Latin-1 letters (é/É), libhs only ASCII, and the findings must be the same either way.
 */
export function nativeRefusal(plan: LiteralPlan): string | undefined {
  return plan.fold && plan.sources.some((s) => [...s].some((c) => c.charCodeAt(0) > 0x7f)) ? 'case-insensitive non-ASCII forms' : undefined;
}

/** @internal A literal set compiled elsewhere (the prefilter's), reused when it holds exactly the engine's literals. */
export interface PrebuiltLiterals {
  readonly addon: NativeLiterals;
  readonly handle: unknown;
  /** The literals back to back, and each one's length. */
  readonly packed: Buffer;
  readonly lengths: Uint32Array;
  /** 1 where a literal folds ASCII case. */
  readonly caseless: Uint8Array;
  /** The plan it was built from, for the same codenames and options, when one was derived. */
  readonly plan?: LiteralPlan;
  /** The split-literal triggers ({@link TRIGGER_SOURCES}) compiled, or `null`. */
  readonly triggers?: unknown;
}

/** Whether two packed literal sets are the same. */
function samePacked(a: PackedLiterals, b: PackedLiterals): boolean {
  return (
    a.lengths.length === b.lengths.length &&
    a.lengths.every((n, i) => n === b.lengths[i]) &&
    Buffer.from(a.caseless).equals(Buffer.from(b.caseless)) &&
    a.packed.equals(b.packed)
  );
}

/**
 * @internal What an alternation of `sources` (longest first, `g` flag, each search resumed
 * one past the last match's start) matches in Latin-1 text: at each start position, the
 * longest source there, in ASCII and Latin-1 case alike when `fold` (what the `i` flag
 * compares in that range). A lookup per distinct length and position: V8 runs an alternation
 * of a thousand literals position by position, and compiles it at its first use, which cost
 * about 10 ms a scan where only a few junctions were seen.
 */
export class LongestLiteralAt {
  readonly #keys: Set<string>;
  /** Distinct source lengths, longest first. */
  readonly #lengths: number[];
  readonly #fold: boolean;
  /** The sources' first two characters (folded), where every source has two in Latin-1: most positions end here. */
  readonly #starts: Uint8Array | undefined;

  constructor(sources: readonly string[], fold: boolean) {
    this.#fold = fold;
    this.#keys = new Set(sources.map((s) => (fold ? s.toLowerCase() : s)));
    this.#lengths = [...new Set(sources.map((s) => s.length))].filter((n) => n > 0).sort((a, b) => b - a);
    const keys = [...this.#keys];
    if (keys.every((k) => k.length >= 2 && k.charCodeAt(0) <= 0xff && k.charCodeAt(1) <= 0xff)) {
      this.#starts = new Uint8Array(0x10000);
      for (const k of keys) this.#starts[(k.charCodeAt(0) << 8) | k.charCodeAt(1)] = 1;
    }
  }

  /** Calls `found(at, length)` for each start position where a source begins, in order. */
  forEach(text: string, found: (at: number, length: number) => void): void {
    const keyed = this.#fold ? text.toLowerCase() : text;
    // Lower case keeps the length of Latin-1 text; of other text, each candidate is folded alone.
    const whole = keyed.length === text.length;
    const starts = whole ? this.#starts : undefined;
    for (let at = 0; at < text.length; at++) {
      if (starts !== undefined) {
        if (at + 1 >= text.length) continue;
        const first = keyed.charCodeAt(at);
        const second = keyed.charCodeAt(at + 1);
        if (first > 0xff || second > 0xff || starts[(first << 8) | second] === 0) continue;
      }
      for (const length of this.#lengths) {
        if (at + length > text.length) continue;
        const candidate = whole ? keyed.slice(at, at + length) : text.slice(at, at + length).toLowerCase();
        if (this.#keys.has(candidate)) {
          found(at, length);
          break;
        }
      }
    }
  }
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
  readonly #plan: LiteralPlan;
  readonly #regexNeedles = new Map<string, PlannedNeedle>();
  readonly #splitNeedles = new Map<string, PlannedNeedle>();
  readonly #fold: boolean;
  readonly #plainOnly: boolean;
  readonly maxLength: number;
  readonly #native: NativeSet | undefined;
  /** The split-literal triggers in libhs, with the native engine and split literals on. */
  readonly #triggerSet: { readonly addon: NativeLiterals; readonly handle: unknown } | undefined;
  // Built on first use: the native engine needs neither the alternation nor the matcher, and
  // the split expression only where a junction is seen.
  #regexBuilt: RegExp | null | undefined;
  #matcherBuilt: MultiMatcher | undefined;
  #splitSearchBuilt: LongestLiteralAt | undefined;
  /** Which engine scans: `native` (libhs) or `js`. */
  readonly kind: EngineKind;

  constructor(codenames: readonly string[], options: EngineOptions = {}, prebuilt?: PrebuiltLiterals) {
    const plan = prebuilt?.plan ?? literalPlan(codenames, options);
    this.#plan = plan;
    this.#fold = options.ignoreCase === true;
    this.#plainOnly = options.plainOnly === true;
    // Case-insensitive forms go through the regular expression (flag i); exact ones through
    // the matcher, whose cost does not grow with the number of needles. Keys are folded for
    // case-insensitive needles; the pattern uses the originals.
    for (const n of plan.regexNeedles) {
      this.#regexNeedles.set(this.#key(n.text), n);
      if (!this.#plainOnly && n.encoding === 'plain') this.#splitNeedles.set(this.#key(n.text), n);
    }
    this.maxLength = plan.maxLength;
    this.#native = options.engine === 'js' ? undefined : this.#compileNative(plan, options, prebuilt);
    this.kind = this.#native === undefined ? 'js' : 'native';
    const addon = this.#native?.addon;
    if (addon !== undefined && !this.#plainOnly)
      this.#triggerSet =
        prebuilt?.triggers !== undefined && prebuilt.triggers !== null
          ? { addon, handle: prebuilt.triggers }
          : this.#compileTriggers(addon);
  }

  /** The alternation of the plain and case-insensitive forms, longest first (`null`: none). */
  get #regex(): RegExp | null {
    const sources = this.#plan.sources;
    this.#regexBuilt ??= sources.length === 0 ? null : new RegExp(sources.map(escapeRe).join('|'), this.#fold ? 'gi' : 'g');
    return this.#regexBuilt;
  }

  get #matcher(): MultiMatcher {
    this.#matcherBuilt ??= new MultiMatcher(
      Array.from({ length: this.#plan.exactCount }, (_, i) => {
        const n = this.#plan.exactNeedle(i);
        return { ...n, bytes: Buffer.from(n.text, 'latin1') };
      }),
      false,
    );
    return this.#matcherBuilt;
  }

  /** The plain forms without NULs, for text with the split-literal junctions removed. */
  get #splitSearch(): LongestLiteralAt {
    this.#splitSearchBuilt ??= new LongestLiteralAt(
      this.#plan.sources.filter((s) => !s.includes('\0')),
      this.#fold,
    );
    return this.#splitSearchBuilt;
  }

  /**
   * One libhs database for everything the regular expression and the matcher look for, where
   * libhs can search the plan ({@link nativeRefusal}): the prefilter's, a cached one, a direct
   * set ({@link searchDirectly}) or one compiled now.
   */
  #compileNative(plan: LiteralPlan, options: EngineOptions, prebuilt: PrebuiltLiterals | undefined): NativeSet | undefined {
    const { sources } = plan;
    const loaded = nativeLiterals();
    const warn = (why: string): undefined => {
      if (options.engine === 'native') options.onWarning?.(`native scan engine unavailable (${why}); using the JavaScript one`);
      return undefined;
    };
    if (loaded.addon === undefined) return warn(loaded.reason ?? 'not loaded');
    const refusal = nativeRefusal(plan);
    if (refusal !== undefined) return warn(refusal);
    if (sources.length + plan.exactCount === 0) return undefined;
    if (prebuilt !== undefined && (prebuilt.plan === plan || samePacked(prebuilt, packPlan(plan))))
      return { addon: prebuilt.addon, handle: prebuilt.handle, sources };
    const version = loaded.addon.literalsVersion();
    if (version === undefined) return warn('libhs cannot be loaded');
    const set = packPlan(plan);
    const count = set.lengths.length;
    // Only sets too large to compile quickly are cached: small ones cost less than a file.
    const file = count > NATIVE_AUTO_MAX_LITERALS ? cacheFile(loaded.addon, set, version) : undefined;
    const cached = readCache(file);
    try {
      const direct = cached === undefined && searchDirectly(loaded.addon, set.lengths, options);
      const { addon } = loaded;
      const literals = () => planLiterals(plan);
      const handle =
        addon.literalsCompilePacked !== undefined
          ? addon.literalsCompilePacked(set.packed, set.lengths, set.caseless, cached, direct)
          : addon.literalsCompile(literals().patterns, literals().caseless, cached);
      if (direct) return { addon: loaded.addon, handle, sources };
      // Written when missing, or replaced when libhs refused the cached bytes and compiled anew.
      const compiled = loaded.addon.literalsSerialize(handle);
      if (cached === undefined || !compiled.equals(cached)) writeCache(file, compiled);
      return { addon: loaded.addon, handle, sources };
    } catch (error) {
      return warn(error instanceof Error ? error.message : String(error));
    }
  }

  /** TRIGGER in libhs, or `undefined` (V8 finds the triggers then, over decoded text). */
  #compileTriggers(addon: NativeLiterals): { readonly addon: NativeLiterals; readonly handle: unknown } | undefined {
    try {
      return { addon, handle: addon.regexCompile(TRIGGER_SOURCES) };
    } catch {
      return undefined;
    }
  }

  #key(s: string): string {
    return this.#fold ? s.toLowerCase() : s;
  }

  /** An independent search state for one stream (see {@link StreamOptions} for `lookahead`). */
  stream(onMatch: (match: RawMatch) => void, options: StreamOptions = {}): CodenameStream {
    return new CodenameStream(this, onMatch, options);
  }

  /**
   * @internal Scans `window` (carry + chunk + lookahead) and reports the matches that end in
   * the chunk: past `carryLength`, at or before `ownEnd` (the bytes after it are lookahead,
   * read for the context and word boundaries of the chunk's matches; the matches ending there
   * belong to the next window). `split: false` leaves out the split-literal search (the
   * prefilter found none can be there).
   */
  scanWindow(
    window: Buffer,
    carryLength: number,
    base: number,
    onMatch: (m: RawMatch) => void,
    split = true,
    ownEnd = window.length,
  ): void {
    // Latin-1 text of the window, decoded only when needed (the native engine needs it for split literals only).
    let decoded: string | undefined;
    const text = () => {
      decoded ??= window.toString('latin1');
      return decoded;
    };
    const report = (codename: string, encoding: Encoding, at: number, length: number) => {
      if (at + length <= carryLength || at + length > ownEnd) return;
      const from = Math.max(0, at - CONTEXT);
      const to = Math.min(window.length, at + length + CONTEXT);
      const context = printable(decoded !== undefined ? decoded.slice(from, to) : window.toString('latin1', from, to));
      onMatch({ codename, encoding, offset: base + at, length, context });
    };
    if (this.#native !== undefined) this.#scanNative(window, report);
    else {
      const re = this.#regex;
      if (re !== null) {
        const t = text();
        re.lastIndex = 0;
        for (let m = re.exec(t); m !== null; m = re.exec(t)) {
          const at = m.index;
          re.lastIndex = at + 1;
          this.#reportRegexMatch(t, m[0], at, report);
        }
      }
      const matcher = this.#matcher;
      matcher.scan(window, 0, window.length, (index, at) => {
        const needle = matcher.needles[index] as Needle;
        report(needle.codename, needle.encoding, at, needle.bytes.length);
      });
    }
    const slice = (from: number, to: number) => (decoded !== undefined ? decoded.slice(from, to) : window.toString('latin1', from, to));
    if (!this.#plainOnly && split) this.#scanSplit(window, text, slice, report);
  }

  /** What the regular expression's match `matched` at `at` reports: its needle, if the case and word boundaries agree. */
  #reportRegexMatch(
    text: string | Buffer,
    matched: string,
    at: number,
    report: (codename: string, encoding: Encoding, at: number, length: number) => void,
  ): void {
    const needle = this.#regexNeedles.get(this.#key(matched));
    if (needle === undefined || !this.#asciiEqual(matched, needle.text, needle.fold)) return;
    const end = at + matched.length;
    const before = at > 0 ? (typeof text === 'string' ? text.charCodeAt(at - 1) : (text[at - 1] as number)) : -1;
    const after = end < text.length ? (typeof text === 'string' ? text.charCodeAt(end) : (text[end] as number)) : -1;
    if (needle.wholeWord && (isWordCode(before) || isWordCode(after))) return;
    report(needle.codename, needle.encoding, at, matched.length);
  }

  /**
   * The same findings, in the same order, from one libhs pass: per start position the
   * longest of the regular expression's sources (what the alternation, longest first, would
   * match there), then every exact needle by position and index (what the matcher reports).
   */
  #scanNative(window: Buffer, report: (codename: string, encoding: Encoding, at: number, length: number) => void): void {
    const native = this.#native as NativeSet;
    const pairs = native.addon.literalsScan(native.handle, window);
    const regexCount = native.sources.length;
    for (let k = 0; k < pairs.length; ) {
      const at = pairs[k + 1] as number;
      let longest = -1;
      for (; k < pairs.length && pairs[k + 1] === at; k += 2) {
        const id = pairs[k] as number;
        if (id < regexCount) longest = Math.max(longest, (native.sources[id] as string).length);
      }
      if (longest > 0) this.#reportRegexMatch(window, window.toString('latin1', at, at + longest), at, report);
    }
    for (let k = 0; k < pairs.length; k += 2) {
      const id = pairs[k] as number;
      if (id < regexCount) continue;
      const needle = this.#plan.exactNeedle(id - regexCount);
      const at = pairs[k + 1] as number;
      const end = at + needle.text.length;
      if (
        needle.wholeWord &&
        ((at > 0 && isWordCode(window[at - 1] as number)) || (end < window.length && isWordCode(window[end] as number)))
      )
        continue;
      report(needle.codename, needle.encoding, at, needle.text.length);
    }
  }

  /**
   * Where split-literal junctions start: every match of TRIGGER over the window's Latin-1 text,
   * at each start (one per `+` or `${`, as the prefilter finds them), overlapping ones too, so
   * a trigger is found the same whichever bytes before it a window starts at: from V8 over the
   * decoded text, or from libhs's leftmost-start matches without decoding anything.
   */
  *#triggers(window: Buffer, text: () => string): Generator<readonly [index: number, length: number]> {
    if (this.#triggerSet === undefined) {
      const t = text();
      TRIGGER.lastIndex = 0;
      for (let j = TRIGGER.exec(t); j !== null; j = TRIGGER.exec(t)) {
        TRIGGER.lastIndex = j.index + 1;
        yield [j.index, j[0].length];
      }
      return;
    }
    // libhs reports them by end; by start, as V8 finds them.
    const triples = this.#triggerSet.addon.literalsScan(this.#triggerSet.handle, window);
    const found: Array<readonly [number, number]> = [];
    for (let k = 0; k < triples.length; k += 3)
      found.push([triples[k + 1] as number, (triples[k + 2] as number) - (triples[k + 1] as number)]);
    yield* found.sort((a, b) => a[0] - b[0]);
  }

  /** `'Capy' + 'bara'`: around each junction, remove junctions and search the plain forms. */
  #scanSplit(
    window: Buffer,
    text: () => string,
    slice: (from: number, to: number) => string,
    report: (codename: string, encoding: Encoding, at: number, length: number) => void,
  ): void {
    let search: LongestLiteralAt | undefined;
    for (const [index, length] of this.#triggers(window, text)) {
      const start = Math.max(0, index - this.maxLength);
      const end = Math.min(window.length, index + length + this.maxLength);
      const raw = slice(start, end);
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
      search ??= this.#splitSearch;
      search.forEach(joined, (at, length) => {
        const first = kept[at] as number;
        const last = kept[at + length - 1] as number;
        if (last - first + 1 === length) return; // contiguous: a plain match, reported already
        const matched = joined.slice(at, at + length);
        const needle = this.#splitNeedles.get(this.#key(matched));
        if (needle === undefined || !this.#asciiEqual(matched, needle.text, needle.fold)) return;
        report(needle.codename, 'split-literal', first, last - first + 1);
      });
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

/** Options of {@link CodenameEngine.stream}. */
export interface StreamOptions {
  /**
   * Hold back the matches that end in a chunk's last {@link windowMargin} bytes until the
   * bytes after them are written (or {@link CodenameStream.end} is called): every finding, its
   * word boundaries and its context are then the same whatever the chunk sizes. Without it
   * (the default) each chunk's matches are reported at once, as seen without the bytes after
   * the chunk: a whole-word match cut by a chunk's end may be reported, and its context cut.
   * With it, a caller must call `end()` after the last chunk, or the last matches are lost.
   */
  readonly lookahead?: boolean;
}

/**
 * Feeds one stream's chunks to a {@link CodenameEngine}, keeping the bytes before each chunk
 * (and, with {@link StreamOptions.lookahead}, the last bytes of the stream not yet reported on).
 */
export class CodenameStream {
  readonly #engine: CodenameEngine;
  readonly #onMatch: (match: RawMatch) => void;
  readonly #margin: number;
  /** Bytes held back at the end of each window: the margin with lookahead, else none. */
  readonly #hold: number;
  /** The stream's last bytes: what was reported on (the carry), then what was not yet. */
  #tail: Buffer = Buffer.alloc(0);
  #offset = 0;
  /** Where the reported part of the stream ends (the rest of `#tail` is held back). */
  #reported = 0;
  readonly #seen = new Set<string>();

  constructor(engine: CodenameEngine, onMatch: (match: RawMatch) => void, options: StreamOptions = {}) {
    this.#engine = engine;
    this.#margin = windowMargin(engine.maxLength);
    this.#hold = options.lookahead === true ? this.#margin : 0;
    this.#onMatch = (m) => {
      // A split-literal window can see the same match twice; report each once.
      const key = `${m.offset}:${m.length}:${m.encoding}:${m.codename}`;
      if (this.#seen.has(key)) return;
      if (this.#seen.size > 10_000) this.#seen.clear();
      this.#seen.add(key);
      onMatch(m);
    };
  }

  /**
   * Scans the next chunk of the stream: the matches that end in it, or, with lookahead, those
   * that end before its last bytes and any held back from chunks before it.
   */
  write(chunk: Uint8Array): void {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const window = this.#tail.length === 0 ? bytes : Buffer.concat([this.#tail, bytes]);
    this.#offset += chunk.byteLength;
    this.#scan(window, window.length - this.#hold);
  }

  /** Reports the matches held back (with lookahead): the stream ends here. Writing on continues it. */
  end(): void {
    if (this.#reported < this.#offset) this.#scan(this.#tail, this.#tail.length);
  }

  /** Scans `window`, the stream's last bytes, reporting what ends up to `ownEnd`, and keeps its tail. */
  #scan(window: Buffer, ownEnd: number): void {
    const base = this.#offset - window.length;
    const carryLength = this.#reported - base;
    if (ownEnd > carryLength) {
      this.#engine.scanWindow(window, carryLength, base, this.#onMatch, true, ownEnd);
      this.#reported = base + ownEnd;
    }
    this.#tail = Buffer.from(window.subarray(Math.max(0, this.#reported - base - this.#margin)));
  }

  /** The most bytes a window reads before its chunk and after it: {@link windowMargin} of the longest needle. */
  get maxCarry(): number {
    return this.#margin;
  }

  /**
   * Scans one window out of stream order, for a reader that skips chunks it knows hold nothing:
   * the chunk at `base + carryLength` up to `ownEnd` in the window, with up to
   * {@link maxCarry} bytes before it and after it (fewer at the stream's start and end), and
   * reports the matches that end in the chunk (`split: false`: no split literal either). Not
   * to be mixed with {@link write} on one stream.
   */
  writeWindow(window: Buffer, carryLength: number, base: number, split = true, ownEnd = window.length): void {
    this.#engine.scanWindow(window, carryLength, base, this.#onMatch, split, ownEnd);
  }

  /** Bytes seen so far. */
  get bytes(): number {
    return this.#offset;
  }
}
