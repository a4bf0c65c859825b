/**
 * The native engine (libhs, one pass for every form) and the JavaScript engine give the same
 * findings, byte for byte and in the same order: on random haystacks that plant every form of
 * random codenames (ASCII and not) in random bytes and feed them in random chunks, in every
 * mode; and on the held corpus of real bundles with planted leaks, through `scanPaths`. The
 * whole-file prefilter changes nothing either: random files with planted forms, split
 * literals and source-map traces, read in random chunk sizes, give the same report with it
 * and without it, and it never clears a file the exact scan finds something in.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CodenameEngine,
  cacheName,
  compileLimit,
  type LiteralPlan,
  literalPlan,
  NATIVE_AUTO_MAX_LITERALS,
  nativeLiterals,
  packPlan,
  type RawMatch,
} from './engine.js';
import { needlesFor } from './needles.js';
import {
  PREFILTER_AUDIT,
  PREFILTER_AUDIT_ALL,
  PREFILTER_CODENAME,
  PREFILTER_SPLIT,
  PREFILTER_WINDOW,
  prefilterFiles,
  prefilterSets,
} from './prefilter.js';
import { AUDIT_SOURCES, type ScanOptions, scanPaths } from './scanner.js';

const require = createRequire(import.meta.url);
const LIBHS = ['/usr/lib/x86_64-linux-gnu/libhs.so.5', '/usr/lib/aarch64-linux-gnu/libhs.so.5', '/usr/lib/libhs.so.5'].some(existsSync);
// The native engine refuses a libhs that fails its known-answer self-test (Vectorscan 5.4.9 does).
let refusal = LIBHS ? '' : 'libhs (Debian: libhyperscan5) is not installed: only the JavaScript engine can run';
const NATIVE = LIBHS && new CodenameEngine(['Capybara'], { engine: 'native', onWarning: (m) => (refusal = m) }).kind === 'native';

function findings(engine: CodenameEngine, haystack: Buffer, cuts: readonly number[]): RawMatch[] {
  const out: RawMatch[] = [];
  const stream = engine.stream((m) => out.push(m));
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    const to = Math.min(haystack.length, cut);
    if (to > at) stream.write(haystack.subarray(at, to));
    at = Math.max(at, to);
  }
  if (at < haystack.length) stream.write(haystack.subarray(at));
  return out;
}

describe.skipIf(!NATIVE)('native and JavaScript engines agree', () => {
  it('the native engine loads where libhs is installed', () => {
    expect(new CodenameEngine(['Capybara']).kind).toBe('native');
    expect(new CodenameEngine(['Capybara'], { engine: 'js' }).kind).toBe('js');
  });

  it('caches compiled databases privately; auto uses a cached one even for many literals; a doctored cache is not trusted', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'moat-scan-cache-')), 'cache');
    const before = process.env.MOAT_SCAN_CACHE_DIR;
    process.env.MOAT_SCAN_CACHE_DIR = dir;
    try {
      // 400 codenames in every encoding: over the auto limit of literals.
      const many = Array.from({ length: 400 }, (_, i) => `Zorblax${i.toString(36)}ian`);
      expect(many.flatMap((c) => needlesFor(c)).length).toBeGreaterThan(NATIVE_AUTO_MAX_LITERALS);
      // Unasked, a large set is searched directly: nothing compiled, nothing cached.
      expect(new CodenameEngine(many).kind).toBe('native');
      expect(existsSync(dir)).toBe(false);
      // Files idle for over 30 days go when a new one is written; others stay.
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const old = new Date(Date.now() - 40 * 24 * 3600 * 1000);
      for (const name of ['stale.moatscan', 'stale.hsdb', 'notes.txt', 'fresh.moatscan'])
        writeFileSync(join(dir, name), 'x', { mode: 0o600 });
      for (const name of ['stale.moatscan', 'stale.hsdb', 'notes.txt']) utimesSync(join(dir, name), old, old);
      expect(new CodenameEngine(many, { engine: 'native' }).kind).toBe('native');
      expect(
        readdirSync(dir)
          .filter((n) => !n.endsWith('.hsdb') || n === 'stale.hsdb')
          .sort(),
      ).toEqual(['fresh.moatscan', 'notes.txt']);
      for (const name of ['fresh.moatscan', 'notes.txt']) rmSync(join(dir, name));
      const [file] = readdirSync(dir);
      expect(file).toMatch(/^[0-9a-f]{64}\.hsdb$/);
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(statSync(join(dir, file as string)).mode & 0o777).toBe(0o600);
      const cachedAuto = new CodenameEngine(many);
      expect(cachedAuto.kind).toBe('native');
      const haystack = Buffer.from(`x = "${many[123]}"; y = "${Buffer.from(many[7] as string).toString('hex')}";`);
      const js = new CodenameEngine(many, { engine: 'js' });
      expect(findings(cachedAuto, haystack, [])).toEqual(findings(js, haystack, []));
      expect(findings(cachedAuto, haystack, []).map((m) => m.encoding)).toEqual(['plain', 'hex']);
      // Garbage in the cache: libhs refuses it and the literals are compiled again.
      writeFileSync(join(dir, file as string), 'not a database', { mode: 0o600 });
      const recompiled = new CodenameEngine(many, { engine: 'native' });
      expect(findings(recompiled, haystack, [])).toEqual(findings(js, haystack, []));
      // A cache others can write is ignored: the set is searched directly.
      chmodSync(dir, 0o777);
      const ignored = new CodenameEngine(many);
      expect(ignored.kind).toBe('native');
      expect(findings(ignored, haystack, [])).toEqual(findings(js, haystack, []));
    } finally {
      if (before === undefined) delete process.env.MOAT_SCAN_CACHE_DIR;
      else process.env.MOAT_SCAN_CACHE_DIR = before;
    }
  });

  it('derives the same needle forms natively as the reference, for any codename, in every mode', () => {
    // Whole plans: the packed set, the plain and case-insensitive needles, every exact needle.
    const summary = (plan: LiteralPlan) => ({
      packed: packPlan(plan),
      regexNeedles: plan.regexNeedles,
      sources: plan.sources,
      exact: Array.from({ length: plan.exactCount }, (_, i) => plan.exactNeedle(i)),
      maxLength: plan.maxLength,
      fold: plan.fold,
    });
    const codename = fc.oneof(
      fc.stringMatching(/^[A-Z][a-z]{3,10}$/),
      // Any UTF-16, lone surrogates included (UTF-8 gives U+FFFD for them), and letters whose case changes their length.
      fc.string({ unit: 'binary', minLength: 4, maxLength: 12 }).filter((c) => !/[\r\n]/.test(c) && [...c].length >= 4),
      fc.string({
        unit: fc.constantFrom('ß', 'İ', 'ﬁ', 'é', 'Σ', '😀', '\ud800', '\u0000', 'a', 'Z', '+', '/'),
        minLength: 4,
        maxLength: 9,
      }),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(codename, { minLength: 1, maxLength: 5 }),
        fc.record({ ignoreCase: fc.boolean(), wholeWord: fc.boolean(), plainOnly: fc.boolean() }),
        (codenames, options) => {
          const native = literalPlan(codenames, options);
          expect(native.packed).toBeDefined();
          expect(summary(native)).toEqual(summary(literalPlan(codenames, options, 'js')));
        },
      ),
      { numRuns: 1000 },
    );
    // Codenames the reference refuses are refused the same way.
    expect(() => literalPlan(['abc'])).toThrow(/ERR_SCAN_CONFIG|at least 4 characters/);
    expect(() => literalPlan(['abcd\nefgh'])).toThrow(/at least 4 characters on one line/);
  });

  it('on random haystacks with every form planted, in random chunks, in every mode', () => {
    const codename = fc.oneof(
      fc.stringMatching(/^[A-Z][a-z]{3,10}$/),
      fc.stringMatching(/^[a-z][A-Za-z0-9_]{3,9}$/),
      fc.constantFrom('Nötfall', 'Éclair', 'Größe', 'ÉCLAIR', 'Straße', 'Kapibara'),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(codename, { minLength: 1, maxLength: 4 }),
        fc.array(fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.string({ unit: 'grapheme-ascii', maxLength: 40 })), { maxLength: 12 }),
        fc.array(fc.nat(30), { maxLength: 8 }),
        // directAbove 0: the native engine searches a direct set instead of a libhs database.
        fc.record({ ignoreCase: fc.boolean(), wholeWord: fc.boolean(), plainOnly: fc.boolean(), directAbove: fc.constantFrom(0, 1e9) }),
        fc.array(fc.nat(2_000), { maxLength: 4 }),
        (codenames, fillers, picks, options, cuts) => {
          // Plant forms of the codenames (and their case variants) between the fillers.
          const forms = codenames.flatMap((c) => [
            ...needlesFor(c, { ignoreCase: true }).map((n) => Buffer.from(n.bytes)),
            Buffer.from(`'${c.slice(0, 2)}' + '${c.slice(2)}'`),
            Buffer.from(`\`\${'${c.slice(0, 2)}'}${c.slice(2)}\``),
            Buffer.from(`"${c.slice(0, 3)}"\u00a0+\t\`${c.slice(3)}\``, 'latin1'),
            Buffer.from(`'${c.slice(0, 1)}' +\n '${c.slice(1, 3)}'+'${c.slice(3)}'`),
            Buffer.from(c.toUpperCase()),
            Buffer.from(`_${c}_`),
          ]);
          const parts: Buffer[] = [];
          fillers.forEach((f, i) => {
            parts.push(typeof f === 'string' ? Buffer.from(f, 'latin1') : Buffer.from(f));
            const pick = picks[i];
            if (pick !== undefined && forms.length > 0) parts.push(forms[pick % forms.length] as Buffer);
          });
          const haystack = Buffer.concat(parts);
          const native = new CodenameEngine(codenames, options);
          const js = new CodenameEngine(codenames, { ...options, engine: 'js' });
          expect(findings(native, haystack, cuts)).toEqual(findings(js, haystack, cuts));
        },
      ),
      { numRuns: 400 },
    );
  });
});

const PREFILTER_CODENAME_ARB = fc.oneof(fc.stringMatching(/^[A-Z][a-z]{3,9}$/), fc.constantFrom('Nötfall', 'Kapibara', 'Zorblaxian'));
// Source-map traces, split literals and bytes that end or start a window.
const TRACE = fc.constantFrom(
  '//# sourceMappingURL=app.js.map\n',
  '//# sourceMappingURL=data:application/json;base64,eyJzb3VyY2VzIjpbImEudHMiXSwic291cmNlc0NvbnRlbnQiOlsieCJdfQ==\n',
  '{"version":3,"sourcesContent":["secret"]}',
  '\n// src/internal/plan.ts\n',
  '\r// lib/a.b@c-d/e.mts\r\n',
  '// x.tsx',
  '\n// not a path.ts\n',
  '\n',
  "' + '",
  '${"',
  '"}',
);
type CaseFiles = Array<{ name: string; parts: Array<string | number> }>;
type CaseOptions = { ignoreCase: boolean; wholeWord: boolean; plainOnly: boolean; sourceMaps: boolean; direct: boolean };
/** Files of text, traces and planted forms (numbers pick one). */
const FILES = fc.array(
  fc.record({
    name: fc.constantFrom('a.js', 'b.mjs', 'c.bin', 'd.cjs'),
    parts: fc.array(
      fc.oneof(
        { weight: 3, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 60 }) },
        { weight: 2, arbitrary: TRACE },
        { weight: 2, arbitrary: fc.nat(40) },
      ),
      { maxLength: 14 },
    ),
  }),
  { minLength: 1, maxLength: 4 },
);
const PREFILTER_OPTIONS = fc.record({
  ignoreCase: fc.boolean(),
  wholeWord: fc.boolean(),
  plainOnly: fc.boolean(),
  sourceMaps: fc.boolean(),
  // Direct sets (auto, over 0 literals) or libhs databases (native).
  direct: fc.boolean(),
});

