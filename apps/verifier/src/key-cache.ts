import { createHmac, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import { LruMap } from '@moat/protocol/support';

/** Options of {@link ApiKeyCache}. */
export interface ApiKeyCacheOptions {
  /** How long a successful lookup is reused (default 5 s): the bound on how late a revocation takes effect. */
  readonly ttlMs?: number;
  /** Entries kept at most (default 10,000); the oldest go first. */
  readonly maxEntries?: number;
  readonly now?: () => number;
}

/**
 * Remembers recent successful API-key lookups so a busy key does not cost a database round
 * trip per request. Entries are named by a keyed hash under a per-process random key, never
 * by the API key itself; failed lookups are not cached, so unknown keys cannot fill it.
 */
export class ApiKeyCache {
  readonly #key: KeyObject = createSecretKey(randomBytes(32));
  readonly #entries: LruMap<string, { id: string; expires: number }>;
  readonly #ttlMs: number;
  readonly #now: () => number;

  constructor(options: ApiKeyCacheOptions = {}) {
    this.#ttlMs = options.ttlMs ?? 5_000;
    this.#entries = new LruMap({ maxSize: options.maxEntries ?? 10_000 });
    this.#now = options.now ?? Date.now;
  }

  /**
   * The key's id: from the cache while fresh, otherwise from `lookup` (and cached when found).
   * When `lookup` fails (the store is down) an expired entry still names the key, so the
   * refusal the client gets is recorded under its key; the error is rethrown otherwise.
   */
  async resolve(apiKey: string, lookup: (apiKey: string) => Promise<string | undefined> | string | undefined): Promise<string | undefined> {
    const name = createHmac('sha256', this.#key).update(apiKey).digest('base64');
    const hit = this.#entries.peek(name);
    const now = this.#now();
    if (hit !== undefined && hit.expires > now) return hit.id;
    let id: string | undefined;
    try {
      id = await lookup(apiKey);
    } catch (error) {
      if (hit !== undefined) return hit.id;
      throw error;
    }
    if (id === undefined) {
      if (hit !== undefined) this.#entries.delete(name);
      return undefined;
    }
    this.#entries.set(name, { id, expires: now + this.#ttlMs });
    return id;
  }

  /** Entries held (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }

  /** Forgets everything, e.g. after keys were revoked. */
  clear(): void {
    this.#entries.clear();
  }
}
