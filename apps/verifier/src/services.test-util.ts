/**
 * Dependencies of a test's own — a Redis and a PostgreSQL cluster started for it, on free
 * ports, so stopping, hanging or locking them disturbs no other test — and small waiting aids.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const isRoot = process.getuid?.() === 0;
export const pgBin = existsSync('/usr/lib/postgresql')
  ? join('/usr/lib/postgresql', readdirSync('/usr/lib/postgresql').sort().at(-1) ?? '', 'bin')
  : '';
export const hasRedis = spawnSync('redis-server', ['--version']).status === 0;
export const hasPostgres = isRoot && pgBin !== '' && existsSync(join(pgBin, 'initdb'));

/** Cleanups of what the helpers started; a test file runs them in its `afterAll`. */
export const cleanups: Array<() => unknown> = [];

/** A TCP port free on 127.0.0.1 now. */
export async function freePort(): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Resolves once `check` holds, polling every 50 ms; throws naming `what` after `ms`. */
export async function until(check: () => Promise<boolean> | boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A Redis of this test's own, without persistence, that it may stop and start. */
export async function ownRedis(
  args: readonly string[] = [],
): Promise<{ url: string; stop(): Promise<void>; start(): Promise<void>; hang(hung: boolean): void }> {
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...args], {
      stdio: 'ignore',
    });
    await until(
      () =>
        spawnSync('redis-cli', ['-p', String(port), 'ping'])
          .stdout?.toString()
          .includes('PONG') ?? false,
      'redis',
    );
  };
  const stop = async () => {
    const p = proc;
    // Killed by a signal, a process has a signalCode and no exitCode.
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    const exited = once(p, 'exit');
    p.kill('SIGKILL');
    await exited;
  };
  await start();
  cleanups.push(stop);
  // SIGSTOP: the server keeps its connections open and answers nothing, as a hung Redis does.
  const hang = (hung: boolean) => proc?.kill(hung ? 'SIGSTOP' : 'SIGCONT');
  return { url: `redis://127.0.0.1:${port}`, stop, start, hang };
}

/** A PostgreSQL cluster of this test's own (initdb as the postgres user), that it may stop and start. */
export async function ownPostgres(): Promise<{ url: string; stop(): void; start(): void }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'moat-pg-'));
  chmodSync(dir, 0o777);
  const data = join(dir, 'data');
  const asPostgres = (command: string) => execFileSync('su', ['postgres', '-s', '/bin/sh', '-c', command], { stdio: 'pipe' });
  asPostgres(`${pgBin}/initdb -D ${data} -A trust -U moat >/dev/null`);
  const start = () =>
    asPostgres(`${pgBin}/pg_ctl -D ${data} -o "-p ${port} -k ${dir} -c listen_addresses=127.0.0.1" -l ${dir}/log -w start >/dev/null`);
  const stop = () => asPostgres(`${pgBin}/pg_ctl -D ${data} -m fast -w stop >/dev/null`);
  start();
  cleanups.push(() => {
    try {
      stop();
    } catch {
      // already stopped
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return { url: `postgres://moat@127.0.0.1:${port}/postgres`, stop, start };
}

/**
 * The verifier's upstream calls in use and waited for, read from its `/metrics` once both are 0
 * (or after 2 s): every call gave its connection back, whatever ended it.
 */
export async function upstreamCallsLeft(base: string, adminToken: string): Promise<string[]> {
  const calls = async () =>
    (await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } })).text()).match(
      /^moat_verifier_upstream_calls_(active|waiting) (\d+)$/gm,
    ) ?? [];
  await until(
    async () => (await calls()).join() === 'moat_verifier_upstream_calls_active 0,moat_verifier_upstream_calls_waiting 0',
    'upstream calls to end',
    2_000,
  ).catch(() => undefined);
  return calls();
}
