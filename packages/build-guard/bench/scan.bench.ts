/**
 * moat-scan against ripgrep (`rg -F -f`, Debian's ripgrep) on ~110 MB of real minified
 * JavaScript with 1,000 codenames of which 5 occur (plain, base64, `\x` escapes, a split
 * literal), as 8 files and as one file, in the same run.
 *
 *   cold: a fresh machine, as a CI runner meets it: an empty cache directory, cleared before
 *         every run (moat-scan writes what it compiles there, as it would on the runner)
 *   warm: the cache filled by an earlier `--engine native` run
 *   standalone: the same CLI as one executable (`moat-scan standalone`: Bun's runtime and
 *         the addon in it), built by this bench; "node -e 0" is Node's own start, the floor of
 *         any CLI that runs on Node
 *
 *   --plain-only vs rg -F -f         target ≤ 1.0× (cold)
 *   every encoding + split literals  target ≤ 1.5× (cold)
 *
 * A third table scans the 8 files for a short list, the 5 planted codenames and 15 others: rg
 * searches so few literals with SIMD (Teddy) instead of an automaton, several times faster,
 * while moat-scan's start stays what it is; no target, the figure a team with a short list meets.
 *
 * Every tool runs as its own process, in rounds: each round runs every row once, in turn, and
 * each row's ratio is taken against rg's time in the same round, so a busy machine slows both
 * sides of a ratio alike. A row prints the median time and the median ratio with the range
 * over the rounds. The OS page cache is not dropped (that needs root and would slow everyone
 * else on a shared machine): the corpus is read once before the rounds, so every tool reads
 * it from memory, rg included.
 *
 * Run: pnpm --filter @moat/build-guard bench (after a build). BENCH_MB sets the corpus size,
 * BENCH_RUNS the rounds (default 7).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

const TARGET = Number(process.env.BENCH_MB ?? 110) * 1e6;
const ROUNDS = Number(process.env.BENCH_RUNS ?? 7);
const dir = mkdtempSync(join(tmpdir(), 'moat-scan-bench-'));
const workspace = new URL('../../../', import.meta.url).pathname;

/** Minified JavaScript installed in this workspace: files over 50 KB whose lines average over 1,000 characters. */
function minifiedSources(): Buffer[] {
  const store = join(workspace, 'node_modules/.pnpm');
  const found: string[] = [];
  const walk = (path: string) => {
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      const child = join(path, entry.name);
      if (entry.isDirectory()) walk(child);
      else if (entry.isFile() && entry.name.endsWith('.js') && statSync(child).size > 50_000) found.push(child);
    }
  };
  for (const entry of readdirSync(store, { withFileTypes: true }))
    if (entry.isDirectory() && entry.name !== 'node_modules') walk(join(store, entry.name));
  const seen = new Set<string>();
  return found.sort().flatMap((path) => {
    const bytes = readFileSync(path);
    const hash = createHash('sha256').update(bytes).digest('hex');
    const lines = bytes.toString('latin1').split('\n').length;
    if (bytes.length / lines < 1000 || seen.has(hash)) return [];
    seen.add(hash);
    return [bytes];
  });
}

/** 1,000 pronounceable codenames of 3 syllables. */
function codenameList(): string[] {
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
  return [...names];
}

const sources = minifiedSources();
const names = codenameList();
const codenames = join(dir, 'codenames.txt');
writeFileSync(codenames, `${names.join('\n')}\n`);
const [a, b, c, d, e] = [0, 111, 222, 333, 444].map((i) => names[i] as string) as [string, string, string, string, string];
/** The short list: the 5 planted codenames and 15 that do not occur. */
const shortList = join(dir, 'codenames-20.txt');
writeFileSync(shortList, `${[a, b, c, d, e, ...names.slice(1, 16)].join('\n')}\n`);
const leaks: Record<number, string[]> = {
  3: [a, b, c, d, e].map((n, i) => `;var x${i}="${n}";`),
  6: [
    `;var b="${Buffer.from(`x${b}`).toString('base64')}";`,
    `;var e="${[...Buffer.from(c)].map((x) => `\\x${x.toString(16)}`).join('')}";`,
    `;var s='${d.slice(0, 4)}'+'${d.slice(4)}';`,
  ],
};
const corpus = join(dir, 'corpus');
const single = join(dir, 'single');
mkdirSync(corpus);
mkdirSync(single);
const files: Buffer[] = [];
for (let f = 0, next = 0; f < 8; f++) {
  const parts: Buffer[] = [];
  for (let size = 0; size < TARGET / 8; next++) {
    const part = sources[next % sources.length] as Buffer;
    parts.push(part);
    size += part.length;
  }
  for (const [i, leak] of (leaks[f] ?? []).entries()) parts.splice(2 + 3 * i, 0, Buffer.from(leak));
  files.push(Buffer.concat(parts));
  writeFileSync(join(corpus, `bundle-${f}.js`), files[f] as Buffer);
}
writeFileSync(join(single, 'app.js'), Buffer.concat(files));
const total = files.reduce((n, f) => n + f.length, 0);

