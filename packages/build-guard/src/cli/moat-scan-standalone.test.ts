/**
 * The standalone moat-scan (one executable, `bun build --compile`) against the Node CLI it is
 * built from: the same report, byte for byte, and the same exit code for every mode, from a
 * directory that holds nothing else, with the addon it carries.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url).pathname;
const nodeCli = join(root, 'dist/cli/moat-scan.js');
const nativeBuild = new URL('../../../../native/build', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'moat-scan-standalone-'));
// The executable and its corpus are about 220 MB: gone once the file is done.
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const executable = join(dir, 'bin', 'moat-scan');
const CODENAME = 'Capybara';
const OTHER = 'Quokkafox';
const units = [...CODENAME].map((c) => c.charCodeAt(0));

/** A build output with a leak in several forms, a clean bundle, a source map and a tarball. */
function corpus(): string {
  const out = join(dir, 'corpus');
  const put = (name: string, content: string | Buffer) => {
    mkdirSync(join(out, name, '..'), { recursive: true });
    writeFileSync(join(out, name), content);
  };
  const filler = 'function f(a,b){return a+b}var x=[1,2,3].map(f);'.repeat(40_000);
  put('clean.js', filler);
  put('plain.js', `${filler}var a="${CODENAME}";var b="${OTHER}";${filler}`);
  put('base64.js', `atob("${Buffer.from(`x${CODENAME}-internal`).toString('base64')}")`);
  put('escape.js', `const s="${[...Buffer.from(CODENAME)].map((b) => `\\x${b.toString(16)}`).join('')}";`);
  put('split.js', "const n = 'Capy' + 'bara';");
  put('charcodes.js', `String.fromCharCode(${units.join(', ')})`);
  put('upper.js', `let u="${CODENAME.toUpperCase()}";let w=${CODENAME.toLowerCase()}_x;`);
  put('mapped.js', `var y=1;\n//# sourceMappingURL=mapped.js.map\n`);
  put('mapped.js.map', JSON.stringify({ version: 3, sources: ['src/internal.ts'], sourcesContent: [`// ${OTHER}`], mappings: '' }));
  const pkg = join(dir, 'tarball');
  mkdirSync(join(pkg, 'package/dist'), { recursive: true });
  writeFileSync(join(pkg, 'package/package.json'), '{"name":"leaky","version":"1.0.0"}');
  writeFileSync(join(pkg, 'package/dist/index.js'), `var c="${CODENAME}";`);
  execFileSync('tar', ['-czf', join(out, 'pkg.tgz'), '-C', pkg, 'package']);
  return out;
}

interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

