import { JsonBodyError } from './errors.js';
import { parseWellFormedJson, unescapeJsonString } from './json-value.js';

export { JsonBodyError, type JsonBodyErrorCode } from './errors.js';

/** A parsed JSON value's kind, for the "got …" of a refusal: `null`, `an array`, or its `typeof`. */
export function jsonKind(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
}

/** Byte span of one top-level member: from its key's opening quote to the end of its value. */
export interface MemberSpan {
  readonly key: string;
  readonly start: number;
  readonly end: number;
}

/** Byte spans of a body's top-level members, in order, and of the elements of its `system` array. */
export interface BodyLayout {
  readonly members: readonly MemberSpan[];
  /** Elements of a top-level `system` array, by byte span. */
  readonly systemElements?: ReadonlyArray<{ readonly start: number; readonly end: number }>;
  /** Some member name is written with escapes: whoever parses the body again parses it with `parseWellFormedJson`. */
  readonly escapedNames?: true;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
// A byte order mark is kept, not dropped: a body that starts with one is refused, as the stamp
// locator and a strict upstream read it (RFC 8259 §8.1: senders must not add one).
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isSpace(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

/** Index of the quote that closes the string opened at `open`, or -1. */
function closingQuote(raw: Buffer, open: number): number {
  let i = open + 1;
  // Most strings are short (member names, types): looked for here, a native search only past that.
  const near = Math.min(raw.length, i + 32);
  for (; i < near; i++) {
    const b = raw[i];
    if (b === BACKSLASH) break;
    if (b === QUOTE) return i;
  }
  for (;;) {
    const q = raw.indexOf(QUOTE, i);
    if (q === -1) return -1;
    let backslashes = 0;
    for (let j = q - 1; raw[j] === BACKSLASH; j--) backslashes++;
    if (backslashes % 2 === 0) return q;
    i = q + 1;
  }
}

/**
 * A member name as any decoder that ignores letter case may read it: upper-cased, then
 * lower-cased, so every letter that some case mapping takes to an ASCII one is that letter —
 * `ſ` is an `s` and the Kelvin sign a `k` (Go's `encoding/json` folds them so), the dotless
 * `ı` and the dotted `İ` an `i` (Java's `equalsIgnoreCase`, .NET's invariant mappings). Two
 * names one upstream may take for the same member must not reach it as two the verifier read
 * apart.
 */
function foldName(name: string): string {
  // ASCII without capitals (most names) folds to itself: no case mapping to run.
  if (!MAY_FOLD.test(name)) return name;
  return name.toUpperCase().toLowerCase().replaceAll('i\u0307', 'i');
}

/** A capital ASCII letter or any character outside ASCII: a name holding neither is its own folded form. */
const MAY_FOLD = /[A-Z\u0080-\uffff]/;

function keyText(
  raw: Buffer,
  ascii: string | undefined,
  open: number,
  close: number,
  frame: Frame,
  seen: { escapedName: boolean },
): string {
  // A body all ASCII has its bytes' offsets in the decoded text too: a slice, not another decode.
  const text = ascii !== undefined ? ascii.slice(open + 1, close) : raw.toString('utf8', open + 1, close);
  if (!text.includes('\\')) return text;
  seen.escapedName = true;
  // Escaped keys are compared by their value: "a" and "\u0061" are the same key.
  const decoded = unescapeJsonString(text, 0, text.length);
  // An escape JSON does not have (`\x`, `\u12`) is the body's syntax error, not the verifier's.
  if (decoded === undefined)
    throw new JsonBodyError('ERR_JSON_SYNTAX', pathOf(frame), 'expected JSON, got a member name with an invalid escape');
  return decoded;
}

/** `path.part`, or `part` at the top. */
const joinPath = (path: string, part: string): string => (path === '' ? part : `${path}.${part}`);

/**
 * The dotted path of a container (`""` for the body itself): built from its parents only when
 * a refusal names it, not for every container of every body.
 */
function pathOf(frame: Frame): string {
  const parts: string[] = [];
  for (let f: Frame = frame; f.parent !== undefined; f = f.parent) parts.push(String(f.part));
  return parts.reverse().join('.');
}

/** The path a child container of `frame` opened now gets (its member name or element index). */
const childPath = (frame: Frame): string => joinPath(pathOf(frame), frame.object ? frame.key : String(frame.index));

interface Frame {
  readonly object: boolean;
  /** The container this one is a value in, and its member name or element index there. */
  readonly parent: Frame | undefined;
  readonly part: string | number;
  /** Member names so far, by their folded form ({@link foldName}, exact names in user data), each as written. */
  keys: Map<string, string> | undefined;
  key: string;
  index: number;
  /** Inside a value the API passes on without reading its names: a tool's input, a JSON schema. */
  readonly userData: boolean;
}

/**
 * Members whose value is the user's own JSON, whose names the API does not read (a tool
 * call's `input`, a tool's `input_schema`, an output format's `schema`): names there may
 * differ only in case (`Accept` beside `accept` in a tool's input) and are compared exactly.
 */
export const USER_DATA_MEMBERS: ReadonlySet<string> = new Set(['input', 'input_schema', 'input_examples', 'schema', 'json_schema']);

/** Options of {@link parseJsonBody}. */
export interface JsonBodyOptions {
  /**
   * Member names the caller's checks read below the top level (`file_id`, `type`, `messages`
   * in a batch's `params`…): spelt any other way outside the user's own JSON (`FILE_ID`,
   * `Type`, `file_\u0131d`), one is refused even alone, since an upstream that ignores letter
   * case would read the member the checks never saw.
   */
  readonly readNames?: ReadonlySet<string>;
}

/**
 * Parses a request body as strict JSON: valid UTF-8 (no replacement of bad bytes), an object
 * at the top, no member name twice in one object (compared after unescaping, and in any letter
 * case but inside the user's own JSON — a tool's input, a schema), top-level member names in
 * lower case, below it no name of `options.readNames` in another spelling, nesting no deeper than `maxDepth`. The structural checks run on the bytes before `JSON.parse`, so a
 * body nested a million levels deep costs one pass and no recursion. Returns the value and
 * the byte layout of its top-level members, so a gateway can forward the client's own bytes
 * with members cut out. A body with an escaped member name gets its value from
 * `parseWellFormedJson`, not `JSON.parse`, whose names V8 13.6 may misread (see json-value.ts).
 *
 * @throws {JsonBodyError} with a code and the path where the body breaks the rules.
 */
export function parseJsonBody(
  raw: Buffer,
  maxDepth: number,
  options: JsonBodyOptions = {},
): { value: Record<string, unknown>; layout: BodyLayout } {
  const readNames = options.readNames;
  let text: string;
  try {
    text = decoder.decode(raw);
  } catch {
    throw new JsonBodyError('ERR_JSON_UTF8', '', 'expected a body in valid UTF-8, got invalid byte sequences');
  }
  if (text.charCodeAt(0) === 0xfeff)
    throw new JsonBodyError('ERR_JSON_SYNTAX', '', 'expected JSON, got a byte order mark (U+FEFF) before it');
  // As many UTF-16 units as bytes only when every byte is ASCII.
  const ascii = text.length === raw.length ? text : undefined;
  const seen = { escapedName: false };
  const stack: Frame[] = [];
  const members: MemberSpan[] = [];
  let systemElements: Array<{ start: number; end: number }> | undefined;
  let memberStart = -1;
  let memberKey = '';
  let elementStart = -1;
  let lastEnd = 0; // index after the last byte that was not white space
  let expectKey = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i] as number;
    if (isSpace(c)) continue;
    const top = stack.length === 0 ? undefined : stack[stack.length - 1];
    if (c === QUOTE) {
      const close = closingQuote(raw, i);
      if (close === -1) break; // JSON.parse names the syntax error
      if (top?.object === true && expectKey) {
        const key = keyText(raw, ascii, i, close, top, seen);
        const folded = top.userData ? key : foldName(key);
        top.keys ??= new Map();
        const earlier = top.keys.get(folded);
        if (earlier !== undefined) {
          throw new JsonBodyError(
            'ERR_JSON_DUPLICATE_KEY',
            joinPath(pathOf(top), key),
            earlier === key
              ? `expected each member name once per object, got ${JSON.stringify(key.slice(0, 60))} twice`
              : `expected each member name once per object in any letter case, got ${JSON.stringify(key.slice(0, 60))} beside ${JSON.stringify(earlier.slice(0, 60))}`,
          );
        }
        // The API's own member names are lower case: another spelling is for an upstream that ignores case.
        if (stack.length === 1 && folded !== key)
          throw new JsonBodyError(
            'ERR_JSON_MEMBER_CASE',
            key,
            `expected member names in lower case at the top of the body (the API's are), got ${JSON.stringify(key.slice(0, 60))}`,
          );
        if (stack.length > 1 && !top.userData && folded !== key && readNames?.has(folded) === true)
          throw new JsonBodyError(
            'ERR_JSON_MEMBER_CASE',
            joinPath(pathOf(top), key),
            `expected ${JSON.stringify(folded)} as the API spells it, got ${JSON.stringify(key.slice(0, 60))} (an upstream that ignores letter case reads it as ${JSON.stringify(folded)})`,
          );
        top.keys.set(folded, key);
        top.key = key;
        expectKey = false;
        if (stack.length === 1) {
          memberStart = i;
          memberKey = key;
        }
      } else if (stack.length === 2 && memberKey === 'system' && top?.object === false && elementStart === -1) elementStart = i;
      i = close;
      lastEnd = close + 1;
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      if (stack.length === 2 && memberKey === 'system' && top?.object === false && elementStart === -1) elementStart = i;
      if (stack.length >= maxDepth)
        throw new JsonBodyError(
          'ERR_JSON_DEPTH',
          top === undefined ? '' : childPath(top),
          `expected nesting at most ${maxDepth} deep, got deeper`,
        );
      if (stack.length === 1 && memberKey === 'system' && c === 0x5b) systemElements = [];
      const userData = top !== undefined && (top.userData || (top.object && USER_DATA_MEMBERS.has(top.key)));
      const part = top === undefined ? '' : top.object ? top.key : top.index;
      stack.push({ object: c === 0x7b, parent: top, part, keys: undefined, key: '', index: 0, userData });
      expectKey = c === 0x7b;
      lastEnd = i + 1;
      continue;
    }
    if (c === 0x7d || c === 0x5d || c === 0x2c) {
      if (stack.length === 2 && memberKey === 'system' && top?.object === false && elementStart !== -1) {
        systemElements?.push({ start: elementStart, end: lastEnd });
        elementStart = -1;
      }
      if (stack.length === 1 && memberStart !== -1) {
        members.push({ key: memberKey, start: memberStart, end: lastEnd });
        memberStart = -1;
        memberKey = '';
      }
      if (c === 0x2c) {
        if (top !== undefined) {
          if (top.object) expectKey = true;
          else top.index++;
        }
      } else {
        stack.pop();
        expectKey = false;
      }
      lastEnd = i + 1;
      continue;
    }
    if (stack.length === 2 && memberKey === 'system' && top?.object === false && elementStart === -1) elementStart = i;
    lastEnd = i + 1;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new JsonBodyError('ERR_JSON_SYNTAX', '', `expected JSON, got ${error instanceof Error ? error.message : 'a syntax error'}`);
  }
  // JSON.parse judged the syntax; the value of a body with an escaped name is built without it (see parseWellFormedJson).
  if (seen.escapedName) value = parseWellFormedJson(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new JsonBodyError('ERR_JSON_NOT_OBJECT', '', `expected a JSON object, got ${jsonKind(value)}`);
  const layout: BodyLayout = {
    members,
    ...(systemElements === undefined ? {} : { systemElements }),
    ...(seen.escapedName ? { escapedNames: true as const } : {}),
  };
  return { value: value as Record<string, unknown>, layout };
}

/** A member value given as its JSON text, already serialized (by {@link rewriteMembers}, spliced as is). */
export class JsonText {
  constructor(readonly text: string) {}
}

/** The JSON text of a replaced member's value. */
const jsonOf = (value: unknown): string => (value instanceof JsonText ? value.text : JSON.stringify(value));

/**
 * The body's bytes with top-level members left out (`drop`) or given new values (`replace`,
 * serialized with `JSON.stringify` unless given as {@link JsonText}; a replaced member that is
 * absent is appended), everything
 * else exactly as the client sent it. `dropFirstSystemElement` removes `system[0]` (the
 * attribution block), and `system` itself when nothing is left.
 */
export function rewriteMembers(
  raw: Buffer,
  layout: BodyLayout,
  edits: { readonly drop: ReadonlySet<string>; readonly replace?: ReadonlyMap<string, unknown>; readonly dropFirstSystemElement?: boolean },
): Buffer {
  const parts: Buffer[] = [];
  const comma = Buffer.from(',');
  const seen = new Set<string>();
  const push = (part: Buffer) => {
    if (parts.length > 1) parts.push(comma);
    parts.push(part);
  };
  parts.push(Buffer.from('{'));
  for (const member of layout.members) {
    seen.add(member.key);
    if (edits.drop.has(member.key)) continue;
    if (edits.replace?.has(member.key) === true) {
      push(Buffer.from(`${JSON.stringify(member.key)}:${jsonOf(edits.replace.get(member.key))}`));
      continue;
    }
    if (member.key === 'system' && edits.dropFirstSystemElement === true && layout.systemElements !== undefined) {
      const kept = layout.systemElements.slice(1);
      if (kept.length === 0) continue;
      const open = raw.indexOf(0x5b, member.start);
      const items = kept.map((e) => raw.subarray(e.start, e.end));
      push(
        Buffer.concat([
          raw.subarray(member.start, open + 1),
          ...items.flatMap((item, i) => (i === 0 ? [item] : [comma, item])),
          Buffer.from(']'),
        ]),
      );
      continue;
    }
    push(raw.subarray(member.start, member.end));
  }
  for (const [key, value] of edits.replace ?? []) if (!seen.has(key)) push(Buffer.from(`${JSON.stringify(key)}:${jsonOf(value)}`));
  parts.push(Buffer.from('}'));
  return Buffer.concat(parts);
}
