import { BuildGuardError } from '../errors.js';
import type { Needle } from './needles.js';

// 2^24 filter bits (2 MiB): ~0.1% occupancy for 20,000 needles, so few positions reach a lookup.
const BITS = 22;
const MULT2 = 0x85ebca6b | 0;
const SHIFT = 32 - BITS;
// As an int32: Math.imul with a constant above 2^31 falls off V8's fast path.
const MULT = 0x9e3779b1 | 0;

/** ASCII case folding table: A-Z → a-z, every other byte unchanged. */
const FOLD = new Uint8Array(256).map((_, b) => (b >= 0x41 && b <= 0x5a ? b + 0x20 : b));
const WORD = new Uint8Array(256).map((_, b) =>
  (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f ? 1 : 0,
);

function key4(b: Uint8Array, i: number, fold: boolean): number {
  const f = fold ? FOLD : undefined;
  const at = (j: number) => (f === undefined ? (b[i + j] as number) : (f[b[i + j] as number] as number));
  return (at(0) | (at(1) << 8) | (at(2) << 16) | (at(3) << 24)) >>> 0;
}

/**
 * The hot loop for exact needles of 8 bytes or more: two loads, two multiplies, one filter
 * test per byte. Filter hits are written to `out` rather than handled by a callback: a call
 * site inside the loop halves its speed in V8. Returns where to resume (`last` when done)
 * and stops early when `out` is full.
 */
function scanExactWide(buf: Uint8Array, from: number, last: number, bits: Int32Array, out: Int32Array, count: { n: number }): number {
  let n = 0;
  const cap = out.length;
  let v1 = (buf[from] as number) | ((buf[from + 1] as number) << 8) | ((buf[from + 2] as number) << 16) | ((buf[from + 3] as number) << 24);
  let v2 =
    (buf[from + 4] as number) | ((buf[from + 5] as number) << 8) | ((buf[from + 6] as number) << 16) | ((buf[from + 7] as number) << 24);
  let i = from;
  for (; i < last; i++) {
    const h = Math.imul(v1 ^ Math.imul(v2, MULT2), MULT) >>> SHIFT;
    if (((bits[h >>> 5] as number) & (1 << (h & 31))) !== 0) {
      out[n++] = i;
      if (n === cap) {
        i++;
        break;
      }
    }
    v1 = (v1 >>> 8) | ((buf[i + 4] as number) << 24);
    v2 = (v2 >>> 8) | ((buf[i + 8] as number) << 24);
  }
  count.n = n;
  return i;
}

/** The general loop: 4- or 8-byte keys, with or without ASCII case folding. */
function scanGeneral(
  buf: Uint8Array,
  from: number,
  last: number,
  bits: Int32Array,
  fold: boolean,
  wide: boolean,
  out: Int32Array,
  count: { n: number },
): number {
  let n = 0;
  const cap = out.length;
  const len = buf.length;
  let v1 = key4(buf, from, fold);
  let v2 = wide ? key4(buf, from + 4, fold) : 0;
  let i = from;
  for (; i < last; i++) {
    const h = Math.imul(wide ? v1 ^ Math.imul(v2, MULT2) : v1, MULT) >>> SHIFT;
    if (((bits[h >>> 5] as number) & (1 << (h & 31))) !== 0) {
      out[n++] = i;
      if (n === cap) {
        i++;
        break;
      }
    }
    const b4 = i + 4 < len ? (buf[i + 4] as number) : 0;
    v1 = (v1 >>> 8) | ((fold ? (FOLD[b4] as number) : b4) << 24);
    if (wide) {
      const b8 = i + 8 < len ? (buf[i + 8] as number) : 0;
      v2 = (v2 >>> 8) | ((fold ? (FOLD[b8] as number) : b8) << 24);
    }
  }
  count.n = n;
  return i;
}

/**
 * Finds many byte strings at once in one pass: a rolling 4-byte key at every position is
 * hashed into a 2^24-bit filter built from the needles' first four bytes, and only filter
 * hits are compared in full. Needles must be at least 4 bytes long.
 */
export class MultiMatcher {
  readonly needles: readonly Needle[];
  /** Longest needle, in bytes: the overlap streaming callers keep between chunks. */
  readonly maxLength: number;
  readonly #fold: boolean;
  readonly #wide: boolean;
  readonly #bits = new Int32Array(1 << (BITS - 5));
  readonly #buckets = new Map<number, number[]>();

  /**
   * All needles of one matcher share one case mode (`fold`). When every needle has at least
   * 8 bytes, the key covers 8 bytes: encoded forms share 4-byte prefixes (`\u00`, `%4B%`),
   * which would otherwise send common text to long candidate lists.
   */
  constructor(needles: readonly Needle[], fold: boolean) {
    this.needles = needles;
    this.#fold = fold;
    this.#wide = needles.length > 0 && needles.every((n) => n.bytes.length >= 8);
    let max = 0;
    needles.forEach((needle, index) => {
      if (needle.bytes.length < 4)
        throw new BuildGuardError(
          'ERR_SCAN_CONFIG',
          `expected needles of at least 4 bytes, got ${needle.bytes.length} bytes at index ${index}`,
        );
      max = Math.max(max, needle.bytes.length);
      const bytes = fold ? needle.bytes.map((b) => FOLD[b] as number) : needle.bytes;
      const h = this.#hash(key4(bytes, 0, false), this.#wide ? key4(bytes, 4, false) : 0);
      this.#bits[h >>> 5] = (this.#bits[h >>> 5] as number) | (1 << (h & 31));
      const bucket = this.#buckets.get(h);
      if (bucket === undefined) this.#buckets.set(h, [index]);
      else bucket.push(index);
    });
    this.maxLength = max;
  }

  /**
   * Calls `onMatch(needleIndex, position)` for every needle occurrence that starts in
   * `[from, to)` of `buf` (the needle itself may extend up to the end of `buf`).
   */
  scan(buf: Uint8Array, from: number, to: number, onMatch: (needle: number, position: number) => void): void {
    const n = buf.length;
    const end = Math.min(to, n - 3);
    if (this.needles.length === 0 || from >= end) return;
    const bits = this.#bits;
    const wide = this.#wide;
    const last = wide ? Math.min(end, n - 7) : end;
    const out = new Int32Array(4096);
    const count = { n: 0 };
    // The fast loop reads 8 bytes ahead, so it stops 8 bytes before the end: an out-of-bounds
    // read would deoptimize it. The general loop, with bounds checks, does the tail.
    const fastLast = this.#fold || !wide ? from : Math.max(from, Math.min(last, n - 8));
    for (let i = from; i < last; ) {
      i = i < fastLast ? scanExactWide(buf, i, fastLast, bits, out, count) : scanGeneral(buf, i, last, bits, this.#fold, wide, out, count);
      for (let k = 0; k < count.n; k++) {
        const at = out[k] as number;
        const fold = this.#fold;
        const v1 = key4(buf, at, fold);
        const h = this.#hash(v1, wide ? key4(buf, at + 4, fold) : 0);
        this.#verify(buf, at, h, onMatch);
      }
    }
  }

  #hash(v1: number, v2: number): number {
    return Math.imul(this.#wide ? v1 ^ Math.imul(v2, MULT2) : v1, MULT) >>> SHIFT;
  }

  #verify(buf: Uint8Array, i: number, h: number, onMatch: (needle: number, position: number) => void): void {
    const bucket = this.#buckets.get(h);
    if (bucket === undefined) return;
    const n = buf.length;
    const fold = this.#fold;
    for (const index of bucket) {
      const needle = this.needles[index] as Needle;
      const bytes = needle.bytes;
      const len = bytes.length;
      if (i + len > n) continue;
      let j = 0;
      if (fold) {
        while (j < len && FOLD[buf[i + j] as number] === FOLD[bytes[j] as number]) j++;
      } else {
        while (j < len && buf[i + j] === bytes[j]) j++;
      }
      if (j !== len) continue;
      if (needle.wholeWord && ((i > 0 && WORD[buf[i - 1] as number]) || (i + len < n && WORD[buf[i + len] as number]))) continue;
      onMatch(index, i);
    }
  }
}
