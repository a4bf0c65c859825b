import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildVariant } from './build.js';
import { BuildGuardError } from './errors.js';

/** Options of {@link buildStandaloneScan}. */
export interface StandaloneScanOptions {
  /** The executable to write. */
  readonly outfile: string;
  /** Path of the `bun` executable (default: `bun` from this package's dependencies, else PATH). */
  readonly bunPath?: string;
}

/** The built entry of the standalone executable: next to the package's chunks, or in dist/ from the sources. */
function standaloneEntry(): string | undefined {
  for (const candidate of ['./cli/moat-scan-standalone.js', '../dist/cli/moat-scan-standalone.js']) {
    const path = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(path)) return path;
  }
  return undefined;
}

/**
 * Builds moat-scan as one executable (`bun build --compile --bytecode`): Bun's runtime, the
 * CLI and the native addon in one file that needs no Node.js and starts in about half Node's
 * time — most of a scan's wall time on a CI runner. Build it once (a runner image, a cache, a
 * release asset) and run it like ripgrep; building takes a second or two. Findings are the
 * same as the Node CLI's; its exact scan runs on one thread (the prefilter still uses every
 * core). libhs is still loaded from the system. Needs Bun where it is built.
 *
 * @returns the path of the executable.
 * @throws {BuildGuardError} `ERR_USAGE` when the package is not built or Bun fails.
 */
export async function buildStandaloneScan(options: StandaloneScanOptions): Promise<string> {
  const entry = standaloneEntry();
  if (entry === undefined)
    throw new BuildGuardError(
      'ERR_USAGE',
      `expected moat-scan's standalone entry (dist/cli/moat-scan-standalone.js) near ${dirname(fileURLToPath(import.meta.url))}, got none: build the package first`,
    );
  await buildVariant({
    entry,
    outfile: options.outfile,
    // moat-scan has no build flags: one variant, nothing to switch.
    registry: { variants: ['standalone'], features: {} },
    variant: 'standalone',
    bundler: 'bun',
    compile: true,
    bytecode: true,
    ...(options.bunPath === undefined ? {} : { bunPath: options.bunPath }),
  });
  return options.outfile;
}
