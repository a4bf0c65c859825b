import { describeValue, errorMessage } from '@moat/protocol/support';
import { BuildGuardError } from '../errors.js';
import { CodenameEngine, compileLimit, type EngineOptions, type PrebuiltLiterals, type RawMatch } from './engine.js';
import { type ByteRange, bunProgramRange } from './executable.js';
import { type Encoding, formPhrase } from './needles.js';
import {
  PREFILTER_AUDIT,
  PREFILTER_AUDIT_ALL,
  PREFILTER_CODENAME,
  PREFILTER_SPLIT,
  PREFILTER_SPLIT_WINDOW,
  PREFILTER_WINDOW,
  type PrefilterResult,
  prefilterFiles,
  prefilterSets,
} from './prefilter.js';
import { TarReader } from './tar.js';

// Node's built-in modules through getBuiltinModule, not ES imports: the ES module of a built-in
// reads every export, so `import … from 'node:fs'` loads fs/promises, readline and the stream
// modules a scan never uses — about 10 ms of a cold moat-scan's start (see cli/moat-scan.ts).
const { closeSync, createReadStream, existsSync, lstatSync, openSync, readdirSync, readFileSync, readSync, statSync } =
  process.getBuiltinModule('node:fs');
const { availableParallelism } = process.getBuiltinModule('node:os');
const { basename, join, matchesGlob } = process.getBuiltinModule('node:path');

/** How bad a finding is: `error` and `warning` fail the scan, `note` only informs. */
export type Severity = 'error' | 'warning' | 'note';

/** One thing moat-scan found. */
export interface Finding {
  /** Stable rule id, e.g. `moat/codename/base64` or `moat/sourcemap/map-file`. */
  readonly ruleId: string;
  readonly severity: Severity;
  /** The input path; archive members as `archive.tgz!package/dist/index.js`. */
  readonly path: string;
  readonly message: string;
  /** Byte offset in the file, when the finding has a position. */
  readonly offset?: number;
  readonly length?: number;
  readonly codename?: string;
  readonly encoding?: Encoding;
  /** Printable bytes around the finding. */
  readonly context?: string;
}

/**
 * An allowlist entry, with the reason why: a codename allowed in paths matching a glob, or a
 * rule (glob over rule ids, e.g. `moat/sourcemap/*`) allowed there.
 */
export interface AllowEntry {
  readonly codename?: string;
  readonly rule?: string;
  /** Glob over finding paths (`**` and `*`), e.g. `docs/**`. */
  readonly path: string;
  readonly reason: string;
}

/** Options of {@link scanPaths}. */
export interface ScanOptions extends EngineOptions {
  readonly codenames: readonly string[];
  readonly allowlist?: readonly AllowEntry[];
  /** Audit source maps, `sourceMappingURL` comments and embedded sources (default true). */
  readonly sourceMaps?: boolean;
  /**
   * Read size per chunk (default 1 MiB): memory stays bounded by a few chunks per worker, and a
   * prefiltered file is read exactly only in the chunks that may hold a finding.
   */
  readonly chunkSize?: number;
  /**
   * Worker threads for inputs of many files (default: up to 2, by available cores, when more
   * than one file and over 32 MB in all; 1 scans in this thread).
   */
  readonly workers?: number;
  /**
   * Clear files natively before scanning them (default: where the native engine runs): libhs
   * over every file on native threads, the exact scan only for files that can hold a finding.
   * `false` scans every file exactly; the findings are the same.
   */
  readonly prefilter?: boolean;
  /**
   * Search file and folder names too (default true): a codename in a name below an input
   * (`dist/capybara-chunk.js`, `assets/capybara/`) or in an archive member's path ships as
   * surely as one in a file. Plain form, with `ignoreCase` and `wholeWord`.
   */
  readonly names?: boolean;
  /**
   * Paths reported under another name: a finding or error whose path starts with a key is
   * reported (a finding also matched against the allowlist) with that prefix replaced by its value (the pack audit
   * reports the files of its temporary tarball as the package's own files).
   */
  readonly pathPrefixes?: Readonly<Record<string, string>>;
  /** Called as bytes are read, for progress display. */
  readonly onProgress?: (progress: { readonly path: string; readonly bytes: number; readonly total: number }) => void;
}

/** The outcome of a scan. */
export interface ScanReport {
  readonly findings: Finding[];
  /** Findings dropped by the allowlist. */
  readonly suppressed: number;
  readonly files: number;
  readonly bytes: number;
  /** Inputs that could not be read (they make the scan fail with exit code 2). */
  readonly errors: Array<{ readonly path: string; readonly message: string }>;
}

// Built from parts so this scanner's own bundle does not trip its own audit.
const SOURCE_MAPPING_URL = Buffer.from(['source', 'MappingURL='].join(''));
const SOURCES_CONTENT = Buffer.from(['"sources', 'Content"'].join(''));
/** A line naming a TypeScript source file, as esbuild and Bun write above each module. */
const SOURCE_PATH_LINE = /^\/\/ ((?:[\w.@-]+\/)*[\w.@-]+\.(?:ts|tsx|mts|cts))$/;
const COMMENT_START = Buffer.from('// ');
/** The bytes such a line's path is made of: `[\w.@/-]`. */
const isPathByte = (b: number) =>
  (b >= 0x30 && b <= 0x39) ||
  (b >= 0x41 && b <= 0x5a) ||
  (b >= 0x61 && b <= 0x7a) ||
  b === 0x5f ||
  b === 0x2e ||
  b === 0x40 ||
  b === 0x2f ||
  b === 0x2d;
const MAX_INLINE_MAP = 16 * 1024 * 1024;
/**
 * Bytes the audit carries from one window to the next: the prefilter's audit windows carry
 * as many, so a source-path line of up to {@link MAX_PATH_LINE} bytes is seen whole in one.
 */
const AUDIT_CARRY = 1024;
/** The longest line (from its `//`) the audit takes for a source-path line. */
const MAX_PATH_LINE = 512;
const isLineBreak = (b: number | undefined) => b === 0x0a || b === 0x0d;
/** Bytes after a source-map URL comment's `=` the audit reads: the URL, or whether it is an inline map. */
const URL_HEAD = 64;
const hsBytes = (bytes: Buffer) => [...bytes].map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('');
/**
 * @internal What {@link MapAudit} looks at, in libhs syntax, for the prefilter: a file none of these
 * match in the audit's windows gives the audit nothing. The last one is a superset of
 * the source-path line: `^` there is a window's start or a line's.
 */
