/**
 * docs/adopt.md, step by step: every command and snippet of the guide runs here as written.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { tagFingerprint } from '@moat/fingerprint/client';
import { afterAll, describe, expect, it } from 'vitest';
import { type SpawnedVerifier, spawnVerifier } from './spawned.test-util.js';

const doc = readFileSync(new URL('../../../docs/adopt.md', import.meta.url), 'utf8');
const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const require = createRequire(import.meta.url);

/** The fenced block that follows `<!-- step: NAME -->`. */
function step(name: string): string {
  const m = new RegExp(`<!-- step: ${name} -->\\n\`\`\`\\w*\\n([\\s\\S]*?)\`\`\``).exec(doc);
  if (m === null) throw new Error(`docs/adopt.md has no step ${name}`);
  return m[1] as string;
}

/** A guide command line (`npx moat-scan …`, `moat-verifier …`) as the program and its arguments. */
function command(line: string): { bin: string; args: string[] } {
  const words = line.replace(/^npx /, '').trim().split(/\s+/);
  return { bin: words[0] as string, args: words.slice(1) };
}

let running: SpawnedVerifier | undefined;
afterAll(() => running?.child.kill('SIGKILL'));

describe('docs/adopt.md', { timeout: 60_000 }, () => {
  it('step 1: moat-scan fails a build that ships a codename and passes a clean one', () => {
    const scan = join(dirname(require.resolve('@moat/build-guard/package.json')), 'dist/cli/moat-scan.js');
    const { bin, args } = command(step('build'));
    expect(bin).toBe('moat-scan');
    const cwd = mkdtempSync(join(tmpdir(), 'moat-adopt-build-'));
    writeFileSync(join(cwd, 'codenames.txt'), 'Capybara\n');
    mkdirSync(join(cwd, 'dist'));
    writeFileSync(join(cwd, 'dist', 'app.js'), 'console.log("public build");\n');
    expect(spawnSync(process.execPath, [scan, ...args], { cwd, encoding: 'utf8' }).status).toBe(0);
    writeFileSync(join(cwd, 'dist', 'app.js'), `console.log(atob("${Buffer.from('Capybara internals').toString('base64')}"));\n`);
    const leak = spawnSync(process.execPath, [scan, ...args], { cwd, encoding: 'utf8' });
    expect(leak.status).toBe(1);
    expect(leak.stdout).toMatch(/^moat-scan: FAIL/);
  });

  it("step 2: the client snippet is @moat/client's README example, which its tests run against a verifier", () => {
    const readme = readFileSync(new URL('../../../packages/client/README.md', import.meta.url), 'utf8');
    expect(readme).toContain(step('client').trim());
  });

  it('steps 3 to 5: init, start on the config with the policy file, add a key, decide by the policy, sign in to the dashboard', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'moat-adopt-'));
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: cwd,
      MOAT_VERIFIER_PORT: '0',
      MOAT_VERIFIER_LOG_LEVEL: 'silent',
      MOAT_VERIFIER_FLAGS_FILE: join(cwd, 'policy.json'),
    };
    const [init, start] = step('verifier').trim().split('\n').map(command) as [ReturnType<typeof command>, ReturnType<typeof command>];
    expect(init.bin).toBe('moat-verifier');
    expect(spawnSync(process.execPath, [cli, ...init.args], { cwd, env, encoding: 'utf8' }).status).toBe(0);
    writeFileSync(join(cwd, 'policy.json'), step('policy'));
    running = await spawnVerifier({ ...env }, { cwd, ready: /dashboard:/ });
    expect(start.args).toEqual(['--config', 'moat-verifier.config.json']);
    const added = spawnSync(process.execPath, [cli, 'keys', 'add', '--label', 'alice', '--config', 'moat-verifier.config.json'], {
      cwd,
      env,
      encoding: 'utf8',
    });
    const { key } = JSON.parse(added.stdout) as { key: string };
    const salt = (JSON.parse(readFileSync(join(cwd, '.moat-verifier', 'secrets.json'), 'utf8')) as { fingerprintSalt: string })
      .fingerprintSalt;
    const ask = (entrypoint?: string) => {
      const request = { model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: 'policy check' }] };
      const body = entrypoint === undefined ? request : tagFingerprint(request, { salt, version: '1.0.0', entrypoint }).request;
      return fetch(`${running?.url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    };
    // Step 4's policy: no attestation is blocked, except from the SDK entry point, where it is flagged.
    expect((await ask()).status).toBe(403);
    expect((await ask('sdk')).status).toBe(200);
    // Step 5: the admin token opens the dashboard's API.
    const token = spawnSync(process.execPath, [cli, ...command(step('dashboard')).args], { cwd, env, encoding: 'utf8' }).stdout.trim();
    const summary = await fetch(`${running.url}/admin/summary`, { headers: { authorization: `Bearer ${token}` } });
    expect(summary.status).toBe(200);
    expect(((await summary.json()) as { verdicts: Record<string, number> }).verdicts).toMatchObject({ block: 1, flag: 1 });
    expect((await fetch(`${running.url}/dashboard`)).status).toBe(200);
  });
});
