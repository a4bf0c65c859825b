/**
 * JSON values built without `JSON.parse`'s member names. V8 13.6 (Node 24) may read an escaped
 * member name as another one: after a body with `"\\\""` as a name, `{"\"a":1}` parses with
 * the name `\"` instead of `"a` — so a verifier would check one request and forward another.
 * `parseJsonBody` and the trace worker build such bodies here. This module imports nothing:
 * the trace worker loads it as source in a checkout.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** What each single-character escape of JSON stands for (RFC 8259 §7). */
const ESCAPED: Readonly<Record<string, string>> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
const HEX4 = /^[0-9A-Fa-f]{4}$/;

/**
 * The value of the JSON string whose contents (between its quotes) are `text[start, end)`, or
 * `undefined` where they are no JSON string: an escape JSON does not have, a control
 * character left unescaped, a quote left unescaped.
 */
export function unescapeJsonString(text: string, start: number, end: number): string | undefined {
  let out = '';
  let from = start;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === QUOTE) return undefined;
    if (c !== BACKSLASH) continue;
    out += text.slice(from, i);
    const e = text[i + 1] ?? '';
    if (e === 'u') {
      const hex = text.slice(i + 2, i + 6);
      if (i + 6 > end || !HEX4.test(hex)) return undefined;
      out += String.fromCharCode(Number.parseInt(hex, 16));
      i += 5;
    } else {
      const single = ESCAPED[e];
      if (single === undefined || i + 1 >= end) return undefined;
      out += single;
      i += 1;
    }
    from = i + 1;
  }
  return out + text.slice(from, end);
}

/**
 * The value of well-formed JSON `text` (`JSON.parse` has accepted it), as `JSON.parse` builds
 * it — names set as own properties (`__proto__` too), numbers by `Number` — but with every
 * name read here. Nesting is followed without recursion.
 */
export function parseWellFormedJson(text: string): unknown {
  type Open = { readonly container: Record<string, unknown> | unknown[]; key: string | undefined; expectKey: boolean };
  const stack: Open[] = [];
  let result: unknown;
  const place = (value: unknown) => {
    const top = stack[stack.length - 1];
    if (top === undefined) result = value;
    else if (Array.isArray(top.container)) top.container.push(value);
    else {
      Object.defineProperty(top.container, top.key as string, { value, writable: true, enumerable: true, configurable: true });
      top.key = undefined;
    }
  };
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0x3a) {
      i++;
    } else if (c === 0x7b || c === 0x5b) {
      stack.push({ container: c === 0x7b ? {} : [], key: undefined, expectKey: c === 0x7b });
      i++;
    } else if (c === 0x7d || c === 0x5d) {
      place((stack.pop() as Open).container);
      i++;
    } else if (c === 0x2c) {
      const top = stack[stack.length - 1];
      if (top !== undefined && !Array.isArray(top.container)) top.expectKey = true;
      i++;
    } else if (c === QUOTE) {
      let close = i + 1;
      while (text.charCodeAt(close) !== QUOTE) close += text.charCodeAt(close) === BACKSLASH ? 2 : 1;
      const value = unescapeJsonString(text, i + 1, close) as string;
      const top = stack[stack.length - 1];
      if (top?.expectKey === true) {
        top.key = value;
        top.expectKey = false;
      } else place(value);
      i = close + 1;
    } else {
      let end = i + 1;
      while (end < text.length && !LITERAL_ENDS.has(text.charCodeAt(end))) end++;
      const literal = text.slice(i, end);
      place(literal === 'true' ? true : literal === 'false' ? false : literal === 'null' ? null : Number(literal));
      i = end;
    }
  }
  return result;
}

/** What ends a number or a literal in well-formed JSON: white space, a comma, a closing bracket. */
const LITERAL_ENDS: ReadonlySet<number> = new Set([0x20, 0x0a, 0x0d, 0x09, 0x2c, 0x5d, 0x7d]);
