import { BuildGuardError } from '../errors.js';

/** One regular file inside a tar stream. */
export interface TarEntry {
  readonly path: string;
  readonly size: number;
}

/** Callbacks of {@link TarReader}. */
export interface TarHandlers {
  /** A regular file starts; return a sink for its bytes. */
  entry(entry: TarEntry): { write(chunk: Uint8Array): void; end(): void };
}

const BLOCK = 512;

function field(block: Buffer, start: number, length: number): string {
  const raw = block.subarray(start, start + length);
  const nul = raw.indexOf(0);
  return raw.subarray(0, nul === -1 ? raw.length : nul).toString('utf8');
}

function octal(block: Buffer, start: number, length: number): number {
  const raw = block.subarray(start, start + length);
  if ((raw[0] as number) & 0x80) {
    // GNU base-256 for large sizes
    let n = 0;
    for (let i = 1; i < raw.length; i++) n = n * 256 + (raw[i] as number);
    return n;
  }
  const text = field(block, start, length).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text))
    throw new BuildGuardError('ERR_SCAN_INPUT', `expected an octal number in a tar header, got ${JSON.stringify(text)}`);
  return Number.parseInt(text, 8);
}

/** `text` without the NULs that pad its end, in linear time whatever NULs come before. */
function withoutTrailingNuls(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0) end--;
  return text.slice(0, end);
}

/**
 * A streaming tar reader (ustar, GNU long names, pax `path`): feed it bytes in any chunking;
 * it hands each regular file's contents to a sink without holding whole files in memory.
 */
export class TarReader {
  readonly #handlers: TarHandlers;
  #pending: Buffer = Buffer.alloc(0);
  #remaining = 0; // bytes of the current entry's data still to come
  #padding = 0; // bytes of padding after the data
  #sink: { write(chunk: Uint8Array): void; end(): void } | undefined;
  #longName: string | undefined;
  #paxPath: string | undefined;
  #meta: { kind: 'longname' | 'pax'; data: Buffer[] } | undefined;
  #ended = false;

  constructor(handlers: TarHandlers) {
    this.#handlers = handlers;
  }

  write(chunk: Uint8Array): void {
    let buf: Buffer = this.#pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#pending, chunk]);
    this.#pending = Buffer.alloc(0);
    while (buf.length > 0 && !this.#ended) {
      if (this.#remaining > 0) {
        const take = Math.min(this.#remaining, buf.length);
        const part = buf.subarray(0, take);
        if (this.#meta !== undefined) this.#meta.data.push(Buffer.from(part));
        else this.#sink?.write(part);
        this.#remaining -= take;
        buf = buf.subarray(take);
        if (this.#remaining === 0) this.#finishEntry();
        continue;
      }
      if (this.#padding > 0) {
        const take = Math.min(this.#padding, buf.length);
        this.#padding -= take;
        buf = buf.subarray(take);
        continue;
      }
      if (buf.length < BLOCK) {
        this.#pending = Buffer.from(buf);
        return;
      }
      const header = buf.subarray(0, BLOCK);
      buf = buf.subarray(BLOCK);
      this.#header(header);
    }
  }

  /** Checks that the archive was not cut off inside an entry. */
  end(): void {
    if (this.#remaining > 0)
      throw new BuildGuardError('ERR_SCAN_INPUT', `expected ${this.#remaining} more bytes of a tar entry, got the end of the archive`);
  }

  #header(header: Buffer): void {
    if (header.every((b) => b === 0)) {
      this.#ended = true; // end-of-archive marker
      return;
    }
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (header[i] as number);
    if (sum !== octal(header, 148, 8))
      throw new BuildGuardError('ERR_SCAN_INPUT', 'expected a tar header with a valid checksum, got a corrupt one');
    const size = octal(header, 124, 12);
    const type = String.fromCharCode(header[156] || 0x30);
    const prefix = header.subarray(257, 263).toString('latin1').startsWith('ustar') ? field(header, 345, 155) : '';
    const name = this.#paxPath ?? this.#longName ?? (prefix === '' ? field(header, 0, 100) : `${prefix}/${field(header, 0, 100)}`);
    this.#remaining = size;
    this.#padding = (BLOCK - (size % BLOCK)) % BLOCK;
    if (type === 'L' || type === 'x') {
      this.#meta = { kind: type === 'L' ? 'longname' : 'pax', data: [] };
    } else {
      this.#longName = undefined;
      this.#paxPath = undefined;
      this.#sink = type === '0' || type === '7' ? this.#handlers.entry({ path: name, size }) : undefined;
    }
    if (size === 0) this.#finishEntry();
  }

  #finishEntry(): void {
    if (this.#meta !== undefined) {
      const data = Buffer.concat(this.#meta.data).toString('utf8');
      if (this.#meta.kind === 'longname') this.#longName = withoutTrailingNuls(data);
      else {
        const match = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(data);
        if (match) this.#paxPath = match[1];
      }
      this.#meta = undefined;
      return;
    }
    this.#sink?.end();
    this.#sink = undefined;
  }
}