const scanCli = new URL('../dist/cli/moat-scan.js', import.meta.url).pathname;
const cacheDir = join(dir, 'hs-cache');
const coldDir = join(dir, 'cold-cache');
type Command = [command: string, args: string[], env: Record<string, string>, fresh?: string];
interface Row {
  readonly name: string;
  /** The command over `input`, searching for the codenames in `list`. */
  readonly run: (input: string, list: string) => Command;
  /** False for a row that reads no input (a start-up floor): no throughput. */
  readonly reads?: boolean;
}
const standaloneCli = join(dir, 'standalone', 'moat-scan');
const built = spawnSync(process.execPath, [scanCli, 'standalone', '-o', standaloneCli], { encoding: 'utf8' });
if (built.status !== 0) throw new Error(`the standalone build failed: ${built.stderr}`);
const rg =
  (...flags: string[]): Row['run'] =>
  (input, list) => ['rg', ['-F', ...flags, '-c', '-f', list, input], {}];
const scan =
  (cache: 'cold' | 'warm', ...flags: string[]): Row['run'] =>
  (input, list) => {
    const args = [scanCli, ...flags, '-q', '-c', list, input];
    return cache === 'cold'
      ? [process.execPath, args, { MOAT_SCAN_CACHE_DIR: coldDir }, coldDir]
      : [process.execPath, args, { MOAT_SCAN_CACHE_DIR: cacheDir }];
  };
/** The standalone executable, cold: its own empty cache directory before every run. */
const standalone =
  (...flags: string[]): Row['run'] =>
  (input, list) => [standaloneCli, [...flags, '-q', '-c', list, input], { MOAT_SCAN_CACHE_DIR: coldDir }, coldDir];
const nodeStart: Row['run'] = () => [process.execPath, ['-e', '0'], {}];

/** Wall-clock milliseconds of one run (after emptying its `fresh` cache directory); undefined when the tool is not installed. */
function time([command, args, env, fresh]: Command): number | undefined {
  if (fresh !== undefined) rmSync(fresh, { recursive: true, force: true });
  const t = performance.now();
  const r = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', env: { ...process.env, ...env } });
  const dt = performance.now() - t;
  if (r.error !== undefined) return undefined;
  if (r.status !== 0 && r.status !== 1) throw new Error(`${command} exited ${r.status}: ${r.stderr}`);
  return dt;
}

const pick = (xs: number[], q: number) => [...xs].sort((x, y) => x - y)[Math.floor(q * (xs.length - 1) + 0.5)] as number;

