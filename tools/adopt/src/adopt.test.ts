/**
 * docs/adopt.md as an outsider follows it: every package published by the release flow to a
 * local registry, a new npm project outside the workspace that installs only from there, each
 * step run exactly as written, each TypeScript snippet compiled with `tsc --strict`.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GuideStep, installedPackages, moatNames, npxCommands, steps } from './guide.js';
import { freePort, type LocalRegistry, type Published, publishRelease, root, startRegistry } from './registry.js';

let registry: LocalRegistry | undefined;
let published: Published[] = [];
let verifier: ChildProcess | undefined;
const project = mkdtempSync(join(tmpdir(), 'acme-chat-'));
const guideSteps = steps();
const step = (name: string): GuideStep => {
  const found = guideSteps.find((s) => s.name === name);
  if (found === undefined) throw new Error(`docs/adopt.md has no step ${name}`);
  return found;
};

/** The scratch project's environment: npm sees only the local registry, never the user's npmrc. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const userconfig = join(project, '..', `${project.split('/').pop()}.npmrc`);
  writeFileSync(userconfig, 'fund=false\naudit=false\nupdate-notifier=false\n');
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? project,
    npm_config_registry: registry?.url ?? 'http://127.0.0.1:9/',
    npm_config_userconfig: userconfig,
    // @moat/native compiles with node-gyp against the running Node's headers.
    ...(process.env.npm_config_nodedir === undefined ? {} : { npm_config_nodedir: process.env.npm_config_nodedir }),
    ...extra,
  };
}

/** Runs a shell step in the project, as written; the output, or an error with both streams. */
function run(body: string, extra: Record<string, string> = {}): string {
  const r = spawnSync('bash', ['--norc', '--noprofile', '-euo', 'pipefail', '-c', body], {
    cwd: project,
    env: env(extra),
    encoding: 'utf8',
    timeout: 240_000,
  });
  if (r.status !== 0) throw new Error(`\`${body.trim()}\` exited ${r.status}:\n${r.stdout}\n${r.stderr}`.slice(-6000));
  return r.stdout;
}

/** The key id compiled into the project's @moat/native. */
const addonKeyId = (): string =>
  run(`node --input-type=module -e "const m = await import('@moat/native'); console.log(m.native?.keyId())"`).trim();

/** Starts the guide's background step (the verifier) and waits for its `listening on` line. */
async function startVerifier(port: number): Promise<string> {
  // Its own process group: bash, npx and the verifier stop together.
  const child = spawn('bash', ['--norc', '--noprofile', '-c', step('verifier').body], {
    cwd: project,
    detached: true,
    env: env({ PORT: String(port) }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  verifier = child;
  let out = '';
  return new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m !== null) resolve(m[1] as string);
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('exit', (code) => reject(new Error(`the verifier exited ${code}: ${out}`)));
  });
}

async function stopVerifier(): Promise<void> {
  const child = verifier;
  if (child === undefined || child.exitCode !== null) return;
  const gone = new Promise((done) => child.once('exit', done));
  if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
  await gone;
}

/** The admin API's records, newest first. */
async function records(url: string, token: string): Promise<Array<Record<string, unknown>>> {
  const res = await fetch(`${url}/admin/records`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { records: Array<Record<string, unknown>> }).records;
}

beforeAll(async () => {
  registry = await startRegistry();
  published = publishRelease(registry);
  writeFileSync(join(project, 'package.json'), `${JSON.stringify({ name: 'acme-chat', version: '1.0.0', private: true })}\n`);
});

afterAll(async () => {
  await stopVerifier();
  await registry?.stop();
  // The project (about 110 MB of installed packages) and its npmrc go with the run.
  rmSync(project, { recursive: true, force: true });
  rmSync(`${project}.npmrc`, { force: true });
});

