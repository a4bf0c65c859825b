import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { auditPack } from './scan/pack.js';
import { scanPaths } from './scan/scanner.js';

const packages = new URL('../../', import.meta.url).pathname;
const built = readdirSync(packages).filter((name) => readdirSync(join(packages, name)).includes('dist'));

/** Codenames planted nowhere in this repository: the real builds must come out clean. */
const CODENAMES = ['Quilliphant', 'Zorblaxian', 'Tandoorixa'];

describe("moat-scan on this repository's own builds", () => {
  it('finds no codename and no source map in any dist folder', { timeout: 120_000 }, async () => {
    expect(built.length).toBeGreaterThanOrEqual(3);
    const report = await scanPaths(
      built.map((name) => join(packages, name, 'dist')),
      { codenames: CODENAMES },
    );
    expect(report.errors).toEqual([]);
    expect(report.findings.filter((f) => f.severity !== 'note')).toEqual([]);
    expect(report.files).toBeGreaterThan(10);
  });

  it('moat-scan pack passes on @moat/native, whose C sources ship for the source-build fallback', { timeout: 120_000 }, async () => {
    const native = dirname(createRequire(import.meta.url).resolve('@moat/native/package.json'));
    const report = await auditPack(native, { allowSrc: true }, { codenames: CODENAMES });
    expect(report.findings.filter((f) => f.severity !== 'note')).toEqual([]);
    expect(report.packed).toBeGreaterThan(8);
  });

  for (const name of built) {
    it(`moat-scan pack passes on @moat/${name}`, { timeout: 120_000 }, async () => {
      const report = await auditPack(join(packages, name), {}, { codenames: CODENAMES });
      expect(report.findings.filter((f) => f.severity !== 'note')).toEqual([]);
      expect(report.packed).toBeGreaterThan(2);
    });
  }
});
