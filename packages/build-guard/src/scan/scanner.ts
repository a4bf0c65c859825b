import { createReadStream, existsSync } from 'node:fs';
import { open as fsOpen, lstat, readdir, readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, join, matchesGlob } from 'node:path';
import { Worker } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';
import { errorMessage } from '@moat/protocol/support';
import { BuildGuardError } from '../errors.js';
import { CodenameEngine, type EngineOptions, type RawMatch } from './engine.js';
import type { Encoding } from './needles.js';
import { TarReader } from './tar.js';

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
  /** Read size per chunk (default 16 MiB); memory stays bounded by a few chunks per worker. */
  readonly chunkSize?: number;
  /**
   * Worker threads for inputs of many files (default: up to 2, by available cores, when more
   * than one file and over 32 MB in all; 1 scans in this thread).
   */
  readonly workers?: number;
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
const SOURCE_PATH_COMMENT = /^\/\/ ((?:[\w.@-]+\/)*[\w.@-]+\.(?:ts|tsx|mts|cts))$/gm;
const MAX_INLINE_MAP = 16 * 1024 * 1024;

/** Per-stream source-map audit state. */
class MapAudit {
  #capture: Buffer[] | undefined;
  #captured = 0;
  #sawSourcesContent = false;
  #sawUrl = false;
  readonly #paths = new Set<string>();
  constructor(
    readonly path: string,
    readonly isMap: boolean,
    readonly add: (f: Finding) => void,
    readonly scanInline: (name: string, bytes: Buffer) => void,
  ) {}

