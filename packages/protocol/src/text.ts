const encoder = new TextEncoder();

/**
 * Encodes text as UTF-8 the way the spec requires everywhere text is hashed or signed:
 * a lone surrogate becomes U+FFFD (EF BF BD), exactly as the WHATWG `TextEncoder` does.
 */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/**
 * Encodes `text` as {@link utf8} does into `target` (room for `3 * text.length` bytes is
 * always enough) and returns how many bytes it wrote.
 */
export function utf8Into(text: string, target: Uint8Array): number {
  return encoder.encodeInto(text, target).written;
}

/**
 * Length of `text` in UTF-8 bytes as {@link utf8} encodes it (a lone surrogate counts 3,
 * the length of U+FFFD), without allocating the encoding.
 */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  const buf = globalThis.Buffer;
  if (buf !== undefined) return buf.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
  let out = '';
  for (const byte of bytes) out += byte.toString(16).padStart(2, '0');
  return out;
}

/**
 * The code point at `index` (counted in Unicode code points, not UTF-16 code units), or
 * `undefined` past the end. A lone surrogate counts as one code point.
 */
export function codePointAt(text: string, index: number): string | undefined {
  let i = 0;
  for (const cp of text) {
    if (i === index) return cp;
    i++;
  }
  return undefined;
}

/**
 * Lowercases `A`–`Z` only (SPEC.md §2): header names and hosts are ASCII, and Unicode case
 * mapping differs between languages (`toLowerCase` maps the Kelvin sign U+212A to `k`).
 */
export function asciiLower(text: string): string {
  // Most text (every header name Node hands over) has no capital: no replacement to run.
  return ASCII_CAPITAL.test(text) ? text.replace(/[A-Z]+/g, (m) => m.toLowerCase()) : text;
}

const ASCII_CAPITAL = /[A-Z]/;