/** Runs the rows in rounds over `input` for the codenames in `list` and prints each one's median time and its ratio to the first row. */
function table(title: string, input: string, rows: readonly Row[], list = codenames): void {
  for (const cache of [
    ['--engine', 'native'],
    ['--engine', 'native', '--plain-only'],
  ])
    spawnSync(process.execPath, [scanCli, ...cache, '-q', '-c', list, input], {
      stdio: 'ignore',
      env: { ...process.env, MOAT_SCAN_CACHE_DIR: cacheDir },
    });
  for (const row of rows) time(row.run(input, list)); // warm-up: the page cache, for every tool alike
  const times = rows.map(() => [] as number[]);
  for (let round = 0; round < ROUNDS; round++)
    rows.forEach((row, i) => {
      const t = time(row.run(input, list));
      if (t !== undefined) times[i]?.push(t);
    });
  const base = times[0] as number[];
  console.log(`\n${title}\n\n| tool | time | throughput | ÷ rg -F -f (range over ${ROUNDS} rounds) |\n|---|---:|---:|---:|`);
  for (const [i, row] of rows.entries()) {
    const ts = times[i] as number[];
    if (ts.length === 0) {
      console.log(`| ${row.name} | (not installed) | | |`);
      continue;
    }
    const ratios = ts.map((t, k) => t / (base[k] as number));
    const median = pick(ts, 0.5);
    const ratio = `${pick(ratios, 0.5).toFixed(2)}× (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`;
    const throughput = row.reads === false ? '—' : `${(total / 1e6 / (median / 1000)).toFixed(0)} MB/s`;
    console.log(`| ${row.name} | ${median.toFixed(0)} ms | ${throughput} | ${ratio} |`);
  }
}

// The machine may be shared: its load says how far the times stand from an idle one's.
const load = () =>
  loadavg()
    .map((x) => x.toFixed(1))
    .join(', ');
console.log(
  `moat-scan benchmark: ${(total / 1e6).toFixed(0)} MB of minified JS (${sources.length} distinct files from this ` +
    `workspace's node_modules), 1,000 codenames, 5 of them planted; ${process.version}; median of ${ROUNDS} rounds; ` +
    `load average ${load()} on ${cpus().length} cores at the start`,
);
const every = 'every encoding + split literals + source maps';
table('8 files:', corpus, [
  { name: 'rg -F -f', run: rg() },
  { name: 'rg -F -i -f', run: rg('-i') },
  { name: 'moat-scan --plain-only, cold (empty cache)', run: scan('cold', '--plain-only') },
  { name: `moat-scan, ${every}, cold (empty cache)`, run: scan('cold') },
  { name: 'moat-scan --plain-only, warm (compiled set cached)', run: scan('warm', '--plain-only') },
  { name: `moat-scan, ${every}, warm (compiled set cached)`, run: scan('warm') },
  { name: `moat-scan, ${every}, cold, --no-prefilter`, run: scan('cold', '--no-prefilter') },
  { name: `moat-scan, ${every}, JavaScript engine`, run: scan('cold', '--engine', 'js') },
  { name: 'standalone moat-scan --plain-only, cold (empty cache)', run: standalone('--plain-only') },
  { name: `standalone moat-scan, ${every}, cold (empty cache)`, run: standalone() },
  { name: 'node -e 0 (Node starting, nothing else)', run: nodeStart, reads: false },
]);
table(`The same ${(total / 1e6).toFixed(0)} MB as one file:`, single, [
  { name: 'rg -F -f', run: rg() },
  { name: 'moat-scan --plain-only, cold (empty cache)', run: scan('cold', '--plain-only') },
  { name: `moat-scan, ${every}, cold (empty cache)`, run: scan('cold') },
  { name: 'moat-scan --plain-only, warm (compiled set cached)', run: scan('warm', '--plain-only') },
  { name: `moat-scan, ${every}, warm (compiled set cached)`, run: scan('warm') },
  { name: 'standalone moat-scan --plain-only, cold (empty cache)', run: standalone('--plain-only') },
  { name: `standalone moat-scan, ${every}, cold (empty cache)`, run: standalone() },
]);
table(
  '8 files, a short list (the 5 planted codenames and 15 others):',
  corpus,
  [
    { name: 'rg -F -f', run: rg() },
    { name: 'moat-scan --plain-only, cold (empty cache)', run: scan('cold', '--plain-only') },
    { name: `moat-scan, ${every}, cold (empty cache)`, run: scan('cold') },
    { name: 'standalone moat-scan --plain-only, cold (empty cache)', run: standalone('--plain-only') },
    { name: `standalone moat-scan, ${every}, cold (empty cache)`, run: standalone() },
    { name: 'node -e 0 (Node starting, nothing else)', run: nodeStart, reads: false },
  ],
  shortList,
);
console.log(`\nload average ${load()} at the end`);
rmSync(dir, { recursive: true, force: true });
