import { errorMessage } from '@moat/protocol/support';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ReadinessCheck } from './storage.js';

/** Backoff of a failing task: the delay before retry n (from 1) is `min(base · 2^(n-1), max)`. */
export interface Backoff {
  readonly baseMs: number;
  readonly maxMs: number;
}

function delayOf(backoff: Backoff, failures: number): number {
  return Math.min(backoff.baseMs * 2 ** Math.min(failures - 1, 30), backoff.maxMs);
}

interface TaskState {
  failures: number;
  lastError: string | undefined;
}

/**
 * Runs the verifier's background work — timers, refreshes, the record store's probe — so that
 * none of it can end the process: an error is logged, counted
 * (`moat_verifier_background_errors_total{task}`), shown by {@link checks} (so `/readyz` says
 * which task is failing) and retried with exponential backoff; the first success clears it.
 */
export class Supervisor {
  readonly #log: Logger;
  readonly #backoff: Backoff;
  readonly #tasks = new Map<string, TaskState>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #errors: Counter<'task'> | undefined;
  #closed = false;

  constructor(log: Logger, options: { registry?: Registry; backoff?: Backoff } = {}) {
    this.#log = log;
    this.#backoff = options.backoff ?? { baseMs: 250, maxMs: 10_000 };
    if (options.registry !== undefined) {
      this.#errors = new Counter({
        name: 'moat_verifier_background_errors_total',
        help: 'Errors of background tasks (each retried with backoff), by task',
        labelNames: ['task'],
        registers: [options.registry],
      });
      const tasks = this.#tasks;
      new Gauge({
        name: 'moat_verifier_background_failing',
        help: 'Background tasks whose last run failed',
        registers: [options.registry],
        collect() {
          this.set([...tasks.values()].filter((t) => t.failures > 0).length);
        },
      });
    }
  }

  /**
   * Runs `task` once now, in the background; when it fails, again after a backoff, until it
   * succeeds. Never throws, never rejects.
   */
  run(name: string, task: () => unknown, backoff: Backoff = this.#backoff): void {
    void this.#attempt(name, task, (ok, failures) => {
      if (!ok) this.#schedule(() => this.run(name, task, backoff), delayOf(backoff, failures));
    });
  }

  /**
   * Runs `task` every `intervalMs`; after a failure the next run comes after the backoff
   * delay instead (shorter or longer than the interval), until a run succeeds.
   */
  every(name: string, intervalMs: number, task: () => unknown): void {
    const loop = (delay: number) =>
      this.#schedule(
        () => void this.#attempt(name, task, (ok, failures) => loop(ok ? intervalMs : Math.min(this.#delay(failures), intervalMs * 4))),
        delay,
      );
    loop(intervalMs);
  }

  /** One check per task that is failing now, for `/readyz`. */
  checks(): ReadinessCheck[] {
    return [...this.#tasks.entries()]
      .filter(([, s]) => s.failures > 0)
      .map(([name, s]) => ({ name: `background:${name}`, ok: false, error: `${s.failures} failures in a row: ${s.lastError}` }));
  }

  /** Stops every timer (shutdown); tasks already running finish. */
  close(): void {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  #delay(failures: number): number {
    return delayOf(this.#backoff, failures);
  }

  #schedule(fn: () => void, delayMs: number): void {
    if (this.#closed) return;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, delayMs);
    timer.unref();
    this.#timers.add(timer);
  }

  async #attempt(name: string, task: () => unknown, then: (ok: boolean, failures: number) => void): Promise<void> {
    const state = this.#tasks.get(name) ?? { failures: 0, lastError: undefined };
    this.#tasks.set(name, state);
    let ok = true;
    try {
      await task();
      if (state.failures > 0) this.#log.warn({ task: name, failures: state.failures }, 'background task recovered');
      state.failures = 0;
      state.lastError = undefined;
    } catch (error) {
      ok = false;
      state.failures++;
      state.lastError = errorMessage(error);
      this.#errors?.inc({ task: name });
      // Every failure is counted; the log says the first and then every tenth, not one line per retry.
      if (state.failures === 1 || state.failures % 10 === 0)
        this.#log.error({ task: name, failures: state.failures, err: state.lastError }, 'background task failed; retrying with backoff');
    }
    try {
      then(ok, state.failures);
    } catch (error) {
      this.#log.error({ task: name, err: errorMessage(error) }, 'background task could not be rescheduled');
    }
  }
}
