import type { Needle } from './needles.js';

const BITS = 20;
const SHIFT = 32 - BITS;
const MULT = 0x9e3779b1;

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
 * Finds many byte strings at once in one pass: a rolling 4-byte key at every position is
 * hashed into a 2^20-bit filter built from the needles' first four bytes, and only filter
 * hits are compared in full. Needles must be at least 4 bytes long.
 */
export class MultiMatcher {
  readonly needles: readonly Needle[];
  /** Longest needle, in bytes: the overlap streaming callers keep between chunks. */
  readonly maxLength: number;
  readonly #fold: boolean;
  readonly #bits = new Uint32Array(1 << (BITS - 5));
  readonly #buckets = new Map<number, number[]>();

  /** All needles of one matcher share one case mode (`fold`). */
  constructor(needles: readonly Needle[], fold: boolean) {
    this.needles = needles;
    this.#fold = fold;
    let max = 0;
    needles.forEach((needle, index) => {
      if (needle.bytes.length < 4) throw new RangeError('needles must be at least 4 bytes');
      max = Math.max(max, needle.bytes.length);
      const bytes = fold ? needle.bytes.map((b) => FOLD[b] as number) : needle.bytes;
      const h = Math.imul(key4(bytes, 0, false), MULT) >>> SHIFT;
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
    const fold = this.#fold;
    let v = key4(buf, from, fold);
    for (let i = from; i < end; i++) {
      if (i !== from) {
        const next = buf[i + 3] as number;
        v = (v >>> 8) | ((fold ? (FOLD[next] as number) : next) << 24);
      }
      const h = Math.imul(v, MULT) >>> SHIFT;
      if (((bits[h >>> 5] as number) & (1 << (h & 31))) === 0) continue;
      const bucket = this.#buckets.get(h);
      if (bucket === undefined) continue;
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
}
