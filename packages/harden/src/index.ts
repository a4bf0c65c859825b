/**
 * `@moat/harden` — layer 5. Makes the process non-dumpable (so same-user processes cannot
 * ptrace it or read its `/proc/PID/mem`, `environ`, `maps`), reports tracers, and keeps API
 * tokens in read-once vaults: read into memory, the file deleted only once the session has
 * started, wiped on dispose, and scrubbed from the environment. Every step fails open with
 * a warning and a status in the report.
 *
 * @packageDocumentation
 */
import { constants, type Stats } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import type { TelemetryEvent } from '@moat/protocol';
import { createWarner, errorCode, errorMessage, loadNativeAddon, type NativeBinding, type Warner } from '@moat/protocol/support';
import { HardenError } from './errors.js';

export { HardenError, type HardenErrorCode } from './errors.js';

/** The native functions this layer uses (`@moat/native`), injectable for tests. */
export type HardenNative = Pick<NativeBinding, 'setUndumpable' | 'getDumpable' | 'secureBuffer' | 'scrubEnvBlock'>;

/** Shared options: the native binding (default `@moat/native`; `null` for none) and a warning sink. */
export interface HardenOptions {
  readonly native?: HardenNative | null;
  readonly onWarning?: ((message: string) => void) | undefined;
}

async function nativeFor(options: HardenOptions): Promise<{ native: HardenNative | undefined; reason: string }> {
  if (options.native === null) return { native: undefined, reason: 'disabled by options' };
  if (options.native !== undefined) return { native: options.native, reason: '' };
  const { native, reason } = await loadNativeAddon<HardenNative>(() => import('@moat/native'));
  return { native, reason: reason ?? '' };
}

function warner(options: HardenOptions): Warner {
  return createWarner('harden', options.onWarning);
}

/** What {@link harden} did. */
export interface HardenReport {
  readonly platform: string;
  /** Whether the process is dumpable now (`null`: unknown). */
  readonly dumpable: boolean | null;
  /** PID of an attached tracer, 0 for none, `null` when unknown. */
  readonly tracerPid: number | null;
  readonly applied: readonly string[];
  readonly skipped: ReadonlyArray<{ readonly step: string; readonly reason: string }>;
}

/** Reads `TracerPid` from `/proc/self/status` (Linux), else `null`. */
export async function tracerPid(): Promise<number | null> {
  try {
    const status = await readFile('/proc/self/status', 'utf8');
    const match = /^TracerPid:\s*(\d+)/m.exec(status);
    return match === null ? null : Number(match[1]);
  } catch {
    return null;
  }
}

/**
 * Hardens the running process: `prctl(PR_SET_DUMPABLE, 0)` through the native addon (on
 * macOS `PT_DENY_ATTACH`), then checks for a tracer. Never throws: no addon, another
 * platform or a failing call gives a warning and a `skipped` entry, and the program goes on.
 *
 * @example
 * ```ts
 * const report = await harden({ onWarning: console.warn });
 * report.dumpable; // false on Linux with the addon
 * ```
 */
export async function harden(options: HardenOptions = {}): Promise<HardenReport> {
  const warn = warner(options);
  const applied: string[] = [];
  const skipped: Array<{ step: string; reason: string }> = [];
  const platform = process.platform;
  let dumpable: boolean | null = null;
  const { native, reason } = await nativeFor(options);
  if (platform !== 'linux' && platform !== 'darwin') {
    skipped.push({ step: 'undumpable', reason: 'unsupported_platform' });
  } else if (native === undefined) {
    skipped.push({ step: 'undumpable', reason: 'addon_missing' });
    warn(`process left dumpable: native addon unavailable (${reason})`);
  } else {
    try {
      const errno = native.setUndumpable();
      if (errno === 0) applied.push('undumpable');
      else {
        skipped.push({ step: 'undumpable', reason: `errno_${errno}` });
        warn(`process left dumpable: the call failed with errno ${errno}`);
      }
      const state = native.getDumpable();
      dumpable = state < 0 ? null : state !== 0;
    } catch (error) {
      skipped.push({ step: 'undumpable', reason: 'addon_failed' });
      warn(`process left dumpable: ${errorMessage(error)}`);
    }
  }
  const tracer = await tracerPid();
  if (tracer === null) skipped.push({ step: 'tracer_check', reason: 'no_proc_status' });
  else {
    applied.push('tracer_check');
    if (tracer > 0) warn(`a tracer (pid ${tracer}) is attached to this process`);
  }
  return { platform, dumpable, tracerPid: tracer, applied, skipped };
}

