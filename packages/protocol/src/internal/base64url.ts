// Package-internal: not exported from any entry point.

/** 32 bytes in base64url without padding: 42 characters, then one whose low 2 bits are unused (zero). */
const B64URL_32_RE = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;

/**
 * The 32 bytes that `value` encodes as canonical base64url without padding (RFC 4648 §5), or
 * `undefined` for anything else: another length, padding, other characters, or non-zero unused
 * trailing bits (one key, one spelling).
 */
export function decodeBase64url32(value: unknown): Uint8Array | undefined {
  if (typeof value !== 'string' || !B64URL_32_RE.test(value)) return undefined;
  return new Uint8Array(Buffer.from(value, 'base64url'));
}
