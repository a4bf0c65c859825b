/**
 * A key id (SPEC.md §4.1, §8.1): 1 to 32 of `A-Z a-z 0-9 _ -`. Attestation keys, block
 * signing keys and the envelope all use it.
 */
export const KEY_ID_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;

/** Whether `value` is a key id ({@link KEY_ID_PATTERN}). */
export function isKeyId(value: unknown): value is string {
  return typeof value === 'string' && KEY_ID_PATTERN.test(value);
}
