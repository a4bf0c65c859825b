import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import registry from '../fixtures/app/flags.ts';
import { buildVariant } from './build.js';
import { BuildGuardError } from './errors.js';
import { defineFlags, flagsFor, validateRegistry } from './registry.js';
import { replaceFeatureCalls } from './transform.js';

const fixture = new URL('../fixtures/', import.meta.url).pathname;
const out = mkdtempSync(join(tmpdir(), 'moat-build-guard-'));
const INTERNAL_MARKERS = [
  'CAPYBARA',
  'capybara-ops',
  'debugDump',
  'internalOnlyHelper',
  '0xC0FFEE',
  'PROJECT_NIGHTJAR',
  'internal/debug.ts',
  'ant]',
];

async function bundle(bundler: 'esbuild' | 'bun', variant: 'internal' | 'external') {
  const outfile = join(out, bundler, variant, 'main.js');
  await buildVariant({ entry: join(fixture, 'app/src/main.ts'), outfile, registry, variant, bundler });
  const text = readFileSync(outfile, 'utf8');
  const mod = (await import(`${pathToFileURL(outfile).href}?t=${Date.now()}`)) as {
    commands: Record<string, unknown>;
    run: (c: string) => string;
  };
  return { text, mod, present: INTERNAL_MARKERS.filter((m) => text.includes(m)) };
}

