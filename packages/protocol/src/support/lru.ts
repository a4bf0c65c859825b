/** Options of {@link LruMap}. */
export interface LruMapOptions<K, V> {
  /** Entries kept at most; the least recently used goes first. */
  readonly maxSize: number;
  /** Called with each entry evicted to make room. */
  readonly onEvict?: (key: K, value: V) => void;
}

/**
 * A `Map` bounded to `maxSize` entries that evicts the least recently used one. `get` and
 * `set` make an entry the most recent; `peek` and iteration do not.
 *
 * @example
 * ```ts
 * const cache = new LruMap<string, number>({ maxSize: 2 });
 * cache.set('a', 1); cache.set('b', 2); cache.get('a'); cache.set('c', 3); // evicts "b"
 * ```
 */
export class LruMap<K, V> {
  readonly #map = new Map<K, V>();
  readonly #maxSize: number;
  readonly #onEvict: ((key: K, value: V) => void) | undefined;
  /** Entries evicted so far. */
  evicted = 0;

  constructor(options: LruMapOptions<K, V>) {
    if (!Number.isInteger(options.maxSize) || options.maxSize < 1) throw new LruMapError(options.maxSize);
    this.#maxSize = options.maxSize;
    this.#onEvict = options.onEvict;
  }

  get size(): number {
    return this.#map.size;
  }

  /** The value, made most recent. */
  get(key: K): V | undefined {
    const value = this.#map.get(key);
    if (value === undefined) return undefined;
    this.#map.delete(key);
    this.#map.set(key, value);
    return value;
  }

  /** The value, recency unchanged. */
  peek(key: K): V | undefined {
    return this.#map.get(key);
  }

  has(key: K): boolean {
    return this.#map.has(key);
  }

  /** Stores the value as most recent, evicting the least recent entry when full. */
  set(key: K, value: V): this {
    if (this.#map.has(key)) this.#map.delete(key);
    else if (this.#map.size >= this.#maxSize) {
      const oldest = this.#map.keys().next();
      if (oldest.done !== true) {
        const evicted = this.#map.get(oldest.value) as V;
        this.#map.delete(oldest.value);
        this.evicted++;
        this.#onEvict?.(oldest.value, evicted);
      }
    }
    this.#map.set(key, value);
    return this;
  }

  delete(key: K): boolean {
    return this.#map.delete(key);
  }

  clear(): void {
    this.#map.clear();
  }

  /** Entries from least to most recent. */
  entries(): IterableIterator<[K, V]> {
    return this.#map.entries();
  }

  keys(): IterableIterator<K> {
    return this.#map.keys();
  }

  values(): IterableIterator<V> {
    return this.#map.values();
  }

  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.#map.entries();
  }
}

/** An {@link LruMap} was given a `maxSize` out of range. */
export class LruMapError extends Error {
  override readonly name = 'LruMapError';
  readonly code = 'ERR_LRU_SIZE';
  constructor(got: unknown) {
    super(`ERR_LRU_SIZE: expected maxSize to be an integer of at least 1, got ${String(got)}`);
  }
}