/** Writes one case's files into `dir`, its planted forms picked by number. */
function writeCase(dir: string, codenames: readonly string[], files: CaseFiles, ignoreCase: boolean): string[] {
  const forms = codenames.flatMap((c) => [
    ...needlesFor(c, { ignoreCase }).map((n) => Buffer.from(n.bytes)),
    Buffer.from(`'${c.slice(0, 2)}' + '${c.slice(2)}'`),
    Buffer.from(`\`\${'${c.slice(0, 2)}'}${c.slice(2)}\``),
    Buffer.from(`"${c.slice(0, 3)}"\u00a0+\t\`${c.slice(3)}\``, 'latin1'),
  ]);
  mkdirSync(dir);
  return files.map((f, i) => {
    const path = join(dir, `${i}-${f.name}`);
    const parts = f.parts.map((p) => (typeof p === 'number' ? (forms[p % forms.length] as Buffer) : Buffer.from(p, 'latin1')));
    writeFileSync(path, Buffer.concat(parts));
    return path;
  });
}

/**
 * One case: the same report with the prefilter, without it and from the JavaScript engine;
 * no file with a finding cleared, and every codename finding in a window the prefilter
 * listed. Returns how many files were cleared and flagged.
 */
async function prefilterCase(
  dir: string,
  codenames: readonly string[],
  files: CaseFiles,
  { direct, ...options }: CaseOptions,
  chunkSize: number,
): Promise<{ cleared: number; flagged: number }> {
  const paths = writeCase(dir, codenames, files, options.ignoreCase);
  const common = { codenames, ...options, chunkSize, engine: direct ? ('auto' as const) : ('native' as const), directAbove: 0 };
  const withPrefilter = await scanPaths([dir], common);
  const exact = await scanPaths([dir], { ...common, prefilter: false });
  const js = await scanPaths([dir], { ...common, prefilter: false, engine: 'js' });
  expect(JSON.stringify(withPrefilter)).toBe(JSON.stringify(exact));
  expect(JSON.stringify(exact)).toBe(JSON.stringify(js));
  const counts = { cleared: 0, flagged: 0 };
  // The superset property, file by file and window by window.
  const sets = await prefilterSets(codenames, common, options.sourceMaps ? AUDIT_SOURCES : undefined);
  if (sets === undefined) return counts; // ignoreCase with non-ASCII forms: the prefilter stands aside
  const result = await prefilterFiles(sets, paths, chunkSize, 64, 2);
  paths.forEach((path, i) => {
    const flags = result.flags[i] as number;
    const found = exact.findings.filter((f) => f.path === path);
    const events = result.events.subarray(result.eventStarts[i] as number, result.eventStarts[i + 1] as number);
    const listed = new Set(events.filter((_, k) => k % 3 === 0 && events[k + 1] === PREFILTER_WINDOW));
    for (const f of found.filter((x) => x.ruleId.startsWith('moat/codename/'))) {
      expect(flags & (PREFILTER_CODENAME | PREFILTER_SPLIT)).not.toBe(0);
      expect(listed.has(Math.floor(((f.offset as number) + (f.length as number) - 1) / chunkSize))).toBe(true);
    }
    if (found.some((f) => f.ruleId.startsWith('moat/sourcemap/')))
      expect(flags & (PREFILTER_CODENAME | PREFILTER_SPLIT | PREFILTER_AUDIT)).not.toBe(0);
    if (flags === 0) counts.cleared++;
    else counts.flagged++;
  });
  rmSync(dir, { recursive: true, force: true });
  return counts;
}

