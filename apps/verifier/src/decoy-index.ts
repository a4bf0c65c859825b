import { CanaryIndex, decoyPeriod } from '@moat/distill-guard/server';
import type { Storage } from './storage.js';
import type { Supervisor } from './supervise.js';

/**
 * The decoys every API key was served in the current and the previous rotation period,
 * indexed for tracing: rebuilt in the background when keys are added and at least every
 * `refreshMs`, so a request never waits for it (until the first build, nothing is traced).
 */
export class DecoyIndexCache {
  readonly #storage: Storage;
  readonly #secret: Uint8Array;
  readonly #refreshMs: number;
  #index: CanaryIndex | undefined;
  #builtAt = 0;
  #keys = -1;
  #building: Promise<void> | undefined;
  readonly #background: (name: string, task: () => Promise<void>) => void;

  /**
   * @param background runs a rebuild off the request path; it must handle the rebuild's
   * failure (the verifier's {@link Supervisor}: logged, counted, retried). By default a failed
   * rebuild is dropped and tried again when next due.
   */
  constructor(
    storage: Storage,
    secret: Uint8Array,
    refreshMs = 300_000,
    background: (name: string, task: () => Promise<void>) => void = (_, task) => void task().catch(() => {}),
  ) {
    this.#storage = storage;
    this.#secret = secret;
    this.#refreshMs = refreshMs;
    this.#background = background;
  }

  /** The index as built so far; starts a rebuild when it is due (every `refreshMs`, and every 10 s when keys were added). */
  current(): CanaryIndex | undefined {
    const age = Date.now() - this.#builtAt;
    if (this.#building === undefined && (age > this.#refreshMs || age > 10_000)) this.#background('decoy-index', () => this.refresh());
    return this.#index;
  }

  /** Rebuilds now (when keys changed or the index is due) and resolves when done. */
  refresh(force = false): Promise<void> {
    this.#building ??= (async () => {
      try {
        const keys = (await this.#storage.listApiKeys()).map((k) => k.id);
        if (!force && keys.length === this.#keys && Date.now() - this.#builtAt <= this.#refreshMs) return;
        const period = decoyPeriod();
        this.#index = new CanaryIndex({ secret: this.#secret, keys, periods: [period, period - 1] });
        this.#keys = keys.length;
        this.#builtAt = Date.now();
      } finally {
        this.#building = undefined;
      }
    })();
    return this.#building;
  }
}
