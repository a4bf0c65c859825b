import type { Dir } from 'node:fs';
import {
  cacheDirectory,
  cacheName,
  type EngineOptions,
  type LiteralPlan,
  literalPlan,
  type NativeLiterals,
  nativeLiterals,
  nativeRefusal,
  type PackedLiterals,
  type PrebuiltLiterals,
  packPlan,
  readCache,
  searchDirectly,
  TRIGGER_SOURCES,
  writeCache,
} from './engine.js';
import { needlesFor } from './needles.js';

// Built-ins through getBuiltinModule, not ES imports: see scanner.ts.
const { opendirSync } = process.getBuiltinModule('node:fs');
const { join } = process.getBuiltinModule('node:path');

/** A file may hold a codename in one of its forms (or libhs failed on it). */
export const PREFILTER_CODENAME = 1;
/** A file may hold a codename split across string literals. */
export const PREFILTER_SPLIT = 2;
/** A file holds something the source-map audit looks at (listed in `events`). */
export const PREFILTER_AUDIT = 4;
/** Too many audit matches to list: the audit reads the whole file. */
export const PREFILTER_AUDIT_ALL = 8;
/**
 * The pattern index of a listed window among a file's events: that window may hold a
 * codename or a split literal. A flagged file without listed windows is read whole.
 */
export const PREFILTER_WINDOW = 0xffff;
/**
 * The pattern index under which a listed window is listed again when it may hold a split
 * literal (where the result says `splitWindows`): the others are read without the
 * split-literal search.
 */
export const PREFILTER_SPLIT_WINDOW = 0xfffe;

type PrefilterAddon = NativeLiterals & Required<Pick<NativeLiterals, 'prefilterFiles' | 'literalsCompilePacked'>>;

/**
 * The compiled sets of the whole-file prefilter: every needle and encoded form in one libhs
 * literal database, the split-literal triggers and the audit's patterns. Its literal set is
 * the engine's own, so the exact scan of a flagged file reuses it.
 */
export interface PrefilterSets extends PrebuiltLiterals {
  readonly addon: PrefilterAddon;
  readonly caseless: Uint8Array;
  readonly triggers: unknown;
  readonly audit: unknown;
  readonly maxLength: number;
  /**
   * Writes a set compiled now to the cache, once; the scan calls it while the prefilter's
   * threads run, so the write costs no time on a machine with a core to spare.
   */
  readonly persist?: () => void;
}

/** What the prefilter found, per file in the order given. */
export interface PrefilterResult {
  /** `PREFILTER_*` bits; 0: the exact scan would find nothing. */
  readonly flags: Uint8Array;
  /** The errno that kept a file unread (0 when it was read). */
  readonly errors: Int32Array;
  readonly sizes: Float64Array;
  /**
   * The windows that may hold a finding (pattern {@link PREFILTER_WINDOW}) and the audit's
   * matches: (window, pattern, file offset) triples; file i's from `eventStarts[i]` to `eventStarts[i + 1]`.
   */
  readonly events: Float64Array;
  readonly eventStarts: Float64Array;
  /** Whether windows that may hold a split literal are listed ({@link PREFILTER_SPLIT_WINDOW}); else any may. */
  readonly splitWindows?: boolean;
}

const MAGIC = Buffer.from('MOATSCN1');
/** A probe whose needles change whenever the needle forms do, so a cache never outlives them. */
const PROBE = 'Probe\u00e9Codename';

/** The cache key of a set: the library, the needle forms, the options and the codenames. */
function setKey(addon: NativeLiterals, codenames: readonly string[], options: EngineOptions, version: string): string {
  const parts: Array<Uint8Array | string> = [
    `moat-scan-prefilter/1\0${version}\0`,
    JSON.stringify([options.plainOnly === true, options.ignoreCase === true, options.wholeWord === true]),
  ];
  const field = (bytes: Uint8Array | string) => {
    const b = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    const head = Buffer.alloc(4);
    head.writeUInt32BE(b.length);
    parts.push(head, b);
  };
  for (const n of needlesFor(PROBE, options)) {
    field(n.bytes);
    field(`${n.encoding}:${n.fold}:${n.wholeWord}`);
  }
  for (const c of codenames) field(c);
  return cacheName(addon, parts);
}

/**
 * Whether `dir` holds a prefilter cache entry at all (a fresh machine's has none, or no
 * directory). Read entry by entry up to the first one: a warm cache may hold thousands.
 */
function hasPrefilterEntries(dir: string | undefined): boolean {
  if (dir === undefined) return false;
  let entries: Dir | undefined;
  try {
    entries = opendirSync(dir);
    for (let entry = entries.readSync(); entry !== null; entry = entries.readSync()) if (entry.name.endsWith('.moatscan')) return true;
    return false;
  } catch {
    return false;
  } finally {
    entries?.closeSync();
  }
}

/** A literal set back to back, and its longest literal: what the cache holds. */
interface CachedLiterals extends PackedLiterals {
  readonly maxLength: number;
}

/** Cache entry: magic, longest needle, literal count, lengths, case flags, literals, compiled database. */
function encodeEntry(set: CachedLiterals, database: Buffer): Buffer {
  const count = set.lengths.length;
  const head = Buffer.alloc(MAGIC.length + 8 + 5 * count);
  MAGIC.copy(head);
  head.writeUInt32BE(set.maxLength, MAGIC.length);
  head.writeUInt32BE(count, MAGIC.length + 4);
  for (let i = 0; i < count; i++) head.writeUInt32BE(set.lengths[i] as number, MAGIC.length + 8 + 4 * i);
  Buffer.from(set.caseless.buffer, set.caseless.byteOffset, count).copy(head, MAGIC.length + 8 + 4 * count);
  return Buffer.concat([head, set.packed, database]);
}

