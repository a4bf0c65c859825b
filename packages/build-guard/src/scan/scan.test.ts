import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import AjvDraft04 from 'ajv-draft-04';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BuildGuardError } from '../errors.js';
import { checkCodename, ENCODINGS, type Encoding } from './needles.js';
import { auditPack } from './pack.js';
import { formatSarif } from './report.js';
import { nameMatcher, parseAllowlist, parseCodenames, scanPaths } from './scanner.js';

const require = createRequire(import.meta.url);
const CODENAME = 'Capybara';
const dir = mkdtempSync(join(tmpdir(), 'moat-scan-'));
const cli = new URL('../../dist/cli/moat-scan.js', import.meta.url).pathname;

const hex2 = (n: number) => n.toString(16).padStart(2, '0');
const units = [...CODENAME].map((c) => c.charCodeAt(0));

/** One planted leak per supported form, as it would appear in a shipped bundle. */
const PLANTED: Record<Encoding, string | Buffer> = {
  plain: `var a="${CODENAME}";`,
  utf16le: Buffer.concat([Buffer.from('\x00\x01header'), Buffer.from(CODENAME, 'utf16le'), Buffer.from('\x00\x00')]),
  utf16be: Buffer.concat([Buffer.from('\x00\x01'), Buffer.from(CODENAME, 'utf16le').swap16(), Buffer.from('\x00\x00')]),
  hex: `const k="7a${Buffer.from(CODENAME).toString('hex')}ff";`,
  base64: `atob("${Buffer.from(`x${CODENAME}-internal`).toString('base64')}")`,
  // ASCII letters never give "+" or "/" in base64, so base64url only differs for other text.
  base64url: `token=${Buffer.from('Nötfall~ ops').toString('base64url')}`,
  'escape-x': `const s="${[...Buffer.from(CODENAME)].map((b) => `\\x${hex2(b)}`).join('')}";`,
  'escape-u': `const s="${units.map((u) => `\\u${u.toString(16).padStart(4, '0').toUpperCase()}`).join('')}";`,
  'escape-u-brace': `const s=\`${units.map((u) => `\\u{${u.toString(16)}}`).join('')}\`;`,
  percent: `fetch("/api?q=${[...Buffer.from(CODENAME)].map((b) => `%${hex2(b).toUpperCase()}`).join('')}")`,
  charcodes: `String.fromCharCode(${units.join(', ')})`,
  'split-literal': `const n = 'Capy' + 'bara'; const m = \`${'Capy'}\${'bara'}\`;`,
};