/** Random cases: codenames, files of planted forms and traces, options, a chunk size that cuts them. */
const CASES = [
  fc.uniqueArray(PREFILTER_CODENAME_ARB, { minLength: 1, maxLength: 3 }),
  FILES,
  PREFILTER_OPTIONS,
  fc.integer({ min: 8, max: 300 }),
] as const;

/** Runs `body` in a fresh temporary directory whose `cache` is the scan cache, then removes it. */
async function inScratch(prefix: string, body: (root: string) => Promise<void>): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const before = process.env.MOAT_SCAN_CACHE_DIR;
  process.env.MOAT_SCAN_CACHE_DIR = join(root, 'cache');
  try {
    await body(root);
  } finally {
    if (before === undefined) delete process.env.MOAT_SCAN_CACHE_DIR;
    else process.env.MOAT_SCAN_CACHE_DIR = before;
    rmSync(root, { recursive: true, force: true });
  }
}

describe.skipIf(!NATIVE)('cache names', () => {
  it("are the same SHA-256 whether the addon or node:crypto hashes them: a cache's files keep their names", () => {
    const addon = nativeLiterals().addon;
    expect(typeof addon?.sha256).toBe('function');
    let runs = 0;
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.string({ unit: 'grapheme' }), fc.uint8Array({ maxLength: 300 })), { maxLength: 12 }), (parts) => {
        runs++;
        expect(cacheName(addon, parts)).toBe(cacheName(undefined, parts));
      }),
      { numRuns: 300 },
    );
    expect(runs).toBe(300);
    // Back to back, as the fields were hashed before: the names of the cache files written then.
    expect(cacheName(addon, ['ab', Buffer.from('c')])).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});

