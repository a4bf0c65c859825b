// Test helper: the moat-verifier CLI in a process of its own, as an operator runs it.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;

/** A running `moat-verifier` process, its URL and everything it printed so far. */
export interface SpawnedVerifier {
  readonly child: ChildProcess;
  readonly url: string;
  output(): string;
}

/**
 * Starts `node dist/cli.js` with `env` (in `cwd`) and resolves once it prints its URL (and
 * `ready`, when given, matches the output); rejects if it exits first.
 */
export function spawnVerifier(env: NodeJS.ProcessEnv, options: { cwd?: string; ready?: RegExp } = {}): Promise<SpawnedVerifier> {
  const child = spawn(process.execPath, [cli], {
    env,
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  return new Promise((resolve, reject) => {
    const seen = (d: Buffer) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m !== null && (options.ready === undefined || options.ready.test(out)))
        resolve({ child, url: m[1] as string, output: () => out });
    };
    child.stdout?.on('data', seen);
    child.stderr?.on('data', (d: Buffer) => (out += d));
    child.once('exit', (code) => reject(new Error(`moat-verifier exited ${code} before it listened: ${out}`)));
  });
}

/** Runs `moat-verifier keys add` with `env` and returns the key it printed. */
export function addKey(env: NodeJS.ProcessEnv, label: string): { id: string; key: string } {
  return JSON.parse(spawnSync(process.execPath, [cli, 'keys', 'add', '--label', label], { env, encoding: 'utf8' }).stdout) as {
    id: string;
    key: string;
  };
}
