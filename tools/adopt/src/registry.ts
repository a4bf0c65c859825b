/**
 * The release as users meet it: a local Verdaccio registry (127.0.0.1, temporary storage,
 * `@moat/*` never proxied to an uplink), and `changeset version` + `changeset publish` run in
 * a throwaway copy of the workspace against it.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The workspace this test belongs to. */
export const root = fileURLToPath(new URL('../../../', import.meta.url));
const require = createRequire(import.meta.url);

/** A running local registry. */
export interface LocalRegistry {
  readonly url: string;
  readonly token: string;
  /** Every log line it wrote (for a failure's message). */
  readonly log: string[];
  stop(): Promise<void>;
}

/** A free loopback port (bound and released; the registry takes it a moment later). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as { port: number };
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

/** Waits until `url` answers, or the process ends, or `ms` pass. */
async function waitFor(url: string, child: ChildProcess, log: string[], ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`verdaccio exited ${child.exitCode}: ${log.join('')}`);
    const ok = await fetch(url).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`expected verdaccio at ${url} within ${ms} ms, got no answer: ${log.join('')}`);
}

/**
 * Starts Verdaccio on 127.0.0.1 with a temporary storage: `@moat/*` is served only from what
 * is published to it (no uplink), every other package is proxied to `uplink` (the npm
 * registry). Creates a user and returns its token.
 */
export async function startRegistry(uplink = 'https://registry.npmjs.org/'): Promise<LocalRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'moat-registry-'));
  const port = await freePort();
  const config = join(dir, 'config.yaml');
  writeFileSync(
    config,
    [
      `storage: ${join(dir, 'storage')}`,
      'auth:',
      `  htpasswd: { file: ${join(dir, 'htpasswd')}, max_users: 10 }`,
      'uplinks:',
      `  npmjs: { url: ${uplink}, timeout: 60s }`,
      'packages:',
      "  '@moat/*': { access: $all, publish: $authenticated }",
      "  '**': { access: $all, publish: $authenticated, proxy: npmjs }",
      'log: { type: stdout, format: pretty, level: warn }',
      `listen: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const bin = join(dirname(require.resolve('verdaccio/package.json')), 'bin', 'verdaccio');
  // The uplink is reached over TLS: trust the system's CA store too (a TLS-inspecting network adds its CA there).
  const child = spawn(process.execPath, ['--use-system-ca', bin, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  child.stdout?.on('data', (d: Buffer) => log.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => log.push(d.toString()));
  const url = `http://127.0.0.1:${port}/`;
  await waitFor(`${url}-/ping`, child, log, 60_000);
  const user = await fetch(`${url}-/user/org.couchdb.user:moat`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'moat', password: 'moat-release-test' }),
  });
  const { token } = (await user.json()) as { token?: string };
  if (token === undefined) throw new Error(`expected a token from verdaccio, got ${user.status}`);
  return {
    url,
    token,
    log,
    stop: async () => {
      if (child.exitCode !== null) return;
      const gone = new Promise((done) => child.once('exit', done));
      child.kill('SIGTERM');
      await gone;
    },
  };
}

/** A published package: name, version, and the commands its `bin` provides. */
export interface Published {
  readonly name: string;
  readonly version: string;
  readonly bins: readonly string[];
}

/** Copies the workspace's files (built `dist` included) without git, dependencies or build leftovers. */
function copyWorkspace(to: string): void {
  const skip = ['./node_modules', '.git', '.turbo', 'test-results', './native/build', './apps/cli/dist', '.moat-verifier'];
  // Other suites write into the workspace meanwhile (test results, temp files): GNU tar then exits 1
  // ("file changed as we read it"), which is no failure here; 2 is.
  const pack = spawnSync('tar', ['-C', root, ...skip.map((s) => `--exclude=${s}`), '--warning=no-file-changed', '-cf', '-', '.'], {
    maxBuffer: 1 << 30,
  });
  if (pack.status !== 0 && pack.status !== 1) throw new Error(`tar of the workspace exited ${pack.status}: ${pack.stderr}`);
  execFileSync('tar', ['-C', to, '-xf', '-'], { input: pack.stdout });
}

/**
 * The release flow on a throwaway copy: `changeset version` (versions and changelogs from the
 * pending changesets), then `changeset publish` to `registry`. Returns what was published.
 */
export function publishRelease(registry: LocalRegistry): Published[] {
  const copy = mkdtempSync(join(tmpdir(), 'moat-release-'));
  copyWorkspace(copy);
  const host = new URL(registry.url).host;
  writeFileSync(join(copy, '.npmrc'), `registry=${registry.url}\n//${host}/:_authToken=${registry.token}\n`);
  const env = { ...process.env, npm_config_registry: registry.url, npm_config_userconfig: join(copy, '.npmrc') };
  const git = (...args: string[]) => execFileSync('git', args, { cwd: copy, env, stdio: 'pipe' });
  git('init', '-q', '-b', 'main');
  git('add', '-A');
  git('-c', 'user.name=release', '-c', 'user.email=release@localhost', 'commit', '-qm', 'release');
  const changeset = join(root, 'node_modules', '@changesets', 'cli', 'bin.js');
  execFileSync(process.execPath, [changeset, 'version'], { cwd: copy, env, stdio: 'pipe' });
  execFileSync(process.execPath, [changeset, 'publish'], { cwd: copy, env, stdio: 'pipe' });
  const manifests = ['packages', 'apps', 'tools'].flatMap((group) => {
    const dir = join(copy, group);
    return execFileSync('ls', [dir], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((name) => join(dir, name, 'package.json'));
  });
  manifests.push(join(copy, 'native', 'package.json'));
  const published: Published[] = [];
  for (const file of manifests) {
    let pkg: { name: string; version: string; private?: boolean; bin?: Record<string, string> };
    try {
      pkg = JSON.parse(readFileSync(file, 'utf8'));
    } catch {
      continue;
    }
    if (pkg.private !== true) published.push({ name: pkg.name, version: pkg.version, bins: Object.keys(pkg.bin ?? {}) });
  }
  return published;
}
