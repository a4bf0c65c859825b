import { TELEMETRY_LIMITS, type TelemetryBatch, type TelemetryEvent } from '@moat/protocol';
import { createWarner, type Warner } from '@moat/protocol/support';

/** Options of {@link TelemetryQueue}. */
export interface TelemetryQueueOptions {
  /** Absolute URL of the verifier's telemetry endpoint (`{base}/v1/telemetry`). */
  readonly endpoint: string | URL;
  /** Client version and entrypoint, as in the attribution block. */
  readonly client: { readonly cv: string; readonly ep: string };
  /** Extra request headers (for example the API key). */
  readonly headers?: Readonly<Record<string, string>> | undefined;
  /** The fetch to send with (default `globalThis.fetch`). */
  readonly fetch?: typeof fetch | undefined;
  /** Events held at most; beyond it the oldest are dropped and counted (default 1,000). */
  readonly maxQueued?: number;
  /** Events per batch, at most the protocol's 100 (default 100). */
  readonly batchSize?: number;
  /** Flush every this many milliseconds while events wait (default 5,000). */
  readonly flushIntervalMs?: number;
  /** First retry delay after a failed send; doubles up to `maxBackoffMs` (default 500). */
  readonly initialBackoffMs?: number;
  /** Longest retry delay (default 30,000). */
  readonly maxBackoffMs?: number;
  /** Per-request timeout (default 5,000). */
  readonly timeoutMs?: number;
  /** Flush once more when the process is about to exit (default true). */
  readonly flushOnExit?: boolean;
  /** Called with a message when something goes wrong; never with event contents. */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Clock, for tests. */
  readonly now?: () => number;
}

/** Counters of a {@link TelemetryQueue}. */
export interface TelemetryQueueStats {
  readonly queued: number;
  readonly sent: number;
  /** Dropped because the queue was full (the endpoint was down for long). */
  readonly dropped: number;
  /** Dropped because the endpoint refused the batch as malformed (4xx other than 408/429). */
  readonly rejected: number;
  /** Failed send attempts (network errors, timeouts, 408/429/5xx). */
  readonly failures: number;
  readonly lastError: string | undefined;
}

const encoder = new TextEncoder();

/**
 * A bounded, batched telemetry queue that never blocks and never throws into the caller.
 * `push` is synchronous and O(1); batches go out when `batchSize` events wait, every
 * `flushIntervalMs`, and at exit. A failed send keeps the events and retries with
 * exponential backoff and jitter; while the endpoint stays down, the oldest events are
 * dropped beyond `maxQueued` and counted, and the next batch that gets through reports the
 * count as a `layer_degraded` event.
 *
 * @example
 * ```ts
 * const queue = new TelemetryQueue({ endpoint: 'http://127.0.0.1:8787/v1/telemetry', client: { cv: '1.4.2', ep: 'cli' } });
 * queue.push({ type: 'gateway_detected', ts: Math.floor(Date.now() / 1000), gateways: ['litellm'] });
 * await queue.close();
 * ```
 */