describe('docs/adopt.md, from the registry, in a new project', () => {
  it('tells people to install and npx only what this project publishes', () => {
    const names = new Set(published.map((p) => p.name));
    expect([...names].sort()).toEqual(expect.arrayContaining(['@moat/build-guard', '@moat/client', '@moat/verifier']));
    for (const name of moatNames()) expect(names, `${name} is not published`).toContain(name);
    const installed = new Set(installedPackages());
    for (const name of installed) if (name.startsWith('@moat/')) expect(names).toContain(name);
    // `npx X` runs the bin X of an installed package; any other X would be fetched from the registry by that name.
    const bins = new Map(published.filter((p) => installed.has(p.name)).flatMap((p) => p.bins.map((b) => [b, p.name])));
    const npx = npxCommands();
    expect(npx.length).toBeGreaterThan(0);
    for (const command of npx) expect([...bins.keys()], `npx ${command}`).toContain(command);
  });

  it('runs every step as written and ends with the app allowed and the plain SDK blocked', async () => {
    run(step('install').body);
    // The addon compiled on install, against this Node.
    expect(existsSync(join(project, 'node_modules/@moat/native/build/Release/moat_native.node'))).toBe(true);

    run(step('provision').body);
    const settings = JSON.parse(readFileSync(join(project, 'moat.client.json'), 'utf8')) as Record<string, string>;
    expect(settings).toMatchObject({ userAgentProduct: 'acme-chat' });
    expect(statSync(join(project, 'moat.client.json')).mode & 0o077).toBe(0);
    expect(readFileSync(join(project, '.gitignore'), 'utf8').split('\n')).toEqual(
      expect.arrayContaining(['moat.client.json', 'moat-verifier.config.json']),
    );
    // The addon carries the app's release key id, and no development key is left for a verifier to trust.
    expect(addonKeyId()).toBe(settings.attestationKid);
    expect(existsSync(join(project, 'node_modules/@moat/native/.moat-dev-key.json'))).toBe(false);

    // Step 3: moat-scan passes a clean build and fails one that ships a codename.
    writeFileSync(join(project, 'codenames.txt'), 'Capybara\n');
    mkdirSync(join(project, 'dist'), { recursive: true });
    writeFileSync(join(project, 'dist', 'app.js'), 'console.log("public build");\n');
    run(step('build').body);
    writeFileSync(join(project, 'dist', 'app.js'), `console.log(atob("${btoa('Capybara internals')}"));\n`);
    expect(() => run(step('build').body)).toThrow(/exited 1[\s\S]*moat-scan: FAIL/);

    // Every TypeScript snippet compiles with --strict against the installed packages.
    for (const s of guideSteps.filter((g) => g.lang === 'ts')) {
      writeFileSync(join(project, s.file ?? `${s.name}.mts`), s.body);
      const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
      const args = ['--strict', '--noEmit', '--module', 'nodenext', '--target', 'es2023', '--skipLibCheck'];
      const types = ['--types', 'node', '--typeRoots', join(root, 'node_modules', '@types')];
      const r = spawnSync(process.execPath, [tsc, ...args, ...types, s.file ?? `${s.name}.mts`], { cwd: project, encoding: 'utf8' });
      expect(r.stdout + r.stderr, `tsc --strict ${s.file}`).toBe('');
    }

    const policy = step('policy');
    writeFileSync(join(project, policy.file ?? 'policy.json'), policy.body);
    const url = await startVerifier(await freePort());
    const { key } = JSON.parse(run(step('keys').body)) as { key: string };
    const app = { ANTHROPIC_BASE_URL: url, ANTHROPIC_API_KEY: key };
    expect(run(step('run').body, app).trim().length).toBeGreaterThan(0);

    // A plain SDK request (no Moat, no key of this build) is blocked by the guide's policy.
    const plain = await fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'claude-opus-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'Hello' }] }),
    });
    expect(plain.status).toBe(403);

    const token = run(step('dashboard').body).trim();
    const [blocked, allowed] = await records(url, token);
    expect(allowed).toMatchObject({ verdict: 'allow', attestation: 'valid', fingerprint: 'match', binding: 'install', install: 'new' });
    expect(blocked).toMatchObject({ verdict: 'block', attestation: 'missing' });
    expect((await fetch(`${url}/dashboard`)).status).toBe(200);

    // A rotation: a new release key; the verifier, restarted on its settings, verifies both.
    run(step('rotate').body);
    const rotated = JSON.parse(readFileSync(join(project, 'moat.client.json'), 'utf8')) as Record<string, string>;
    expect(rotated.attestationKid).not.toBe(settings.attestationKid);
    expect(rotated.salt).toBe(settings.salt);
    expect(addonKeyId()).toBe(rotated.attestationKid);
    await stopVerifier();
    const again = await startVerifier(await freePort());
    run(step('run').body, { ...app, ANTHROPIC_BASE_URL: again });
    const [afterRotation] = await records(again, token);
    expect(afterRotation).toMatchObject({ verdict: 'allow', attestation: 'valid', fingerprint: 'match' });
    const config = JSON.parse(readFileSync(join(project, 'moat-verifier.config.json'), 'utf8').replace(/^\s*\/\/.*$/gm, '')) as {
      attestationKeys: Array<{ kid: string }>;
    };
    expect(config.attestationKeys.map((k) => k.kid)).toEqual([settings.attestationKid, rotated.attestationKid]);
  });
});

// Where a failure is hard to read, the scratch project is kept for a look.
afterAll(() => {
  if (process.env.MOAT_KEEP_SCRATCH !== undefined) execFileSync('echo', [project], { stdio: 'inherit' });
});
