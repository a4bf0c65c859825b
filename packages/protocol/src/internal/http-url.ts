import { isC0ControlOrSpace, trimWhere } from './trim.js';

/**
 * The host text of a URL as the WHATWG URL Standard's parser finds it (after trimming C0
 * controls and spaces, removing tabs and newlines, slashes and backslashes after the scheme,
 * user info up to the last `@`, the port after the first `:` outside brackets), before any
 * decoding. `undefined` when the text has no scheme.
 */
function rawHost(url: string): string | undefined {
  const text = trimWhere(url, isC0ControlOrSpace).replace(/[\t\n\r]/g, '');
  const colon = text.indexOf(':');
  if (colon <= 0) return undefined;
  const rest = text.slice(colon + 1).replace(/^[/\\]+/, '');
  const end = rest.search(/[/\\?#]/);
  let authority = end === -1 ? rest : rest.slice(0, end);
  authority = authority.slice(authority.lastIndexOf('@') + 1);
  let depth = 0;
  for (let i = 0; i < authority.length; i++) {
    const c = authority[i];
    if (c === '[') depth = 1;
    else if (c === ']') depth = 0;
    else if (c === ':' && depth === 0) return authority.slice(0, i);
  }
  return authority;
}

/**
 * Code points a host may hold besides ASCII (SPEC.md §5.3): the lowercase letters of
 * Latin-1, which UTS #46 leaves as they are, so their punycode is the same in every
 * implementation. Any other international name is mapped to punycode by the caller's own
 * WHATWG URL parser first.
 */
const HOST_CODE_POINTS = /^[\p{ASCII}\u00df-\u00f6\u00f8-\u00ff]*$/u;

/** Percent-decodes `text` to bytes and reads them as UTF-8 (invalid sequences become U+FFFD). */
function percentDecoded(text: string): string {
  if (!text.includes('%')) return text;
  const bytes: number[] = [];
  const encoded = new TextEncoder().encode(text);
  for (let i = 0; i < encoded.length; i++) {
    const b = encoded[i] as number;
    const hex = String.fromCharCode(encoded[i + 1] ?? 0, encoded[i + 2] ?? 0);
    if (b === 0x25 && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else bytes.push(b);
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/**
 * An `http:` or `https:` URL parsed by the WHATWG URL Standard, narrowed as SPEC.md §5.3
 * says: a host whose percent-decoded text holds a code point outside ASCII and the
 * lowercase Latin-1 letters is refused, and so is one with such a letter and a label that
 * starts with `xn--`, so no UTS #46 mapping table decides the answer.
 * `undefined` for anything else.
 */
export function parseHttpUrl(url: string): URL | undefined {
  const raw = rawHost(url);
  if (raw === undefined) return undefined;
  const host = percentDecoded(raw);
  if (!HOST_CODE_POINTS.test(host)) return undefined;
  // Beside a Latin-1 letter an ACE label would be decoded and checked by UTS #46: refused instead.
  if (/[^\p{ASCII}]/u.test(host) && host.split('.').some((label) => /^xn--/i.test(label))) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.host === '') return undefined;
  return parsed;
}
