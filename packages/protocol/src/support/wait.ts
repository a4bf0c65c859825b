/**
 * `work`'s outcome, or `undefined` once `ms` passed (the work goes on, unawaited), or the
 * abort reason of `signal` as soon as it aborts: what a request waits for (a client's
 * discovery or enrollment, a verifier's in-process model call) never keeps it past its own
 * deadline or its client.
 *
 * @example
 * ```ts
 * const e = await waitAtMost(discovery, 3_000, request.signal); // undefined after 3 s
 * ```
 */
export function waitAtMost<T>(work: Promise<T>, ms: number | undefined, signal: AbortSignal | undefined): Promise<T | undefined> {
  if (signal?.aborted === true) return Promise.reject(signal.reason);
  if (ms === undefined && signal === undefined) return work;
  return new Promise<T | undefined>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const settle = (outcome: () => void) => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', gone);
      outcome();
    };
    const gone = () => settle(() => reject(signal?.reason));
    if (ms !== undefined) {
      timer = setTimeout(() => settle(() => resolve(undefined)), ms);
      // The wait must not hold the process open by itself.
      timer.unref?.();
    }
    signal?.addEventListener('abort', gone, { once: true });
    work.then(
      (value) => settle(() => resolve(value)),
      (error: unknown) => settle(() => reject(error)),
    );
  });
}