/** The protocol's `harden_status` telemetry event for a report. */
export function hardenStatusEvent(report: HardenReport, now = Date.now()): TelemetryEvent {
  return {
    type: 'harden_status',
    ts: Math.floor(now / 1000),
    dumpable: report.dumpable ?? true,
    ...(report.tracerPid === null ? {} : { tracer: report.tracerPid }),
    platform: report.platform,
    skipped: report.skipped.map((s) => `${s.step}:${s.reason}`.slice(0, 256)).slice(0, 32),
  };
}

/** A token held in memory, handed out through a callback, wiped on dispose. */
export class TokenVault {
  #buffer: Buffer | undefined;
  readonly #length: number;
  readonly #source: string | undefined;
  readonly #warn: (message: string) => void;
  #committed = false;
  /** Whether the token's memory is locked and excluded from core dumps. */
  readonly protection: { readonly locked: boolean; readonly dontdump: boolean };

  /** @internal Use {@link openTokenFile} or {@link tokensFromEnv}. */
  constructor(
    buffer: Buffer,
    length: number,
    protection: { locked: boolean; dontdump: boolean },
    warn: (message: string) => void,
    source?: string,
  ) {
    this.#buffer = buffer;
    this.#length = length;
    this.protection = protection;
    this.#warn = warn;
    this.#source = source;
  }

