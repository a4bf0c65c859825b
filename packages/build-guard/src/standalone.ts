import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
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
 * What the executable would carry: the addon must load (else it scans with the JavaScript
 * engine only) and hold the development key its install made, never a release attestation
 * key — the executable embeds the whole addon, and a scanner is copied to places a client's
 * key must not go. `undefined` when it may be built, else why not.
 */
function addonRefusal(): string | undefined {
  const require = createRequire(import.meta.url);
  let mod: { native?: { keyId(): string }; loadError?: Error };
  let dev: { kid: string } | undefined;
  try {
    mod = require('@moat/native') as typeof mod;
    dev = (require('@moat/native/dev-key') as { readDevKey(): { kid: string } | undefined }).readDevKey();
  } catch (error) {
    return `@moat/native to load, got ${error instanceof Error ? error.message : String(error)}`;
  }
  if (mod.native === undefined) return `@moat/native's addon to load, got ${mod.loadError?.message ?? 'no addon'}`;
  const kid = mod.native.keyId();
  if (dev === undefined || dev.kid !== kid)
    return (
      `an addon built with a development key (the executable embeds it), got one with the release key "${kid}": ` +
      'build the executable in a project whose @moat/native made its own development key (no moat.client.json, no MOAT_ATTEST_KEY)'
    );
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
 * The executable embeds `@moat/native` whole, so it is refused when that addon holds a
 * release attestation key (an app's client key must not travel with a scanner): build it
 * where the addon made its own development key.
 *
 * @returns the path of the executable.
 * @throws {BuildGuardError} `ERR_USAGE` when the package is not built, the addon does not load
 *   or holds a release key, or Bun fails.
 */
export async function buildStandaloneScan(options: StandaloneScanOptions): Promise<string> {
  const entry = standaloneEntry();
  if (entry === undefined)
    throw new BuildGuardError(
      'ERR_USAGE',
      `expected moat-scan's standalone entry (dist/cli/moat-scan-standalone.js) near ${dirname(fileURLToPath(import.meta.url))}, got none: build the package first`,
    );
  const refusal = addonRefusal();
  if (refusal !== undefined) throw new BuildGuardError('ERR_USAGE', `expected ${refusal}`);
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
