import type { IncomingHttpHeaders } from 'node:http';
import { ApiError } from '../errors.js';
import type { ApiKeyCache } from '../key-cache.js';
import type { Storage } from '../storage.js';

/** The client's API key: `x-api-key`, else a bearer token. */
export function apiKeyOf(headers: IncomingHttpHeaders): string | undefined {
  const header = headers['x-api-key'];
  if (typeof header === 'string' && header !== '') return header;
  const auth = headers.authorization;
  return typeof auth === 'string' && auth.startsWith('Bearer ') && auth.length > 7 ? auth.slice(7) : undefined;
}

/**
 * Stage 2: the API key's id, from the cache or the storage.
 *
 * @throws {ApiError} 401 `authentication_error` without a key or with an unknown one.
 */
export async function authenticate(headers: IncomingHttpHeaders, keyCache: ApiKeyCache, storage: Storage): Promise<string> {
  const key = apiKeyOf(headers);
  const id = key === undefined ? undefined : await keyCache.resolve(key, (k) => storage.lookupApiKey(k));
  if (id === undefined)
    throw new ApiError(401, 'authentication_error', key === undefined ? 'x-api-key header is required' : 'invalid x-api-key');
  return id;
}
