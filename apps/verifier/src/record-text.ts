/**
 * Text as every record store takes it. PostgreSQL refuses a NUL in `TEXT` and `\u0000` in
 * `JSONB`, and neither backend can store a lone UTF-16 surrogate as UTF-8; SQLite takes both
 * and hands back something else. So every string a request can put into a record, a label or
 * a telemetry event goes through {@link storableText} before it is stored: the same bytes
 * round-trip on both backends, and no request can make the store refuse a record.
 */

/** What stands in for a character no store can keep (NUL, a lone surrogate). */
export const REPLACEMENT = '\uFFFD';

/** `text` with NUL and lone surrogates replaced by U+FFFD: well-formed Unicode without NUL. */
export function storableText(text: string): string {
  const wellFormed = text.isWellFormed() ? text : text.toWellFormed();
  return wellFormed.includes('\0') ? wellFormed.replaceAll('\0', REPLACEMENT) : wellFormed;
}

/**
 * `text` made storable and cut to at most `max` UTF-16 code units on a whole code point,
 * ending in `…` when cut (so an emoji is never split into a lone surrogate).
 */
export function cutText(text: string, max: number): string {
  const clean = storableText(text);
  if (clean.length <= max) return clean;
  let end = Math.max(0, max - 1);
  const last = clean.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--; // the high half of a pair: leave the pair out
  return `${clean.slice(0, end)}…`;
}

/** Objects known to hold storable text only (made so by their maker): {@link storableValue} takes them as they are. */
const STORABLE = new WeakSet<object>();

/**
 * Marks `value` as holding storable text only, so the store boundary does not walk it again:
 * for values made by a function that makes every string in them storable (a bounded record).
 * The value must not change afterwards.
 */
export function markStorable<T extends object>(value: T): T {
  STORABLE.add(value);
  return value;
}

/**
 * A JSON-like value with every string in it (object keys included) made storable; other
 * values are kept as they are (a value {@link markStorable} marked, too).
 */
export function storableValue<T>(value: T): T {
  if (typeof value === 'string') return storableText(value) as T;
  if (typeof value === 'object' && value !== null && STORABLE.has(value)) return value;
  if (Array.isArray(value)) return value.map((v) => storableValue(v)) as T;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    // fromEntries defines own members: a `__proto__` key stays a key, never a prototype.
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [storableText(k), storableValue(v)])) as T;
  }
  return value;
}
