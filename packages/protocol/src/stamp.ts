import { createHmac, type KeyObject } from 'node:crypto';
import { MAX_STAMP_HEX_LENGTH, MIN_STAMP_HEX_LENGTH } from './envelope.js';
import { ProtocolError } from './errors.js';
import { toHex } from './text.js';

/** Shortest stamping key accepted: 256 bits, the HMAC-SHA-256 block-size sweet spot. */
export const MIN_STAMP_KEY_BYTES = 32;

const ZERO = 0x30; // ASCII "0"

/**
 * Computes the attestation stamp over a raw body: HMAC-SHA-256 keyed with the stamping key,
 * over every byte of the body with the stamp region `[stampStart, stampEnd)` read as ASCII
 * `0` digits (the placeholder), truncated to the region's length in hex digits, lowercase.
 * The MAC therefore covers the key id, timestamp and nonce written before the stamp.
 *
 * The body is not copied or modified. Pass a `KeyObject` (`createSecretKey`) when stamping or
 * verifying many bodies with one key: node:crypto sets up a raw key on every call (5× slower
 * for small bodies).
 *
 * @throws {ProtocolError} `ERR_STAMP_KEY` for a key shorter than 32 bytes,
 *   `ERR_ENVELOPE_STAMP` for a region of the wrong length.
 */
export function computeStamp(key: Uint8Array | KeyObject, body: Uint8Array, stampStart: number, stampEnd: number): string {
  const keyBytes = key instanceof Uint8Array ? key.length : (key.symmetricKeySize ?? 0);
  if (keyBytes < MIN_STAMP_KEY_BYTES) {
    throw new ProtocolError('ERR_STAMP_KEY', `a key of at least ${MIN_STAMP_KEY_BYTES} bytes`, `${keyBytes} bytes`);
  }
  const hexLength = stampEnd - stampStart;
  if (
    stampStart < 0 ||
    stampEnd > body.length ||
    hexLength % 2 !== 0 ||
    hexLength < MIN_STAMP_HEX_LENGTH ||
    hexLength > MAX_STAMP_HEX_LENGTH
  ) {
    throw new ProtocolError(
      'ERR_ENVELOPE_STAMP',
      `a stamp region of ${MIN_STAMP_HEX_LENGTH}-${MAX_STAMP_HEX_LENGTH} even hex digits inside the body`,
      `[${stampStart}, ${stampEnd}) in ${body.length} bytes`,
    );
  }
  // node:crypto: 5.8× the throughput of @noble/hashes on 100 KiB bodies (bench/protocol.bench.ts).
  const mac = createHmac('sha256', key);
  mac.update(body.subarray(0, stampStart));
  mac.update(new Uint8Array(hexLength).fill(ZERO));
  mac.update(body.subarray(stampEnd));
  return toHex(mac.digest().subarray(0, hexLength / 2));
}