function write(name: string, content: string | Buffer): string {
  const path = join(dir, name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  return path;
}

describe('planted leaks', () => {
  it('finds a non-ASCII codename as bundlers print it in ASCII (esbuild, terser), escaped by code unit', async () => {
    const { transformSync } = await import('esbuild');
    for (const codename of ['Ärger', 'Nötfall', '秘密計画', 'Café☕']) {
      const bundled = transformSync(`export const mode = "${codename}-internal";`, { minify: true }).code;
      expect(bundled, codename).not.toContain(codename);
      const lower = bundled.replace(/\\[xu][0-9A-F]+/g, (e) => e.toLowerCase());
      const fully = `const s="${[...codename]
        .map((c) => {
          const n = c.charCodeAt(0);
          return n <= 0xff ? `\\x${hex2(n)}` : `\\u${n.toString(16).padStart(4, '0')}`;
        })
        .join('')}";`;
      for (const [form, text] of [
        ['esbuild', bundled],
        ['lower', lower],
        ['fully', fully],
      ]) {
        const path = write(`planted/non-ascii-${form}-${[...codename].length}.js`, text as string);
        const report = await scanPaths([path], { codenames: [codename] });
        expect(
          report.findings.map((f) => f.encoding),
          `${codename} ${form}: ${text}`,
        ).toContain('escape-x');
      }
    }
  });

  for (const encoding of ENCODINGS) {
    it(`finds the codename encoded as ${encoding}`, async () => {
      const path = write(`planted/${encoding}.js`, PLANTED[encoding]);
      const codename = encoding === 'base64url' ? 'Nötfall~' : CODENAME;
      const report = await scanPaths([path], { codenames: [codename] });
      const found = report.findings.filter((f) => f.codename === codename).map((f) => f.encoding);
      expect(found).toContain(encoding);
      const finding = report.findings.find((f) => f.encoding === encoding);
      expect(finding?.ruleId).toBe(`moat/codename/${encoding}`);
      expect(finding?.offset).toBeGreaterThanOrEqual(0);
    });
  }

  it('a split literal is reported from its first character to its last, the junctions inside included', async () => {
    const text = PLANTED['split-literal'] as string;
    const path = write('planted/split-span.js', text);
    for (const engine of ['auto', 'js'] as const) {
      const report = await scanPaths([path], { codenames: [CODENAME], engine, sourceMaps: false });
      const spans = report.findings
        .filter((f) => f.encoding === 'split-literal')
        .map((f) => text.slice(f.offset, (f.offset as number) + (f.length as number)));
      expect(spans, engine).toEqual(["Capy' + 'bara", "Capy${'bara"]);
    }
  });

  it('plain-only mode finds plain text and nothing encoded', async () => {
    const paths = ENCODINGS.map((e) => join(dir, `planted/${e}.js`));
    const report = await scanPaths(paths, { codenames: [CODENAME], plainOnly: true, sourceMaps: false });
    expect(new Set(report.findings.map((f) => f.encoding))).toEqual(new Set(['plain']));
  });

  it('ignore-case and whole-word modes', async () => {
    const path = write('modes.js', 'let a="CAPYBARA"; let b="capybaras"; let c=capybara_x; let d=(capybara);');
    const ci = await scanPaths([path], { codenames: [CODENAME], ignoreCase: true, sourceMaps: false });
    expect(ci.findings.filter((f) => f.encoding === 'plain')).toHaveLength(4);
    const word = await scanPaths([path], { codenames: [CODENAME], ignoreCase: true, wholeWord: true, sourceMaps: false });
    expect(word.findings.filter((f) => f.encoding === 'plain').map((f) => f.context?.slice(20, 40))).toHaveLength(2);
    const exact = await scanPaths([path], { codenames: [CODENAME], sourceMaps: false });
    expect(exact.findings).toEqual([]);
  });

  it('finds a codename across chunk boundaries, once', async () => {
    const text = `${'x'.repeat(1000)}${CODENAME}${'y'.repeat(1000)}`;
    for (let chunkSize = 995; chunkSize <= 1010; chunkSize++) {
      const path = write('boundary.js', text);
      const report = await scanPaths([path], { codenames: [CODENAME], chunkSize, sourceMaps: false });
      expect(report.findings.map((f) => [f.encoding, f.offset])).toEqual([['plain', 1000]]);
    }
  });

  it('finds leaks inside .tgz npm tarballs, naming the member', async () => {
    const tarball = join(dir, 'pkg.tgz');
    const pkg = join(dir, 'tarball-src');
    mkdirSync(join(pkg, 'package/dist'), { recursive: true });
    writeFileSync(join(pkg, 'package/package.json'), '{"name":"leaky","version":"1.0.0"}');
    writeFileSync(join(pkg, 'package/dist/index.js'), PLANTED.base64 as string);
    mkdirSync(join(pkg, `package/dist/${'deep/'.repeat(25)}`), { recursive: true });
    writeFileSync(join(pkg, `package/dist/${'deep/'.repeat(25)}long.js`), PLANTED.plain as string); // > 100-byte path: GNU/pax long names
    execFileSync('tar', ['-czf', tarball, '-C', pkg, 'package']);
    const report = await scanPaths([tarball], { codenames: [CODENAME] });
    expect(report.findings.map((f) => f.path).sort()).toEqual([
      `${tarball}!package/dist/${'deep/'.repeat(25)}long.js`,
      `${tarball}!package/dist/index.js`,
    ]);
  });

  it('finds codenames in file and folder names below the inputs and in archive members, each folder once, in every scan mode', async () => {
    const root = join(dir, 'named-tree');
    mkdirSync(join(root, 'dist/capybara-assets/deeper'), { recursive: true });
    for (const name of ['one.js', 'two.js', 'deeper/three.js']) writeFileSync(join(root, 'dist/capybara-assets', name), 'x');
    writeFileSync(join(root, 'dist/Capybara.chunk.js'), 'x');
    writeFileSync(join(root, 'dist/clean.js'), 'x');
    const pkg = join(dir, 'named-tarball-src');
    mkdirSync(join(pkg, 'package/lib/Capybara'), { recursive: true });
    writeFileSync(join(pkg, 'package/lib/Capybara/a.js'), 'x');
    writeFileSync(join(pkg, 'package/lib/Capybara/b.js'), 'x');
    const tarball = join(root, 'dist/pkg.tgz');
    execFileSync('tar', ['-czf', tarball, '-C', pkg, 'package']);
    const expected = [`${root}/dist/Capybara.chunk.js`, `${tarball}!package/lib/Capybara`];
    for (const mode of [
      { prefilter: false, workers: 1 },
      { prefilter: true },
      { prefilter: false, workers: 2 },
      { engine: 'js' as const },
    ]) {
      const report = await scanPaths([join(root, 'dist')], { codenames: [CODENAME], sourceMaps: false, ...mode });
      expect(report.findings.map((f) => `${f.path} ${f.ruleId} ${f.message}`).sort(), JSON.stringify(mode)).toEqual(
        expected.map(
          (path) => `${path} moat/codename/name internal codename "${CODENAME}" in a ${path.endsWith('.js') ? 'file' : 'folder'} name`,
        ),
      );
      const folded = await scanPaths([join(root, 'dist')], { codenames: [CODENAME], sourceMaps: false, ignoreCase: true, ...mode });
      expect(folded.findings.map((f) => f.path).sort()).toEqual([
        `${root}/dist/Capybara.chunk.js`,
        `${root}/dist/capybara-assets`,
        `${tarball}!package/lib/Capybara`,
      ]);
    }
    // The input's own name is the caller's choice, not something shipped; a file input's name is searched.
    const own = await scanPaths([join(root, 'dist/capybara-assets')], { codenames: [CODENAME], sourceMaps: false, ignoreCase: true });
    expect(own.findings).toEqual([]);
    const file = await scanPaths([join(root, 'dist/Capybara.chunk.js')], { codenames: [CODENAME], sourceMaps: false });
    expect(file.findings.map((f) => f.path)).toEqual([join(root, 'dist/Capybara.chunk.js')]);
    const allowed = await scanPaths([join(root, 'dist')], {
      codenames: [CODENAME],
      sourceMaps: false,
      allowlist: [{ rule: 'moat/codename/name', path: '**', reason: 'names are public' }],
    });
    expect([allowed.findings, allowed.suppressed]).toEqual([[], 2]);
    const off = await scanPaths([join(root, 'dist')], { codenames: [CODENAME], sourceMaps: false, names: false });
    expect(off.findings).toEqual([]);
  });

  it('matches names as a naive search does (any codenames, case folding, whole words)', () => {
    const alphabet = fc.constantFrom('a', 'b', 'A', 'B', '_', '-', '.', 'é', '1');
    const text = (min: number, max: number) => fc.array(alphabet, { minLength: min, maxLength: max }).map((c) => c.join(''));
    fc.assert(
      fc.property(
        fc.uniqueArray(text(1, 6), { minLength: 1, maxLength: 6 }),
        fc.array(text(0, 16), { maxLength: 8 }),
        fc.boolean(),
        fc.boolean(),
        (codenames, names, ignoreCase, wholeWord) => {
          const match = nameMatcher({ codenames, ignoreCase, wholeWord });
          const fold = (t: string) => (ignoreCase ? t.replace(/[A-Z]/g, (c) => c.toLowerCase()) : t);
          const word = (t: string, i: number) => i >= 0 && i < t.length && /[A-Za-z0-9_]/.test(t[i] as string);
          for (const name of names) {
            const naive = codenames.filter((c) => {
              const hay = fold(name);
              const needle = fold(c);
              for (let at = hay.indexOf(needle); at !== -1; at = hay.indexOf(needle, at + 1))
                if (!wholeWord || (!word(hay, at - 1) && !word(hay, at + needle.length))) return true;
              return false;
            });
            expect(match(name).sort()).toEqual(naive.sort());
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('keeps at most 10,000 findings per file and counts the rest in one warning (memory bounded by files, not findings)', async () => {
    const path = write('many/every-line.js', `var a = "${CODENAME}";\n`.repeat(12_345));
    for (const prefilter of [true, false]) {
      const report = await scanPaths([path], { codenames: [CODENAME], prefilter, workers: 1 });
      const listed = report.findings.filter((f) => f.ruleId === 'moat/codename/plain');
      expect(listed, String(prefilter)).toHaveLength(10_000);
      expect(report.findings.filter((f) => f.ruleId === 'moat/scan/findings-omitted').map((f) => f.message)).toEqual([
        '2345 more findings in this file, not listed (at most 10000 are kept per file)',
      ]);
    }
  });

  it('finds leaks in a tarball inside the tarball (a vendored .tgz), naming the path through both', async () => {
    const inner = join(dir, 'nested-src/vendor');
    mkdirSync(join(inner, 'package'), { recursive: true });
    writeFileSync(join(inner, 'package/index.js'), PLANTED.plain as string);
    const outer = join(dir, 'nested-src/outer');
    mkdirSync(join(outer, 'package/dist'), { recursive: true });
    execFileSync('tar', ['-czf', join(outer, 'package/dist/vendor.tgz'), '-C', inner, 'package']);
    writeFileSync(join(outer, 'package/dist/not-a-tarball.tgz'), 'plain text, not gzip');
    const tarball = join(dir, 'nested.tgz');
    execFileSync('tar', ['-czf', tarball, '-C', outer, 'package']);
    const report = await scanPaths([tarball], { codenames: [CODENAME] });
    expect(report.findings.map((f) => f.path)).toEqual([`${tarball}!package/dist/vendor.tgz!package/index.js`]);
    // A member named as an archive that is none cannot be vouched for: an error, not a pass.
    expect(report.errors.map((e) => e.path)).toEqual([`${tarball}!package/dist/not-a-tarball.tgz`]);
  });

  it('follows symbolic links (an input that is one, links inside a tree), reads each file once, and calls a link to nothing an error', async () => {
    const { symlinkSync } = await import('node:fs');
    const build = join(dir, 'links/build');
    mkdirSync(join(build, 'sub'), { recursive: true });
    writeFileSync(join(build, 'leak.js'), PLANTED.plain as string);
    writeFileSync(join(dir, 'links/outside.js'), PLANTED.plain as string);
    symlinkSync(join(dir, 'links/build'), join(dir, 'links/dist'));
    symlinkSync(join(dir, 'links/outside.js'), join(build, 'sub/linked.js'));
    symlinkSync(build, join(build, 'sub/loop'));
    for (const prefilter of [true, false]) {
      const report = await scanPaths([join(dir, 'links/dist')], { codenames: [CODENAME], prefilter, workers: 1 });
      expect(report.findings.map((f) => f.path).sort(), String(prefilter)).toEqual([
        join(dir, 'links/dist/leak.js'),
        join(dir, 'links/dist/sub/linked.js'),
      ]);
      expect(report.errors).toEqual([]);
      // The same file by three paths, overlapping inputs: read once.
      const again = await scanPaths([join(dir, 'links/dist'), join(build, 'leak.js'), join(dir, 'links/dist/leak.js')], {
        codenames: [CODENAME],
        prefilter,
        workers: 1,
      });
      expect(again.files).toBe(report.files);
    }
    symlinkSync(join(dir, 'links/missing.js'), join(build, 'dangling.js'));
    const dangling = await scanPaths([join(dir, 'links/dist')], { codenames: [CODENAME] });
    expect(dangling.errors.map((e) => [e.path, e.message.startsWith('a symbolic link to nothing')])).toEqual([
      [join(dir, 'links/dist/dangling.js'), true],
    ]);
  });

  it('finds the codename in a standalone executable built with bun build --compile', { timeout: 120_000 }, async () => {
    const src = write(
      'exe/main.ts',
      `console.log(["Capy", "bara"].join("") === "${CODENAME}" ? "internal ${CODENAME} mode" : "public");\n`,
    );
    const exe = join(dir, 'exe/app');
    const bun = join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe');
    execFileSync(bun, ['build', '--compile', src, `--outfile=${exe}`], { stdio: 'pipe' });
    const report = await scanPaths([exe], { codenames: [CODENAME] });
    expect(report.findings.some((f) => f.encoding === 'plain')).toBe(true);
    expect(report.bytes).toBeGreaterThan(10_000_000);
    // Bun's own runtime carries source-map text of its own: no audit finding comes from it.
    expect(report.findings.filter((f) => f.ruleId.startsWith('moat/sourcemap/'))).toEqual([]);
  });

  it("audits a Bun executable's program for source maps, not Bun's runtime around it", { timeout: 120_000 }, async () => {
    const { readFileSync: read } = await import('node:fs');
    const { bunProgramRange } = await import('./executable.js');
    const map = Buffer.from('{"version":3,"sources":["a.ts"],"mappings":"AAAA"}').toString('base64');
    const src = write('exe-map/main.ts', `console.log(${JSON.stringify(`//# sourceMappingURL=data:application/json;base64,${map}`)});\n`);
    const exe = join(dir, 'exe-map/app');
    const bun = join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe');
    execFileSync(bun, ['build', '--compile', src, `--outfile=${exe}`], { stdio: 'pipe' });
    const bytes = read(exe);
    const range = bunProgramRange((offset, length) => bytes.subarray(offset, offset + length), bytes.length);
    expect(range).toBeDefined();
    for (const prefilter of [true, false]) {
      const report = await scanPaths([exe], { codenames: [CODENAME], prefilter });
      const audit = report.findings.filter((f) => f.ruleId.startsWith('moat/sourcemap/'));
      expect(
        audit.map((f) => f.ruleId),
        String(prefilter),
      ).toEqual(['moat/sourcemap/inline']);
      expect(audit[0]?.offset).toBeGreaterThanOrEqual(range?.start as number);
      expect(audit[0]?.offset).toBeLessThan(range?.end as number);
    }
  });
});

describe('clean corpus: real third-party bundles', () => {
  it('gives zero codename findings for unrelated codenames', { timeout: 120_000 }, async () => {
    const files = [
      require.resolve('typescript/lib/typescript.js', { paths: [join(process.cwd(), '../..')] }),
      require.resolve('acorn'),
      join(dirname(require.resolve('esbuild/package.json')), 'lib/main.js'),
      require.resolve('ajv-draft-04'),
      require.resolve('fast-check'),
    ];
    const codenames = ['Quilliphant', 'Zorblaxian', 'Tandoorixa', 'Vexillumor', 'Marmosetta', 'Pangolindo', 'Nightjarro', 'Fenneclore'];
    const report = await scanPaths(files, { codenames });
    expect(report.errors).toEqual([]);
    expect(report.findings.filter((f) => f.codename !== undefined)).toEqual([]);
    expect(report.bytes).toBeGreaterThan(5_000_000);
  });
});

describe('property: any codename in any supported form inside random JS is found', () => {
  const encoders: Record<Exclude<Encoding, 'split-literal'>, (s: string) => string | Buffer> = {
    plain: (s) => s,
    utf16le: (s) => Buffer.from(s, 'utf16le'),
    utf16be: (s) => Buffer.from(s, 'utf16le').swap16(),
    hex: (s) => Buffer.from(s).toString('hex'),
    base64: (s) => Buffer.from(s).toString('base64'),
    base64url: (s) => Buffer.from(s).toString('base64url'),
    'escape-x': (s) => [...Buffer.from(s)].map((b) => `\\x${hex2(b)}`).join(''),
    'escape-u': (s) => [...s].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join(''),
    'escape-u-brace': (s) => [...s].map((c) => `\\u{${(c.codePointAt(0) as number).toString(16)}}`).join(''),
    percent: (s) => [...Buffer.from(s)].map((b) => `%${hex2(b).toUpperCase()}`).join(''),
    charcodes: (s) => [...s].map((c) => c.charCodeAt(0)).join(','),
  };
  it('holds for 200 random cases', async () => {
    await fc.assert(
      fc.asyncProperty(
        // 7+ bytes: shorter codenames skip base64 alignments whose stable core is under 8 characters.
        fc.stringMatching(/^[A-Z][a-z]{6,11}$/),
        fc.constantFrom(...(Object.keys(encoders) as Array<keyof typeof encoders>), 'split-literal' as const),
        fc.string({ unit: 'grapheme-ascii', maxLength: 200 }),
        fc.string({ unit: 'grapheme-ascii', maxLength: 200 }),
        fc.nat(3),
        async (codename, encoding, before, after, pad) => {
          const body =
            encoding === 'split-literal'
              ? `'${codename.slice(0, 3)}' + '${codename.slice(3)}'`
              : (() => {
                  const e = encoders[encoding](`${'#'.repeat(pad)}${codename}`);
                  return typeof e === 'string' ? e : e.toString('latin1');
                })();
          const path = write(
            'property.js',
            Buffer.from(`${before};x=${JSON.stringify(body).slice(1, -1) === body ? `"${body}"` : body};${after}`, 'latin1'),
          );
          const report = await scanPaths([path], { codenames: [codename], sourceMaps: false });
          expect(report.findings.some((f) => f.codename === codename)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  }, 120_000);
});

describe('source maps and packaging', () => {
  it('flags shipped maps, sourcesContent, sourceMappingURL comments and source paths', async () => {
    const map = JSON.stringify({ version: 3, sources: ['../src/secret.ts'], sourcesContent: ['export const x = 1;'], mappings: 'AAAA' });
    const inline = `console.log(1);\n//# sourceMappingURL=data:application/json;base64,${Buffer.from(map).toString('base64')}\n`;
    const paths = [
      write('maps/app.js.map', map),
      write('maps/inline.js', inline),
      write('maps/external.js', 'console.log(2);\n//# sourceMappingURL=external.js.map\n'),
      write('maps/bundle.js', '// src/internal/billing.ts\nvar a = 1;\n// src/main.ts\nvar b = 2;\n'),
    ];
    const report = await scanPaths(paths, { codenames: [] });
    const rules = report.findings.map((f) => `${f.path.slice(dir.length + 6)} ${f.ruleId}`).sort();
    expect(rules).toEqual([
      'app.js.map moat/sourcemap/map-file',
      'app.js.map moat/sourcemap/sources-content',
      'bundle.js moat/sourcemap/source-path',
      'bundle.js moat/sourcemap/source-path',
      'external.js moat/sourcemap/url',
      'inline.js moat/sourcemap/inline',
      'inline.js moat/sourcemap/inline-sources-content',
    ]);
    expect(report.findings.find((f) => f.ruleId === 'moat/sourcemap/source-path')?.severity).toBe('note');
  });

  it('moat-scan pack audits what npm pack would publish', { timeout: 60_000 }, async () => {
    const pkg = join(dir, 'pack-pkg');
    write('pack-pkg/package.json', JSON.stringify({ name: 'leaky-pkg', version: '1.0.0' }));
    write('pack-pkg/dist/index.js', 'export const a = 1;\n//# sourceMappingURL=index.js.map\n');
    write(
      'pack-pkg/dist/index.js.map',
      JSON.stringify({ version: 3, sources: ['../src/index.ts'], sourcesContent: [`// ${CODENAME}`], mappings: '' }),
    );
    write('pack-pkg/src/index.ts', `export const a = 1; // ${CODENAME}\n`);
    write('pack-pkg/.env.production', 'API_KEY=sk-live-123\n');
    const report = await auditPack(pkg, {}, { codenames: [CODENAME] });
    const rules = new Set(report.findings.map((f) => f.ruleId));
    for (const rule of [
      'moat/pack/source-map',
      'moat/pack/source-file',
      'moat/pack/secret-file',
      'moat/sourcemap/map-file',
      'moat/sourcemap/sources-content',
      'moat/codename/plain',
    ]) {
      expect(rules).toContain(rule);
    }
    const allowed = await auditPack(
      pkg,
      { allowSrc: true, allow: ['dist/*.map', '.env*'] },
      { codenames: ['Zorblaxian'], sourceMaps: false },
    );
    expect(allowed.findings).toEqual([]);
  });

  it('moat-scan pack names the package files, so an allowlist written for them applies', { timeout: 60_000 }, async () => {
    write('named-pkg/package.json', JSON.stringify({ name: '@acme/named', version: '1.0.0', files: ['dist'] }));
    write('named-pkg/dist/index.js', `export const a = "${CODENAME}";\n`);
    write('named-pkg/dist/docs.js', `export const b = "${CODENAME}";\n`);
    const pkg = join(dir, 'named-pkg');
    const report = await auditPack(pkg, {}, { codenames: [CODENAME], sourceMaps: false });
    expect(report.findings.map((f) => f.path).sort()).toEqual([join(pkg, 'dist/docs.js'), join(pkg, 'dist/index.js')]);
    expect(report.findings.every((f) => !f.path.includes(tmpdir()) || f.path.startsWith(dir))).toBe(true);
    const allowed = await auditPack(
      pkg,
      {},
      { codenames: [CODENAME], sourceMaps: false, allowlist: [{ codename: CODENAME, path: `${pkg}/dist/docs.js`, reason: 'docs' }] },
    );
    expect(allowed.findings.map((f) => f.path)).toEqual([join(pkg, 'dist/index.js')]);
    expect(allowed.suppressed).toBe(1);
  });
});

describe('configuration', () => {
  it('parses codename lists with comments and refuses short names', () => {
    expect(parseCodenames('# internal\nCapybara\n\nNightjar  # bird\nCapybara\n')).toEqual(['Capybara', 'Nightjar']);
    expect(() => parseCodenames('Cap\n')).toThrow(/ERR_SCAN_CONFIG: expected a codename of at least 4 characters on line 1, got "Cap"/);
  });

  it('reads any codename list as the line-by-line reading does (comments, CRLF, short names, any UTF-16)', () => {
    // The reading before the fast path: every line through the comment expression, code points counted.
    const reference = (text: string): string[] | string => {
      const out: string[] = [];
      for (const [i, raw] of text.split(/\r?\n/).entries()) {
        const line = raw.replace(/\s+#.*$|^#.*$/, '').trim();
        if (line === '') continue;
        if ([...line].length < 4) return `line ${i + 1}`;
        out.push(line);
      }
      return [...new Set(out)];
    };
    const piece = fc.constantFrom(
      'Capybara',
      'Nötfall',
      '😀😀😀',
      '😀😀',
      'ab',
      '#',
      ' # x',
      '\r\n',
      '\n',
      '\r',
      ' ',
      '\t',
      '\u00a0',
      '\u2028',
      '\ufeff',
      'abcd',
    );
    fc.assert(
      fc.property(fc.array(fc.oneof(piece, fc.string({ unit: 'binary', maxLength: 6 })), { maxLength: 20 }), (pieces) => {
        const text = pieces.join('');
        const expected = reference(text);
        if (typeof expected === 'string') expect(() => parseCodenames(text)).toThrow(expected);
        else expect(parseCodenames(text)).toEqual(expected);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses a codename as counting its code points would, whatever its UTF-16 length', () => {
    // The check before its fast path: code points always counted.
    const refused = (c: string) => [...c].length < 4 || /[\r\n]/.test(c);
    const unit = fc.constantFrom('😀', '😀', '😀', 'a', 'é', '\ud800', '\udc00', '\n', '\r', ' ', '\u2028');
    let seen = 0;
    fc.assert(
      fc.property(
        fc.array(unit, { maxLength: 6 }).map((units) => units.join('')),
        (codename) => {
          if (refused(codename))
            expect(() => checkCodename(codename)).toThrow(/ERR_SCAN_CONFIG: expected a codename of at least 4 characters/);
          else expect(() => checkCodename(codename)).not.toThrow();
          if (codename.length >= 6 && codename.length < 8 && refused(codename) && !/[\r\n]/.test(codename)) seen++;
        },
      ),
      { numRuns: 2000 },
    );
    // Refused for its code points although six or seven UTF-16 units long: three emoji and the like.
    expect(seen).toBeGreaterThan(0);
    expect(() => checkCodename('😀😀😀')).toThrow(BuildGuardError);
    expect(() => checkCodename('😀😀😀😀')).not.toThrow();
  });

  it('reads a megabyte line of spaces before a hash inside a word as one codename', () => {
    // A "#" only starts a comment after whitespace; here it ends the word "x#".
    const line = `abcd${' '.repeat(1 << 20)}x#`;
    expect(parseCodenames(line)).toEqual([line]);
    expect(parseCodenames(`${line} # comment\n`)).toEqual([line]);
    expect(parseCodenames(`abcd${' '.repeat(1 << 20)}# comment`)).toEqual(['abcd']);
  });

  it('requires a reason for every allowlist entry and applies it', async () => {
    expect(() => parseAllowlist('[{"codename":"Capybara","path":"**"}]')).toThrow(/allowlist\[0\].reason/);
    expect(() => parseAllowlist('{')).toThrow(/ERR_SCAN_CONFIG: expected the allowlist as JSON/);
    const path = write('docs/blog.md', `Our mascot ${CODENAME}.`);
    const allowlist = parseAllowlist(
      JSON.stringify([{ codename: CODENAME, path: '**/docs/**', reason: 'public blog post names the mascot' }]),
    );
    const report = await scanPaths([path], { codenames: [CODENAME], allowlist });
    expect(report.findings).toEqual([]);
    expect(report.suppressed).toBe(1);
    // A rule can be allowed for a path too, e.g. a runtime's own strings in an executable.
    const mapPath = write('allowed/app.js.map', '{"version":3,"sources":[],"mappings":""}');
    const byRule = parseAllowlist(JSON.stringify([{ rule: 'moat/sourcemap/*', path: '**/allowed/*', reason: 'fixture' }]));
    expect((await scanPaths([mapPath], { codenames: [CODENAME], allowlist: byRule })).findings).toEqual([]);
    expect(() => parseAllowlist('[{"path":"**","reason":"r"}]')).toThrow(/exactly one of codename and rule, got neither/);
  });

  it('refuses allowlist entries with empty names, both names or unknown members', () => {
    const refused: Array<[string, RegExp]> = [
      ['[{"codename":"","rule":"r","path":"p","reason":"why"}]', /allowlist\[0\].codename as a non-empty string, got ""/],
      ['[{"codename":"","path":"p","reason":"why"}]', /allowlist\[0\].codename as a non-empty string, got ""/],
      ['[{"rule":" ","path":"p","reason":"why"}]', /allowlist\[0\].rule as a non-empty string, got " "/],
      ['[{"codename":5,"rule":"r","path":"p","reason":"why"}]', /allowlist\[0\].codename as a non-empty string, got number 5/],
      ['[{"codename":"Capybara","rule":"r","path":"p","reason":"why"}]', /exactly one of codename and rule, got both/],
      [
        '[{"codename":"Capybara","path":"p","reason":"why","paths":["q"]}]',
        /allowlist\[0\] to have only codename, rule, path and reason, got "paths"/,
      ],
      ['[{"codename":"Capybara","path":"p","reason":"why","__proto__":{"rule":"x"}}]', /got "__proto__"/],
      ['[null]', /expected allowlist\[0\] as an object, got null/],
      ['[["Capybara"]]', /expected allowlist\[0\] as an object, got array\(1\)/],
    ];
    for (const [text, message] of refused) {
      const error = (() => {
        try {
          parseAllowlist(text);
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(BuildGuardError);
      expect((error as BuildGuardError).code).toBe('ERR_SCAN_CONFIG');
      expect((error as BuildGuardError).message).toMatch(message);
    }
  });

  it('returns any JSON allowlist entry for entry, or refuses it with ERR_SCAN_CONFIG', () => {
    const member = fc.oneof(
      { arbitrary: fc.constant('Capybara'), weight: 6 },
      fc.constantFrom('', ' '),
      fc.string(),
      fc.jsonValue({ maxDepth: 2 }),
    );
    const extra = fc.option(fc.tuple(fc.constantFrom('paths', 'Codename', '__proto__', 'constructor'), member));
    const entry = fc
      .tuple(fc.record({ codename: member, rule: member, path: member, reason: member }, { requiredKeys: [] }), extra)
      .map(([known, more]) => (more === null ? known : Object.defineProperty({ ...known }, more[0], { value: more[1], enumerable: true })));
    const allowlist = fc.oneof(
      fc.array(fc.oneof({ arbitrary: entry, weight: 4 }, fc.jsonValue({ maxDepth: 2 })), { maxLength: 3 }),
      fc.jsonValue(),
    );
    fc.assert(
      fc.property(allowlist, (value) => {
        const text = JSON.stringify(value);
        let entries: unknown;
        try {
          entries = parseAllowlist(text);
        } catch (error) {
          expect(error).toBeInstanceOf(BuildGuardError);
          expect((error as BuildGuardError).code).toBe('ERR_SCAN_CONFIG');
          return;
        }
        expect(entries).toEqual(JSON.parse(text));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('output', () => {
  it('SARIF output validates against the SARIF 2.1.0 schema', async () => {
    const schema = JSON.parse(
      readFileSync(join(dirname(require.resolve('@microsoft/jest-sarif/package.json')), 'lib/schemas/sarif-2.1.0-rtm.5.json'), 'utf8'),
    );
    // The published schema has a pattern that is invalid with the u flag; validate without it.
    // ajv-draft-04 is CommonJS: under NodeNext its class is the default export's `default`.
    const Ajv = ((AjvDraft04 as unknown as { default?: unknown }).default ?? AjvDraft04) as unknown as new (
      options: Record<string, unknown>,
    ) => { compile(schema: unknown): ((data: unknown) => boolean) & { errors?: unknown[] | null } };
    const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false, unicodeRegExp: false });
    const validate = ajv.compile(schema);
    const report = await scanPaths([join(dir, 'planted'), join(dir, 'pkg.tgz'), join(dir, 'maps')], { codenames: [CODENAME] });
    expect(report.findings.length).toBeGreaterThan(10);
    const sarif = JSON.parse(formatSarif(report));
    const ok = validate(sarif);
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
    expect(sarif.runs[0].results).toHaveLength(report.findings.length);
    // The tool's own version, not a placeholder.
    expect(sarif.runs[0].tool.driver.version).toBe(
      JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version,
    );
  });

  it('reports a shipped source map full of leaks on one screen: a verdict first, grouped findings; --verbose and SARIF keep all', () => {
    const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    // A bundle shipped with its map: the map's sourcesContent holds the whole internal source.
    const sources = Array.from({ length: 40 }, (_, i) => `src/feature${i}.ts`);
    const sourcesContent = sources.map((_, i) =>
      Array.from({ length: 30 }, (_, j) => `// ${CODENAME} internal note ${i}.${j}\nexport const x${j} = '${CODENAME}';`).join('\n'),
    );
    const bundle = write('shipped/cli.js', `console.log("ok");\n//# sourceMappingURL=cli.js.map\n`);
    write('shipped/cli.js.map', JSON.stringify({ version: 3, file: 'cli.js', sources, sourcesContent, mappings: '' }));
    const all = run('--json', '--codename', CODENAME, join(bundle, '..'));
    const findings = (JSON.parse(all.stdout) as { findings: unknown[] }).findings.length;
    expect(findings).toBeGreaterThan(1000);
    const human = run('--codename', CODENAME, join(bundle, '..'));
    expect(human.status).toBe(1);
    const lines = human.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^moat-scan: FAIL — 2 files, [\d.]+ MB: \d+ errors, \d+ warnings, \d+ notes in \d+ groups$/);
    expect(lines.length).toBeLessThanOrEqual(24);
    expect(human.stdout).toMatch(/more \(--verbose for all\)/);
    const verbose = run('--verbose', '--codename', CODENAME, join(bundle, '..'));
    expect(verbose.stdout.split('\n').length).toBeGreaterThan(findings);
    expect(JSON.parse(run('--sarif', '--codename', CODENAME, join(bundle, '..')).stdout).runs[0].results).toHaveLength(findings);
  });

  it('names every distinct codename it found without --verbose, also when one file holds several in one form', () => {
    const names = ['Semfradal', 'Nubdalmu', 'Vordexka', 'Kaquimu', 'Lonlonlon'];
    const bundle = write('several/app.js', names.map((n, i) => `var x${i}="${n}";`).join('\n'));
    write('several/other.js', `var e="${[...Buffer.from('Kaquimu')].map((b) => `\\x${hex2(b)}`).join('')}";`);
    const human = spawnSync(process.execPath, [cli, ...names.flatMap((n) => ['--codename', n]), join(bundle, '..')], { encoding: 'utf8' });
    expect(human.status).toBe(1);
    const lines = human.stdout.split('\n');
    expect(lines[1]).toBe(`codenames found: ${names.map((n) => `"${n}"`).join(', ')}`);
    const heading = lines.find((l) => l.includes('[moat/codename/plain]')) as string;
    expect(heading).toContain(`internal codenames ${names.map((n) => `"${n}"`).join(', ')} in plain text`);
    expect(heading).toMatch(/×5$/);
    expect(human.stdout).toContain('internal codename "Kaquimu" encoded as escape-x');
  });

  it('a scan loads no node:crypto: nothing cached, compiling and caching a set, or finding it by its key', {
    timeout: 60_000,
  }, () => {
    const file = write('fresh.js', PLANTED.plain);
    const cache = join(dir, 'fresh-cache');
    // Reports, as the process exits, whether node:crypto was ever loaded.
    const probe = `data:text/javascript,process.on('exit',()=>process.stderr.write('crypto:'+process.moduleLoadList.includes('NativeModule crypto')))`;
    const run = (...args: string[]) =>
      spawnSync(process.execPath, ['--import', probe, cli, '--codename', CODENAME, '--json', ...args, file], {
        encoding: 'utf8',
        env: { ...process.env, MOAT_SCAN_CACHE_DIR: cache },
      });
    const fresh = run();
    expect(fresh.status).toBe(1);
    expect(fresh.stderr).toContain('crypto:false');
    expect(existsSync(cache) ? readdirSync(cache) : []).toEqual([]);
    // `--engine native` compiles and caches the set; the addon hashes its key (its own libcrypto).
    const native = run('--engine', 'native');
    expect(native.stderr).toContain('crypto:false');
    const written = readdirSync(cache);
    expect(written.filter((f) => f.endsWith('.moatscan'))).toHaveLength(1);
    expect(written.filter((f) => f.endsWith('.tmp'))).toEqual([]);
    // The next scan finds it by that key: the same findings, nothing written.
    const cached = run();
    expect(cached.stderr).toContain('crypto:false');
    expect(JSON.parse(cached.stdout).findings).toEqual(JSON.parse(fresh.stdout).findings);
    expect(readdirSync(cache)).toEqual(written);
    // Proof that it read that file: another list's set, put under this key, hides the finding.
    const other = join(dir, 'other-cache');
    spawnSync(process.execPath, [cli, '--codename', 'Wombatique', '--engine', 'native', '-q', file], {
      env: { ...process.env, MOAT_SCAN_CACHE_DIR: other },
    });
    const [otherSet] = readdirSync(other).filter((f) => f.endsWith('.moatscan'));
    writeFileSync(join(cache, written[0] as string), readFileSync(join(other, otherSet as string)), { mode: 0o600 });
    expect(run().status).toBe(0);
  });

  it('a quiet scan loads neither fs/promises nor the stream modules; its report stops without an error when the reader has gone', {
    timeout: 60_000,
  }, async () => {
    const file = write('modules.js', PLANTED.plain);
    // Lists, as the process exits, which of those modules were ever loaded.
    const probe = `data:text/javascript,process.on('exit',()=>{const l=process.moduleLoadList.filter(m=>/^NativeModule (fs\\/promises|stream|internal\\/streams\\/readable)$/.test(m));process.stderr.write('loaded:'+l.join(','))})`;
    // No cache: where a set is cached, its key's hash loads node:crypto, and with it the streams.
    const env = { ...process.env, MOAT_SCAN_CACHE: '0' };
    const quiet = spawnSync(process.execPath, ['--import', probe, cli, '-q', '--codename', CODENAME, file], { encoding: 'utf8', env });
    expect(quiet.status).toBe(1);
    expect(quiet.stdout).toMatch(/^moat-scan: FAIL — 1 files/);
    expect(quiet.stderr).toBe('loaded:');
    // The reader closes its end before the report is written: EPIPE ends the writing, the exit code stays the scan's.
    const child = spawn(process.execPath, [cli, '-q', '--codename', CODENAME, file], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const status = await new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    expect(stderr).toBe('');
    expect(status).toBe(1);
  });

  // Twenty-one CLI processes: on a loaded two-core runner each can take seconds to start.
  it('the CLI exits 0 when clean, 1 on findings, 2 on usage and I/O errors', { timeout: 120_000 }, () => {
    const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    const clean = write('clean/a.js', 'console.log("nothing to see");');
    expect(run('--codename', CODENAME, clean).status).toBe(0);
    const leak = run('--codename', CODENAME, join(dir, 'planted/hex.js'));
    expect(leak.status).toBe(1);
    expect(leak.stdout).toMatch(/^moat-scan: FAIL — 1 files/);
    expect(leak.stdout).toMatch(/planted\/hex\.js {2}internal codename "Capybara" encoded as hex {2}\[moat\/codename\/hex\]\n {8}@\d+/);
    const json = run('--json', '--codename', CODENAME, join(dir, 'planted/plain.js'));
    expect(JSON.parse(json.stdout).findings[0].encoding).toBe('plain');
    expect(run('--sarif', '--codename', CODENAME, clean).stdout).toContain('"version": "2.1.0"');
    const usage = run('--bogus');
    expect(usage.status).toBe(2);
    expect(usage.stderr).toMatch(/Unknown option '--bogus'/);
    expect(run('--codename', CODENAME).status).toBe(2);
    const missing = run('--codename', CODENAME, join(dir, 'does-not-exist'));
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/cannot read .*does-not-exist/);
    const short = run('--codename', 'ab', clean);
    expect(short.status).toBe(2);
    expect(short.stderr).toMatch(/ERR_SCAN_CONFIG/);
    const folder = run('--codename', CODENAME, '-o', dir, clean);
    expect(folder.status).toBe(2);
    expect(folder.stderr).toMatch(/expected to write the report to .*, got EISDIR/);
    expect(folder.stderr).not.toMatch(/\n\s+at /);
    expect(run('--codename', CODENAME, '--max-size', '5', clean).stderr).toMatch(/expected --max-size with `moat-scan pack` only/);
    // Nothing to scan for, or nothing scanned, is no pass: a list never filled in, an empty build.
    const none = run(clean);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/expected codenames to scan for \(-c FILE or --codename NAME\), got none/);
    const emptyList = write('clean/codenames.txt', '# nothing yet\n\n');
    expect(run('-c', emptyList, clean).stderr).toMatch(/got none in .*codenames\.txt/);
    expect(run('--codename', '', clean).stderr).toMatch(/expected --codename NAME with a name, got an empty one/);
    expect(run('--codename', ` ${CODENAME} `, join(dir, 'planted/plain.js')).status).toBe(1);
    mkdirSync(join(dir, 'empty-build'), { recursive: true });
    const empty = run('--codename', CODENAME, join(dir, 'empty-build'));
    expect(empty.status).toBe(2);
    expect(empty.stderr).toMatch(/expected files to scan in .*empty-build, got none/);
    const engine = run('--engine', 'fast', '--codename', CODENAME, clean);
    expect(engine.status).toBe(2);
    expect(engine.stderr).toMatch(/expected --engine auto, native or js, got "fast"/);
    // Either engine, the same verdict and findings.
    for (const name of ['js', 'native', 'auto']) {
      const r = run('--engine', name, '--json', '--codename', CODENAME, join(dir, 'planted/hex.js'));
      expect(r.status).toBe(1);
      expect(JSON.parse(r.stdout).findings.map((f: { encoding: string }) => f.encoding)).toEqual(['hex']);
    }
  });
});
