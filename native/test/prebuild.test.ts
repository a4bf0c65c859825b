/**
 * Publishing: `prebuildify` makes the N-API prebuild that node-gyp-build loads with no build
 * folder, the packed tarball ships sources and prebuilds but never a key, and with neither a
 * prebuild nor a build the loader leaves `native` undefined (callers fail open).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('../', import.meta.url).pathname;

/** Imports the loader of `dir` in a fresh process and reports what it found. */
function load(dir: string): { loaded: boolean; stamps: boolean; error?: string } {
  const script = `const m = await import(${JSON.stringify(join(dir, 'index.js'))});
console.log(JSON.stringify({ loaded: m.native !== undefined, stamps: typeof m.native?.request === 'function' && /^[A-Za-z0-9_-]+$/.test(m.native.keyId()), error: m.loadError?.message }));`;
  // The loader's own chain: not another build named by MOAT_NATIVE_PATH (the sanitizer job's).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'MOAT_NATIVE_PATH'));
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env })) as ReturnType<
    typeof load
  >;
}

describe('prebuilds and the fallback chain', () => {
  it('a prebuild loads without build/, and with neither the loader fails open', { timeout: 180_000 }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-native-prebuild-'));
    for (const entry of ['index.js', 'index.d.ts', 'package.json', 'binding.gyp', 'scripts', 'LICENSE', 'README.md']) {
      cpSync(join(root, entry), join(dir, entry), { recursive: true });
    }
    cpSync(join(root, 'src'), join(dir, 'src'), { recursive: true, filter: (p) => !p.includes('generated') });
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));

    execFileSync('sh', ['-c', 'node scripts/gen-key.mjs && node scripts/with-headers.mjs prebuildify --napi --strip'], {
      cwd: dir,
      stdio: 'pipe',
      // A new shell: no npm_config_nodedir from anyone; the build finds the running Node's headers itself.
      env: {
        ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.toLowerCase() !== 'npm_config_nodedir')),
        PATH: `${join(root, 'node_modules/.bin')}:${process.env.PATH}`,
      },
    });
    const prebuilds = readdirSync(join(dir, 'prebuilds', `${process.platform}-${process.arch}`));
    expect(prebuilds.some((f) => f.endsWith('.node'))).toBe(true);

    rmSync(join(dir, 'build'), { recursive: true, force: true });
    expect(load(dir)).toMatchObject({ loaded: true, stamps: true });

    // What npm would publish: sources and prebuilds, never the generated key header or a dev key.
    const packed = JSON.parse(
      execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: dir, encoding: 'utf8' }),
    ) as Array<{
      files: Array<{ path: string }>;
    }>;
    const files = packed[0]?.files.map((f) => f.path) ?? [];
    expect(files).toContain('src/stamp.c');
    expect(files.some((f) => f.startsWith('prebuilds/'))).toBe(true);
    expect(files.filter((f) => f.includes('generated') || f.includes('key.json') || f.startsWith('build/'))).toEqual([]);

    rmSync(join(dir, 'prebuilds'), { recursive: true });
    const none = load(dir);
    expect(none.loaded).toBe(false);
    expect(none.error).toMatch(/No native build was found|Cannot find/);
    expect(existsSync(join(dir, 'build'))).toBe(false);
  });
});
