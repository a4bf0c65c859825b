/**
 * `feature("NAME")` — a build-time flag. Every call is replaced by `true` or `false` when the
 * code is bundled with the `moatFlags` esbuild plugin (or `bun build --feature=NAME` with
 * `feature` from `bun:bundle`), so the bundler deletes the branches it guards and everything
 * reachable only through them. The argument must be a string literal naming a flag of the
 * registry.
 *
 * Unbundled (tests, `node src/main.ts`), the function reads the comma-separated
 * `MOAT_FEATURES` environment variable, so internal code can run in development.
 *
 * @example
 * ```ts
 * import { feature } from '@moat/build-guard/feature';
 * if (feature('DEBUG_COMMANDS')) registerDebugCommands();
 * ```
 */
export function feature(name: string): boolean {
  const enabled = globalThis.process?.env?.MOAT_FEATURES ?? '';
  return enabled.split(',').some((flag) => flag.trim() === name);
}
