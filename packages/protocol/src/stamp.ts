import { createHash, createHmac, type KeyObject } from 'node:crypto';
import { MAX_STAMP_HEX_LENGTH, MIN_STAMP_HEX_LENGTH } from './envelope.js';
import { ProtocolError } from './errors.js';
import { describeValue } from './internal/describe.js';
import { parseHttpUrl } from './internal/http-url.js';
import { isSpaceOrTab, trimWhere } from './internal/trim.js';
import { lengthPrefixed } from './signature.js';
import { asciiLower, toHex } from './text.js';

/** Shortest stamping key accepted: 256 bits, the HMAC-SHA-256 block-size sweet spot. */
export const MIN_STAMP_KEY_BYTES = 32;

/**
 * What an `r1` stamp covers of the request besides its body (§5.3), in the spirit of RFC
 * 9421's covered components: who sends the bytes, and where.
 */
export interface RequestComponents {
  /** The method token as sent, e.g. `POST` (case-sensitive). */
  readonly method: string;
  /** The target's authority: lowercase host, `:port` only when it is not the scheme's default (the `Host` header sent). */
  readonly authority: string;
  /** The target's path as sent on the request line, without the query; `/` when empty. */
  readonly path: string;
  /** The API credential: the `x-api-key` value, else the `Bearer` token of `Authorization`, else `""`. */
  readonly credential: string;
}

