import { type ParseResult, ProtocolError, toResult } from './errors.js';
import { describeValue, isBytes } from './internal/describe.js';
import { KEY_ID_PATTERN } from './key-id.js';
import { utf8Length } from './text.js';

/** Name of the top-level member that carries the attestation envelope. */
export const ENVELOPE_MEMBER = 'moat_att';

/** Stamp length in hex digits when nothing else is configured (128-bit MAC). */
export const DEFAULT_STAMP_HEX_LENGTH = 32;
/** Shortest stamp a verifier may accept (128 bits). */
export const MIN_STAMP_HEX_LENGTH = 32;
/** Longest stamp (the full 256-bit HMAC-SHA-256). */
export const MAX_STAMP_HEX_LENGTH = 64;

const TS_RE = /^[0-9]{10}$/;
const NONCE_RE = /^[0-9a-f]{16}$/;
const STAMP_RE = /^[0-9a-f]+$/;
const ENVELOPE_RE = /^([vri]1)\.([A-Za-z0-9_-]{1,32})\.([0-9]{10})\.([0-9a-f]{16})\.([0-9a-f]{32,64})$/;
/**
 * The envelope's first part: `v1`, a stamp over the body (protocol 1.0); `r1`, a stamp
 * over the body and the request it is sent in — method, authority, path, credential
 * (protocol 1.1, §5.3); or `i1`, the same stamp as `r1` under an install's own key, the
 * key id being the install id (protocol 1.2, §5.4). `r1` and `i1` tie a stamp to who sends it where.
 */
export const ENVELOPE_SCHEMES = ['v1', 'r1', 'i1'] as const;
export type EnvelopeScheme = (typeof ENVELOPE_SCHEMES)[number];
/** Longest envelope value in UTF-8 bytes: "v1." + kid(32) + "." + ts(10) + "." + nonce(16) + "." + stamp(64). */
export const ENVELOPE_MAX_BYTES = 3 + 32 + 1 + 10 + 1 + 16 + 1 + 64;

/**
 * What an envelope's stamp is bound to besides the body: `request` for `r1` (the request's
 * method, authority, path and credential, §5.3), `install` for `i1` (the same, under the key of
 * one enrolled install, §5.4).
 */
export type EnvelopeBinding = 'request' | 'install';

/** The scheme of each binding, and of none (`v1`). */
const SCHEME_OF = { request: 'r1', install: 'i1', none: 'v1' } as const;
/** A `Map`, not an object literal: a scheme is text from the body, never a prototype member's name. */
const BINDING_OF: ReadonlyMap<string, EnvelopeBinding> = new Map([
  ['r1', 'request'],
  ['i1', 'install'],
]);

/**
 * The envelope scheme that carries `binding` (`v1` when there is none).
 *
 * @throws {ProtocolError} `ERR_ENVELOPE_SYNTAX` for a binding other than `request` or `install`.
 */
export function envelopeScheme(binding: EnvelopeBinding | undefined): EnvelopeScheme {
  const key = binding ?? 'none';
  // Own members only: a binding read from configuration may be any text, `constructor` too.
  if (!Object.hasOwn(SCHEME_OF, key)) {
    throw new ProtocolError('ERR_ENVELOPE_SYNTAX', 'a binding "request", "install" or none', describeValue(binding));
  }
  return SCHEME_OF[key];
}

/** A parsed envelope value `v1.<kid>.<ts>.<nonce>.<stamp>` (or `r1.…`, `i1.…`). */
export interface Envelope {
  /**
   * `request` for an `r1` envelope, whose stamp covers the request too (§5.3); `install` for
   * an `i1` envelope, stamped like `r1` with an install key, `kid` being the install id (§5.4);
   * absent for `v1`.
   */
  readonly binding?: EnvelopeBinding;
  /** Key id of the stamping key. */
  readonly kid: string;
  /** Unix time in seconds, as written (10 digits). */
  readonly ts: number;
  /** 16 lowercase hex digits (64 random bits). */
  readonly nonce: string;
  /** Lowercase hex MAC, or the placeholder (all `0`) before stamping. */
  readonly stamp: string;
}

/**
 * Parses an envelope value such as `v1.k2026a.1764000000.9f2c4e7a1b3d5c6f.<32 hex>`.
 *
 * @throws {ProtocolError} with an `ERR_ENVELOPE_*` or `ERR_UNSUPPORTED_VERSION` code.
 */
