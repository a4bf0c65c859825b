// Copies the test programs where an unprivileged user can run them: the repository may live
// under a directory nobody cannot enter (CI clones anywhere). Each program is bundled with
// this package; @moat/native is copied next to it with its built addon.
import { chmodSync, cpSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { buildSync } from 'esbuild';

const nativeDir = dirname(createRequire(import.meta.url).resolve('@moat/native/package.json'));

export function nobodyCopy(...scripts: string[]): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'moat-nobody-'));
  const target = join(dir, 'node_modules/@moat/native');
  mkdirSync(join(target, 'build/Release'), { recursive: true });
  for (const file of ['package.json', 'index.js']) cpSync(join(nativeDir, file), join(target, file));
  cpSync(join(nativeDir, 'build/Release/moat_native.node'), join(target, 'build/Release/moat_native.node'));
  const out: Record<string, string> = {};
  for (const script of scripts) {
    const name = script.split('/').pop() as string;
    buildSync({
      entryPoints: [script],
      bundle: true,
      format: 'esm',
      platform: 'node',
      outfile: join(dir, name),
      external: ['@moat/native', 'node-gyp-build'],
      logLevel: 'silent',
    });
    out[name] = join(dir, name);
  }
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  for (const path of [
    dir,
    join(dir, 'node_modules'),
    join(dir, 'node_modules/@moat'),
    target,
    join(target, 'build'),
    join(target, 'build/Release'),
  ])
    chmodSync(path, 0o755);
  return out;
}
