/**
 * moat-scan throughput on ≥ 100 MB of real minified JavaScript with 1,000 codenames,
 * against ripgrep (`rg -F -f`, Debian's ripgrep) on the same files in the same run. Every
 * tool runs as its own process; each row reports the median of BENCH_RUNS (default 5)
 * wall-clock times and their range.
 *
 *   plain mode  (moat-scan --plain-only)  vs rg -F -f   target ≤ 1.0×
 *   all forms   (moat-scan, every encoding and split literals) vs rg -F -f   target ≤ 1.5×
 *
 * The default way (the native prefilter clears files on native threads, the exact scan reads
 * the rest) runs with its compiled set cached, as in CI after the first build, and compiled
 * in the run; the file-by-file native engine (`--no-prefilter`) and the JavaScript one
 * (`--engine js`) run too.
 *
 * Run: pnpm --filter @moat/build-guard bench (after a build). BENCH_MB sets the corpus size.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
/** Wall-clock times of RUNS runs of a command in its own process (undefined: not installed). */
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
function runs(command: string, args: string[], env: Record<string, string> = {}): number[] | undefined {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    const r = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', env: { ...process.env, ...env } });
    const dt = performance.now() - t;
    if (r.error !== undefined) return undefined;
    if (r.status !== 0 && r.status !== 1) throw new Error(`${command} exited ${r.status}: ${r.stderr}`);
    times.push(dt);
  }
  return times.sort((a, b) => a - b);
}

const median = (xs: number[]) => xs[Math.floor(xs.length / 2)] as number;
const rg = runs('rg', ['-F', '-c', '-f', codenames, corpus]);
const rgi = runs('rg', ['-F', '-i', '-c', '-f', codenames, corpus]);
// The compiled-database cache lives in this run's own directory: cold rows turn it off, warm
// rows fill it once before they are timed.
const cacheDir = join(dir, 'hs-cache');
const scan = (engine: string, cache: 'cold' | 'warm', ...flags: string[]) => {
  const args = [scanCli, ...flags, '--engine', engine, '-q', '-c', codenames, corpus];
  const env = cache === 'cold' ? { MOAT_SCAN_CACHE: '0' } : { MOAT_SCAN_CACHE_DIR: cacheDir };
  // `auto` never compiles 22,000 literals by itself: one `--engine native` run fills the cache.
  if (cache === 'warm')
    spawnSync(process.execPath, [scanCli, ...flags, '--engine', 'native', '-q', '-c', codenames, corpus], {
      stdio: 'ignore',
      env: { ...process.env, ...env },
    });
  return runs(process.execPath, args, env) as number[];
};
const rows: Array<[string, number[] | undefined]> = [
  ['rg -F -f', rg],
  ['rg -F -i -f', rgi],
  ['moat-scan --plain-only --no-sourcemaps (prefilter, cached set)', scan('auto', 'warm', '--plain-only', '--no-sourcemaps')],
  ['moat-scan --plain-only (prefilter, cached set; source-map audit on)', scan('auto', 'warm', '--plain-only')],
  ['moat-scan --plain-only --no-sourcemaps (prefilter, compiled in the run)', scan('native', 'cold', '--plain-only', '--no-sourcemaps')],
  [
    'moat-scan --plain-only --no-sourcemaps --no-prefilter (native engine, file by file)',
    scan('native', 'cold', '--plain-only', '--no-sourcemaps', '--no-prefilter'),
  ],
  ['moat-scan --plain-only --no-sourcemaps, JavaScript engine', scan('js', 'cold', '--plain-only', '--no-sourcemaps')],
  ['moat-scan, every encoding + split literals + source maps (prefilter, cached set)', scan('auto', 'warm')],
  ['moat-scan, every encoding + split literals + source maps (prefilter, compiled in the run)', scan('native', 'cold')],
  ['moat-scan, every encoding + split literals + source maps, --no-prefilter (cached set)', scan('native', 'warm', '--no-prefilter')],
  ['moat-scan, every encoding + split literals + source maps, JavaScript engine', scan('js', 'cold')],
];
const mb = total / 1e6;
const rate = (ms: number) => `${(mb / (ms / 1000)).toFixed(0)} MB/s`;
console.log(
  `moat-scan benchmark: ${mb.toFixed(0)} MB of minified JS in ${statSync(corpus) && sources.length} kinds of bundles, 1,000 codenames (${process.version}); median of ${RUNS} runs (range)`,
);
console.log('| tool | time | throughput | ÷ rg -F -f |');
console.log('|---|---:|---:|---:|');
for (const [name, times] of rows) {
  if (times === undefined) {
    console.log(`| ${name} | (not installed) | | |`);
    continue;
  }
  const ratio =
    rg === undefined
      ? 'n/a'
      : `${(median(times) / median(rg)).toFixed(2)}× (${((times[0] as number) / median(rg)).toFixed(2)}–${((times.at(-1) as number) / median(rg)).toFixed(2)})`;
  console.log(`| ${name} | ${median(times).toFixed(0)} ms | ${rate(median(times))} | ${ratio} |`);
}
// The shape of a standalone executable: the same bytes as one file. ripgrep searches one file
// on one thread; the prefilter cuts it into one run of chunks per core.
const single = join(dir, 'single');
mkdirSync(single);
writeFileSync(join(single, 'app.bin'), Buffer.concat(readdirSync(corpus).map((f) => readFileSync(join(corpus, f)))));
const scanOne = (...flags: string[]) =>
  runs(process.execPath, [scanCli, ...flags, '-q', '-c', codenames, single], { MOAT_SCAN_CACHE_DIR: cacheDir }) as number[];
const rgOne = runs('rg', ['-F', '-c', '-f', codenames, single]);
const singleRows: Array<[string, number[] | undefined]> = [
  ['rg -F -f', rgOne],
  ['moat-scan --plain-only --no-sourcemaps (prefilter, cached set)', scanOne('--plain-only', '--no-sourcemaps')],
  ['moat-scan, every encoding + split literals + source maps (prefilter, cached set)', scanOne()],
];
console.log(`\nThe same ${mb.toFixed(0)} MB as one file:`);
console.log('| tool | time | ÷ rg -F -f on the file |');
console.log('|---|---:|---:|');
for (const [name, times] of singleRows) {
  if (times === undefined) continue;
  const ratio =
    rgOne === undefined
      ? 'n/a'
      : `${(median(times) / median(rgOne)).toFixed(2)}× (${((times[0] as number) / median(rgOne)).toFixed(2)}–${((times.at(-1) as number) / median(rgOne)).toFixed(2)})`;
  console.log(`| ${name} | ${median(times).toFixed(0)} ms | ${ratio} |`);
}
rmSync(dir, { recursive: true, force: true });
