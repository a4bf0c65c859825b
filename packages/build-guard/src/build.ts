import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { errorMessage } from '@moat/protocol/support';
import { build, type Format, type Platform } from 'esbuild';
import { BuildGuardError } from './errors.js';
import { moatFlags } from './esbuild.js';
import { type FlagRegistry, flagsFor } from './registry.js';

/** Options of {@link buildVariant}. */
export interface BuildVariantOptions {
  readonly entry: string;
  /** Output file of the bundle. */
  readonly outfile: string;
  readonly registry: FlagRegistry;
  readonly variant: string;
  /** `esbuild` (also what tsup runs) or `bun` (`bun build --feature=…`). Default `esbuild`. */
  readonly bundler?: 'esbuild' | 'bun';
  readonly format?: Format;
  readonly platform?: Platform;
  /** Full minification (identifiers too). Syntax minification, which drops dead branches, is always on. */
  readonly minify?: boolean;
  /** Path of the `bun` executable (default: `bun` from this package's dependencies, else PATH). */
  readonly bunPath?: string;
  /** Modules left out of the bundle (esbuild; with Bun when not compiling). */
  readonly external?: readonly string[];
  /** Text put first in the output, e.g. a `#!/usr/bin/env node` line (esbuild). */
  readonly banner?: string;
  /** With Bun: a standalone executable (`bun build --compile`) instead of a bundle. */
  readonly compile?: boolean;
  /**
   * With Bun: ship precompiled bytecode next to the source (`--bytecode`), so the program
   * starts without parsing its bundle (about half the cold start of moat-chat).
   */
  readonly bytecode?: boolean;
}

/** What {@link buildVariant} produced. */
export interface BuiltVariant {
  readonly variant: string;
  readonly bundler: 'esbuild' | 'bun';
  readonly outfile: string;
  readonly features: Readonly<Record<string, boolean>>;
}

function bunExecutable(explicit?: string): string {
  if (explicit !== undefined) return explicit;
  try {
    const require = createRequire(import.meta.url);
    return join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe');
  } catch {
    return 'bun';
  }
}

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    child.on('error', (error) => reject(new BuildGuardError('ERR_USAGE', `expected to run ${command}, got ${error.message}`)));
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new BuildGuardError('ERR_USAGE', `${command} ${args.join(' ')} exited with ${code}:\n${output}`)),
    );
  });
}

/**
 * Builds one variant of an app: every `feature()` call and `define` constant becomes a
 * literal from the registry, and the bundler removes what only the other variant needs.
 * With `bun`, the flags are first checked by the same pass esbuild uses (Bun itself treats
 * an unknown name as false), then `bun build --feature=NAME --define …` does the build.
 *
 * @throws {BuildGuardError} for an unknown flag, a non-literal `feature()` argument, an
 *   unknown variant, or a failing bundler.
 */
export async function buildVariant(options: BuildVariantOptions): Promise<BuiltVariant> {
  const flags = flagsFor(options.registry, options.variant);
  const bundler = options.bundler ?? 'esbuild';
  await mkdir(dirname(options.outfile), { recursive: true });
  const common = {
    entryPoints: [options.entry],
    bundle: true,
    format: options.format ?? 'esm',
    platform: options.platform ?? 'node',
    logLevel: 'silent' as const,
    plugins: [moatFlags({ features: flags.features, define: flags.define })],
    ...(options.external === undefined ? {} : { external: [...options.external] }),
  };
  try {
    if (bundler === 'esbuild') {
      await build({
        ...common,
        outfile: options.outfile,
        minify: options.minify ?? false,
        minifySyntax: true,
        ...(options.banner === undefined ? {} : { banner: { js: options.banner } }),
      });
    } else {
      // A check of every feature() call only: native addons are Bun's to embed.
      await build({ ...common, write: false, external: [...(options.external ?? []), '*.node'] });
      const args = options.compile
        ? ['build', '--compile', options.entry, `--outfile=${options.outfile}`]
        : [
            'build',
            options.entry,
            `--outfile=${options.outfile}`,
            `--target=${options.platform === 'browser' ? 'browser' : 'node'}`,
            `--format=${options.format ?? 'esm'}`,
          ];
      if (!options.compile) for (const name of options.external ?? []) args.push(`--external=${name}`);
      for (const [name, on] of Object.entries(flags.features)) if (on) args.push(`--feature=${name}`);
      for (const [key, value] of Object.entries(flags.define)) args.push('--define', `${key}=${value}`);
      if (options.bytecode) args.push('--bytecode');
      if (options.minify) args.push('--minify');
      else args.push('--minify-syntax');
      await run(bunExecutable(options.bunPath), args);
    }
  } catch (error) {
    if (error instanceof BuildGuardError) throw error;
    const errors = (error as { errors?: Array<{ text: string; detail?: unknown }> }).errors;
    const first = errors?.[0];
    if (first?.detail instanceof BuildGuardError) throw first.detail;
    throw new BuildGuardError(
      'ERR_USAGE',
      `expected the ${bundler} build of ${options.entry} to succeed, got: ${first?.text ?? errorMessage(error)}`,
    );
  }
  return { variant: options.variant, bundler, outfile: options.outfile, features: flags.features };
}

/** Builds every variant of the registry into `outdir/<variant>/<name>`. */
export async function buildAllVariants(
  options: Omit<BuildVariantOptions, 'variant' | 'outfile'> & { readonly outdir: string; readonly name?: string },
): Promise<BuiltVariant[]> {
  const built: BuiltVariant[] = [];
  for (const variant of options.registry.variants) {
    built.push(await buildVariant({ ...options, variant, outfile: join(options.outdir, variant, options.name ?? 'index.js') }));
  }
  return built;
}
