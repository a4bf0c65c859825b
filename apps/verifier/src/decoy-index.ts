import { setImmediate as yieldLoop } from 'node:timers/promises';
import { CanaryIndex, DECOY_PERIOD_MS, decoyPeriod } from '@moat/distill-guard/server';
import type { Storage } from './storage.js';

/** Options of {@link DecoyIndexCache}. */
export interface DecoyIndexOptions {
  /** How far back decoys are traced, in days (default 90): a model distilled from older traffic is not named. */
  readonly retentionDays?: number;
  /** How often the index is rebuilt at the latest (default 5 min). */
  readonly refreshMs?: number;
  /** Keys indexed between two turns of the event loop (default 50), so requests never wait for a build. */
  readonly sliceKeys?: number;
  readonly now?: () => number;
  /**
   * Runs a rebuild off the request path; it must handle the rebuild's failure (the verifier's
   * supervisor: logged, counted, retried). By default a failed rebuild is dropped and tried
   * again when next due.
   */
  readonly background?: (name: string, task: () => Promise<void>) => void;
}

/**
 * The decoys every API key was served over the retention window, indexed for tracing:
 * rebuilt in the background when keys are added, when the rotation period turns and at least
 * every `refreshMs`. Each (key, period) pair is indexed once, in slices between which the
 * event loop runs; until the first build, nothing is traced.
 */
export class DecoyIndexCache {
  readonly #storage: Storage;
  readonly #index: CanaryIndex;
  readonly #periods: number;
  readonly #refreshMs: number;
  readonly #slice: number;
  readonly #now: () => number;
  readonly #background: (name: string, task: () => Promise<void>) => void;
  #built = false;
  #builtAt = 0;
  /** When the keys were last listed: a check that finds nothing new still counts, so the next is 10 s later. */
  #checkedAt = 0;
  #keys = -1;
  #period = -1;
  #building: Promise<void> | undefined;

  constructor(storage: Storage, secret: Uint8Array, options: DecoyIndexOptions = {}) {
    this.#storage = storage;
    this.#index = new CanaryIndex({ secret, keys: [], periods: [] });
    // The periods that overlap the window: the current one and every one that began after its start.
    this.#periods = Math.ceil(((options.retentionDays ?? 90) * 86_400_000) / DECOY_PERIOD_MS) + 1;
    this.#refreshMs = options.refreshMs ?? 300_000;
    this.#slice = options.sliceKeys ?? 50;
    this.#now = options.now ?? Date.now;
    this.#background = options.background ?? ((_, task) => void task().catch(() => {}));
  }

  /** The index as built so far; starts a rebuild when it is due (every `refreshMs`, and every 10 s when keys were added). */
  current(): CanaryIndex | undefined {
    const now = this.#now();
    if (this.#building === undefined && (now - this.#builtAt > this.#refreshMs || now - this.#checkedAt > 10_000))
      this.#background('decoy-index', () => this.refresh());
    return this.#built ? this.#index : undefined;
  }

  /** Whether the index was built once: before, no request can be traced for decoys. */
  get built(): boolean {
    return this.#built;
  }

  /** Periods the index covers, oldest first, and how many keys and tokens it holds. */
  get stats(): { periods: number[]; keys: number; tokens: number } {
    return { periods: this.#index.periods, keys: this.#index.size, tokens: this.#index.tokens };
  }

  /** Brings the index up to date (new keys, a new period, or when due) and resolves when done. */
  refresh(force = false): Promise<void> {
    this.#building ??= (async () => {
      try {
        this.#checkedAt = this.#now();
        const keys = (await this.#storage.listApiKeys()).map((k) => k.id);
        const period = decoyPeriod(this.#now());
        const due = this.#now() - this.#builtAt > this.#refreshMs;
        if (!force && !due && keys.length === this.#keys && period === this.#period) return;
        // The next period too: decoys served from its first second are traced from then, not
        // from the first rebuild after it began.
        const periods = Array.from({ length: this.#periods + 1 }, (_, i) => period + 1 - i);
        for (let i = 0; i < keys.length; i += this.#slice) {
          this.#index.add(keys.slice(i, i + this.#slice), periods);
          if (i + this.#slice < keys.length) await yieldLoop();
        }
        this.#index.retain(period - this.#periods + 1);
        this.#keys = keys.length;
        this.#period = period;
        this.#built = true;
        this.#builtAt = this.#now();
      } finally {
        this.#building = undefined;
      }
    })();
    return this.#building;
  }
}
