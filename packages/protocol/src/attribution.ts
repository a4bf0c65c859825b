import { type ParseResult, ProtocolError, toResult } from './errors.js';
import { describeValue } from './internal/describe.js';
import { utf8Length } from './text.js';

/** The protocol major version this implementation speaks. */
export const PROTOCOL_VERSION = 1;

/** Literal that starts every attribution block. */
export const ATTRIBUTION_PREFIX = 'x-moat:';

/** Upper bound on a serialized attribution block, in UTF-8 bytes. */
export const ATTRIBUTION_MAX_BYTES = 512;

/** Fields with a meaning in v1, in the order a serializer must emit them. */
export const ATTRIBUTION_KNOWN_FIELDS = ['v', 'cv', 'fp', 'ep'] as const;

/** Entrypoints registered in v1. Other lowercase tokens are accepted and passed through. */
export const ENTRYPOINTS = ['cli', 'sdk', 'ide', 'desktop', 'web', 'ci'] as const;

const KEY_RE = /^[a-z][a-z0-9_]{0,31}$/;
const VALUE_RE = /^[A-Za-z0-9._+-]{1,64}$/;
const FP_RE = /^[0-9a-f]{3}$/;
const EP_RE = /^[a-z0-9_-]{1,32}$/;
const VERSION_RE = /^(0|[1-9][0-9]{0,8})$/;

/**
 * A parsed attribution block. `extensions` holds fields this version does not define, in
 * wire order, so that serialization round-trips byte for byte.
 */
export interface AttributionBlock {
  /** Protocol major version, always 1 here. */
  readonly v: 1;
  /** Client version (`cv`), e.g. `1.4.2`. */
  readonly cv: string;
  /** Fingerprint (`fp`): three lowercase hex digits. */
  readonly fp?: string;
  /** Entrypoint (`ep`): `cli`, `sdk`, … */
  readonly ep?: string;
  /** Unknown fields, preserved in order and otherwise ignored. */
  readonly extensions: ReadonlyArray<readonly [key: string, value: string]>;
}

/** Input to {@link serializeAttribution}. */
export interface AttributionFields {
  readonly cv: string;
  readonly fp?: string | undefined;
  readonly ep?: string | undefined;
  readonly extensions?: ReadonlyArray<readonly [string, string]> | undefined;
}

/** A `Map`, not an object literal: a field named `constructor` or `toString` must not find a prototype member. */
const KNOWN_RANK: ReadonlyMap<string, number> = new Map([
  ['v', 0],
  ['cv', 1],
  ['fp', 2],
  ['ep', 3],
]);

function checkKnownValue(key: string, value: string): void {
  if (key === 'fp' && !FP_RE.test(value)) {
    throw new ProtocolError('ERR_ATTRIBUTION_FIELD_VALUE', 'fp of 3 lowercase hex digits', describeValue(value));
  }
  if (key === 'ep' && !EP_RE.test(value)) {
    throw new ProtocolError('ERR_ATTRIBUTION_FIELD_VALUE', 'ep of lowercase [a-z0-9_-]', describeValue(value));
  }
}

/**
 * Parses an attribution block (the text of `system[0]`), strictly: one space before each
 * field, `;` after each, `v` first, known fields in registry order, unknown fields after.
 *
 * @throws {ProtocolError} with an `ERR_ATTRIBUTION_*` or `ERR_UNSUPPORTED_VERSION` code.
 * @example
 * ```ts
 * parseAttribution('x-moat: v=1; cv=1.4.2; fp=a3f; ep=cli;').fp; // 'a3f'
 * ```
 */
