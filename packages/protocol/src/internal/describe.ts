// Package-internal: not exported from any entry point.

export { describeValue } from '../support/describe.js';

/**
 * Whether `value` is a `Uint8Array` (a `Buffer` is one), from this realm or another: the
 * `toStringTag` of a typed array is its kind, where `instanceof` fails across realms.
 */
export function isBytes(value: unknown): value is Uint8Array {
  return ArrayBuffer.isView(value) && Object.prototype.toString.call(value) === '[object Uint8Array]';
}

/** Whether `value` is a plain JSON object (not null, not an array). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