export function parseEnvelope(value: unknown): Envelope {
  // Well-formed values take one match; anything else goes through the checks below for a precise error.
  const fast = typeof value === 'string' ? ENVELOPE_RE.exec(value) : null;
  if (fast !== null && (fast[5] as string).length % 2 === 0) {
    const envelope = { kid: fast[2] as string, ts: Number(fast[3]), nonce: fast[4] as string, stamp: fast[5] as string };
    const binding = BINDING_OF.get(fast[1] as string);
    return binding === undefined ? envelope : { binding, ...envelope };
  }
  if (typeof value !== 'string') {
    throw new ProtocolError('ERR_ENVELOPE_TYPE', 'a string', describeValue(value));
  }
  const bytes = utf8Length(value);
  if (bytes > ENVELOPE_MAX_BYTES) {
    throw new ProtocolError('ERR_ENVELOPE_SYNTAX', `at most ${ENVELOPE_MAX_BYTES} UTF-8 bytes`, `${bytes} bytes`);
  }
  const parts = value.split('.');
  if (parts.length !== 5) {
    throw new ProtocolError('ERR_ENVELOPE_SYNTAX', '5 dot-separated parts v1.kid.ts.nonce.stamp', `${parts.length} parts`);
  }
  const [scheme, kid, ts, nonce, stamp] = parts as [string, string, string, string, string];
  if (scheme !== 'v1' && scheme !== 'r1' && scheme !== 'i1') {
    if (/^v[0-9]+$/.test(scheme)) throw new ProtocolError('ERR_UNSUPPORTED_VERSION', 'v1, r1 or i1', describeValue(scheme));
    throw new ProtocolError('ERR_ENVELOPE_SYNTAX', '"v1", "r1" or "i1" as the first part', describeValue(scheme));
  }
  if (!KEY_ID_PATTERN.test(kid)) throw new ProtocolError('ERR_ENVELOPE_KID', 'a key id matching [A-Za-z0-9_-]{1,32}', describeValue(kid));
  if (!TS_RE.test(ts)) throw new ProtocolError('ERR_ENVELOPE_TIMESTAMP', 'a timestamp of exactly 10 decimal digits', describeValue(ts));
  if (!NONCE_RE.test(nonce)) throw new ProtocolError('ERR_ENVELOPE_NONCE', 'a nonce of 16 lowercase hex digits', describeValue(nonce));
  if (!STAMP_RE.test(stamp) || stamp.length % 2 !== 0 || stamp.length < MIN_STAMP_HEX_LENGTH || stamp.length > MAX_STAMP_HEX_LENGTH) {
    throw new ProtocolError(
      'ERR_ENVELOPE_STAMP',
      `a stamp of ${MIN_STAMP_HEX_LENGTH}-${MAX_STAMP_HEX_LENGTH} lowercase hex digits, even length`,
      describeValue(stamp),
    );
  }
  const envelope = { kid, ts: Number(ts), nonce, stamp };
  const binding = BINDING_OF.get(scheme);
  return binding === undefined ? envelope : { binding, ...envelope };
}

/** Like {@link parseEnvelope}, but returns a {@link ParseResult} instead of throwing. */
export function tryParseEnvelope(value: unknown): ParseResult<Envelope> {
  return toResult(() => parseEnvelope(value));
}

/**
 * Serializes an envelope value. The result always parses back to the same envelope.
 *
 * @throws {ProtocolError} when a part is out of its grammar.
 */
export function serializeEnvelope(envelope: Envelope): string {
  const ts = Number.isInteger(envelope.ts) ? String(envelope.ts).padStart(10, '0') : String(envelope.ts);
  const value = `${envelopeScheme(envelope.binding)}.${envelope.kid}.${ts}.${envelope.nonce}.${envelope.stamp}`;
  parseEnvelope(value);
  return value;
}

/** Input to {@link placeholderEnvelope}. */
export interface PlaceholderOptions {
  readonly kid: string;
  /** Unix seconds. */
  readonly ts: number;
  /** 16 lowercase hex digits; draw it from a CSPRNG. */
  readonly nonce: string;
  /** Stamp length in hex digits (default 32 = 128 bits). */
  readonly stampHexLength?: number;
  /**
   * `request` for an `r1` envelope, whose stamp will cover the request too (§5.3): only for
   * endpoints that advertise `request_binding`. `install` for an `i1` envelope (`kid` = the
   * install id, §5.4): only for endpoints that advertise `install_keys` and enrolled this install.
   */
  readonly binding?: EnvelopeBinding;
}