  window(window: Buffer, carryLength: number, base: number): void {
    if (this.#capture !== undefined) this.#continueCapture(window.subarray(carryLength));
    if (!this.#sawSourcesContent) {
      const at = window.indexOf(SOURCES_CONTENT);
      if (at !== -1 && at + SOURCES_CONTENT.length > carryLength) {
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
    }
    let from = Math.max(0, carryLength - SOURCE_MAPPING_URL.length);
    for (let at = window.indexOf(SOURCE_MAPPING_URL, from); at !== -1; at = window.indexOf(SOURCE_MAPPING_URL, from)) {
      from = at + 1;
      const valueStart = at + SOURCE_MAPPING_URL.length;
      const head = window.subarray(valueStart, valueStart + 64).toString('latin1');
      if (head.startsWith('data:')) {
        this.add({
          ruleId: 'moat/sourcemap/inline',
          severity: 'error',
          path: this.path,
          offset: base + at,
          message: 'inline source map (data: URI) in a shipped file',
        });
        this.#capture = [];
        this.#captured = 0;
        this.#continueCapture(window.subarray(valueStart));
      } else if (!this.#sawUrl) {
        this.#sawUrl = true;
        const url = /^[^\s*'"]*/.exec(head)?.[0] ?? '';
        this.add({
          ruleId: 'moat/sourcemap/url',
          severity: 'warning',
          path: this.path,
          offset: base + at,
          message: `sourceMappingURL comment points at ${url || '(empty)'}`,
        });
      }
    }
    if (!this.isMap && /\.[cm]?jsx?$/.test(this.path) && this.#paths.size < 20) {
      const text = window.toString('latin1');
      SOURCE_PATH_COMMENT.lastIndex = 0;
      for (let m = SOURCE_PATH_COMMENT.exec(text); m !== null && this.#paths.size < 20; m = SOURCE_PATH_COMMENT.exec(text)) {
        const p = m[1] as string;
        if (this.#paths.has(p) || m.index + m[0].length <= carryLength) continue;
        this.#paths.add(p);
        this.add({
          ruleId: 'moat/sourcemap/source-path',
          severity: 'note',
          path: this.path,
          offset: base + m.index,
          message: `bundle names its source file ${p}`,
        });
      }
    }
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
  if (options.workers !== 1) {
    const parallel = await scanInWorkers(paths, options);
    if (parallel !== undefined) return parallel;
  }
  return scanSequential(paths, options);
}

/** Lists the regular files under the inputs (directories recursively, skipping `.git`). */
async function listFiles(
  paths: readonly string[],
): Promise<{ files: Array<{ path: string; size: number }>; errors: ScanReport['errors'] }> {
  const files: Array<{ path: string; size: number }> = [];
  const errors: ScanReport['errors'] = [];
  const visit = async (path: string): Promise<void> => {
    let info: Awaited<ReturnType<typeof lstat>>;
    try {
      info = await lstat(path);
    } catch (error) {
      errors.push({ path, message: errorMessage(error) });
      return;
    }
    if (info.isDirectory()) {
      if (basename(path) === '.git') return;
      for (const entry of (await readdir(path)).sort()) await visit(join(path, entry));
    } else if (info.isFile()) files.push({ path, size: info.size });
  };
  for (const path of paths) await visit(path);
  return { files, errors };
}

function workerScript(): URL | undefined {
  // Built layout: dist/chunk-*.js next to dist/scan/worker.js; from sources, the built worker.
  for (const candidate of ['./scan/worker.js', './worker.js', '../../dist/scan/worker.js']) {
    const url = new URL(candidate, import.meta.url);
    if (url.pathname.endsWith('/scan/worker.js') && existsSync(url)) return url;
  }
  return undefined;
}

/** Splits the files over worker threads by size; `undefined` when one thread is better. */
async function scanInWorkers(paths: readonly string[], options: ScanOptions): Promise<ScanReport | undefined> {
  const { files, errors } = await listFiles(paths);
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
  const findings = reports.flatMap((r) => r.findings);
  findings.sort((a, b) => (a.path === b.path ? (a.offset ?? -1) - (b.offset ?? -1) : a.path < b.path ? -1 : 1));
  return {
    findings,
    suppressed: reports.reduce((n, r) => n + r.suppressed, 0),
    files: reports.reduce((n, r) => n + r.files, 0),
    bytes: reports.reduce((n, r) => n + r.bytes, 0),
    errors: [...errors, ...reports.flatMap((r) => r.errors)],
  };
}

async function scanSequential(paths: readonly string[], options: ScanOptions): Promise<ScanReport> {
  const engine = new CodenameEngine(options.codenames, options);
  const state: { findings: Finding[]; suppressed: number; files: number; bytes: number; errors: ScanReport['errors'] } = {
    findings: [],
    suppressed: 0,
    files: 0,
    bytes: 0,
    errors: [],
  };
  const allow = options.allowlist ?? [];
  const add = (f: Finding) => {
    const allowed = allow.some(
      (a) =>
        matchesGlob(f.path, a.path) &&
        ((a.codename !== undefined && a.codename === f.codename) || (a.rule !== undefined && matchesGlob(f.ruleId, a.rule))),
    );
    if (allowed) {
      state.suppressed++;
      return;
    }
    state.findings.push(f);
  };
  const chunkSize = options.chunkSize ?? 16 * 1024 * 1024;

  const scanBytes = (name: string, bytes: Buffer) => {
    const s = engine.stream((m) => add(codenameFinding(name, m)));
    s.write(bytes);
  };

  /** Returns a sink for one logical file (a real file or an archive member). */
  const open = (name: string) => {
    state.files++;
    const isMap = name.endsWith('.map');
    if (isMap && options.sourceMaps !== false)
      add({ ruleId: 'moat/sourcemap/map-file', severity: 'error', path: name, message: 'source map file shipped' });
    const audit = options.sourceMaps === false ? undefined : new MapAudit(name, isMap, add, scanBytes);
    let carry: Buffer = Buffer.alloc(0);
    let offset = 0;
    const codenames = engine.stream((m) => add(codenameFinding(name, m)));
    return {
      write(chunk: Uint8Array) {
        state.bytes += chunk.byteLength;
        codenames.write(chunk);
        if (audit !== undefined) {
          const window = carry.length === 0 ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : Buffer.concat([carry, chunk]);
          audit.window(window, carry.length, offset - carry.length);
          carry = Buffer.from(window.subarray(Math.max(0, window.length - 64)));
        }
        offset += chunk.byteLength;
      },
      end() {
        audit?.end();
      },
    };
  };

  const scanFile = async (path: string, size: number) => {
    const isTarball = /\.(tgz|tar\.gz)$/.test(path);
    const stream = createReadStream(path, { highWaterMark: chunkSize });
    let read = 0;
    const progress = (n: number) => {
      read += n;
      options.onProgress?.({ path, bytes: read, total: size });
    };
    if (isTarball) {
      state.files++;
      const tar = new TarReader({ entry: (entry) => open(`${path}!${entry.path}`) });
      const gunzip = createGunzip();
      stream.on('data', (c) => progress((c as Buffer).length));
      stream.pipe(gunzip);
      for await (const chunk of gunzip) tar.write(chunk as Buffer);
      tar.end();
      return;
    }
    stream.destroy();
    // Plain files: read into one reused buffer (a stream allocates a fresh one per chunk).
    const sink = open(path);
    const handle = await fsOpen(path, 'r');
    try {
      const buffer = Buffer.allocUnsafe(Math.min(chunkSize, Math.max(size, 1)));
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        sink.write(buffer.subarray(0, bytesRead));
        progress(bytesRead);
      }
    } finally {
      await handle.close();
    }
    sink.end();
  };

  const visit = async (path: string): Promise<void> => {
    let info: Awaited<ReturnType<typeof lstat>>;
    try {
      info = await lstat(path);
    } catch (error) {
      state.errors.push({ path, message: errorMessage(error) });
      return;
    }
    if (info.isDirectory()) {
      if (basename(path) === '.git') return;
      const entries = await readdir(path);
      for (const entry of entries.sort()) await visit(join(path, entry));
      return;
    }
    if (!info.isFile()) return;
    try {
      await scanFile(path, info.size);
    } catch (error) {
      state.errors.push({ path, message: error instanceof Error ? error.message : String(error) });
    }
  };

  for (const path of paths) await visit(path);
  state.findings.sort((a, b) => (a.path === b.path ? (a.offset ?? -1) - (b.offset ?? -1) : a.path < b.path ? -1 : 1));
  return state;
}

function codenameFinding(path: string, m: RawMatch): Finding {
  const form = m.encoding === 'plain' ? 'in plain text' : `encoded as ${m.encoding}`;
  return {
    ruleId: `moat/codename/${m.encoding}`,
    severity: 'error',
    path,
    offset: m.offset,
    length: m.length,
    codename: m.codename,
    encoding: m.encoding,
    context: m.context,
    message: `internal codename "${m.codename}" ${form}`,
  };
}

/**
 * Reads a codename list: one codename per line; `#` starts a comment; blank lines are
 * skipped.
 *
 * @throws {BuildGuardError} `ERR_SCAN_CONFIG` for a codename shorter than 4 characters.
 */
export function parseCodenames(text: string): string[] {
  const out: string[] = [];
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.replace(/\s+#.*$|^#.*$/, '').trim();
    if (line === '') continue;
    if ([...line].length < 4)
      throw new BuildGuardError(
        'ERR_SCAN_CONFIG',
        `expected a codename of at least 4 characters on line ${i + 1}, got ${JSON.stringify(line)}`,
      );
    out.push(line);
  }
  return [...new Set(out)];
}

/**
 * Reads an allowlist: a JSON array of `{ "codename", "path", "reason" }`; every entry needs a
 * non-empty reason.
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
  return data.map((e, i) => {
    const entry = e as Record<string, unknown>;
    for (const key of ['path', 'reason'] as const) {
      if (typeof entry?.[key] !== 'string' || (entry[key] as string).trim() === '') {
        throw new BuildGuardError(
          'ERR_SCAN_CONFIG',
          `expected allowlist[${i}].${key} as a non-empty string, got ${JSON.stringify(entry?.[key])}`,
        );
      }
    }
    const named = ['codename', 'rule'].filter((k) => typeof entry[k] === 'string' && (entry[k] as string) !== '');
    if (named.length !== 1) {
      throw new BuildGuardError(
        'ERR_SCAN_CONFIG',
        `expected allowlist[${i}] to name exactly one of codename and rule, got ${named.length === 0 ? 'neither' : 'both'}`,
      );
    }
    return {
      ...(typeof entry.codename === 'string' ? { codename: entry.codename } : { rule: entry.rule as string }),
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
  const read = async (file: string) => {
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      throw new BuildGuardError('ERR_SCAN_INPUT', `expected to read ${file}, got ${errorMessage(error)}`);
    }
  };
  return {
    codenames: codenamesFile === undefined ? [] : parseCodenames(await read(codenamesFile)),
    allowlist: allowlistFile === undefined ? [] : parseAllowlist(await read(allowlistFile)),
  };
}
