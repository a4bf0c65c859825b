/**
 * moat-scan throughput on ≥ 100 MB of real minified JavaScript with 1,000 codenames,
 * against ripgrep (`rg -F -f`, Debian's ripgrep) on the same files in the same run. Every
 * tool runs as its own process, best of three wall-clock times.
 *
 *   plain mode  (moat-scan --plain-only)  vs rg -F -f   target ≤ 1.5×
 *   all forms   (moat-scan, every encoding and split literals) vs rg -F -f   target ≤ 3×
 *
 * Run: pnpm --filter @moat/build-guard bench (after a build). BENCH_MB sets the corpus size.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const TARGET_MB = Number(process.env.BENCH_MB ?? 100);
const dir = mkdtempSync(join(tmpdir(), 'moat-scan-bench-'));
const corpus = join(dir, 'corpus');
mkdirSync(corpus);

// Real minified/bundled JavaScript from installed packages.
const root = join(dirname(require.resolve('esbuild/package.json')), '../../../..');
const sources = [
  require.resolve('typescript/lib/typescript.js', { paths: [root] }),
  join(dirname(require.resolve('esbuild/package.json')), 'lib/main.js'),
  require.resolve('acorn'),
  require.resolve('fast-check'),
].map((f) => readFileSync(f));
let total = 0;
for (let i = 0; total < TARGET_MB * 1e6; i++) {
  const part = sources[i % sources.length] as Buffer;
  writeFileSync(join(corpus, `bundle-${i}.js`), part);
  total += part.length;
}

// 1,000 pronounceable codenames of 3 syllables.
let seed = 42;
const rand = () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed / 0x7fffffff;
};
const syllables = 'ka zo ri mu tel vor ban qui dex lon fra sem tor wig yal nub pex cor dal hin'.split(' ');
const names = new Set<string>();
while (names.size < 1000) {
  const word = Array.from({ length: 3 }, () => syllables[Math.floor(rand() * syllables.length)]).join('');
  names.add(word[0]?.toUpperCase() + word.slice(1));
}
const codenames = join(dir, 'codenames.txt');
writeFileSync(codenames, `${[...names].join('\n')}\n`);

const scanCli = new URL('../dist/cli/moat-scan.js', import.meta.url).pathname;
function best(command: string, args: string[]): number | undefined {
  let min = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    const r = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    const dt = performance.now() - t;
    if (r.error !== undefined) return undefined;
    if (r.status !== 0 && r.status !== 1) throw new Error(`${command} exited ${r.status}: ${r.stderr}`);
    min = Math.min(min, dt);
  }
  return min;
}

const rg = best('rg', ['-F', '-c', '-f', codenames, corpus]);
const plain = best(process.execPath, [scanCli, '--plain-only', '--no-sourcemaps', '-q', '-c', codenames, corpus]) as number;
const all = best(process.execPath, [scanCli, '-q', '-c', codenames, corpus]) as number;
const mb = total / 1e6;
const rate = (ms: number) => `${(mb / (ms / 1000)).toFixed(0)} MB/s`;
console.log(
  `moat-scan benchmark: ${mb.toFixed(0)} MB of minified JS in ${statSync(corpus) && sources.length} kinds of bundles, 1,000 codenames (${process.version})`,
);
console.log('| tool | time | throughput | vs rg -F -f |');
console.log('|---|---:|---:|---:|');
if (rg === undefined) console.log('| rg -F -f | (ripgrep not installed) | | |');
else console.log(`| rg -F -f | ${rg.toFixed(0)} ms | ${rate(rg)} | 1.00× |`);
const ratio = (ms: number) => (rg === undefined ? 'n/a' : `${(ms / rg).toFixed(2)}×`);
console.log(`| moat-scan --plain-only | ${plain.toFixed(0)} ms | ${rate(plain)} | ${ratio(plain)} |`);
console.log(`| moat-scan (all encodings + split literals + source maps) | ${all.toFixed(0)} ms | ${rate(all)} | ${ratio(all)} |`);
rmSync(dir, { recursive: true, force: true });
