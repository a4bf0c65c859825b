import type { IncomingHttpHeaders } from 'node:http';
import { credentialOf } from '@moat/protocol';
import { ApiError } from '../errors.js';
import type { ApiKeyCache } from '../key-cache.js';
import type { Storage } from '../storage.js';

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