export const AUDIT_SOURCES: readonly string[] = [
  hsBytes(SOURCES_CONTENT),
  hsBytes(SOURCE_MAPPING_URL),
  '(?:^|[\\n\\r])// [A-Za-z0-9_.@/-]*\\.(?:ts|tsx|mts|cts)',
];

/** Per-stream source-map audit state. */
class MapAudit {
  #capture: Buffer[] | undefined;
  #captured = 0;
  #sawSourcesContent = false;
  #sawUrl = false;
  readonly #paths = new Set<string>();
  /**
   * Source-map URL comments whose {@link URL_HEAD} bytes after the `=` run past the window: decided
   * when the next window (or the end) gives the rest, so the same however the chunks fall.
   */
  readonly #pending: Array<{ offset: number; value: Buffer }> = [];
  /** A `// ` line whose path bytes ran to the window's end: decided by the bytes after it. */
  #line: { offset: number; bytes: Buffer } | undefined;
  constructor(
    readonly path: string,
    readonly isMap: boolean,
    readonly add: (f: Finding) => void,
    readonly scanInline: (name: string, bytes: Buffer) => void,
  ) {}

  window(window: Buffer, carryLength: number, base: number): void {
    const fresh = window.subarray(carryLength);
    if (this.#capture !== undefined) this.#continueCapture(fresh);
    this.#settle(fresh, false);
    this.#continueLine(fresh, false);
    if (!this.#sawSourcesContent) this.#content(window.indexOf(SOURCES_CONTENT), carryLength, base);
    // Those that end past the carry: the window before saw the others.
    let from = Math.max(0, carryLength - SOURCE_MAPPING_URL.length + 1);
    for (let at = window.indexOf(SOURCE_MAPPING_URL, from); at !== -1; at = window.indexOf(SOURCE_MAPPING_URL, from)) {
      from = at + 1;
      const value = window.subarray(at + SOURCE_MAPPING_URL.length);
      if (value.length >= URL_HEAD && this.#pending.length === 0) this.#mappingUrl(value, base + at);
      else this.#pending.push({ offset: base + at, value: Buffer.from(value) });
    }
    // Lines whose `// ` ends past the carry (the window before saw the others), from a line's start.
    for (
      let at = window.indexOf(COMMENT_START, Math.max(0, carryLength - COMMENT_START.length + 1));
      at !== -1 && this.#line === undefined && this.#wantsPaths();
      at = window.indexOf(COMMENT_START, at + 1)
    ) {
      if (at > 0 ? !isLineBreak(window[at - 1]) : base > 0) continue;
      let end = at + COMMENT_START.length;
      while (end < window.length && end - at <= MAX_PATH_LINE && isPathByte(window[end] as number)) end++;
      if (end === window.length) this.#line = { offset: base + at, bytes: Buffer.from(window.subarray(at)) };
      else if (isLineBreak(window[end]) && end - at <= MAX_PATH_LINE) this.#pathLine(window.toString('latin1', at, end), base + at);
    }
  }

  /** The pending `// ` line, given the stream's next bytes; `last`: there are no more. */
  #continueLine(next: Buffer, last: boolean): void {
    const line = this.#line;
    if (line === undefined) return;
    let end = 0;
    while (end < next.length && line.bytes.length + end <= MAX_PATH_LINE && isPathByte(next[end] as number)) end++;
    if (end === next.length && !last && line.bytes.length + end <= MAX_PATH_LINE) {
      line.bytes = Buffer.concat([line.bytes, next]);
      return;
    }
    this.#line = undefined;
    const length = line.bytes.length + end;
    if (length <= MAX_PATH_LINE && (end === next.length || isLineBreak(next[end])) && this.#wantsPaths())
      this.#pathLine(Buffer.concat([line.bytes, next.subarray(0, end)]).toString('latin1'), line.offset);
  }

  /**
   * The same audit from the prefilter's matches instead of the bytes: `events` are (window,
   * pattern, file offset) triples of {@link AUDIT_SOURCES} in the windows {@link window}
   * would see, and `read` gives bytes of the file. `false` (nothing reported) when a match
   * is an inline map, whose capture needs the whole stream.
   */
  replay(events: Float64Array, size: number, chunkSize: number, read: (offset: number, length: number) => Buffer): boolean {
    const windows = new Map<number, Array<{ id: number; at: number }>>();
    for (let k = 0; k < events.length; k += 3) {
      const list = windows.get(events[k] as number) ?? [];
      list.push({ id: events[k + 1] as number, at: events[k + 2] as number });
      windows.set(events[k] as number, list);
    }
    // The windows' bounds, as the stream forms them: chunks, each after the carry of the window before.
    const bounds: Array<{ start: number; end: number; carry: number }> = [];
    for (let chunk = 0, carry = 0; chunk < size; chunk += chunkSize) {
      const end = Math.min(size, chunk + chunkSize);
      bounds.push({ start: chunk - carry, end, carry });
      carry = Math.min(AUDIT_CARRY, end - chunk + carry);
    }
    const heads = new Map<string, string>();
    for (const [k, list] of windows) {
      const w = bounds[k] as (typeof bounds)[number];
      for (const e of list)
        if (e.id === 1 && e.at + SOURCE_MAPPING_URL.length > w.start + w.carry) {
          const valueStart = e.at + SOURCE_MAPPING_URL.length;
          const head = read(valueStart, Math.max(0, Math.min(URL_HEAD, size - valueStart))).toString('latin1');
          if (head.startsWith('data:')) return false;
          heads.set(`${k}:${e.at}`, head);
        }
    }
    for (const k of [...windows.keys()].sort((a, b) => a - b)) {
      const w = bounds[k] as (typeof bounds)[number];
      const list = (windows.get(k) as Array<{ id: number; at: number }>).sort((a, b) => a.at - b.at || a.id - b.id);
      const first = list.find((e) => e.id === 0);
      if (!this.#sawSourcesContent && first !== undefined) this.#content(first.at - w.start, w.carry, w.start);
      for (const e of list) {
        const head = e.id === 1 ? heads.get(`${k}:${e.at}`) : undefined;
        if (head !== undefined) this.#url(head, e.at);
      }
    }
    this.#replayPaths(events, size, read);
    return true;
  }

  /** The pending source-map URL comments, given the stream's next bytes; `last`: there are no more. */
  #settle(next: Buffer, last: boolean): void {
    while (this.#pending.length > 0) {
      const first = this.#pending[0] as { offset: number; value: Buffer };
      if (next.length > 0) for (const p of this.#pending) p.value = Buffer.concat([p.value, next]);
      if (first.value.length < URL_HEAD && !last) return;
      this.#pending.shift();
      this.#mappingUrl(first.value, first.offset);
      next = Buffer.alloc(0);
    }
  }

  /** A source-map URL comment at `offset`, `value` the stream's bytes after its `=` (up to a window's end). */
  #mappingUrl(value: Buffer, offset: number): void {
    const head = value.subarray(0, URL_HEAD).toString('latin1');
    if (head.startsWith('data:')) {
      this.add({
        ruleId: 'moat/sourcemap/inline',
        severity: 'error',
        path: this.path,
        offset,
        message: 'inline source map (data: URI) in a shipped file',
      });
      this.#capture = [];
      this.#captured = 0;
      this.#continueCapture(value);
    } else this.#url(head, offset);
  }

  /**
   * The source-path lines among the prefilter's matches, each from a line's start, read to its
   * end (the stream's way: {@link window}); a match may start at a window's start or a line break.
   */
  #replayPaths(events: Float64Array, size: number, read: (offset: number, length: number) => Buffer): void {
    if (!this.#wantsPaths()) return;
    const starts = new Set<number>();
    for (let k = 0; k < events.length; k += 3) {
      if (events[k + 1] !== 2) continue;
      const at = events[k + 2] as number;
      const lineStart = isLineBreak(read(at, 1)[0]) ? at + 1 : at;
      if (lineStart === 0 || isLineBreak(read(lineStart - 1, 1)[0])) starts.add(lineStart);
    }
    for (const lineStart of [...starts].sort((a, b) => a - b)) {
      if (!this.#wantsPaths()) return;
      const line = read(lineStart, Math.min(MAX_PATH_LINE + 1, size - lineStart));
      let end = COMMENT_START.length;
      while (end < line.length && end <= MAX_PATH_LINE && isPathByte(line[end] as number)) end++;
      if (end <= MAX_PATH_LINE && (end === size - lineStart || isLineBreak(line[end])))
        this.#pathLine(line.toString('latin1', 0, end), lineStart);
    }
  }

  #wantsPaths(): boolean {
    return !this.isMap && /\.[cm]?jsx?$/.test(this.path) && this.#paths.size < 20;
  }

  /** The first SOURCES_CONTENT of a window at `at` (-1: none), reported once. */
  #content(at: number, carryLength: number, base: number): void {
    if (at === -1 || at + SOURCES_CONTENT.length <= carryLength) return;
    this.#sawSourcesContent = true;
    this.add({
      ruleId: this.isMap ? 'moat/sourcemap/sources-content' : 'moat/sourcemap/embedded-sources-content',
      severity: 'error',
      path: this.path,
      offset: base + at,
      message: this.isMap
        ? 'source map ships the original sources (sourcesContent)'
        : 'file embeds a source map with the original sources (sourcesContent)',
    });
  }

  /** A SOURCE_MAPPING_URL that is not an inline map, at `offset`: the first is reported. */
  #url(head: string, offset: number): void {
    if (this.#sawUrl) return;
    this.#sawUrl = true;
    const url = /^[^\s*'"]*/.exec(head)?.[0] ?? '';
    this.add({
      ruleId: 'moat/sourcemap/url',
      severity: 'warning',
      path: this.path,
      offset,
      message: `sourceMappingURL comment points at ${url || '(empty)'}`,
    });
  }

  /** A whole line starting with `// ` at `offset`. */
  #pathLine(line: string, offset: number): void {
    const m = SOURCE_PATH_LINE.exec(line);
    if (m === null) return;
    const p = m[1] as string;
    if (this.#paths.has(p)) return;
    this.#paths.add(p);
    this.add({
      ruleId: 'moat/sourcemap/source-path',
      severity: 'note',
      path: this.path,
      offset,
      message: `bundle names its source file ${p}`,
    });
  }

  #continueCapture(bytes: Buffer): void {
    const capture = this.#capture as Buffer[];
    let end = 0;
    while (end < bytes.length && ![0x0a, 0x0d, 0x20, 0x22, 0x27, 0x2a].includes(bytes[end] as number)) end++;
    capture.push(Buffer.from(bytes.subarray(0, end)));
    this.#captured += end;
    if (end < bytes.length || this.#captured > MAX_INLINE_MAP) this.#finishCapture();
  }

  end(): void {
    this.#settle(Buffer.alloc(0), true);
    this.#continueLine(Buffer.alloc(0), true);
    if (this.#capture !== undefined) this.#finishCapture();
  }

  #finishCapture(): void {
    const url = Buffer.concat(this.#capture ?? []).toString('latin1');
    this.#capture = undefined;
    const comma = url.indexOf(',');
    if (comma === -1) return;
    const meta = url.slice(0, comma);
    const payload = url.slice(comma + 1);
    const json = meta.endsWith(';base64') ? Buffer.from(payload, 'base64') : Buffer.from(decodeURIComponent(payload));
    this.scanInline(`${this.path}!inline-sourcemap`, json);
    try {
      const map = JSON.parse(json.toString('utf8')) as { sourcesContent?: unknown[]; sources?: unknown[] };
      if (Array.isArray(map.sourcesContent) && map.sourcesContent.some((s) => typeof s === 'string' && s.length > 0)) {
        this.add({
          ruleId: 'moat/sourcemap/inline-sources-content',
          severity: 'error',
          path: this.path,
          message: `inline source map ships ${map.sourcesContent.length} original sources (${(map.sources ?? []).slice(0, 3).join(', ')})`,
        });
      }
    } catch {
      // Not JSON: the inline finding above already stands.
    }
  }
}

/**
 * Scans files, directories (recursively, skipping `.git`), `.tgz` npm tarballs and any
 * other binaries such as standalone executables, streaming each input in chunks. Findings
 * on allowlisted codenames and paths are dropped and counted.
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` for invalid codenames; unreadable inputs are
 *   reported in `errors`, not thrown.
 */
export async function scanPaths(paths: readonly string[], options: ScanOptions): Promise<ScanReport> {
  if (options.codenames.length === 0 && options.sourceMaps === false) {
    throw new BuildGuardError('ERR_SCAN_CONFIG', 'expected at least one codename or the source-map audit, got neither');
  }
  if (options.prefilter !== false) {
    const prefiltered = await scanPrefiltered(paths, options);
    if (prefiltered !== undefined) return prefiltered;
  }
  if (options.workers !== 1) {
    const parallel = await scanInWorkers(paths, options);
    if (parallel !== undefined) return parallel;
  }
  const scan = new SequentialScan(options);
  const { files, names, errors } = await listFiles(paths);
  scan.errors.push(...errors);
  scan.names(names);
  for (const f of files) await scan.file(f.path, f.size, 'exact');
  return scan.report();
}

const isTarball = (path: string) => /\.(tgz|tar\.gz)$/.test(path);
/** Findings kept per file; the rest are counted in one `moat/scan/findings-omitted` warning. */
const MAX_FINDINGS_PER_FILE = 10_000;
/** Archives inside archives are read this deep, each up to this many bytes packed and unpacked. */
const NESTED_ARCHIVE_DEPTH = 4;
const NESTED_ARCHIVE_BYTES = 256 * 1024 * 1024;

/**
 * The prefilter's way: every regular file through libhs on native threads; the exact scan
 * (the same code as without it) reads only files the prefilter flags, and the source-map
 * audit alone runs on files that only it flags. Tarballs and `.map` files always go the
 * exact way. `undefined` when the prefilter cannot run.
 */
async function scanPrefiltered(paths: readonly string[], options: ScanOptions): Promise<ScanReport | undefined> {
  const { files, names, errors } = await listFiles(paths);
  // Nothing cached: libhs compiles only a set whose compile time the bytes to read pay back.
  const bytes = files.reduce((n, f) => n + f.size, 0);
  const setOptions = { ...options, directAbove: options.directAbove ?? compileLimit(bytes) };
  const sets = await prefilterSets(options.codenames, setOptions, options.sourceMaps === false ? undefined : AUDIT_SOURCES);
  if (sets === undefined) return undefined;
  const direct = files.filter((f) => !isTarball(f.path) && !f.path.endsWith('.map'));
  const threads = Math.max(1, options.workers ?? availableParallelism());
  const chunkSize = options.chunkSize ?? PREFILTER_CHUNK;
  let result: Awaited<ReturnType<typeof prefilterFiles>>;
  try {
    const running = prefilterFiles(
      sets,
      direct.map((f) => f.path),
      chunkSize,
      AUDIT_CARRY,
      threads,
    );
    // The cache is written while the prefilter's threads read the files.
    sets.persist?.();
    result = await running;
  } catch {
    return undefined;
  }
  const verdicts = new Map(direct.map((f, i) => [f.path, i]));
  // Listed windows are read again in the same size: a possible finding costs the exact scan 128 KB, not 1 MB.
  const scan = new SequentialScan({ ...options, chunkSize }, sets);
  scan.errors.push(...errors);
  scan.names(names);
  for (const f of files) {
    const i = verdicts.get(f.path);
    if (i === undefined || result.errors[i] !== 0) await scan.file(f.path, f.size, 'exact');
    else await scanVerdict(scan, f.path, result, i);
  }
  return scan.report();
}

/** What the prefilter's verdict on file `i` leaves to read: nothing, the audit's matches, listed windows or the whole file. */
async function scanVerdict(scan: SequentialScan, path: string, result: PrefilterResult, i: number): Promise<void> {
  const flags = result.flags[i] as number;
  const size = result.sizes[i] as number;
  const events = result.events.subarray(result.eventStarts[i] as number, result.eventStarts[i + 1] as number);
  if ((flags & (PREFILTER_CODENAME | PREFILTER_SPLIT)) === 0) {
    if (flags & PREFILTER_AUDIT_ALL) await scan.file(path, size, 'audit');
    else if (flags & PREFILTER_AUDIT) await scan.replayAudit(path, size, events);
    else scan.cleared(path, size);
  } else if (flags & PREFILTER_AUDIT_ALL || !events.some((x, k) => k % 3 === 1 && x === PREFILTER_WINDOW))
    await scan.file(path, size, 'exact');
  else await scan.windows(path, size, events, result.splitWindows === true);
}

/**
 * Lists the regular files under the inputs (directories recursively, skipping `.git`),
 * symbolic links followed — an input that is a link (`dist -> build/`) and links inside a
 * tree are what a build ships or a copy dereferences — each file and directory once however
 * many paths reach it (link loops, overlapping inputs). A link to nothing is an error: what it
 * stands for cannot be read.
 */
async function listFiles(paths: readonly string[]): Promise<{
  files: Array<{ path: string; size: number }>;
  names: ListedName[];
  errors: ScanReport['errors'];
}> {
  const files: Array<{ path: string; size: number }> = [];
  const names: ListedName[] = [];
  const errors: ScanReport['errors'] = [];
  const seen = new Set<string>();
  // Synchronous: one stat per file, far cheaper than a trip through the thread pool each.
  // `name` is the entry's own name below an input (an input folder's own name is not searched).
  const visit = (path: string, name: string | undefined): void => {
    let info: ReturnType<typeof statSync>;
    try {
      info = statSync(path);
    } catch (error) {
      const dangling = lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() === true;
      errors.push({ path, message: dangling ? `a symbolic link to nothing (${errorMessage(error)})` : errorMessage(error) });
      return;
    }
    const identity = `${info.dev}:${info.ino}`;
    if (seen.has(identity)) return;
    seen.add(identity);
    if (info.isDirectory()) {
      if (basename(path) === '.git') return;
      let entries: string[];
      try {
        entries = readdirSync(path);
      } catch (error) {
        errors.push({ path, message: errorMessage(error) });
        return;
      }
      if (name !== undefined) names.push({ path, name, folder: true });
      for (const entry of entries.sort()) visit(join(path, entry), entry);
    } else if (info.isFile()) {
      files.push({ path, size: info.size });
      names.push({ path, name: name ?? basename(path), folder: false });
    }
  };
  for (const path of paths) visit(path, undefined);
  return { files, names, errors };
}

/** Off in the standalone executable, whose bundle holds no worker script to start. */
let workerThreads = true;

/** @internal Scans on the main thread only where the program cannot start worker scripts (the standalone executable). */
export function disableWorkerThreads(): void {
  workerThreads = false;
}

function workerScript(): URL | undefined {
  if (!workerThreads) return undefined;
  // Built layout: dist/chunk-*.js next to dist/scan/worker.js; from sources, the built worker.
  for (const candidate of ['./scan/worker.js', './worker.js', '../../dist/scan/worker.js']) {
    const url = new URL(candidate, import.meta.url);
    if (url.pathname.endsWith('/scan/worker.js') && existsSync(url)) return url;
  }
  return undefined;
}

/** Splits the files over worker threads by size; `undefined` when one thread is better. */
async function scanInWorkers(paths: readonly string[], options: ScanOptions): Promise<ScanReport | undefined> {
  const { files, names, errors } = await listFiles(paths);
  const total = files.reduce((n, f) => n + f.size, 0);
  const count = Math.min(options.workers ?? Math.min(2, availableParallelism()), files.length);
  const script = workerScript();
  if (count < 2 || script === undefined || (options.workers === undefined && total < 32 * 1024 * 1024)) return undefined;
  const groups: Array<{ paths: string[]; bytes: number }> = Array.from({ length: count }, () => ({ paths: [], bytes: 0 }));
  for (const f of [...files].sort((a, b) => b.size - a.size)) {
    const lightest = groups.reduce((a, b) => (b.bytes < a.bytes ? b : a));
    lightest.paths.push(f.path);
    lightest.bytes += f.size;
  }
  const { onProgress, onWarning: _onWarning, ...rest } = options;
  // Loaded only when the scan splits: a single-threaded scan never pays for it.
  const { Worker } = await import('node:worker_threads');
  const reports = await Promise.all(
    groups.map(
      (group) =>
        new Promise<ScanReport>((resolve, reject) => {
          const worker = new Worker(script, { workerData: { paths: group.paths, options: { ...rest, workers: 1 } } });
          worker.on(
            'message',
            (message: { type: 'progress'; path: string; bytes: number; total: number } | { type: 'done'; report: ScanReport }) => {
              if (message.type === 'progress') onProgress?.(message);
              else resolve(message.report);
            },
          );
          worker.on('error', reject);
          worker.on('exit', (code) => {
            if (code !== 0) reject(new BuildGuardError('ERR_SCAN_INPUT', `expected the scan worker to finish, got exit code ${code}`));
          });
        }),
    ),
  );
  // A worker gets bare files and searches their names; folder names are searched here.
  const named = new SequentialScan(options);
  named.names(names.filter((n) => n.folder));
  reports.push(named.report());
  const findings = reports.flatMap((r) => r.findings);
  findings.sort((a, b) => (a.path === b.path ? (a.offset ?? -1) - (b.offset ?? -1) : a.path < b.path ? -1 : 1));
  return {
    findings,
    suppressed: reports.reduce((n, r) => n + r.suppressed, 0),
    files: reports.reduce((n, r) => n + r.files, 0),
    bytes: reports.reduce((n, r) => n + r.bytes, 0),
    errors: [...errors, ...reports.flatMap((r) => r.errors)].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
  };
}

const DEFAULT_CHUNK = 1024 * 1024;
/**
 * The prefilter's chunk: the window the exact scan reads again around a possible finding.
 * Findings do not depend on it; a smaller one spares the exact scan most of each listed window
 * and costs the prefilter only its margins, a few hundred bytes per chunk.
 */
const PREFILTER_CHUNK = 128 * 1024;

type ScanState = { findings: Finding[]; suppressed: number; files: number; bytes: number; errors: ScanReport['errors'] };

/**
 * The bytes of an open file at an offset, read synchronously (a few per file: cheaper than the
 * thread pool), into `into` when it is large enough (fresh memory costs page faults).
 */
function withReader<T>(path: string, use: (read: (offset: number, length: number, into?: Buffer) => Buffer) => T): T {
  const fd = openSync(path, 'r');
  try {
    return use(readerOf(fd));
  } finally {
    closeSync(fd);
  }
}

/** Reads at an offset of an open file (positioned reads: a stream's own position is left alone). */
function readerOf(fd: number): (offset: number, length: number, into?: Buffer) => Buffer {
  return (offset, length, into) => {
    const bytes =
      into !== undefined && into.length >= length ? into.subarray(0, Math.max(0, length)) : Buffer.allocUnsafe(Math.max(0, length));
    return bytes.subarray(0, readSync(fd, bytes, 0, bytes.length, offset));
  };
}

/**
 * The exact scan, file by file in this thread. The codename engine is built on first use,
 * reusing the prefilter's compiled literals when given: a prefiltered scan whose files are
 * all clear never derives a needle.
 */
class SequentialScan {
  readonly #options: ScanOptions;
  readonly #prebuilt: PrebuiltLiterals | undefined;
  readonly #state: ScanState = { findings: [], suppressed: 0, files: 0, bytes: 0, errors: [] };
  /** Per path, the findings kept so far (at most twice the bound between trims) and how many were seen. */
  readonly #kept = new Map<string, { findings: Finding[]; seen: number }>();
  readonly #chunkSize: number;
  #built: CodenameEngine | undefined;
  #nameMatcher: NameMatcher | undefined;
  /** Archive folders whose names were searched. */
  readonly #namedFolders = new Set<string>();

  constructor(options: ScanOptions, prebuilt?: PrebuiltLiterals) {
    this.#options = options;
    this.#prebuilt = prebuilt;
    this.#chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
  }

  get errors(): ScanReport['errors'] {
    return this.#state.errors;
  }

  #engine(): CodenameEngine {
    this.#built ??= new CodenameEngine(this.#options.codenames, this.#options, this.#prebuilt);
    return this.#built;
  }

  readonly #add = (found: Finding): void => {
    const f = renamed(found, this.#options.pathPrefixes);
    const allowed = (this.#options.allowlist ?? []).some(
      (a) =>
        matchesGlob(f.path, a.path) &&
        ((a.codename !== undefined && a.codename === f.codename) || (a.rule !== undefined && matchesGlob(f.ruleId, a.rule))),
    );
    if (allowed) {
      this.#state.suppressed++;
      return;
    }
    // Bounded per file: a file that holds a codename on every line would otherwise hold the
    // scan's memory. The first by offset are kept, whatever order the engine found them in.
    let kept = this.#kept.get(f.path);
    if (kept === undefined) {
      kept = { findings: [], seen: 0 };
      this.#kept.set(f.path, kept);
    }
    kept.seen++;
    kept.findings.push(f);
    if (kept.findings.length > 2 * MAX_FINDINGS_PER_FILE) kept.findings = firstByOffset(kept.findings);
  };

  /** A codename stream of `name`'s findings, whose matches do not depend on where its chunks end. */
  #codenames(name: string) {
    return this.#engine().stream((m) => this.#add(codenameFinding(name, m)), { lookahead: true });
  }

  readonly #scanBytes = (name: string, bytes: Buffer): void => {
    const stream = this.#codenames(name);
    stream.write(bytes);
    stream.end();
  };

  #progress(path: string, bytes: number, total: number): void {
    this.#options.onProgress?.({ path, bytes, total });
  }