describe.each(['esbuild', 'bun'] as const)('%s build of the fixture app', { timeout: 60_000 }, (bundler) => {
  it('external: internal functions, strings and the internal module are gone', async () => {
    const { text, mod, present } = await bundle(bundler, 'external');
    expect(present).toEqual([]);
    expect(text).not.toMatch(/feature\(/);
    expect(Object.keys(mod.commands)).toEqual(['help']);
    expect(mod.run('/debug')).toBe('Hello from the public build [external] anti-distillation on');
    expect(mod.run('/dashboard')).not.toContain('NIGHTJAR');
  });

  it('internal: everything is there and works', async () => {
    const { mod, present } = await bundle(bundler, 'internal');
    expect(present).toEqual(expect.arrayContaining(['CAPYBARA', 'capybara-ops', '0xC0FFEE', 'PROJECT_NIGHTJAR']));
    expect(Object.keys(mod.commands).sort()).toEqual(['debug', 'help', 'ops']);
    expect((mod.commands.debug as () => string)()).toBe('debug dump of CAPYBARA: internal state 0xC0FFEE');
    expect(mod.run('/dashboard')).toBe('Dashboard for PROJECT_NIGHTJAR');
    expect(mod.run('/help')).toBe('commands: /help [ant] anti-distillation on');
  });
});

describe('a Bun standalone executable with bytecode', () => {
  it('runs, and holds the external code only', { timeout: 60_000 }, async () => {
    const outfile = join(out, 'compiled', 'app');
    await buildVariant({
      entry: join(fixture, 'app/src/main.ts'),
      outfile,
      registry,
      variant: 'external',
      bundler: 'bun',
      compile: true,
      bytecode: true,
    });
    const run = spawnSync(outfile, [], { encoding: 'utf8' });
    expect(run.status).toBe(0);
    const binary = readFileSync(outfile);
    expect(binary.includes('Hello from the public build')).toBe(true);
    expect(INTERNAL_MARKERS.filter((m) => binary.includes(m))).toEqual([]);
  });
});

describe('esbuild and Bun eliminate the same code', () => {
  it('the same internal markers survive in each variant', { timeout: 60_000 }, async () => {
    for (const variant of ['internal', 'external'] as const) {
      const a = await bundle('esbuild', variant);
      const b = await bundle('bun', variant);
      const strings = (t: string) =>
        ['CAPYBARA', 'capybara-ops', '0xC0FFEE', 'PROJECT_NIGHTJAR', 'anti-distillation on', 'Hello from the public build'].filter((s) =>
          t.includes(s),
        );
      expect(strings(a.text)).toEqual(strings(b.text));
      expect(Object.keys(a.mod.commands).sort()).toEqual(Object.keys(b.mod.commands).sort());
    }
  });
});

describe('bad flag use fails the build', () => {
  for (const bundler of ['esbuild', 'bun'] as const) {
    it(`${bundler}: a misspelled flag names the closest registered one`, { timeout: 60_000 }, async () => {
      const error = await buildVariant({
        entry: join(fixture, 'bad/typo.ts'),
        outfile: join(out, 'bad', bundler, 'typo.js'),
        registry,
        variant: 'external',
        bundler,
      }).catch((e) => e);
      expect(error).toBeInstanceOf(BuildGuardError);
      expect(error.code).toBe('ERR_UNKNOWN_FLAG');
      expect(error.message).toMatch(/got "DEBUG_COMMAND" \(did you mean "DEBUG_COMMANDS"\?\)/);
      expect(error.message).toContain('typo.ts');
    });
    it(`${bundler}: a non-literal argument is refused`, { timeout: 60_000 }, async () => {
      const error = await buildVariant({
        entry: join(fixture, 'bad/non-literal.ts'),
        outfile: join(out, 'bad', bundler, 'nl.js'),
        registry,
        variant: 'external',
        bundler,
      }).catch((e) => e);
      expect(error).toBeInstanceOf(BuildGuardError);
      expect(error.code).toBe('ERR_NON_LITERAL_FLAG');
      expect(error.message).toMatch(/expected one string literal in feature\(\.\.\.\)/);
    });
  }
  it('feature used as a value is refused', async () => {
    const error = await buildVariant({
      entry: join(fixture, 'bad/escaped.ts'),
      outfile: join(out, 'bad', 'escaped.js'),
      registry,
      variant: 'external',
    }).catch((e) => e);
    expect(error.code).toBe('ERR_NON_LITERAL_FLAG');
  });
});

describe('replaceFeatureCalls', () => {
  const features = { A: true, B: false };
  it('replaces calls through aliases and template literals, and leaves other functions alone', () => {
    const code = `import { feature as f } from '@moat/build-guard/feature';\nimport { feature } from './mine.js';\nexport const x = [f('A'), f(\`B\`), feature('A')];`;
    const r = replaceFeatureCalls(code, features);
    expect(r.code).toContain('[true, false, feature(');
    expect(r.replaced.map((x) => x.name)).toEqual(['A', 'B']);
  });
  it('leaves code without flag imports untouched', () => {
    const code = 'export const feature = (n) => n; feature("ZZZ");';
    expect(replaceFeatureCalls(code, features).code).toBe(code);
  });
  it('reports a parse error as ERR_PARSE', () => {
    expect(() => replaceFeatureCalls('import { feature } from "bun:bundle"; if (', features)).toThrow(/ERR_PARSE/);
  });
  it('refuses every other way to the flag module: a namespace, a default import, a re-export, require(), import()', () => {
    for (const [code, got] of [
      ['import * as B from "@moat/build-guard/feature"; if (B.feature("A")) x();', 'a namespace import'],
      ['import B from "bun:bundle"; B.feature("A");', 'a default import'],
      ['import { feature, other } from "@moat/build-guard/feature"; feature("A");', 'an import of other'],
      ['export { feature } from "@moat/build-guard/feature";', 'a re-export of it'],
      ['export * from "bun:bundle";', 'a re-export of it'],
      ['const { feature } = require("@moat/build-guard/feature"); feature("A");', 'require() of it'],
      ['const m = await import("@moat/build-guard/feature"); m.feature("A");', 'import() of it'],
    ] as const)
      expect(() => replaceFeatureCalls(code, features, 'x.js'), code).toThrow(
        new RegExp(`^ERR_NON_LITERAL_FLAG: .* at x\\.js:1:\\d+, got ${got.replace(/[()]/g, '\\$&')}$`),
      );
    // Other modules' exports named feature, and side-effect-free imports of other modules, stay as they are.
    expect(replaceFeatureCalls('import * as m from "./flags.js"; m.feature("A");', features).replaced).toEqual([]);
  });

  it('refuses extra arguments', () => {
    expect(() => replaceFeatureCalls('import { feature } from "bun:bundle"; feature("A", 1);', features)).toThrow(/ERR_NON_LITERAL_FLAG/);
  });
});

describe('registry', () => {
  it('gives each variant its flags and define values', () => {
    expect(flagsFor(registry, 'external')).toEqual({
      variant: 'external',
      features: { DEBUG_COMMANDS: false, INTERNAL_TELEMETRY_DASHBOARD: false, ANTI_DISTILLATION: true },
      define: { 'process.env.USER_TYPE': '"external"' },
    });
    expect(() => flagsFor(registry, 'staging')).toThrow(/ERR_VARIANT: expected one of the variants internal, external, got "staging"/);
  });
  it('rejects malformed registries with the reason', () => {
    const cases: Array<[unknown, RegExp]> = [
      [null, /expected a registry object/],
      [{ variants: [], features: {} }, /"variants" as a non-empty array/],
      [{ variants: ['a'], features: { lower: { a: true } } }, /features key "lower"/],
      [{ variants: ['a', 'b'], features: { X: { a: true } } }, /features.X.b as a boolean, got undefined/],
      [{ variants: ['a'], features: { X: { a: true, z: false } } }, /only the variants a, got "z"/],
      [{ variants: ['a'], features: {}, define: { 'process.env.A B': { a: 'x' } } }, /define key/],
    ];
    for (const [input, message] of cases) expect(() => validateRegistry(input)).toThrow(message);
    expect(() => defineFlags({ variants: ['a'], features: { X: { a: true } } })).not.toThrow();
  });
  it('refuses BigInt and cyclic values with ERR_REGISTRY, describing what came', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const cyclicVariants: unknown[] = ['a'];
    cyclicVariants.push(cyclicVariants);
    const cases: Array<[unknown, RegExp]> = [
      [{ variants: [10n], features: {} }, /"variants" as a non-empty array of lowercase names, got array\(1\)/],
      [{ variants: cyclicVariants, features: {} }, /"variants" as a non-empty array of lowercase names, got array\(2\)/],
      [{ variants: ['a'], features: 10n }, /"features" as an object, got bigint 10/],
      [{ variants: ['a'], features: { A: { a: 10n } } }, /features.A.a as a boolean, got bigint 10/],
      [{ variants: ['a'], features: { A: { a: cyclic } } }, /features.A.a as a boolean, got object/],
      [{ variants: ['a'], features: {}, define: { X: { a: 10n } } }, /define.X.a as a string, number or boolean, got bigint 10/],
      [{ variants: ['a'], features: {}, define: { X: { a: cyclic } } }, /define.X.a as a string, number or boolean, got object/],
    ];
    for (const [input, message] of cases) {
      const error = (() => {
        try {
          validateRegistry(input);
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(BuildGuardError);
      expect((error as BuildGuardError).code).toBe('ERR_REGISTRY');
      expect((error as BuildGuardError).message).toMatch(message);
    }
  });
  it('accepts any value as a registry or refuses it with ERR_REGISTRY', () => {
    const perVariant = fc.dictionary(fc.constantFrom('internal', 'external', 'x'), fc.anything({ withBigInt: true }));
    const registry = fc.record(
      {
        variants: fc.oneof(fc.constant(['internal', 'external']), fc.anything({ withBigInt: true })),
        features: fc.oneof(fc.dictionary(fc.constantFrom('A', 'B_2', 'lower'), perVariant), fc.anything({ withBigInt: true })),
        define: fc.oneof(fc.dictionary(fc.constantFrom('process.env.X', 'a b'), perVariant), fc.anything({ withBigInt: true })),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof(registry, fc.anything({ withBigInt: true })), (input) => {
        try {
          expect(validateRegistry(input)).toBe(input);
        } catch (error) {
          expect(error).toBeInstanceOf(BuildGuardError);
          expect((error as BuildGuardError).code).toBe('ERR_REGISTRY');
        }
      }),
      { numRuns: 1000 },
    );
  });
});
