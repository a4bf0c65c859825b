import { constants, inflateSync } from 'node:zlib';

/** The filters a PDF stream's dictionary names, in the order they apply (`/Filter /X` or `/Filter [/X /Y]`), full names for abbreviations. */
export function streamFilters(dict: string): string[] {
  const found = /\/Filter\s{0,16}(\[[^\]]{0,512}\]|\/[A-Za-z0-9]{1,32})/.exec(dict)?.[1];
  if (found === undefined) return [];
  return [...found.matchAll(/\/([A-Za-z0-9]{1,32})/g)].map((m) => ABBREVIATIONS[m[1] as string] ?? (m[1] as string));
}

const ABBREVIATIONS: Readonly<Record<string, string>> = {
  AHx: 'ASCIIHexDecode',
  A85: 'ASCII85Decode',
  LZW: 'LZWDecode',
  Fl: 'FlateDecode',
  RL: 'RunLengthDecode',
};

/** The filters {@link decodeStream} reads: those that carry text (images' codings are not among them). */
export const TEXT_FILTERS: ReadonlySet<string> = new Set([
  'FlateDecode',
  'LZWDecode',
  'ASCIIHexDecode',
  'ASCII85Decode',
  'RunLengthDecode',
]);

/** Thrown inside a decoder when its output would pass its bound, with what it decoded so far. */
class DecodeBudgetError extends Error {
  constructor(readonly partial?: Uint8Array) {
    super('the stream decodes past its bound');
  }
}

/** `ASCIIHexDecode`: hex digit pairs to `>`, white space skipped, an odd last digit followed by 0. */
function asciiHex(data: Uint8Array, max: number): Buffer {
  const out = Buffer.allocUnsafe(Math.min(max + 1, Math.ceil(data.length / 2) + 1));
  let n = 0;
  let high = -1;
  for (const c of data) {
    if (c === 0x3e) break;
    const v = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 0x37 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
    if (v === -1) continue;
    if (high === -1) high = v;
    else {
      if (n >= max) throw new DecodeBudgetError(out.subarray(0, n));
      out[n++] = (high << 4) | v;
      high = -1;
    }
  }
  if (high !== -1 && n < max) out[n++] = high << 4;
  return out.subarray(0, n);
}

/** `ASCII85Decode`: groups of five `!`…`u` to four bytes, `z` for four zeros, to `~>`; a last short group padded. */
function ascii85(data: Uint8Array, max: number): Buffer {
  const out: number[] = [];
  let group: number[] = [];
  const emit = (bytes: number) => {
    let value = 0;
    for (let k = 0; k < 5; k++) value = value * 85 + ((group[k] ?? 84) as number);
    for (let k = 0; k < bytes; k++) {
      if (out.length >= max) throw new DecodeBudgetError(Uint8Array.from(out));
      out.push((value >>> (24 - 8 * k)) & 0xff);
    }
    group = [];
  };
  let i = data[0] === 0x3c && data[1] === 0x7e ? 2 : 0;
  for (; i < data.length; i++) {
    const c = data[i] as number;
    if (c === 0x7e) break;
    if (c === 0x7a && group.length === 0) {
      if (out.length + 4 > max) throw new DecodeBudgetError(Uint8Array.from(out));
      out.push(0, 0, 0, 0);
      continue;
    }
    if (c < 0x21 || c > 0x75) continue;
    group.push(c - 0x21);
    if (group.length === 5) emit(4);
  }
  if (group.length > 1) emit(group.length - 1);
  return Buffer.from(out);
}

/** `RunLengthDecode`: a length byte, then that many + 1 bytes as they are (0–127), or one byte 257 − length times (129–255); 128 ends. */
function runLength(data: Uint8Array, max: number): Buffer {
  const out: number[] = [];
  for (let i = 0; i < data.length; ) {
    const length = data[i] as number;
    if (length === 128) break;
    if (length < 128) {
      const run = data.subarray(i + 1, i + 2 + length);
      if (out.length + run.length > max) throw new DecodeBudgetError(Uint8Array.from(out));
      for (const b of run) out.push(b);
      i += 2 + length;
    } else {
      const count = 257 - length;
      if (out.length + count > max) throw new DecodeBudgetError(Uint8Array.from(out));
      const b = data[i + 1] ?? 0;
      for (let k = 0; k < count; k++) out.push(b);
      i += 2;
    }
  }
  return Buffer.from(out);
}

