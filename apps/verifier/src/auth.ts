import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { credentialOf } from '@moat/protocol';
import type { VerifierConfig } from './config.js';
import { ApiError } from './errors.js';
import type { ApiKeyCache } from './key-cache.js';
import type { Storage } from './storage.js';

/**
 * Who may call a route: `public` anyone; `client` a live API key of this verifier; `admin`
 * the admin token; `metrics` the metrics token or the admin token.
 */
export type Access = 'public' | 'client' | 'admin' | 'metrics';

/**
 * The client's API key: `x-api-key`, else a bearer token — the one credential rule of SPEC
 * §5.3, so the key that is authenticated is the key an `r1` stamp covers.
 */
export function apiKeyOf(headers: IncomingHttpHeaders): string | undefined {
  const key = credentialOf((name) => {
    const value = headers[name];
    return Array.isArray(value) ? value.join(', ') : value;
  });
  return key === '' ? undefined : key;
}

/**
 * Stage 1 of the pipeline, and the `client` access rule: the API key's id, from the cache or the storage.
 *
 * @throws {ApiError} 401 `authentication_error` without a key or with an unknown one.
 */
export async function authenticate(
  headers: IncomingHttpHeaders,
  keyCache: ApiKeyCache,
  storage: Storage,
): Promise<string> {
  const key = apiKeyOf(headers);
  const id = key === undefined ? undefined : await keyCache.resolve(key, (k) => storage.lookupApiKey(k));
  if (id === undefined)
    throw new ApiError(
      401,
      'authentication_error',
      key === undefined ? 'x-api-key header is required' : 'invalid x-api-key',
    );
  return id;
}

/** Whether the request carries `Authorization: Bearer <token>` for `token`, compared in constant time. */
export function hasBearer(req: IncomingMessage, token: Buffer): boolean {
  const auth = req.headers.authorization;
  if (typeof auth !== 'string' || !auth.startsWith('Bearer ')) return false;
  const given = Buffer.from(auth.slice(7));
  return given.length === token.length && timingSafeEqual(given, token);
}

/** The operator tokens, as bytes once. */
export interface OperatorTokens {
  readonly admin: Buffer;
  readonly metrics: Buffer | undefined;
}

/** The operator tokens of a configuration. */
export function operatorTokens(config: VerifierConfig): OperatorTokens {
  return {
    admin: Buffer.from(config.adminToken),
    metrics: config.metricsToken === undefined ? undefined : Buffer.from(config.metricsToken),
  };
}

/**
 * Admits a request to a route of the given access, or throws the 401 that says what is
 * missing. Returns the API key's id for `client` routes.
 */
export async function admit(
  access: Access,
  req: IncomingMessage,
  tokens: OperatorTokens,
  clients: { readonly keyCache: ApiKeyCache; readonly storage: Storage },
): Promise<string | undefined> {
  switch (access) {
    case 'public':
      return undefined;
    case 'client':
      return authenticate(req.headers, clients.keyCache, clients.storage);
    case 'admin':
      if (!hasBearer(req, tokens.admin)) throw new ApiError(401, 'authentication_error', 'admin bearer token required');
      return undefined;
    case 'metrics':
      // Per-signal series would tell a fake client which of its requests raised what: operators only.
      if (!hasBearer(req, tokens.admin) && (tokens.metrics === undefined || !hasBearer(req, tokens.metrics)))
        throw new ApiError(401, 'authentication_error', 'metrics bearer token (or the admin token) required');
      return undefined;
  }
}