/**
 * The envelope value a client writes before stamping: real key id, time and nonce, and a
 * stamp of `stampHexLength` zeros that the native layer later overwrites in place.
 */
export function placeholderEnvelope(options: PlaceholderOptions): string {
  return serializeEnvelope({
    kid: options.kid,
    ts: options.ts,
    nonce: options.nonce,
    stamp: '0'.repeat(options.stampHexLength ?? DEFAULT_STAMP_HEX_LENGTH),
    ...(options.binding === undefined ? {} : { binding: options.binding }),
  });
}

/**
 * A maker of placeholder envelopes for one key id, stamp length and scheme, for a client
 * that writes one per request: the fixed parts are checked once, here; each call checks the
 * time and nonce it gets. `make(ts, nonce)` equals `placeholderEnvelope({ ...options, ts, nonce })`
 * and throws the same errors.
 *
 * @throws {ProtocolError} when the key id or the stamp length is out of its grammar.
 * @example
 * ```ts
 * const make = placeholderEnvelopes({ kid: 'k1', binding: 'request' });
 * make(1764000000, '00112233aabbccdd'); // 'r1.k1.1764000000.00112233aabbccdd.000…0'
 * ```
 */
export function placeholderEnvelopes(options: Omit<PlaceholderOptions, 'ts' | 'nonce'>): (ts: number, nonce: string) => string {
  const head = `${envelopeScheme(options.binding)}.${options.kid}.`;
  const tail = `.${'0'.repeat(options.stampHexLength ?? DEFAULT_STAMP_HEX_LENGTH)}`;
  parseEnvelope(`${head}0000000000.0000000000000000${tail}`);
  return (ts, nonce) =>
    Number.isInteger(ts) && ts >= 0 && ts <= 9_999_999_999 && NONCE_RE.test(nonce)
      ? `${head}${String(ts).padStart(10, '0')}.${nonce}${tail}`
      : placeholderEnvelope({ ...options, ts, nonce });
}

/**
 * Appends the envelope as the last member of a serialized JSON object body. The body must
 * be a compact JSON object text (first byte `{`, last byte `}`) without a `moat_att`
 * member; nothing before the insertion point changes, so the cacheable prefix is intact.
 *
 * @throws {ProtocolError} `ERR_BODY_NOT_OBJECT`, `ERR_BODY_HAS_ENVELOPE`, or an envelope error.
 * @example
 * ```ts
 * appendEnvelope('{"model":"m"}', placeholderEnvelope({ kid: 'k1', ts: 1764000000, nonce: '00112233aabbccdd' }));
 * // '{"model":"m","moat_att":"v1.k1.1764000000.00112233aabbccdd.000…0"}'
 * ```
 */
export function appendEnvelope(body: string, envelopeValue: string): string {
  parseEnvelope(envelopeValue);
  if (body.length < 2 || body.charCodeAt(0) !== 0x7b || body.charCodeAt(body.length - 1) !== 0x7d) {
    throw new ProtocolError('ERR_BODY_NOT_OBJECT', 'a JSON object text starting with "{" and ending with "}"', describeValue(body));
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(body) as Record<string, unknown>;
  } catch {
    throw new ProtocolError('ERR_BODY_NOT_OBJECT', 'a well-formed JSON object text', describeValue(body));
  }
  // Names are compared after JSON unescaping, so "moat\u005fatt" counts too.
  if (Object.hasOwn(parsed, ENVELOPE_MEMBER)) {
    throw new ProtocolError('ERR_BODY_HAS_ENVELOPE', `a body without a "${ENVELOPE_MEMBER}" member`, 'one already present');
  }
  const member = `"${ENVELOPE_MEMBER}":"${envelopeValue}"`;
  // An object without members becomes exactly {member}: whitespace inside "{ }" would leave the
  // member unanchored (§4.3).
  return Object.keys(parsed).length === 0 ? `{${member}}` : `${body.slice(0, -1)},${member}}`;
}

