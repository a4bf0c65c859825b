/** PDF strings: hex (`<…>`) and literal (`(…)`, with their escapes), as the reader and the decryptor take them. */

/** The hex digits of a `<…>` string as bytes (white space skipped; an odd last digit is followed by 0, as the PDF reference says). */
export function hexBytes(hex: string): Buffer {
  const digits = hex.replace(/[^0-9a-fA-F]/g, '');
  return Buffer.from(digits.length % 2 === 0 ? digits : `${digits}0`, 'hex');
}

/** A literal string's bytes (`(…)`, balanced parentheses, the PDF escapes) from `open`; returns them and the index after its `)`. */
export function literalString(s: string, open: number): [string, number] {
  // Most strings have no escape and no nested parenthesis: their bytes are the text's own characters.
  let plainEnd = open + 1;
  while (plainEnd < s.length) {
    const c = s.charCodeAt(plainEnd);
    if (c === 0x29) return [s.slice(open + 1, plainEnd), plainEnd + 1];
    if (c === 0x28 || c === 0x5c) break;
    plainEnd++;
  }
  const out: number[] = [];
  let depth = 1;
  let i = open + 1;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) {
      const n = s[i + 1];
      i += 2;
      if (n === undefined) break;
      const simpleEscape = 'nrtbf'.indexOf(n);
      if (simpleEscape !== -1) out.push([10, 13, 9, 8, 12][simpleEscape] as number);
      else if (n >= '0' && n <= '7') {
        let octal = n;
        while (octal.length < 3 && (s[i] ?? '') >= '0' && (s[i] ?? '') <= '7') octal += s[i++];
        out.push(Number.parseInt(octal, 8) & 0xff);
      } else if (n === '\r' || n === '\n') {
        if (n === '\r' && s[i] === '\n') i++;
      } else out.push(n.charCodeAt(0));
      continue;
    }
    if (c === 0x28) depth++;
    else if (c === 0x29 && --depth === 0) return [latin1(out), i + 1];
    out.push(c & 0xff);
    i++;
  }
  return [latin1(out), i];
}

/** Bytes as a Latin-1 text, one character a byte. */
export function latin1(bytes: readonly number[]): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 8192) out += String.fromCharCode(...bytes.slice(i, i + 8192));
  return out;
}

/** A name token (`/…`, 127 characters at most): what its `#xx` escapes are written in. */
const NAME_RE = /\/[^\s/<>[\]()%{}]{0,127}/g;

/**
 * Names with their `#xx` escapes written out (`/Fl#61teDecode` → `/FlateDecode`), as every
 * reader takes them; the rest as it is. A name spelt with escapes means what it spells.
 */
export function unescapeNames(text: string): string {
  if (!text.includes('#')) return text;
  return text.replace(NAME_RE, (name) =>
    name.includes('#') ? name.replace(/#([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16))) : name,
  );
}

/** A pattern for a name as a file may spell it: each character as itself or as its `#xx` escape. */
export function escapedName(name: string): string {
  return [...name]
    .map((c) => {
      const hex = c.charCodeAt(0).toString(16).padStart(2, '0');
      return `(?:${c}|#${[...hex].map((h) => (/[a-f]/.test(h) ? `[${h}${h.toUpperCase()}]` : h)).join('')})`;
    })
    .join('');
}