describe.skipIf(!NATIVE)('the prefilter and the windows it lists change no finding', () => {
  it('the prefilter: the same reports on random files in random chunk sizes, and no file with a finding cleared', {
    timeout: 120_000,
  }, async () => {
    await inScratch('moat-scan-prefilter-', async (root) => {
      let runs = 0;
      const total = { cleared: 0, flagged: 0 };
      await fc.assert(
        fc.asyncProperty(...CASES, async (codenames, files, options, chunkSize) => {
          const counts = await prefilterCase(join(root, `run-${runs++}`), codenames, files, options, chunkSize);
          total.cleared += counts.cleared;
          total.flagged += counts.flagged;
        }),
        { numRuns: Number(process.env.MOAT_PREFILTER_RUNS ?? 200) },
      );
      // Both ways were taken.
      expect(total.cleared).toBeGreaterThan(0);
      expect(total.flagged).toBeGreaterThan(0);
    });
  });

  it('compiles only what the bytes pay for; a compiled set is cached while the scan reads, and loaded next time', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-scan-persist-'));
    const before = process.env.MOAT_SCAN_CACHE_DIR;
    process.env.MOAT_SCAN_CACHE_DIR = join(dir, 'cache');
    try {
      const path = join(dir, 'bundle.js');
      writeFileSync(path, `var a="Capybara";var b="${Buffer.from('Nightjar').toString('hex')}";\n//# sourceMappingURL=x.map\n`);
      const options = { codenames: ['Capybara', 'Nightjar'] };
      // 114 MB pay for compiling 760 literals, no amount for more than the auto limit.
      expect([compileLimit(0), compileLimit(114e6), compileLimit(1e15)]).toEqual([0, 760, NATIVE_AUTO_MAX_LITERALS]);
      // A few bytes do not pay for compiling even 44 literals: auto searches them directly and caches nothing.
      const first = await scanPaths([path], options);
      expect(existsSync(join(dir, 'cache'))).toBe(false);
      // `--engine native` compiles and caches; the next auto scan loads that set.
      expect(JSON.stringify(await scanPaths([path], { ...options, engine: 'native' }))).toBe(JSON.stringify(first));
      expect(readdirSync(join(dir, 'cache')).filter((n) => n.endsWith('.moatscan'))).toHaveLength(1);
      expect(first.findings.map((f) => f.ruleId)).toEqual(['moat/codename/plain', 'moat/codename/hex', 'moat/sourcemap/url']);
      // The same report from the cached set.
      expect(JSON.stringify(await scanPaths([path], options))).toBe(JSON.stringify(first));
      const sets = await prefilterSets(options.codenames, {}, AUDIT_SOURCES);
      expect(sets?.plan).toBeUndefined(); // loaded from the cache: nothing derived
      expect(sets?.persist).toBeUndefined();
    } finally {
      if (before === undefined) delete process.env.MOAT_SCAN_CACHE_DIR;
      else process.env.MOAT_SCAN_CACHE_DIR = before;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the prefilter hands a file with too many audit matches to list to the whole-file audit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-scan-audit-all-'));
    try {
      const path = join(dir, 'bundle.js');
      writeFileSync(path, Array.from({ length: 70_000 }, (_, i) => `// src/m${i % 30}.ts\nx${i}();\n`).join(''));
      const sets = await prefilterSets(['Capybara'], { engine: 'native' }, AUDIT_SOURCES);
      const result = await prefilterFiles(sets as NonNullable<typeof sets>, [path], 1 << 20, 64, 1);
      expect(result.flags[0]).toBe(PREFILTER_AUDIT | PREFILTER_AUDIT_ALL);
      const prefiltered = await scanPaths([path], { codenames: ['Capybara'], engine: 'native', chunkSize: 1 << 20 });
      const exact = await scanPaths([path], { codenames: ['Capybara'], engine: 'native', chunkSize: 1 << 20, prefilter: false });
      expect(prefiltered.findings.filter((f) => f.ruleId === 'moat/sourcemap/source-path')).toHaveLength(20);
      expect(JSON.stringify(prefiltered)).toBe(JSON.stringify(exact));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('on the held corpus of real bundles with planted leaks, through scanPaths', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-scan-diff-'));
    const root = join(process.cwd(), '../..');
    const bundles = [
      require.resolve('typescript/lib/typescript.js', { paths: [root] }),
      require.resolve('acorn'),
      join(dirname(require.resolve('esbuild/package.json')), 'lib/main.js'),
      require.resolve('fast-check'),
    ];
    const codenames = ['Capybara', 'Nötfall', 'Quilliphant', 'function', 'Tokenizer', 'Zorblaxian'];
    const planted = join(dir, 'planted.js');
    const forms = codenames.flatMap((c) => needlesFor(c, {}).map((n) => Buffer.from(n.bytes)));
    writeFileSync(
      planted,
      Buffer.concat([readFileSync(bundles[1] as string), ...forms.map((f) => Buffer.concat([Buffer.from(';x="'), f, Buffer.from('";')]))]),
    );
    for (const options of [{}, { plainOnly: true }, { ignoreCase: true }, { wholeWord: true }]) {
      const [prefiltered, native, js] = await Promise.all([
        scanPaths([...bundles, planted], { codenames, ...options, engine: 'native' }),
        scanPaths([...bundles, planted], { codenames, ...options, workers: 1, prefilter: false }),
        scanPaths([...bundles, planted], { codenames, ...options, workers: 1, engine: 'js' }),
      ]);
      expect(native.findings.length).toBeGreaterThan(0);
      expect(JSON.stringify(native)).toBe(JSON.stringify(js));
      expect(JSON.stringify(prefiltered)).toBe(JSON.stringify(js));
    }
  });
});

/** Every way `scanPaths` can run: the JavaScript engine, and natively with the prefilter and without. */
const MODES: ReadonlyArray<Pick<ScanOptions, 'engine' | 'workers' | 'prefilter'>> = [
  { engine: 'js', workers: 1 },
  ...(NATIVE ? [{ engine: 'native' as const }, { engine: 'native' as const, prefilter: false, workers: 1 }] : []),
];

describe('findings do not depend on the chunk size a file is read in', () => {
  it('a whole-word codename inside a longer word is not reported where a read ends right after it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-scan-cut-'));
    try {
      const path = join(dir, 'a.js');
      const text = `var a = "xx Capybaras yy"; var b = "Capybara cut";${' '.repeat(100)}`;
      writeFileSync(path, text);
      const at = text.indexOf('Capybara cut');
      for (const mode of MODES) {
        const options = { codenames: ['Capybara'], wholeWord: true, plainOnly: true, ...mode };
        const cut = await scanPaths([path], { ...options, chunkSize: text.indexOf('Capybaras') + 'Capybara'.length });
        const whole = await scanPaths([path], { ...options, chunkSize: 1 << 20 });
        expect(cut.findings.map((f) => [f.offset, f.context])).toEqual([[at, text.slice(at - 24, at + 8 + 24)]]);
        expect(JSON.stringify(cut)).toBe(JSON.stringify(whole));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a finding keeps its whole context, however the reads cut the bytes around it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-scan-context-'));
    try {
      const path = join(dir, 'a.js');
      const text = `${'abcdefghij'.repeat(6)}Zorblaxian${'klmnopqrst'.repeat(6)}`;
      writeFileSync(path, text);
      for (const mode of MODES)
        for (const chunkSize of [8, 13, 61, 69, 75]) {
          const report = await scanPaths([path], { codenames: ['Zorblaxian'], chunkSize, ...mode });
          const whole = `${text.slice(36, 60)}Zorblaxian${text.slice(70, 94)}`;
          expect(report.findings.map((f) => f.context)).toEqual([whole]);
        }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a stream with lookahead holds back its last matches until end(), the same in any chunks', () => {
    const engine = new CodenameEngine(['Capybara'], { wholeWord: true, plainOnly: true });
    const text = Buffer.from('xx Capybaras yy Capybara');
    const seen = (lookahead: boolean, cuts: number[], end: boolean) => {
      const out: RawMatch[] = [];
      const stream = engine.stream((m) => out.push(m), { lookahead });
      let at = 0;
      for (const cut of [...cuts, text.length]) {
        stream.write(text.subarray(at, cut));
        at = cut;
      }
      if (end) stream.end();
      return out;
    };
    expect(seen(true, [11], false)).toEqual([]);
    expect(seen(true, [11], true).map((m) => m.offset)).toEqual([16]);
    expect(seen(true, [1, 2, 3, 5, 8, 11, 20], true)).toEqual(seen(true, [], true));
    // Without lookahead the chunk's end is taken for the stream's: the match cut by it is reported.
    expect(seen(false, [11], false).map((m) => m.offset)).toEqual([3, 16]);
  });

  it.skipIf(!NATIVE)(
    'a real 9 MB bundle read in odd chunks, over several prefilter batches and threads',
    {
      timeout: 120_000,
    },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'moat-scan-big-'));
      try {
        const bundle = require.resolve('typescript/lib/typescript.js', { paths: [join(process.cwd(), '../..')] });
        const codenames = ['Capybara', 'Tokenizer', 'Zorblaxian', 'createCompilerHost', 'function'];
        const forms = codenames.flatMap((c) => [
          ...needlesFor(c, {}).map((n) => Buffer.from(n.bytes)),
          Buffer.from(`'${c.slice(0, 3)}' +  '${c.slice(3)}'`),
        ]);
        const bytes = readFileSync(bundle);
        // Forms planted every 300 KB, so some straddle the chunks.
        const parts: Buffer[] = [];
        for (let at = 0, i = 0; at < bytes.length; at += 300_000, i++) {
          const form = forms[i % forms.length] as Buffer;
          parts.push(bytes.subarray(at, at + 300_000), Buffer.from(';x="'), form, Buffer.from('";'));
        }
        const path = join(dir, 'planted.js');
        writeFileSync(path, Buffer.concat(parts));
        for (const options of [{}, { wholeWord: true }, { ignoreCase: true }])
          for (const mode of MODES.filter((m) => m.engine === 'native')) {
            const common = { codenames, ...options, ...mode };
            const whole = await scanPaths([path], { ...common, chunkSize: 1 << 20 });
            expect(whole.findings.length).toBeGreaterThan(30);
            const cut = await scanPaths([path], { ...common, chunkSize: 65_537 });
            expect(JSON.stringify(cut)).toBe(JSON.stringify(whole));
          }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('random files with planted forms give the same report in random chunk sizes as in 1 MB, in every mode', {
    timeout: 300_000,
  }, async () => {
    await inScratch('moat-scan-chunks-', async (root) => {
      let runs = 0;
      await fc.assert(
        fc.asyncProperty(...CASES, async (codenames, files, { direct, ...options }, chunkSize) => {
          const dir = join(root, `run-${runs++}`);
          writeCase(dir, codenames, files, options.ignoreCase);
          for (const mode of MODES) {
            const common = { codenames, ...options, ...(direct ? { directAbove: 0 } : {}), ...mode };
            const whole = await scanPaths([dir], { ...common, chunkSize: 1 << 20 });
            expect(JSON.stringify(await scanPaths([dir], { ...common, chunkSize }))).toBe(JSON.stringify(whole));
          }
          rmSync(dir, { recursive: true, force: true });
        }),
        { numRuns: Number(process.env.MOAT_CHUNK_RUNS ?? 150) },
      );
    });
  });
});

if (!NATIVE) {
  describe('without a usable libhs', () => {
    it.skip(refusal, () => {});
  });
}
