import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A fresh npm project that installed packed workspace packages, as a user from npm would. */
export interface PackedConsumer {
  /** The project folder. */
  readonly dir: string;
  /** Tarball path by package folder name (`fingerprint` → …/moat-fingerprint-0.0.0.tgz). */
  readonly tarballs: Readonly<Record<string, string>>;
  /** Runs an ES module in the project with Node and returns what it printed. */
  run(source: string, env?: NodeJS.ProcessEnv): string;
}

/**
 * The release dry run: `pnpm pack` each named package of `packages/` (workspace ranges become
 * real versions, `files` decides what ships), then install the tarballs alone into a new npm
 * project — `overrides` make the packed dependencies win over the registry, and
 * `omitOptional` leaves out optional dependencies (a consumer with no native addon).
 */
export function packedConsumer(names: readonly string[], options: { omitOptional?: boolean } = {}): PackedConsumer {
  const packages = fileURLToPath(new URL('../../../packages/', import.meta.url));
  const out = mkdtempSync(join(tmpdir(), 'moat-pack-'));
  for (const name of names) execFileSync('pnpm', ['pack', '--pack-destination', out], { cwd: join(packages, name), stdio: 'pipe' });
  const files = readdirSync(out);
  const tarballs = Object.fromEntries(
    names.map((name) => {
      const file = files.find((f) => f.startsWith(`moat-${name}-`));
      if (file === undefined) throw new Error(`expected a tarball for @moat/${name} in ${out}, got ${files.join(', ')}`);
      return [name, join(out, file)];
    }),
  );
  const deps = Object.fromEntries(names.map((name) => [`@moat/${name}`, `file:${tarballs[name]}`]));
  const dir = mkdtempSync(join(tmpdir(), 'moat-consumer-'));
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'consumer', private: true, type: 'module', dependencies: deps, overrides: deps }),
  );
  const flags = ['--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error', ...(options.omitOptional ? ['--omit=optional'] : [])];
  execFileSync('npm', ['install', ...flags], { cwd: dir, stdio: 'pipe' });
  return {
    dir,
    tarballs,
    run(source, env = process.env) {
      writeFileSync(join(dir, 'main.mjs'), source);
      return execFileSync(process.execPath, ['main.mjs'], { cwd: dir, encoding: 'utf8', env });
    },
  };
}
