import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';

/** A server the benches run in a process of its own: where it serves, and the API key it made. */
export interface RoleProcess {
  readonly process: ChildProcess;
  readonly url: string;
  readonly apiKey?: string;
}

/**
 * Starts `script` with `args` as a server process (an IPC channel open, so it can answer `cpu`)
 * and waits for the first line it prints: `{ url, apiKey? }`.
 */
export async function startRole(
  script: string,
  args: string[],
  nodeArgs: string[] = [],
  env: Record<string, string> = {},
): Promise<RoleProcess> {
  const proc = spawn(process.execPath, [...nodeArgs, script, ...args], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: { ...process.env, ...env },
  });
  const [line] = (await once(proc.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  return { process: proc, ...(JSON.parse(line.toString()) as { url: string; apiKey?: string }) };
}

/** `BENCH_BUILDS=name=/abs/dist/index.js,…`: other builds of the verifier to measure in the same run. */
export function benchBuilds(): Array<{ readonly name: string; readonly dist: string }> {
  return (process.env.BENCH_BUILDS ?? '')
    .split(',')
    .filter((b) => b !== '')
    .map((b) => {
      const [name, dist] = b.split('=') as [string, string];
      return { name, dist };
    });
}

/** A role process's CPU time so far, in µs (it answers the `cpu` message). */
export async function cpuOf(role: RoleProcess): Promise<number> {
  const answer = once(role.process, 'message') as Promise<[{ cpu: number }]>;
  role.process.send('cpu');
  return (await answer)[0].cpu;
}
