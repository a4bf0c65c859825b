#!/usr/bin/env node
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { errorMessage, errorStack } from '@moat/protocol/support';
import { buildVariant } from '../build.js';
import { BuildGuardError } from '../errors.js';
import { validateRegistry } from '../registry.js';

const USAGE = `usage: moat-build --registry FILE --entry FILE --outdir DIR [options]

Builds every variant of the registry (or those named) from one codebase:
DIR/<variant>/<name>. feature("NAME") calls and define constants become literals.

options:
  --registry FILE     flag registry module (default export; .ts, .js or .json)
  --entry FILE        entry point
  --outdir DIR        output folder
  --variant NAME      build only this variant (repeatable)
  --bundler NAME      esbuild (default) or bun
  --name FILE         output file name (default index.js)
  --format FMT        esm (default) or cjs
  --minify            minify identifiers and whitespace too`;

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        registry: { type: 'string' },
        entry: { type: 'string' },
        outdir: { type: 'string' },
        variant: { type: 'string', multiple: true },
        bundler: { type: 'string' },
        name: { type: 'string' },
        format: { type: 'string' },
        minify: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`moat-build: ${errorMessage(error)}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  for (const required of ['registry', 'entry', 'outdir'] as const) {
    if (typeof values[required] !== 'string') {
      process.stderr.write(`moat-build: expected --${required}, got none\n${USAGE}\n`);
      return 2;
    }
  }
  const bundler = (values.bundler ?? 'esbuild') as string;
  if (bundler !== 'esbuild' && bundler !== 'bun') {
    process.stderr.write(`moat-build: expected --bundler esbuild or bun, got ${bundler}\n`);
    return 2;
  }
  const format = (values.format ?? 'esm') as string;
  if (format !== 'esm' && format !== 'cjs') {
    process.stderr.write(`moat-build: expected --format esm or cjs, got ${format}\n`);
    return 2;
  }
  const mod = (await import(
    pathToFileURL(resolve(values.registry as string)).href,
    (values.registry as string).endsWith('.json') ? { with: { type: 'json' } } : undefined
  )) as {
    default?: unknown;
  };
  const registry = validateRegistry(mod.default ?? mod);
  const variants = (values.variant as string[] | undefined) ?? [...registry.variants];
  for (const variant of variants) {
    const outfile = resolve(values.outdir as string, variant, (values.name as string | undefined) ?? 'index.js');
    const built = await buildVariant({
      entry: values.entry as string,
      outfile,
      registry,
      variant,
      bundler,
      format,
      minify: values.minify === true,
    });
    const on = Object.entries(built.features)
      .filter(([, v]) => v)
      .map(([k]) => k);
    process.stdout.write(`moat-build: ${variant} (${bundler}) → ${outfile}  features on: ${on.join(', ') || 'none'}\n`);
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`moat-build: ${error instanceof BuildGuardError ? error.message : errorStack(error)}\n`);
    process.exitCode = 2;
  },
);
