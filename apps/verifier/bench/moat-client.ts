/**
 * `@moat/client` for the benchmarks. It is not a dependency of the verifier (the client's
 * tests depend on the verifier, and turbo refuses the cycle), so it is loaded from its build
 * and typed here by the little the benchmarks use.
 */
export const { createMoatFetch } = (await import(new URL('../../../packages/client/dist/index.js', import.meta.url).href)) as {
  createMoatFetch: (options: Record<string, unknown>) => typeof fetch & { close(): Promise<void> };
};
