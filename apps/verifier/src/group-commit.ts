/** One write's outcome in a group commit: its value, or the error that undid it alone. */
export type Settled<R> = { readonly ok: true; readonly value: R } | { readonly ok: false; readonly error: unknown };

/** What a {@link GroupCommit} has done since it was made. */
export interface CommitStats {
  /** Transactions (group commits) run. */
  readonly commits: number;
  /** Writes they carried. */
  readonly writes: number;
}

/**
 * Group commit: the writes asked for during one turn of the event loop are committed
 * together, in one transaction, once the turn's I/O callbacks have run (`setImmediate`) —
 * PostgreSQL's `commit_delay` without the delay, SQLite's batch transaction. Each write's
 * promise settles only after the commit that holds it: resolved when it is durable, rejected
 * with its own error when it alone failed, or with the commit's error when the whole
 * transaction failed (then none of its writes is durable). Under sequential load nothing
 * waits longer than before (a batch of one, committed on the same turn); under concurrent
 * load many requests share one commit.
 */
/** The most writes one transaction carries. */
const MAX_GROUP = 1024;

export class GroupCommit<T, R> {
  readonly #commit: (batch: readonly T[]) => Promise<Array<Settled<R>>> | Array<Settled<R>>;
  #queue: Array<{ item: T; resolve: (value: R) => void; reject: (error: unknown) => void }> = [];
  #scheduled = false;
  #commits = 0;
  #writes = 0;

  /** `commit` writes a batch in one transaction and settles each of its items, in order. */
  constructor(commit: (batch: readonly T[]) => Promise<Array<Settled<R>>> | Array<Settled<R>>) {
    this.#commit = commit;
  }

  /** Transactions run and writes carried so far. */
  get stats(): CommitStats {
    return { commits: this.#commits, writes: this.#writes };
  }

  /** Queues a write for this turn's commit; settles once that commit is durable (or failed). */
  write(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => void this.#flush());
      }
    });
  }

  /**
   * Commits what is queued now, without waiting for the turn to end (closing a store); a
   * synchronous `commit` has written the batch when this returns.
   */
  async flush(): Promise<void> {
    while (this.#queue.length > 0) await this.#flush();
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    // At most MAX_GROUP writes per transaction: a burst (a large batch's records) is committed
    // over several turns, so no one commit holds the event loop for long.
    const batch = this.#queue.length <= MAX_GROUP ? this.#queue : this.#queue.slice(0, MAX_GROUP);
    this.#queue = batch === this.#queue ? [] : this.#queue.slice(MAX_GROUP);
    if (this.#queue.length > 0 && !this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => void this.#flush());
    }
    if (batch.length === 0) return;
    this.#commits++;
    this.#writes += batch.length;
    let results: Array<Settled<R>>;
    try {
      results = await this.#commit(batch.map((op) => op.item));
    } catch (error) {
      // The commit itself failed: nothing in the batch is durable.
      for (const op of batch) op.reject(error);
      return;
    }
    for (const [i, op] of batch.entries()) {
      const result = results[i];
      if (result === undefined) op.reject(new Error('group commit: no outcome for a write'));
      else if (result.ok) op.resolve(result.value);
      else op.reject(result.error);
    }
  }
}

/** Runs `run`, its outcome as a {@link Settled}. */
export function settle<R>(run: () => R): Settled<R> {
  try {
    return { ok: true, value: run() };
  } catch (error) {
    return { ok: false, error };
  }
}
