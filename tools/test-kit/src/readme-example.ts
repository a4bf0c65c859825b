import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Runs the first ```ts block of a package's README.md with Node, in the package's folder,
 * so the example imports the package by name through its exports map exactly as a user
 * would, and returns what it printed, line by line. The package must be built.
 */
export function runReadmeExample(packageDir: URL): string[] {
  const readme = readFileSync(new URL('README.md', packageDir), 'utf8');
  const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  if (example === undefined) throw new Error(`${fileURLToPath(packageDir)}README.md has no ts example`);
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', example], {
    cwd: fileURLToPath(packageDir),
    encoding: 'utf8',
  });
  return output.trimEnd().split('\n');
}
