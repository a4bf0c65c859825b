/**
 * `work`'s outcome, or `undefined` once `ms` passed (the work goes on, unawaited), or the
 * abort reason of `signal` as soon as it aborts: what a call waits for before it goes out
 * (an endpoint's discovery, an install's enrollment) never keeps it past its own deadline.
 */
export function waitAtMost<T>(work: Promise<T>, ms: number | undefined, signal: AbortSignal | undefined): Promise<T | undefined> {
  if (signal?.aborted === true) return Promise.reject(signal.reason);
  if (ms === undefined && signal === undefined) return work;
  return new Promise<T | undefined>((resolve, reject) => {
    const done = () => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', gone);
    };
    const gone = () => {
      done();
      reject(signal?.reason);
    };
    const timer = ms === undefined ? undefined : setTimeout(() => (done(), resolve(undefined)), ms);
    // The wait must not hold the process open by itself.
    timer?.unref?.();
    signal?.addEventListener('abort', gone, { once: true });
    work.then(
      (value) => (done(), resolve(value)),
      (error: unknown) => (done(), reject(error)),
    );
  });
}