/** Where the envelope stands in a raw body. Offsets are byte offsets into that body. */
export type EnvelopeLocation =
  | {
      readonly status: 'found';
      readonly envelope: Envelope;
      /** Offset of the `,` (or of the `"` right after `{`) that starts the member. */
      readonly memberStart: number;
      readonly valueStart: number;
      readonly valueEnd: number;
      readonly stampStart: number;
      readonly stampEnd: number;
    }
  | { readonly status: 'missing' }
  | { readonly status: 'not_last'; readonly error: ProtocolError }
  | { readonly status: 'malformed'; readonly error: ProtocolError };

const Q = 0x22; // "
const BS = 0x5c; // \
const ANCHOR = new TextEncoder().encode(`"${ENVELOPE_MEMBER}":"`);
const MEMBER_NAME = new TextEncoder().encode(`"${ENVELOPE_MEMBER}"`);

/** A Buffer over the same memory (no copy) where Buffer exists, for its native search and decoding. */
function bufferView(bytes: Uint8Array): Buffer | undefined {
  const buf = globalThis.Buffer;
  return buf === undefined ? undefined : buf.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function asciiOf(bytes: Uint8Array, start: number, end: number, view = bufferView(bytes)): string {
  if (view !== undefined) return view.toString('latin1', start, end);
  let s = '';
  for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i] as number);
  return s;
}