  /**
   * Where the source-map audit's findings go: all of them, or for a Bun executable those in
   * its program's bytes (`range`, see {@link bunProgramRange}): Bun's own runtime carries
   * source-map text of its own.
   */
  #auditFindings(range: ByteRange | undefined): (f: Finding) => void {
    if (range === undefined) return this.#add;
    return (f) => {
      if (f.offset === undefined || (f.offset >= range.start && f.offset < range.end)) this.#add(f);
    };
  }

  /** A sink for one logical file (a real file or an archive member); `audit`: the source-map audit alone. */
  #open(name: string, mode: 'exact' | 'audit' = 'exact', program?: ByteRange) {
    const state = this.#state;
    state.files++;
    const isMap = name.endsWith('.map');
    const sourceMaps = this.#options.sourceMaps !== false;
    if (isMap && sourceMaps)
      this.#add({ ruleId: 'moat/sourcemap/map-file', severity: 'error', path: name, message: 'source map file shipped' });
    const audit = sourceMaps ? new MapAudit(name, isMap, this.#auditFindings(program), this.#scanBytes) : undefined;
    let carry: Buffer = Buffer.alloc(0);
    let offset = 0;
    const codenames = mode === 'exact' ? this.#codenames(name) : undefined;
    return {
      write(chunk: Uint8Array) {
        state.bytes += chunk.byteLength;
        codenames?.write(chunk);
        if (audit !== undefined) {
          const window = carry.length === 0 ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : Buffer.concat([carry, chunk]);
          audit.window(window, carry.length, offset - carry.length);
          carry = Buffer.from(window.subarray(Math.max(0, window.length - AUDIT_CARRY)));
        }
        offset += chunk.byteLength;
      },
      end() {
        codenames?.end();
        audit?.end();
      },
    };
  }

  /**
   * The sink of an archive member: a file's, or for a tarball inside the archive (a vendored
   * `.tgz` in an npm package) its own members', `depth` archives down. A nested archive is
   * read whole, up to {@link NESTED_ARCHIVE_BYTES} packed and unpacked; a larger or broken one
   * is an error (it cannot be vouched for), never a pass.
   */
  #member(name: string, depth: number, gunzipSync: typeof import('node:zlib').gunzipSync) {
    this.#memberNames(name);
    if (!isTarball(name)) return this.#open(name);
    const state = this.#state;
    const parts: Buffer[] = [];
    let size = 0;
    return {
      write(chunk: Uint8Array) {
        size += chunk.byteLength;
        state.bytes += chunk.byteLength;
        if (size <= NESTED_ARCHIVE_BYTES) parts.push(Buffer.from(chunk));
      },
      end: () => {
        state.files++;
        const fail = (message: string) => state.errors.push({ path: name, message });
        if (depth >= NESTED_ARCHIVE_DEPTH)
          return fail(`expected archives nested at most ${NESTED_ARCHIVE_DEPTH} deep, got deeper: not scanned`);
        if (size > NESTED_ARCHIVE_BYTES)
          return fail(`expected an archive inside an archive of at most ${NESTED_ARCHIVE_BYTES} bytes, got ${size}: not scanned`);
        try {
          const inner = gunzipSync(Buffer.concat(parts), { maxOutputLength: NESTED_ARCHIVE_BYTES });
          const tar = new TarReader({ entry: (entry) => this.#member(`${name}!${entry.path}`, depth + 1, gunzipSync) });
          tar.write(inner);
          tar.end();
        } catch (error) {
          fail(`expected a gzip-compressed tar archive of at most ${NESTED_ARCHIVE_BYTES} bytes unpacked, got ${errorMessage(error)}`);
        }
      },
    };
  }

  async #scanTarball(path: string, progress: (n: number) => void): Promise<void> {
    this.#state.files++;
    // zlib is loaded for archives only: most scans never open one.
    const zlib = await import('node:zlib');
    const tar = new TarReader({ entry: (entry) => this.#member(`${path}!${entry.path}`, 1, zlib.gunzipSync) });
    const gunzip = zlib.createGunzip();
    const stream = createReadStream(path, { highWaterMark: this.#chunkSize });
    stream.on('data', (c) => progress((c as Buffer).length));
    // A read error ends the archive's stream with it, so it is reported, never thrown unhandled.
    stream.on('error', (error) => gunzip.destroy(error));
    stream.pipe(gunzip);
    for await (const chunk of gunzip) tar.write(chunk as Buffer);
    tar.end();
  }

  async #scanFile(path: string, size: number, mode: 'exact' | 'audit'): Promise<void> {
    let read = 0;
    const progress = (n: number) => {
      read += n;
      this.#progress(path, read, size);
    };
    if (isTarball(path)) return this.#scanTarball(path, progress);
    // Plain files: read into one reused buffer (a stream allocates a fresh one per chunk).
    // fs/promises loaded here, where a whole file is read: most scans only read the windows the prefilter lists.
    const handle = await process.getBuiltinModule('node:fs/promises').open(path, 'r');
    try {
      const program = this.#options.sourceMaps === false ? undefined : bunProgramRange(readerOf(handle.fd), size);
      const sink = this.#open(path, mode, program);
      const buffer = Buffer.allocUnsafe(Math.min(this.#chunkSize, Math.max(size, 1)));
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        sink.write(buffer.subarray(0, bytesRead));
        progress(bytesRead);
      }
      sink.end();
    } finally {
      await handle.close();
    }
  }

  /** One file, read whole: codenames and the audit (`exact`) or the audit alone. */
  async file(path: string, size: number, mode: 'exact' | 'audit'): Promise<void> {
    try {
      await this.#scanFile(path, size, mode);
    } catch (error) {
      this.#state.errors.push({ path, message: errorMessage(error) });
    }
  }

  /** The audit alone from the prefilter's matches, reading only the bytes around them. */
  async replayAudit(path: string, size: number, events: Float64Array): Promise<void> {
    let replayed: boolean;
    try {
      replayed = withReader(path, (read) =>
        new MapAudit(path, false, this.#auditFindings(bunProgramRange(read, size)), this.#scanBytes).replay(
          events,
          size,
          this.#chunkSize,
          read,
        ),
      );
    } catch (error) {
      this.#state.errors.push({ path, message: errorMessage(error) });
      return;
    }
    if (!replayed) return this.file(path, size, 'audit');
    this.cleared(path, size);
  }

  /**
   * The exact scan of the windows the prefilter lists (`PREFILTER_WINDOW` events), each read
   * with the bytes before and after its chunk a stream would see, reporting what ends in the
   * chunk (the windows the prefilter lists are those where a match may end), then the audit
   * from the prefilter's matches.
   * `splitListed`: the prefilter lists windows that may hold a split literal
   * (`PREFILTER_SPLIT_WINDOW`), and the others are read without that search.
   */
  async windows(path: string, size: number, events: Float64Array, splitListed = false): Promise<void> {
    const listed = new Set<number>();
    const split = new Set<number>();
    for (let k = 0; k < events.length; k += 3) {
      if (events[k + 1] === PREFILTER_WINDOW) listed.add(events[k] as number);
      else if (events[k + 1] === PREFILTER_SPLIT_WINDOW) split.add(events[k] as number);
    }
    const chunk = this.#chunkSize;
    try {
      withReader(path, (read) => {
        const stream = this.#codenames(path);
        const margin = stream.maxCarry;
        // One buffer for every window: the scan keeps nothing of a window it has scanned.
        const buffer = Buffer.allocUnsafe(Math.min(size, chunk + 2 * margin));
        for (const k of [...listed].sort((a, b) => a - b)) {
          const start = k * chunk;
          const carry = Math.min(margin, start);
          const end = Math.min(size, start + chunk);
          const window = read(start - carry, Math.min(size, end + margin) - start + carry, buffer);
          const own = Math.min(window.length, carry + end - start);
          stream.writeWindow(window, carry, start - carry, !splitListed || split.has(k), own);
        }
      });
    } catch (error) {
      this.#state.errors.push({ path, message: errorMessage(error) });
      return;
    }
    if (this.#options.sourceMaps === false) this.cleared(path, size);
    else await this.replayAudit(path, size, events);
  }

  /** A file read in full elsewhere (cleared by the prefilter, or replayed): counted, nothing to report. */
  cleared(path: string, size: number): void {
    this.#state.files++;
    this.#state.bytes += size;
    this.#progress(path, size, size);
  }

  /** Searches listed file and folder names (unless `names` is false). */
  names(listed: readonly ListedName[]): void {
    if (this.#options.names === false || this.#options.codenames.length === 0) return;
    this.#nameMatcher ??= nameMatcher(this.#options);
    for (const { path, name, folder } of listed)
      for (const codename of this.#nameMatcher(name)) this.#add(nameFinding(path, codename, folder));
  }

  /** Searches the folders and name of archive member `member` (`a.tgz!package/dist/x.js`), each folder once. */
  #memberNames(member: string): void {
    if (this.#options.names === false || this.#options.codenames.length === 0) return;
    this.#nameMatcher ??= nameMatcher(this.#options);
    const cut = member.lastIndexOf('!');
    const parts = member.slice(cut + 1).split('/');
    let path = member.slice(0, cut + 1);
    parts.forEach((name, i) => {
      path += i === 0 ? name : `/${name}`;
      const folder = i < parts.length - 1;
      if (name === '' || (folder && this.#namedFolders.has(path))) return;
      if (folder) this.#namedFolders.add(path);
      for (const codename of (this.#nameMatcher as NameMatcher)(name)) this.#add(nameFinding(path, codename, folder));
    });
  }

  report(): ScanReport {
    const state = this.#state;
    for (const [path, kept] of this.#kept) {
      const findings = kept.findings.length > MAX_FINDINGS_PER_FILE ? firstByOffset(kept.findings) : kept.findings;
      state.findings.push(...findings);
      if (kept.seen > findings.length)
        state.findings.push({
          ruleId: 'moat/scan/findings-omitted',
          severity: 'warning',
          path,
          message: `${kept.seen - findings.length} more findings in this file, not listed (at most ${MAX_FINDINGS_PER_FILE} are kept per file)`,
        });
    }
    this.#kept.clear();
    state.findings.sort((a, b) => (a.path === b.path ? (a.offset ?? -1) - (b.offset ?? -1) : a.path < b.path ? -1 : 1));
    state.errors = state.errors.map((e) => renamed(e, this.#options.pathPrefixes));
    state.errors.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return state;
  }
}

/** The {@link MAX_FINDINGS_PER_FILE} first findings of one file, by offset (then rule and codename: a total order). */
function firstByOffset(findings: Finding[]): Finding[] {
  const key = (f: Finding) => `${f.ruleId}\0${f.codename ?? ''}\0${f.encoding ?? ''}`;
  return findings
    .sort((a, b) => (a.offset ?? -1) - (b.offset ?? -1) || (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
    .slice(0, MAX_FINDINGS_PER_FILE);
}

/** A file or folder found by {@link listFiles}, with its own name. */
interface ListedName {
  readonly path: string;
  readonly name: string;
  readonly folder: boolean;
}

/** The codenames a file or folder name holds. */
type NameMatcher = (name: string) => string[];

const WORD = /[A-Za-z0-9_]/;
const asciiLower = (text: string) => text.replace(/[A-Z]+/g, (c) => c.toLowerCase());

/**
 * @internal The codenames in a name, plain, as the scan matches file contents (`ignoreCase` folds ASCII
 * letters, `wholeWord` wants no word character around): the codenames are indexed by their
 * first four code units (fewer when one is shorter), so a name costs one lookup per position whatever their number.
 */
export function nameMatcher(options: ScanOptions): NameMatcher {
  const fold = options.ignoreCase === true ? asciiLower : (text: string) => text;
  const byHead = new Map<string, Array<{ codename: string; needle: string }>>();
  const headLength = Math.max(1, Math.min(4, ...options.codenames.map((c) => c.length)));
  for (const codename of options.codenames) {
    const needle = fold(codename);
    const head = needle.slice(0, headLength);
    const list = byHead.get(head) ?? [];
    list.push({ codename, needle });
    byHead.set(head, list);
  }
  const wordAt = (text: string, at: number) => at >= 0 && at < text.length && WORD.test(text[at] as string);
  return (name) => {
    const text = fold(name);
    const found = new Set<string>();
    for (let at = 0; at + headLength <= text.length; at++) {
      const candidates = byHead.get(text.slice(at, at + headLength));
      if (candidates === undefined) continue;
      for (const { codename, needle } of candidates)
        if (text.startsWith(needle, at) && (options.wholeWord !== true || (!wordAt(text, at - 1) && !wordAt(text, at + needle.length))))
          found.add(codename);
    }
    return [...found];
  };
}

function nameFinding(path: string, codename: string, folder: boolean): Finding {
  return {
    ruleId: 'moat/codename/name',
    severity: 'error',
    path,
    codename,
    message: `internal codename "${codename}" in a ${folder ? 'folder' : 'file'} name`,
  };
}

/** `f` (a finding or an error) with its path's prefix replaced by the first of `prefixes` it starts with. */
function renamed<T extends { readonly path: string }>(f: T, prefixes: Readonly<Record<string, string>> | undefined): T {
  if (prefixes === undefined) return f;
  for (const [from, to] of Object.entries(prefixes)) if (f.path.startsWith(from)) return { ...f, path: to + f.path.slice(from.length) };
  return f;
}

function codenameFinding(path: string, m: RawMatch): Finding {
  return {
    ruleId: `moat/codename/${m.encoding}`,
    severity: 'error',
    path,
    offset: m.offset,
    length: m.length,
    codename: m.codename,
    encoding: m.encoding,
    context: m.context,
    message: `internal codename "${m.codename}" ${formPhrase(m.encoding)}`,
  };
}

/** Whether a UTF-16 code unit is one of JavaScript's white space or line terminators (`\s`). */
const SPACE = /\s/;
const isSpace = (unit: string): boolean => SPACE.test(unit);

/**
 * `line` without its comment, as `line.replace(/\s+#.*$|^#.*$/, '')` but in linear time (that
 * expression backtracks quadratically over a long run of spaces that no `#` follows): a
 * comment is a `#` at the start of the line or after white space, from which no line
 * terminator (that `.` does not cross) comes before the end. Trailing white space before the
 * comment is left for the caller's `trim()`.
 */
function withoutComment(line: string): string {
  // `.` does not match these, so a comment must start after the last of them.
  const last = Math.max(line.lastIndexOf('\r'), line.lastIndexOf('\n'), line.lastIndexOf('\u2028'), line.lastIndexOf('\u2029'));
  if (last === -1 && line.startsWith('#')) return '';
  for (let hash = line.indexOf('#', Math.max(1, last + 1)); hash !== -1; hash = line.indexOf('#', hash + 1)) {
    if (isSpace(line[hash - 1] as string)) return line.slice(0, hash);
  }
  return line;
}

/**
 * Reads a codename list: one codename per line; `#` starts a comment; blank lines are
 * skipped.
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` for a codename shorter than 4 characters.
 */
export function parseCodenames(text: string): string[] {
  const out: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    // Comments and spaces only where there are any: a list of thousands is read in a cold process.
    const split = lines[i] as string;
    // A CR before a line feed goes with it (as splitting on \r?\n); a last line keeps its own.
    const raw = i < lines.length - 1 && split.endsWith('\r') ? split.slice(0, -1) : split;
    const line = raw.includes('#') ? withoutComment(raw).trim() : raw.trim();
    if (line === '') continue;
    if (line.length < 4 || (line.length < 8 && [...line].length < 4))
      throw new BuildGuardError(
        'ERR_SCAN_CONFIG',
        `expected a codename of at least 4 characters on line ${i + 1}, got ${JSON.stringify(line)}`,
      );
    out.push(line);
  }
  return [...new Set(out)];
}

/** The members an allowlist entry may have. */
const ALLOW_MEMBERS = ['codename', 'rule', 'path', 'reason'];

/**
 * Reads an allowlist: a JSON array of `{ "codename", "path", "reason" }` or
 * `{ "rule", "path", "reason" }`; every member a non-empty string, and no other members (a
 * misspelt one would otherwise widen the entry silently).
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` naming the first bad entry.
 */
export function parseAllowlist(text: string): AllowEntry[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new BuildGuardError('ERR_SCAN_CONFIG', `expected the allowlist as JSON, got a syntax error: ${errorMessage(error)}`);
  }
  if (!Array.isArray(data)) throw new BuildGuardError('ERR_SCAN_CONFIG', `expected the allowlist as a JSON array, got ${typeof data}`);
  return data.map((e: unknown, i) => {
    if (typeof e !== 'object' || e === null || Array.isArray(e))
      throw new BuildGuardError('ERR_SCAN_CONFIG', `expected allowlist[${i}] as an object, got ${describeValue(e)}`);
    const entry = e as Record<string, unknown>;
    const unknown = Object.keys(entry).find((k) => !ALLOW_MEMBERS.includes(k));
    if (unknown !== undefined) {
      throw new BuildGuardError(
        'ERR_SCAN_CONFIG',
        `expected allowlist[${i}] to have only codename, rule, path and reason, got ${describeValue(unknown)}`,
      );
    }
    // Own members only: JSON.parse gives a "__proto__" member as an own one, refused above.
    const named = ['codename', 'rule'].filter((k) => Object.hasOwn(entry, k));
    for (const key of [...named, 'path', 'reason']) {
      const value = Object.hasOwn(entry, key) ? entry[key] : undefined;
      if (typeof value !== 'string' || value.trim() === '') {
        throw new BuildGuardError('ERR_SCAN_CONFIG', `expected allowlist[${i}].${key} as a non-empty string, got ${describeValue(value)}`);
      }
    }
    if (named.length !== 1) {
      throw new BuildGuardError(
        'ERR_SCAN_CONFIG',
        `expected allowlist[${i}] to name exactly one of codename and rule, got ${named.length === 0 ? 'neither' : 'both'}`,
      );
    }
    return {
      ...(named[0] === 'codename' ? { codename: entry.codename as string } : { rule: entry.rule as string }),
      path: entry.path as string,
      reason: entry.reason as string,
    };
  });
}

/** Reads the codename list and allowlist files named on a command line. */
export async function loadScanConfig(
  codenamesFile?: string,
  allowlistFile?: string,
): Promise<{ codenames: string[]; allowlist: AllowEntry[] }> {
  // Read at once: a list is small, and the thread pool's four round trips (open, stat, read,
  // close) cost a cold process a few ms.
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (error) {
      throw new BuildGuardError('ERR_SCAN_INPUT', `expected to read ${file}, got ${errorMessage(error)}`);
    }
  };
  return {
    codenames: codenamesFile === undefined ? [] : parseCodenames(read(codenamesFile)),
    allowlist: allowlistFile === undefined ? [] : parseAllowlist(read(allowlistFile)),
  };
}