/** Whether `text` holds a character U+0000–U+0020 or U+007F (never part of an authority or a path as sent). */
function hasControlOrSpace(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** First item of the request base, naming its layout. */
export const REQUEST_BASE_LABEL = 'moat-req/1';

/**
 * The bytes an `r1` stamp's MAC reads before the body: `lp(["moat-req/1", method,
 * authority, path, hex(SHA-256(credential))])` (§5.3). The credential enters as its
 * digest, so the base can be logged while debugging without carrying the key.
 *
 * @throws {ProtocolError} `ERR_STAMP_REQUEST` for a component outside its grammar.
 */
export function requestBase(request: RequestComponents): Uint8Array {
  const { method, authority, path, credential } = request;
  if (typeof method !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/.test(method))
    throw new ProtocolError('ERR_STAMP_REQUEST', 'a method token of 1-32 characters', describeValue(method));
  if (typeof authority !== 'string' || authority === '' || /[A-Z/?#@]/.test(authority) || hasControlOrSpace(authority))
    throw new ProtocolError('ERR_STAMP_REQUEST', 'a lowercase authority host[:port]', describeValue(authority));
  if (typeof path !== 'string' || !path.startsWith('/') || /[?#]/.test(path) || hasControlOrSpace(path))
    throw new ProtocolError('ERR_STAMP_REQUEST', 'a path starting with "/", without query or spaces', describeValue(path));
  if (typeof credential !== 'string') throw new ProtocolError('ERR_STAMP_REQUEST', 'a credential string', describeValue(credential));
  return lengthPrefixed([REQUEST_BASE_LABEL, method, authority, path, createHash('sha256').update(credential, 'utf8').digest('hex')]);
}

/**
 * The authority a client sends to and stamps for `url`: the WHATWG URL `host` — lowercase,
 * punycode, IPv6 in brackets, the port only when it is not the scheme's default.
 *
 * @throws {ProtocolError} `ERR_STAMP_REQUEST` for a value that is not an http(s) URL with a host.
 */
export function authorityOf(url: string | URL): string {
  // Any object's `href`, not `instanceof URL`: a URL from another realm is not one.
  const href: unknown = typeof url === 'string' ? url : typeof url === 'object' && url !== null ? url.href : undefined;
  const text = typeof href === 'string' ? href : undefined;
  const parsed = text === undefined ? undefined : parseHttpUrl(text);
  if (parsed === undefined)
    throw new ProtocolError('ERR_STAMP_REQUEST', 'an http(s) URL with an ASCII or Latin-1 host', describeValue(text ?? url));
  return parsed.host;
}

/**
 * The credential of a request from its headers (`get` returns a header's value or
 * `undefined`/`null`): `x-api-key` when present and non-empty, else the token of an
 * `Authorization: Bearer` header, else `""` (§5.3).
 */
export function credentialOf(get: (name: string) => string | null | undefined): string {
  const key = get('x-api-key');
  const trimmed = typeof key === 'string' ? trimWhere(key, isSpaceOrTab) : '';
  if (trimmed !== '') return trimmed;
  const auth = get('authorization');
  return typeof auth === 'string' ? (bearerToken(auth) ?? '') : '';
}

/**
 * The token of an `Authorization` value `[ \t]*bearer +token[ \t]*` (the scheme in any ASCII
 * case), or `undefined`. Scanned by index: a lazy pattern before `[ \t]*$` is quadratic in a
 * run of spaces inside the token.
 */
function bearerToken(value: string): string | undefined {
  let i = 0;
  while (i < value.length && isSpaceOrTab(value.charCodeAt(i))) i++;
  if (asciiLower(value.slice(i, i + 6)) !== 'bearer' || value.charCodeAt(i + 6) !== 0x20) return undefined;
  i += 6;
  while (value.charCodeAt(i) === 0x20) i++;
  let end = value.length;
  while (end > i && isSpaceOrTab(value.charCodeAt(end - 1))) end--;
  return value.slice(i, end);
}

/**
 * The components of a request as a verifier received it: the method, the `Host` header
 * (lowercased; `authority` overrides it behind a proxy that rewrites `Host`), the request
 * target up to `?`, and the credential.
 */
export function receivedRequestComponents(input: {
  readonly method: string;
  /** The request target as received (`req.url` in Node). */
  readonly target: string;
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  readonly authority?: string;
}): RequestComponents {
  const header = (name: string) => {
    const v = input.headers[name];
    return Array.isArray(v) ? v.join(', ') : (v as string | undefined);
  };
  const query = input.target.indexOf('?');
  const path = query === -1 ? input.target : input.target.slice(0, query);
  return {
    method: input.method,
    authority: asciiLower(input.authority ?? header('host') ?? ''),
    path: path === '' ? '/' : path,
    credential: credentialOf(header),
  };
}

/** The placeholder's digits (ASCII "0"), as many as the longest stamp. */
const ZEROS = new Uint8Array(MAX_STAMP_HEX_LENGTH).fill(0x30);

/**
 * Computes the attestation stamp over a raw body: HMAC-SHA-256 keyed with the stamping key,
 * over every byte of the body with the stamp region `[stampStart, stampEnd)` read as ASCII
 * `0` digits (the placeholder), truncated to the region's length in hex digits, lowercase.
 * The MAC therefore covers the key id, timestamp and nonce written before the stamp.
 *
 * With `request` (an `r1` envelope), the MAC reads {@link requestBase} first, so the stamp
 * also covers the method, authority, path and credential it was sent with (§5.3).
 *
 * The body is not copied or modified. Pass a `KeyObject` (`createSecretKey`) when stamping or
 * verifying many bodies with one key: node:crypto sets up a raw key on every call (5× slower
 * for small bodies).
 *
 * @throws {ProtocolError} `ERR_STAMP_KEY` for a key shorter than 32 bytes,
 *   `ERR_ENVELOPE_STAMP` for a region of the wrong length.
 */
export function computeStamp(
  key: Uint8Array | KeyObject,
  body: Uint8Array,
  stampStart: number,
  stampEnd: number,
  request?: RequestComponents,
): string {
  return toHex(stampDigest(key, body, stampStart, stampEnd, request).subarray(0, (stampEnd - stampStart) / 2));
}

/**
 * Whether the stamp written in `body[stampStart, stampEnd)` is the stamp {@link
 * computeStamp} gives for that body, compared in constant time. Only the lowercase hex
 * spelling matches.
 *
 * @throws {ProtocolError} as {@link computeStamp} does.
 */
export function verifyStamp(
  key: Uint8Array | KeyObject,
  body: Uint8Array,
  stampStart: number,
  stampEnd: number,
  request?: RequestComponents,
): boolean {
  const digest = stampDigest(key, body, stampStart, stampEnd, request);
  const length = (stampEnd - stampStart) / 2;
  // Compared as lowercase hex text, byte for byte with no early exit, so any other spelling of
  // the same bytes does not match and the time does not depend on where a mismatch is.
  let diff = 0;
  for (let i = 0; i < length; i++) {
    const byte = digest[i] as number;
    diff |= (body[stampStart + 2 * i] as number) ^ (LOWER_HEX[byte >> 4] as number);
    diff |= (body[stampStart + 2 * i + 1] as number) ^ (LOWER_HEX[byte & 15] as number);
  }
  return diff === 0;
}

const LOWER_HEX = new TextEncoder().encode('0123456789abcdef');

/**
 * The bytes after the stamp region, read with the placeholder before them: the stamp ends two
 * bytes before the body in the anchored form (`"}`), so one small copy saves a hash update.
 */
const TAIL = new Uint8Array(MAX_STAMP_HEX_LENGTH + 64);

/** The whole MAC (callers keep half the region's length in hex digits). */
function stampDigest(
  key: Uint8Array | KeyObject,
  body: Uint8Array,
  stampStart: number,
  stampEnd: number,
  request?: RequestComponents,
): Buffer {
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
  const base = request === undefined ? undefined : requestBase(request);
  const mac = createHmac('sha256', key);
  if (base !== undefined) mac.update(base);
  mac.update(body.subarray(0, stampStart));
  const after = body.length - stampEnd;
  if (hexLength + after <= TAIL.length) {
    TAIL.fill(0x30, 0, hexLength);
    for (let i = 0; i < after; i++) TAIL[hexLength + i] = body[stampEnd + i] as number;
    mac.update(TAIL.subarray(0, hexLength + after));
  } else {
    mac.update(ZEROS.subarray(0, hexLength));
    mac.update(body.subarray(stampEnd));
  }
  return mac.digest();
}