  /**
   * Calls `fn` with the token bytes (a view valid only during the call; copy nothing you do
   * not need).
   *
   * @throws {HardenError} `ERR_VAULT_DISPOSED` after {@link dispose}.
   */
  use<T>(fn: (token: Buffer) => T): T {
    if (this.#buffer === undefined) throw new HardenError('ERR_VAULT_DISPOSED', 'expected a live vault, got a disposed one');
    return fn(this.#buffer.subarray(0, this.#length));
  }

  /**
   * The session or relay started: delete the token file (once). A file that cannot be
   * deleted gives a warning and `{ deleted: false }`; the program goes on.
   */
  async commit(): Promise<{ deleted: boolean; reason?: string }> {
    if (this.#source === undefined || this.#committed) return { deleted: false, reason: 'no file' };
    this.#committed = true;
    try {
      await unlink(this.#source);
      return { deleted: true };
    } catch (error) {
      const reason = errorCode(error) ?? errorMessage(error);
      this.#warn(`token file ${this.#source} could not be deleted (${reason}); it stays on disk`);
      return { deleted: false, reason };
    }
  }

  /** Wipes the token from memory. Idempotent. */
  dispose(): void {
    this.#buffer?.fill(0);
    this.#buffer = undefined;
  }
}

async function vaultFor(bytes: Buffer, length: number, options: HardenOptions, source?: string): Promise<TokenVault> {
  const warn = warner(options);
  const { native, reason } = await nativeFor(options);
  let buffer: Buffer;
  let protection = { locked: false, dontdump: false };
  let secure: ReturnType<HardenNative['secureBuffer']> | undefined;
  let failure = reason;
  try {
    secure = native?.secureBuffer(Math.max(1, length));
  } catch (error) {
    failure = errorMessage(error);
  }
  if (secure !== undefined) {
    buffer = secure.buffer;
    protection = { locked: secure.locked, dontdump: secure.dontdump };
    if (!secure.locked || !secure.dontdump) warn('token memory could not be fully protected (mlock or MADV_DONTDUMP refused)');
  } else {
    warn(`token kept in ordinary memory (${failure})`);
    buffer = Buffer.allocUnsafeSlow(Math.max(1, length));
  }
  bytes.copy(buffer, 0, 0, length);
  bytes.fill(0);
  return new TokenVault(buffer, length, protection, warn, source);
}

/** What a non-regular file is, for the message that refuses it. */
function fileKind(info: Stats): string {
  if (info.isDirectory()) return 'a directory';
  if (info.isFIFO()) return 'a named pipe';
  if (info.isCharacterDevice()) return 'a character device';
  if (info.isBlockDevice()) return 'a block device';
  if (info.isSocket()) return 'a socket';
  return 'another kind of file';
}

/** Options of {@link openTokenFile}. */
export interface TokenFileOptions extends HardenOptions {
  /** Largest token file accepted (default 64 KiB). */
  readonly maxBytes?: number;
}

/**
 * Reads a token file into a {@link TokenVault}: into locked, non-dumpable memory where the
 * addon allows (never a JavaScript string), trailing whitespace trimmed, with a warning when
 * the file is readable by group or others. The file stays until {@link TokenVault.commit},
 * so a failed start can retry with the token still on disk.
 *
 * @throws {HardenError} `ERR_TOKEN_FILE` for a missing, oversized or empty file, or one that is
 * not a regular file (a directory, a named pipe, a device or a socket).
 */
export async function openTokenFile(path: string, options: TokenFileOptions = {}): Promise<TokenVault> {
  const warn = warner(options);
  const max = options.maxBytes ?? 64 * 1024;
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    // Non-blocking, so a named pipe with no writer (or a device) is opened at once and refused
    // by the check below instead of blocking the open forever; a regular file reads as usual.
    // No controlling terminal is taken if the path names one.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    throw new HardenError('ERR_TOKEN_FILE', `expected a readable token file at ${String(path)}, got ${errorCode(error) ?? 'an error'}`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new HardenError('ERR_TOKEN_FILE', `expected a regular file at ${path}, got ${fileKind(info)}`);
    if (info.size > max) throw new HardenError('ERR_TOKEN_FILE', `expected a token file of at most ${max} bytes, got ${info.size} bytes`);
    if ((info.mode & 0o077) !== 0)
      warn(`token file ${path} is readable by group or others (mode ${(info.mode & 0o777).toString(8)}); use 0600`);
    const bytes = Buffer.alloc(info.size);
    const { bytesRead } = await handle.read(bytes, 0, info.size, 0);
    let length = bytesRead;
    while (length > 0 && [0x0a, 0x0d, 0x20, 0x09].includes(bytes[length - 1] as number)) length--;
    if (length === 0) {
      bytes.fill(0);
      throw new HardenError('ERR_TOKEN_FILE', `expected a non-empty token in ${path}, got an empty file`);
    }
    return await vaultFor(bytes, length, options, path);
  } finally {
    await handle.close();
  }
}

/**
 * Moves tokens passed by environment variable into vaults: each named variable is removed
 * from `process.env` (so children the program spawns never inherit it) and its value wiped
 * from the process's original environment block (so `/proc/PID/environ` no longer shows it)
 * where the addon allows. Unset variables are skipped.
 */
export async function tokensFromEnv(names: readonly string[], options: HardenOptions = {}): Promise<Map<string, TokenVault>> {
  const warn = warner(options);
  const { native } = await nativeFor(options);
  const out = new Map<string, TokenVault>();
  for (const name of names) {
    const value = process.env[name];
    if (value === undefined) continue;
    const bytes = Buffer.from(value);
    delete process.env[name];
    out.set(name, await vaultFor(bytes, bytes.length, options));
    let wiped = -1;
    try {
      wiped = native?.scrubEnvBlock(name) ?? -1;
    } catch {
      wiped = -1;
    }
    if (wiped < 0) warn(`${name} removed from process.env, but its copy in /proc/self/environ could not be wiped`);
  }
  return out;
}