function indexOfBytes(haystack: Uint8Array, needle: Uint8Array, from: number, view = bufferView(haystack)): number {
  // Buffer.indexOf is a native memmem; fall back to a loop off Node.
  if (view !== undefined) return view.indexOf(needle, from);
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

const UNICODE_ESCAPE = new Uint8Array([BS, 0x75]); // "\u"

/**
 * The anchored suffix `"moat_att":"<value>"}`, preceded by `,` or `{`, where `<value>` holds
 * no `"` or `\` and `}` is the last byte; `undefined` when the body does not end so.
 */
function anchoredSuffix(body: Uint8Array): { anchorStart: number; valueStart: number; valueEnd: number } | undefined {
  const n = body.length;
  if (n < ANCHOR.length + 3 || body[n - 1] !== 0x7d || body[n - 2] !== Q) return undefined;
  const valueEnd = n - 2;
  let valueStart = valueEnd;
  while (valueStart > 0 && body[valueStart - 1] !== Q && body[valueStart - 1] !== BS) valueStart--;
  if (valueStart === 0 || body[valueStart - 1] !== Q) return undefined;
  const anchorStart = valueStart - ANCHOR.length;
  if (anchorStart < 1) return undefined;
  for (let j = 0; j < ANCHOR.length; j++) if (body[anchorStart + j] !== ANCHOR[j]) return undefined;
  const before = body[anchorStart - 1];
  if (before !== 0x2c && before !== 0x7b) return undefined;
  return { anchorStart, valueStart, valueEnd };
}

/**
 * Locates the attestation envelope in the raw bytes of a request body, which must be a
 * valid JSON object text (callers parse it too). The envelope counts only in the anchored
 * form: the top-level member `"moat_att":"<value>"`, written compactly as the last member,
 * with `}` as the body's last byte. The same text anywhere else — inside a user message, a
 * nested object — is not an envelope and is never touched.
 *
 * - no top-level `moat_att` member (names compared after unescaping) → `missing`;
 * - more than one, or one not in the anchored form → `not_last` (`ERR_ENVELOPE_NOT_LAST`);
 * - anchored, but the value breaks the envelope grammar → `malformed`;
 * - otherwise `found`, with byte offsets of the value and the stamp.
 *
 * A body whose first non-whitespace byte is not `{` is `malformed` (`ERR_BODY_NOT_OBJECT`), and
 * so is a body that is not bytes (a `Uint8Array`, as a `Buffer` is).
 */
export function locateEnvelope(body: Uint8Array): EnvelopeLocation {
  if (!isBytes(body)) {
    return { status: 'malformed', error: new ProtocolError('ERR_BODY_NOT_OBJECT', 'a JSON object text as bytes', describeValue(body)) };
  }
  let first = 0;
  while (first < body.length && (body[first] === 0x20 || body[first] === 0x09 || body[first] === 0x0a || body[first] === 0x0d)) first++;
  if (body[first] !== 0x7b) {
    return {
      status: 'malformed',
      error: new ProtocolError(
        'ERR_BODY_NOT_OBJECT',
        'a JSON object text',
        describeValue(asciiOf(body, first, Math.min(body.length, first + 8))),
      ),
    };
  }
  const view = bufferView(body);
  const anchor = anchoredSuffix(body);
  const firstName = indexOfBytes(body, MEMBER_NAME, 0, view);
  const escapes = indexOfBytes(body, UNICODE_ESCAPE, 0, view) !== -1;
  // Fast path: the member name occurs once, at the anchor, and no key can hide behind \u escapes.
  const fast = anchor !== undefined && firstName === anchor.anchorStart && !escapes;
  if (!fast) {
    if (firstName === -1 && !escapes) return { status: 'missing' };
    const keys = topLevelKeys(body);
    if (keys === undefined) {
      return { status: 'malformed', error: new ProtocolError('ERR_BODY_NOT_OBJECT', 'a JSON object text', 'unbalanced text') };
    }
    const members = keys.filter((k) => k.name === ENVELOPE_MEMBER);
    if (members.length === 0) return { status: 'missing' };
    if (members.length > 1) return { status: 'not_last', error: notLast(`${members.length} top-level members`) };
    if (anchor === undefined || members[0]?.offset !== anchor.anchorStart) {
      return { status: 'not_last', error: notLast('one top-level member outside the anchored last position') };
    }
  }
  const { anchorStart, valueStart, valueEnd } = anchor as NonNullable<typeof anchor>;
  const parsed = tryParseEnvelope(asciiOf(body, valueStart, valueEnd, view));
  if (!parsed.ok) return { status: 'malformed', error: parsed.error };
  const envelope = parsed.value;
  return {
    status: 'found',
    envelope,
    memberStart: body[anchorStart - 1] === 0x2c ? anchorStart - 1 : anchorStart,
    valueStart,
    valueEnd,
    stampStart: valueEnd - envelope.stamp.length,
    stampEnd: valueEnd,
  };
}

function notLast(received: string): ProtocolError {
  return new ProtocolError(
    'ERR_ENVELOPE_NOT_LAST',
    `exactly one top-level "${ENVELOPE_MEMBER}" member, last, written as ,"${ENVELOPE_MEMBER}":"<value>"} with "}" as the last byte`,
    received,
  );
}

/** A top-level key found by {@link topLevelKeys}: its decoded name and byte offset. */
export interface TopLevelKey {
  readonly name: string;
  readonly offset: number;
}

/**
 * Lists the keys of the top-level JSON object in raw bytes, decoding escapes, without
 * building the object. Returns `undefined` when the text is not an object or its strings
 * and brackets do not balance, or `body` is not bytes. It does not validate scalars; callers
 * that need full validity parse the JSON as well.
 */
export function topLevelKeys(body: Uint8Array): TopLevelKey[] | undefined {
  if (!isBytes(body)) return undefined;
  let i = 0;
  const n = body.length;
  const skipWs = () => {
    while (i < n) {
      const b = body[i] as number;
      if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d) i++;
      else break;
    }
  };
  skipWs();
  if (body[i] !== 0x7b) return undefined;
  i++;
  let depth = 1;
  let expectKey = true;
  const keys: TopLevelKey[] = [];
  const decoder = new TextDecoder();
  while (i < n) {
    const b = body[i] as number;
    if (b === Q) {
      const start = i;
      i++;
      let escaped = false;
      while (i < n) {
        const c = body[i] as number;
        if (c === BS) {
          escaped = true;
          i += 2;
          continue;
        }
        if (c === Q) break;
        i++;
      }
      if (i >= n) return undefined;
      i++; // closing quote
      if (depth === 1 && expectKey) {
        let name: string;
        const raw = decoder.decode(body.subarray(start, i));
        try {
          name = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        } catch {
          return undefined;
        }
        keys.push({ name, offset: start });
        expectKey = false;
      }
      continue;
    }
    if (b === 0x7b || b === 0x5b) depth++;
    else if (b === 0x7d || b === 0x5d) {
      depth--;
      if (depth === 0) {
        i++;
        skipWs();
        return i === n && b === 0x7d ? keys : undefined;
      }
    } else if (b === 0x2c && depth === 1) expectKey = true;
    i++;
  }
  return undefined;
}