function decodeEntry(bytes: Buffer | undefined): (CachedLiterals & { database: Buffer }) | undefined {
  if (bytes === undefined || bytes.length < MAGIC.length + 8 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const maxLength = bytes.readUInt32BE(MAGIC.length);
  const count = bytes.readUInt32BE(MAGIC.length + 4);
  const start = MAGIC.length + 8 + 5 * count;
  if (count === 0 || start > bytes.length) return undefined;
  const lengths = new Uint32Array(count);
  let total = 0;
  for (let i = 0; i < count; i++) {
    lengths[i] = bytes.readUInt32BE(MAGIC.length + 8 + 4 * i);
    if (lengths[i] === 0) return undefined;
    total += lengths[i] as number;
  }
  if (start + total >= bytes.length) return undefined;
  return {
    maxLength,
    lengths,
    caseless: new Uint8Array(bytes.subarray(MAGIC.length + 8 + 4 * count, start)),
    packed: bytes.subarray(start, start + total),
    database: bytes.subarray(start + total),
  };
}

/**
 * The prefilter's compiled sets for these codenames, or `undefined` where it cannot run or
 * does not pay (then the scan goes file by file as before). A cached set is loaded without
 * deriving a single needle; otherwise a large set, or a small one the addon probes with a
 * stride, is searched directly ({@link searchDirectly}) and any other (or any, with `engine:
 * 'native'`) compiled, to be cached by `persist`. The
 * triggers and the audit's patterns, which do not depend on the codenames, are compiled on
 * libuv's thread pool meanwhile (where the addon can), on the core the literal set leaves idle.
 */
export async function prefilterSets(
  codenames: readonly string[],
  options: EngineOptions,
  auditSources: readonly string[] | undefined,
): Promise<PrefilterSets | undefined> {
  if (options.engine === 'js' || codenames.length === 0) return undefined;
  const loaded = nativeLiterals();
  const addon = loaded.addon;
  if (addon === undefined || typeof addon.prefilterFiles !== 'function' || typeof addon.literalsCompilePacked !== 'function')
    return undefined;
  // Started before the literal set, awaited after it; a refusal is the caller's `undefined` below, never unhandled.
  const compiling = {
    triggers: options.plainOnly === true ? null : regexCompileSoon(addon, TRIGGER_SOURCES),
    audit: auditSources === undefined ? null : regexCompileSoon(addon, auditSources),
  };
  try {
    const version = addon.literalsVersion();
    if (version === undefined) return undefined;
    const dir = cacheDirectory();
    // The key hashes every codename (with the addon's libcrypto; node:crypto, about 10 ms to
    // start, only with an older addon): not computed where the cache holds no set to find.
    let key: string | undefined;
    const fileName = () => {
      if (dir === undefined) return undefined;
      key ??= setKey(addon, codenames, options, version);
      return join(dir, `${key}.moatscan`);
    };
    let set = hasPrefilterEntries(dir) ? decodeEntry(readCache(fileName())) : undefined;
    let handle: unknown;
    let plan: LiteralPlan | undefined;
    let persist: (() => void) | undefined;
    if (set !== undefined) {
      handle = (addon as PrefilterAddon).literalsCompilePacked(set.packed, set.lengths, set.caseless, set.database);
    } else {
      plan = literalPlan(codenames, options);
      if (nativeRefusal(plan) !== undefined) return undefined;
      set = { ...packPlan(plan), maxLength: plan.maxLength, database: Buffer.alloc(0) };
      // Nothing cached: a set searched directly ({@link searchDirectly}) compiles nothing to cache.
      const direct = searchDirectly(addon, set.lengths, options);
      handle = (addon as PrefilterAddon).literalsCompilePacked(set.packed, set.lengths, set.caseless, undefined, direct);
      if (!direct && dir !== undefined) {
        const compiled = set;
        const database = handle;
        let written = false;
        persist = () => {
          if (written) return;
          written = true;
          writeCache(fileName(), encodeEntry(compiled, addon.literalsSerialize(database)));
        };
      }
    }
    return {
      addon: addon as PrefilterAddon,
      handle,
      packed: set.packed,
      lengths: set.lengths,
      caseless: set.caseless,
      maxLength: set.maxLength,
      ...(plan === undefined ? {} : { plan }),
      ...(persist === undefined ? {} : { persist }),
      triggers: await compiling.triggers,
      audit: await compiling.audit,
    };
  } catch {
    return undefined;
  }
}

/**
 * `regexCompile` on libuv's thread pool where the addon has `regexCompileAsync`, else now; a
 * refusal, thrown or rejected, as a rejected promise that is handled (a caller that returns
 * before awaiting it leaves no unhandled rejection).
 */
function regexCompileSoon(addon: NativeLiterals, sources: readonly string[]): Promise<unknown> {
  let compiled: Promise<unknown>;
  try {
    compiled = addon.regexCompileAsync === undefined ? Promise.resolve(addon.regexCompile(sources)) : addon.regexCompileAsync(sources);
  } catch (error) {
    compiled = Promise.reject(error);
  }
  compiled.catch(() => {});
  return compiled;
}

/**
 * Runs the prefilter over regular files on `threads` native threads (pread, one libhs pass per
 * window), with the chunk size the exact scan reads in and the audit's carry.
 */
export function prefilterFiles(
  sets: PrefilterSets,
  paths: readonly string[],
  chunkSize: number,
  auditCarry: number,
  threads: number,
): Promise<PrefilterResult> {
  return sets.addon.prefilterFiles(sets.handle, sets.triggers, sets.audit, [...paths], chunkSize, sets.maxLength, auditCarry, threads);
}
