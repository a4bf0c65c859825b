/**
 * `moat-verifier` with no settings: it starts on the embedded defaults, keeps generated
 * secrets in its data directory (mode 0600) and reuses them — and its database — on the next
 * start; `init` writes a commented config file the verifier reads; a start that cannot work exits, saying why.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';
import { spawnVerifier } from './spawned.test-util.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

/** A bare environment: no MOAT_VERIFIER_* setting but a free port. */
const bare = (cwd: string) => ({ PATH: process.env.PATH ?? '', HOME: cwd, MOAT_VERIFIER_PORT: '0', MOAT_VERIFIER_LOG_LEVEL: 'silent' });

async function start(cwd: string): Promise<{ child: ChildProcess; url: string; out: () => string }> {
  const spawned = await spawnVerifier(bare(cwd), { cwd, ready: /dashboard:/ });
  children.push(spawned.child);
  return { child: spawned.child, url: spawned.url, out: spawned.output };
}

async function stop(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

describe('moat-verifier with no settings', { timeout: 60_000 }, () => {
  it('starts on the embedded defaults, keeps its secrets and database in .moat-verifier, and reuses them', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'moat-zero-'));
    const first = await start(cwd);
    expect(first.out()).toMatch(/dashboard: http:\/\/127\.0\.0\.1:\d+\/dashboard \(admin token: `moat-verifier admin-token`/);
    expect(first.out()).toContain('new secrets generated');
    const secrets = join(cwd, '.moat-verifier', 'secrets.json');
    expect(statSync(secrets).mode & 0o777).toBe(0o600);
    expect(existsSync(join(cwd, '.moat-verifier', 'verifier.db'))).toBe(true);
    const token = spawnSync(process.execPath, [cli, 'admin-token'], { cwd, env: bare(cwd), encoding: 'utf8' }).stdout.trim();
    expect(token).toBe((JSON.parse(readFileSync(secrets, 'utf8')) as { adminToken: string }).adminToken);
    const created = (await (
      await fetch(`${first.url}/admin/keys`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: '{"label":"zero"}' })
    ).json()) as { id: string; key: string };
    const ask = (url: string) =>
      fetch(`${url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': created.key, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      });
    expect((await ask(first.url)).status).toBe(200);
    await stop(first.child);

    const second = await start(cwd);
    expect(second.out()).not.toContain('new secrets generated');
    // The same secrets (the admin token works) and the same database (the key made before works).
    expect((await fetch(`${second.url}/admin/summary`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await ask(second.url)).status).toBe(200);
    // Revoked from the command line while it runs: refused within the key cache's 5 s.
    const cliRun = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { cwd, env: bare(cwd), encoding: 'utf8' });
    const revoked = cliRun('keys', 'revoke', '--id', created.id);
    expect(revoked.status, revoked.stderr).toBe(0);
    expect(JSON.parse(revoked.stdout)).toEqual({ revoked: created.id });
    const deadline = Date.now() + 10_000;
    let status = 200;
    while (status !== 401 && Date.now() < deadline) {
      status = (await ask(second.url)).status;
      if (status !== 401) await new Promise((r) => setTimeout(r, 200));
    }
    expect(status).toBe(401);
    expect(cliRun('keys', 'revoke', '--id', created.id)).toMatchObject({
      status: 1,
      stderr: `moat-verifier: keys revoke: no live API key has the id ${created.id}\n`,
    });
    expect(cliRun('keys', 'revoke')).toMatchObject({ status: 2, stderr: expect.stringContaining('expected --id ID') });
    await stop(second.child);
  });

  it('init writes a commented config file that the verifier reads, and never overwrites one', () => {
    const cwd = mkdtempSync(join(tmpdir(), 'moat-init-'));
    const init = spawnSync(process.execPath, [cli, 'init'], { cwd, env: bare(cwd), encoding: 'utf8' });
    expect(init.status).toBe(0);
    const file = join(cwd, 'moat-verifier.config.json');
    expect(readFileSync(file, 'utf8')).toContain('// moat-verifier settings');
    const config = loadConfig({}, file, {
      MOAT_VERIFIER_ADMIN_TOKEN: 'a'.repeat(32),
      MOAT_VERIFIER_FINGERPRINT_SALT: 'salt',
      MOAT_VERIFIER_SERVER_SECRET: 'ab'.repeat(32),
      MOAT_VERIFIER_SIGNING_SECRET: 'cd'.repeat(32),
    });
    expect(config).toMatchObject({ port: 8787, upstream: 'mock', windowSec: 300, decoyEntrypoints: ['cli'] });
    expect(spawnSync(process.execPath, [cli, 'init'], { cwd, env: bare(cwd), encoding: 'utf8' }).status).toBe(1);
  });
});

describe('moat-verifier that cannot start', { timeout: 60_000 }, () => {
  /** Runs the CLI to its exit (20 s at most: a start that hangs fails the test). */
  const run = (cwd: string, args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [cli, ...args], { cwd, env: { ...bare(cwd), ...env }, encoding: 'utf8', timeout: 20_000 });

  it('exits 2 with one line naming what is wrong: a policy mistake, an unknown setting, a port in use', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'moat-nostart-'));
    writeFileSync(
      join(cwd, 'policy.json'),
      JSON.stringify({ features: { 'moat-policy-attestation': { defaultValue: { valid: 'monitr' } } } }),
    );
    writeFileSync(join(cwd, 'typo.json'), JSON.stringify({ maxBodyByts: 1024 }));
    const cases: Array<[string[], Record<string, string>, RegExp]> = [
      [
        [],
        { MOAT_VERIFIER_FLAGS_FILE: 'policy.json' },
        /^moat-verifier: ERR_VERIFIER_CONFIG: flagsFile: moat-policy-attestation\.defaultValue\.valid: .*\(did you mean "monitor"\?\)\n$/,
      ],
      [
        [],
        { MOAT_VERIFIER_FLAGS_FILE: 'missing.json' },
        /^moat-verifier: ERR_VERIFIER_CONFIG: flagsFile: expected a JSON features file at missing\.json, got .*ENOENT.*\n$/,
      ],
      [
        ['--config', 'typo.json'],
        {},
        /^moat-verifier: ERR_VERIFIER_CONFIG: maxBodyByts: expected the name of a setting in typo\.json, got an unknown name \(did you mean "maxBodyBytes"\?\)\n$/,
      ],
    ];
    for (const [args, env, stderr] of cases) {
      const result = run(cwd, args, env);
      expect(result.error, JSON.stringify(env)).toBeUndefined();
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toMatch(stderr);
    }
    // A port in use: the first verifier holds it, the second says so and exits.
    const first = await start(cwd);
    const port = new URL(first.url).port;
    const second = run(cwd, [], { MOAT_VERIFIER_PORT: port });
    expect(second.error).toBeUndefined();
    expect(second.status).toBe(2);
    expect(second.stderr).toBe(
      `moat-verifier: ERR_VERIFIER_CONFIG: port: expected a port free to listen on at 127.0.0.1:${port}, got EADDRINUSE (another process listens there)\n`,
    );
    // Stopping says so, and how long it took.
    await stop(first.child);
    expect(first.out()).toMatch(
      /moat-verifier stopping \(SIGTERM\): finishing the requests in flight, \d+ ms at most\nmoat-verifier stopped after \d+ ms\n/,
    );
  });
});