export class TelemetryQueue {
  readonly #warn: Warner;
  readonly #options: Required<Omit<TelemetryQueueOptions, 'headers' | 'onWarning' | 'fetch' | 'now'>> & {
    readonly headers: Readonly<Record<string, string>> | undefined;
    readonly onWarning: ((message: string) => void) | undefined;
  };
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  #events: TelemetryEvent[] = [];
  #sent = 0;
  #dropped = 0;
  #droppedReported = 0;
  #rejected = 0;
  #failures = 0;
  #lastError: string | undefined;
  #backoffMs = 0;
  #retryAt = 0;
  #inFlight: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  readonly #onExit = () => {
    void this.flush();
  };

  constructor(options: TelemetryQueueOptions) {
    this.#warn = createWarner('telemetry', options.onWarning);
    this.#options = {
      endpoint: options.endpoint,
      client: options.client,
      headers: options.headers,
      onWarning: options.onWarning,
      maxQueued: Math.max(1, options.maxQueued ?? 1_000),
      batchSize: Math.min(TELEMETRY_LIMITS.events, Math.max(1, options.batchSize ?? TELEMETRY_LIMITS.events)),
      flushIntervalMs: options.flushIntervalMs ?? 5_000,
      initialBackoffMs: options.initialBackoffMs ?? 500,
      maxBackoffMs: options.maxBackoffMs ?? 30_000,
      timeoutMs: options.timeoutMs ?? 5_000,
      flushOnExit: options.flushOnExit ?? true,
    };
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#now = options.now ?? Date.now;
    if (this.#options.flushIntervalMs > 0) {
      this.#timer = setInterval(() => void this.flush(), this.#options.flushIntervalMs);
      this.#timer.unref?.();
    }
    if (this.#options.flushOnExit && typeof process !== 'undefined') process.once('beforeExit', this.#onExit);
  }

  /** Queues one event. Synchronous, never throws, never waits for the network. */
  push(event: TelemetryEvent): void {
    if (this.#closed) return;
    this.#events.push(event);
    if (this.#events.length > this.#options.maxQueued) {
      this.#events.shift();
      this.#dropped++;
    }
    if (this.#events.length >= this.#options.batchSize) queueMicrotask(() => void this.flush());
  }

  /** Counters for status pages and tests. */
  stats(): TelemetryQueueStats {
    return {
      queued: this.#events.length,
      sent: this.#sent,
      dropped: this.#dropped,
      rejected: this.#rejected,
      failures: this.#failures,
      lastError: this.#lastError,
    };
  }

  /**
   * Sends what is queued, batch by batch, until the queue is empty or a send fails (then a
   * retry is scheduled with backoff). Resolves when done; never rejects.
   */
  flush(): Promise<void> {
    if (this.#inFlight !== undefined) return this.#inFlight;
    if (this.#events.length === 0 || this.#now() < this.#retryAt) return Promise.resolve();
    this.#inFlight = this.#drain().finally(() => {
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  /** Stops the timers and makes one last flush attempt. Later pushes are ignored. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    if (typeof process !== 'undefined') process.removeListener('beforeExit', this.#onExit);
    this.#retryAt = 0;
    await this.flush();
  }

  async #drain(): Promise<void> {
    while (this.#events.length > 0) {
      const batch = this.#takeBatch();
      const outcome = await this.#send(batch.body);
      if (outcome === 'sent') {
        this.#sent += batch.count;
        this.#droppedReported += batch.droppedReported;
        this.#backoffMs = 0;
        continue;
      }
      if (outcome === 'rejected') {
        this.#rejected += batch.count;
        this.#droppedReported += batch.droppedReported;
        continue;
      }
      // Retry later: put the events back in front (oldest first), respecting the bound.
      this.#events.unshift(...batch.events);
      while (this.#events.length > this.#options.maxQueued) {
        this.#events.shift();
        this.#dropped++;
      }
      this.#scheduleRetry();
      return;
    }
  }

  #takeBatch(): { body: string; events: TelemetryEvent[]; count: number; droppedReported: number } {
    const events: TelemetryEvent[] = [];
    const extra: TelemetryEvent[] = [];
    const unreported = this.#dropped - this.#droppedReported;
    if (unreported > 0) {
      extra.push({
        type: 'layer_degraded',
        ts: Math.floor(this.#now() / 1000),
        layer: 'telemetry',
        reason: `dropped ${unreported} events`,
      });
    }
    const room = this.#options.batchSize - extra.length;
    const encode = (list: TelemetryEvent[]) =>
      JSON.stringify({ v: 1, client: this.#options.client, events: list } satisfies TelemetryBatch);
    while (events.length < room && this.#events.length > 0) {
      const next = this.#events[0] as TelemetryEvent;
      // Keep the batch within the protocol's byte limit; a single oversized event is dropped.
      if (encoder.encode(encode([...extra, ...events, next])).length > TELEMETRY_LIMITS.bytes) {
        if (events.length === 0) {
          this.#events.shift();
          this.#rejected++;
          continue;
        }
        break;
      }
      events.push(next);
      this.#events.shift();
    }
    return { body: encode([...extra, ...events]), events, count: events.length, droppedReported: Math.max(unreported, 0) };
  }

  async #send(body: string): Promise<'sent' | 'rejected' | 'retry'> {
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(), this.#options.timeoutMs);
    timeout.unref?.();
    try {
      const response = await this.#fetch(this.#options.endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...this.#options.headers },
        body,
        signal: controller.signal,
      });
      await response.body?.cancel().catch(() => {});
      if (response.ok) return 'sent';
      this.#lastError = `HTTP ${response.status}`;
      if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
        this.#warn(`telemetry batch refused with HTTP ${response.status}; dropped`);
        return 'rejected';
      }
    } catch (error) {
      this.#lastError = error instanceof Error ? (error.name === 'AbortError' ? 'timeout' : error.message) : String(error);
    } finally {
      clearTimeout(timeout);
    }
    this.#failures++;
    return 'retry';
  }

  #scheduleRetry(): void {
    const base = this.#backoffMs === 0 ? this.#options.initialBackoffMs : Math.min(this.#backoffMs * 2, this.#options.maxBackoffMs);
    this.#backoffMs = base;
    const delay = base / 2 + Math.random() * (base / 2); // jitter: [base/2, base)
    this.#retryAt = this.#now() + delay;
    if (this.#failures === 1 || this.#failures % 10 === 0)
      this.#warn(`telemetry endpoint unreachable (${this.#lastError}); retrying in ${Math.round(delay)} ms`);
    if (this.#closed) return;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryAt = 0;
      void this.flush();
    }, delay);
    this.#retryTimer.unref?.();
  }
}
