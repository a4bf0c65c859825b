/**
 * The one canonical form of a request target. The verifier routes on it and forwards exactly
 * it, so the route that is classified is the route the upstream gets, whatever the upstream
 * (or a proxy in front of it) does with slashes, escapes or parameters.
 *
 * Envoy's path normalization is the model (`merge_slashes`, decoding of unreserved
 * escapes, `path_with_escaped_slashes_action: REJECT_REQUEST`), made stricter because the
 * API's paths need nothing more than letters, digits, `-._~` and `/`:
 *
 * - origin-form only (`/path?query`): absolute-form (`http://host/path`) and asterisk-form
 *   (`*`) targets are refused, so the authority is never taken from the target;
 * - runs of `/` are merged into one (`/v1//messages` is `/v1/messages`);
 * - escapes of unreserved characters are decoded (`/v1/%6Dessages` is `/v1/messages`);
 * - any other escape is refused: `%2F` and `%5C` would be slashes to an upstream that
 *   decodes, `%3B` a parameter, `%3F` a query, `%25` a second round of decoding;
 * - `;` (matrix parameters, stripped by permissive frameworks), `.` and `..` segments
 *   (they resolve against the upstream's base path), and every character outside
 *   `A-Za-z0-9-._~/` in the path are refused;
 * - a trailing `/` is kept: `/v1/messages/` is not `/v1/messages`, so it names no route.
 *
 * The query is kept as received: it never decides the route.
 */
import { ApiError } from './errors.js';

/** A request target in canonical form. */
export interface CanonicalTarget {
  /** The canonical path: `/`-led, no empty, `.` or `..` segment, only `A-Za-z0-9-._~/`. */
  readonly path: string;
  /** `?` and the query as received, or `''`. */
  readonly query: string;
}

/** Why a target has no canonical form. */
export type TargetErrorCode =
  | 'ERR_TARGET_FORM'
  | 'ERR_TARGET_ESCAPE'
  | 'ERR_TARGET_CHARACTER'
  | 'ERR_TARGET_DOT_SEGMENT'
  | 'ERR_TARGET_QUERY';

/** A request target the verifier refuses: answered 400 `invalid_request_error`, and recorded. */
export class TargetError extends ApiError {
  readonly reason: TargetErrorCode;
  constructor(reason: TargetErrorCode, expected: string, received: string) {
    super(400, 'invalid_request_error', `request target: expected ${expected}, got ${received}`);
    this.reason = reason;
  }
}

/** Characters of a canonical path (besides `/`): RFC 3986 unreserved. */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
const PATH_CHARS = /^[A-Za-z0-9\-._~/]*$/;
const HEX2 = /^[0-9A-Fa-f]{2}$/;
/** Characters a query may hold as received (RFC 3986 query, plus `%` escapes; no `#`). */
const QUERY_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%[\]]*$/;

/** At most this much of a refused target is quoted back. */
const QUOTE_MAX = 80;

const quote = (text: string): string =>
  JSON.stringify(text.length > QUOTE_MAX ? `${text.slice(0, QUOTE_MAX)}…` : text).replace(/[\u007f-\uffff]/g, (c) => {
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });

/** Decodes the escapes of unreserved characters; any other escape is a {@link TargetError}. */
function decodeUnreserved(path: string): string {
  if (!path.includes('%')) return path;
  let out = '';
  for (let i = 0; i < path.length; i++) {
    const c = path[i] as string;
    if (c !== '%') {
      out += c;
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!HEX2.test(hex)) throw new TargetError('ERR_TARGET_ESCAPE', 'well-formed percent-escapes', quote(`%${hex}`));
    const decoded = String.fromCharCode(Number.parseInt(hex, 16));
    if (!UNRESERVED.test(decoded))
      throw new TargetError(
        'ERR_TARGET_ESCAPE',
        'no escape but of A-Z a-z 0-9 - . _ ~ in the path',
        quote(`%${hex.toUpperCase()}`),
      );
    out += decoded;
    i += 2;
  }
  return out;
}

/**
 * The canonical form of a raw request target (`req.url`).
 *
 * @throws {TargetError} for a target without one (see the module comment for the rules).
 *
 * @example
 * ```ts
 * canonicalTarget('/v1//%6Dessages?beta=true'); // { path: '/v1/messages', query: '?beta=true' }
 * canonicalTarget('/v1/messages;x');             // throws TargetError ERR_TARGET_CHARACTER
 * ```
 */
export function canonicalTarget(raw: string): CanonicalTarget {
  if (!raw.startsWith('/')) {
    const form = /^[A-Za-z][A-Za-z0-9+.-]*:/.test(raw) ? 'absolute-form' : raw === '*' ? 'asterisk-form' : quote(raw);
    throw new TargetError('ERR_TARGET_FORM', 'an origin-form target (/path?query)', form);
  }
  const q = raw.indexOf('?');
  const rawPath = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? '' : raw.slice(q);
  if (!QUERY_CHARS.test(query.slice(1)))
    throw new TargetError('ERR_TARGET_QUERY', 'a query of URI characters', quote(query));
  const path = decodeUnreserved(rawPath).replace(/\/{2,}/g, '/');
  if (!PATH_CHARS.test(path)) {
    const bad = [...path].find((c) => c !== '/' && !UNRESERVED.test(c)) ?? '';
    throw new TargetError(
      'ERR_TARGET_CHARACTER',
      'a path of A-Z a-z 0-9 - . _ ~ and /',
      `${quote(bad)} in ${quote(rawPath)}`,
    );
  }
  for (const segment of path.split('/'))
    if (segment === '.' || segment === '..')
      throw new TargetError('ERR_TARGET_DOT_SEGMENT', 'no . or .. segment', quote(rawPath));
  return { path, query };
}

/**
 * The target without the path a verifier is mounted under (`publicPathPrefix`): a request
 * that reaches it under `/anthropic/v1/messages` is routed as `/v1/messages`. A target
 * outside the prefix (a front end stripped it already) is left as it is.
 */
export function withoutPrefix(target: CanonicalTarget, prefix: string | undefined): CanonicalTarget {
  if (prefix === undefined || !underPrefix(target.path, prefix)) return target;
  return { path: target.path.slice(prefix.length) || '/', query: target.query };
}

/** Whether a path is the prefix itself or lies under it, segment by segment. */
export function underPrefix(path: string, prefix: string): boolean {
  return path.startsWith(prefix) && (path.length === prefix.length || path.charCodeAt(prefix.length) === 0x2f);
}
