import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

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

/**
 * {@link runReadmeExample} without blocking the event loop: for an example that talks to a
 * server running in the test's own process.
 */
export async function runReadmeExampleAsync(packageDir: URL, env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const readme = readFileSync(new URL('README.md', packageDir), 'utf8');
  const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  if (example === undefined) throw new Error(`${fileURLToPath(packageDir)}README.md has no ts example`);
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', example], {
    cwd: fileURLToPath(packageDir),
    encoding: 'utf8',
    env,
  });
  return stdout.trimEnd().split('\n');
}