/** `LZWDecode` (codes of 9 to 12 bits, 256 clears, 257 ends, the code width growing one code early, as PDF's default `EarlyChange` says). */
function lzw(data: Uint8Array, max: number): Buffer {
  const out: number[] = [];
  let table: number[][] = [];
  const reset = () => {
    table = Array.from({ length: 258 }, (_, k) => (k < 256 ? [k] : []));
  };
  reset();
  let width = 9;
  let previous: number[] | undefined;
  let bits = 0;
  let buffer = 0;
  for (const byte of data) {
    buffer = ((buffer << 8) | byte) >>> 0;
    bits += 8;
    while (bits >= width) {
      const code = (buffer >>> (bits - width)) & ((1 << width) - 1);
      bits -= width;
      buffer &= (1 << bits) - 1;
      if (code === 256) {
        reset();
        width = 9;
        previous = undefined;
        continue;
      }
      if (code === 257) return Buffer.from(out);
      let entry = table[code];
      if (entry === undefined || (entry.length === 0 && code >= 258)) {
        // The code being defined now: the previous string and its own first byte.
        if (previous === undefined || code !== table.length) return Buffer.from(out);
        entry = [...previous, previous[0] as number];
      }
      if (out.length + entry.length > max) throw new DecodeBudgetError(Uint8Array.from(out));
      for (const b of entry) out.push(b);
      if (previous !== undefined && table.length < 4096) table.push([...previous, entry[0] as number]);
      previous = entry;
      width =
        table.length + 1 >= 4096 ? 12 : table.length + 1 >= 2048 ? 12 : table.length + 1 >= 1024 ? 11 : table.length + 1 >= 512 ? 10 : 9;
    }
  }
  return Buffer.from(out);
}

/**
 * `FlateDecode` to `max` bytes at most: the whole stream when it fits, else the output of the
 * longest input prefix found (doubling) whose output fits — what a stream that decodes past
 * its bound starts with, for at most twice `max` bytes of work.
 */
function inflatePrefix(data: Buffer, max: number): { bytes: Buffer; truncated: boolean } | undefined {
  const inflate = (input: Buffer) =>
    inflateSync(input, { maxOutputLength: max, finishFlush: constants.Z_SYNC_FLUSH /* a stream cut short gives what it has */ });
  try {
    return { bytes: inflate(data), truncated: false };
  } catch (error) {
    if ((error as { code?: string }).code !== 'ERR_BUFFER_TOO_LARGE') return undefined;
  }
  let best = Buffer.alloc(0);
  for (let length = 1024; length < data.length; length *= 2) {
    try {
      best = inflate(data.subarray(0, length));
    } catch {
      break;
    }
  }
  return { bytes: best, truncated: true };
}

/**
 * A stream's data through its filters, in order, each one's output cut at `max` bytes
 * (`truncated` then says so: what it starts with is read, what lies past is not).
 * `undefined` when a filter is not one of {@link TEXT_FILTERS} (an image's coding, a crypt
 * filter) or the data does not decode: such a stream holds no text this reader can use.
 */
export function decodeStream(data: Uint8Array, filters: readonly string[], max: number): { bytes: Buffer; truncated: boolean } | undefined {
  let bytes: Buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let truncated = false;
  for (const filter of filters) {
    if (filter === 'FlateDecode') {
      const inflated = inflatePrefix(bytes, max);
      if (inflated === undefined) return undefined;
      bytes = inflated.bytes;
      truncated ||= inflated.truncated;
      continue;
    }
    const decode =
      filter === 'ASCIIHexDecode'
        ? asciiHex
        : filter === 'ASCII85Decode'
          ? ascii85
          : filter === 'RunLengthDecode'
            ? runLength
            : filter === 'LZWDecode'
              ? lzw
              : undefined;
    if (decode === undefined) return undefined;
    try {
      bytes = decode(bytes, max);
    } catch (error) {
      if (!(error instanceof DecodeBudgetError)) return undefined;
      // What was decoded before the bound is kept.
      bytes = Buffer.from(error.partial ?? new Uint8Array());
      truncated = true;
    }
  }
  return { bytes, truncated };
}
