/** What an operator meets starting `moat-verifier`: the port from PORT or --port, dependency errors naming their setting. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { devEnvironment } from './config.js';
import { freePort } from './services.test-util.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const started: ChildProcess[] = [];
afterEach(() => {
  for (const child of started.splice(0)) child.kill('SIGKILL');
});

/** The URL a verifier started with `args` and `env` says it listens on. */
function listening(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const child = spawn(process.execPath, [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  let out = '';
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m !== null) resolve(m[1] as string);
    });
    child.stderr?.on('data', (d: Buffer) => (out += d));
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
}

const base = () => {
  const { MOAT_VERIFIER_PORT: _, ...env } = devEnvironment();
  return { PATH: process.env.PATH ?? '', ...env, MOAT_VERIFIER_LOG_LEVEL: 'silent' };
};

describe('moat-verifier for an operator', () => {
  it('listens on PORT when MOAT_VERIFIER_PORT is unset, and --port wins over both', async () => {
    const port = await freePort();
    expect(await listening([], { ...base(), PORT: String(port) })).toBe(`http://127.0.0.1:${port}`);
    const other = await freePort();
    expect(await listening(['--port', String(other)], { ...base(), PORT: String(port), MOAT_VERIFIER_PORT: '1' })).toBe(
      `http://127.0.0.1:${other}`,
    );
  });

  it('a bad --port is an error naming the setting', () => {
    const r = spawnSync(process.execPath, [cli, '--port', 'eighty'], { env: base(), encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^moat-verifier: ERR_VERIFIER_CONFIG: port: expected/);
  });

  it('an unreachable postgresUrl stops the start with one line naming it, no stack trace', async () => {
    const closed = await freePort();
    const env = {
      ...base(),
      MOAT_VERIFIER_POSTGRES_URL: `postgres://moat:moat@127.0.0.1:${closed}/moat`,
      MOAT_VERIFIER_REDIS_URL: `redis://127.0.0.1:${closed}/0`,
      // Records kept in PostgreSQL need a spool that outlives the process.
      MOAT_VERIFIER_SPOOL_FILE: join(mkdtempSync(join(tmpdir(), 'moat-operator-')), 'records.spool'),
    };
    const r = spawnSync(process.execPath, [cli], { env, encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(
      /^moat-verifier: ERR_VERIFIER_CONFIG: postgresUrl: expected a reachable PostgreSQL server, got .*ECONNREFUSED/,
    );
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('a SQLite database that cannot be opened names `database`', () => {
    const env = { ...base(), MOAT_VERIFIER_DATABASE: '/nonexistent-dir/moat/verifier.db' };
    const r = spawnSync(process.execPath, [cli], { env, encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^moat-verifier: ERR_VERIFIER_CONFIG: database: expected a/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