export function parseAttribution(text: unknown): AttributionBlock {
  if (typeof text !== 'string') {
    throw new ProtocolError('ERR_ATTRIBUTION_TYPE', 'a string', describeValue(text));
  }
  // Bytes, not string length: UTF-16 units and code points differ across languages.
  const bytes = utf8Length(text);
  if (bytes > ATTRIBUTION_MAX_BYTES) {
    throw new ProtocolError('ERR_ATTRIBUTION_TOO_LONG', `at most ${ATTRIBUTION_MAX_BYTES} UTF-8 bytes`, `${bytes} bytes`);
  }
  if (!text.startsWith(ATTRIBUTION_PREFIX)) {
    throw new ProtocolError('ERR_ATTRIBUTION_PREFIX', `"${ATTRIBUTION_PREFIX}" at offset 0`, describeValue(text.slice(0, 7)));
  }
  let pos = ATTRIBUTION_PREFIX.length;
  if (pos === text.length) {
    throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', `" key=value;" at offset ${pos}`, 'end of text');
  }
  const seen = new Set<string>();
  const known = new Map<string, string>();
  const extensions: Array<readonly [string, string]> = [];
  let lastRank = -1;
  let sawExtension = false;
  while (pos < text.length) {
    if (text.charCodeAt(pos) !== 0x20) {
      throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', `" " at offset ${pos}`, describeValue(text.slice(pos, pos + 8)));
    }
    const end = text.indexOf(';', pos + 1);
    if (end === -1) {
      throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', `";" after the field at offset ${pos + 1}`, 'end of text');
    }
    const field = text.slice(pos + 1, end);
    const eq = field.indexOf('=');
    if (eq === -1) {
      throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', `key=value at offset ${pos + 1}`, describeValue(field));
    }
    const key = field.slice(0, eq);
    const value = field.slice(eq + 1);
    if (!KEY_RE.test(key)) {
      throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', `a key matching [a-z][a-z0-9_]{0,31} at offset ${pos + 1}`, describeValue(key));
    }
    if (!VALUE_RE.test(value)) {
      throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', `a value matching [A-Za-z0-9._+-]{1,64} for "${key}"`, describeValue(value));
    }
    if (seen.has(key)) {
      throw new ProtocolError('ERR_ATTRIBUTION_DUPLICATE_FIELD', `"${key}" at most once`, `a second "${key}"`);
    }
    const rank = KNOWN_RANK.get(key);
    if (seen.size === 0 && key !== 'v') {
      throw new ProtocolError('ERR_ATTRIBUTION_FIELD_ORDER', '"v" as the first field', describeValue(key));
    }
    seen.add(key);
    if (rank === undefined) {
      sawExtension = true;
      extensions.push([key, value]);
    } else {
      if (sawExtension || rank < lastRank) {
        throw new ProtocolError(
          'ERR_ATTRIBUTION_FIELD_ORDER',
          'known fields in the order v, cv, fp, ep, before unknown fields',
          describeValue(key),
        );
      }
      lastRank = rank;
      if (key === 'v') {
        if (!VERSION_RE.test(value)) {
          throw new ProtocolError('ERR_ATTRIBUTION_FIELD_VALUE', 'v as a decimal integer', describeValue(value));
        }
        if (Number(value) !== PROTOCOL_VERSION) {
          throw new ProtocolError('ERR_UNSUPPORTED_VERSION', `v=${PROTOCOL_VERSION}`, `v=${value}`);
        }
      }
      checkKnownValue(key, value);
      known.set(key, value);
    }
    pos = end + 1;
  }
  const cv = known.get('cv');
  if (cv === undefined) {
    throw new ProtocolError('ERR_ATTRIBUTION_MISSING_FIELD', 'a "cv" field', 'none');
  }
  const fp = known.get('fp');
  const ep = known.get('ep');
  return { v: 1, cv, ...(fp === undefined ? {} : { fp }), ...(ep === undefined ? {} : { ep }), extensions };
}

/** Like {@link parseAttribution}, but returns a {@link ParseResult} instead of throwing. */
export function tryParseAttribution(text: unknown): ParseResult<AttributionBlock> {
  return toResult(() => parseAttribution(text));
}

/**
 * Serializes fields into the canonical attribution block. The output always parses back to
 * the same fields, and the same fields always give the same bytes (prompt-cache stable).
 *
 * @throws {ProtocolError} when a field would not survive {@link parseAttribution}.
 * @example
 * ```ts
 * serializeAttribution({ cv: '1.4.2', fp: 'a3f', ep: 'cli' });
 * // 'x-moat: v=1; cv=1.4.2; fp=a3f; ep=cli;'
 * ```
 */
export function serializeAttribution(fields: AttributionFields): string {
  // §3.4: a value is checked before it is joined, so "1; x=y" cannot inject a field.
  if (fields.cv === undefined || fields.cv === null) throw new ProtocolError('ERR_ATTRIBUTION_MISSING_FIELD', 'a "cv" field', 'none');
  const parts: string[] = [`v=${PROTOCOL_VERSION}`];
  const add = (key: string, value: unknown) => {
    if (typeof value !== 'string' || !VALUE_RE.test(value))
      throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', 'a value [A-Za-z0-9._+-]{1,64}', describeValue(value));
    parts.push(`${key}=${value}`);
  };
  add('cv', fields.cv);
  if (fields.fp !== undefined && fields.fp !== null) add('fp', fields.fp);
  if (fields.ep !== undefined && fields.ep !== null) add('ep', fields.ep);
  const extensions: unknown = fields.extensions ?? [];
  if (!Array.isArray(extensions))
    throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', 'extensions as an array of [key, value] pairs', describeValue(extensions));
  for (const entry of extensions as unknown[]) {
    // §3.4: an entry that is not a pair is refused, never read as far as it goes.
    if (!Array.isArray(entry) || entry.length !== 2)
      throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', 'an extension as a [key, value] pair', describeValue(entry));
    const [key, value] = entry as [unknown, unknown];
    if (typeof key === 'string' && KNOWN_RANK.has(key)) {
      throw new ProtocolError('ERR_ATTRIBUTION_DUPLICATE_FIELD', 'extension keys other than v, cv, fp, ep', describeValue(key));
    }
    if (typeof key !== 'string' || !KEY_RE.test(key))
      throw new ProtocolError('ERR_ATTRIBUTION_SYNTAX', 'a key [a-z][a-z0-9_]{0,31}', describeValue(key));
    add(key, value);
  }
  const text = `${ATTRIBUTION_PREFIX} ${parts.join('; ')};`;
  // Validate by parsing: one grammar, enforced in one place.
  parseAttribution(text);
  return text;
}