let input: string;
let cacheRuns = 0;
/** Runs a command in `dir/work` with an empty cache directory of its own, as a fresh CI runner would. */
function run(command: string, args: readonly string[]): Run {
  const cache = join(dir, `cache-${cacheRuns++}`);
  const r = spawnSync(command, args, {
    cwd: join(dir, 'work'),
    encoding: 'utf8',
    env: { PATH: process.env.PATH, MOAT_SCAN_CACHE_DIR: cache },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  const built = execFileSync(process.execPath, [nodeCli, 'standalone', '-o', join(dir, 'build', 'moat-scan')], { encoding: 'utf8' });
  expect(built).toBe(`moat-scan: built ${join(dir, 'build', 'moat-scan')}\n`);
  // Alone in its directory, run from another one: nothing next to it to load.
  mkdirSync(join(dir, 'bin'));
  copyFileSync(join(dir, 'build', 'moat-scan'), executable);
  mkdirSync(join(dir, 'work'));
  input = corpus();
}, 120_000);

const MODES: Array<readonly string[]> = [
  [],
  ['--plain-only'],
  ['-i'],
  ['-i', '-w'],
  ['--no-prefilter'],
  ['--engine', 'native'],
  ['--engine', 'js'],
  ['--no-sourcemaps', '--plain-only'],
  ['--verbose'],
  ['--sarif'],
];

describe('standalone moat-scan', () => {
  it('is one executable with the runtime in it', () => {
    expect(statSync(executable).size).toBeGreaterThan(10_000_000);
    const help = run(executable, ['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^usage: moat-scan/);
  });

  for (const mode of MODES) {
    it(`reports what the Node CLI reports: ${mode.join(' ') || 'every encoding'}`, () => {
      const args = [
        ...mode,
        '--codename',
        CODENAME,
        '--codename',
        OTHER,
        ...(mode.includes('--sarif') || mode.includes('--verbose') ? [] : ['--json']),
        input,
      ];
      const node = run(process.execPath, [nodeCli, ...args]);
      const standalone = run(executable, args);
      expect(standalone.stderr).toBe(node.stderr);
      expect(standalone.status).toBe(node.status);
      expect(standalone.stdout).toBe(node.stdout);
      expect(node.status).toBe(1);
      if (args.includes('--json')) {
        const report = JSON.parse(node.stdout) as { findings: Array<{ codename?: string; encoding?: string; path: string }> };
        const found = new Set(report.findings.map((f) => `${f.encoding ?? 'audit'}:${f.codename ?? ''}`));
        expect(found.has(`plain:${CODENAME}`)).toBe(true);
        expect(found.has(`plain:${OTHER}`)).toBe(true);
        expect(report.findings.some((f) => f.path.endsWith('pkg.tgz!package/dist/index.js'))).toBe(true);
        const encoded = report.findings.filter((f) => f.encoding !== 'plain' && f.codename === CODENAME).length;
        if (mode.includes('--plain-only')) expect(encoded).toBe(0);
        else expect(encoded).toBeGreaterThanOrEqual(3);
      }
    });
  }

  it('refuses bad usage as the Node CLI does', () => {
    for (const args of [['--engine', 'fast', input], ['--no-such-flag'], ['--codename', CODENAME]]) {
      const node = run(process.execPath, [nodeCli, ...args]);
      const standalone = run(executable, args);
      expect(node.status).toBe(2);
      expect(standalone.status).toBe(2);
      expect(standalone.stderr).toBe(node.stderr);
    }
  });

  it('builds only with -o and from the npm package, not from itself', () => {
    for (const args of [['standalone'], ['standalone', '-o', join(dir, 'x'), 'extra']]) {
      const r = run(process.execPath, [nodeCli, ...args]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/^moat-scan: expected `standalone -o FILE` and nothing else/);
    }
    // The executable embeds the addon: never one that holds a release key, never none at all.
    const otherKid = join(dir, 'other-dev-key.json');
    writeFileSync(otherKid, JSON.stringify({ kid: 'some-other-kid', key: '00'.repeat(32) }));
    for (const [env, reason] of [
      [{ MOAT_DEV_KEY_FILE: join(dir, 'no-dev-key.json') }, /got one with the release key "[^"]+"/],
      [{ MOAT_DEV_KEY_FILE: otherKid }, /got one with the release key "[^"]+"/],
      [{ MOAT_NATIVE_DISABLE: '1' }, /expected @moat\/native's addon to load, got the native addon is disabled/],
    ] as const) {
      const out = join(dir, 'refused');
      const r = spawnSync(process.execPath, [nodeCli, 'standalone', '-o', out], { encoding: 'utf8', env: { ...process.env, ...env } });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(reason);
      expect(existsSync(out)).toBe(false);
    }
    const self = run(executable, ['standalone', '-o', join(dir, 'again')]);
    expect(self.status).toBe(2);
    expect(self.stderr).toMatch(/esbuild/);
  });

  it('exits 0 on a clean input', () => {
    const r = run(executable, ['--codename', 'Wombatrix', '-q', join(input, 'clean.js')]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^moat-scan: PASS/);
  });

  // Hides the workspace's addon from the executable (a private mount namespace, as root): it
  // must scan natively with the addon it carries.
  const root_ = process.getuid?.() === 0 && spawnSync('unshare', ['--mount', 'true']).status === 0;
  it.skipIf(!root_)('scans with the addon it carries, the workspace build hidden', () => {
    const args = ['--engine', 'native', '--codename', CODENAME, '--json', input];
    const script = `mount -t tmpfs tmpfs "$1" && shift && exec "$@"`;
    const hidden = spawnSync(
      'unshare',
      ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', nativeBuild, executable, ...args],
      {
        cwd: join(dir, 'work'),
        encoding: 'utf8',
        env: { PATH: process.env.PATH, MOAT_SCAN_CACHE_DIR: join(dir, 'cache-hidden') },
      },
    );
    const node = run(process.execPath, [nodeCli, ...args]);
    expect(hidden.stderr).toBe('');
    expect(hidden.status).toBe(1);
    expect(hidden.stdout).toBe(node.stdout);
    // The Node CLI, the same build hidden, says it lost the native engine: the check can fail.
    const nodeHidden = spawnSync(
      'unshare',
      ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', nativeBuild, process.execPath, nodeCli, ...args],
      {
        cwd: join(dir, 'work'),
        encoding: 'utf8',
        env: { PATH: process.env.PATH, MOAT_SCAN_CACHE_DIR: join(dir, 'cache-hidden-node') },
      },
    );
    expect(nodeHidden.stderr).toMatch(/native scan engine unavailable/);
  });
});
