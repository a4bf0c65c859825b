/**
 * The release dry run: pack this layer and the protocol with pnpm, install the tarballs
 * alone into a fresh project, and run the README example there — what a user who installs
 * one layer from npm gets.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const packages = new URL('../../', import.meta.url).pathname;

describe('install from the packed tarballs', () => {
  it('a fresh project installs @moat/fingerprint alone and runs its README example', { timeout: 180_000 }, () => {
    const out = mkdtempSync(join(tmpdir(), 'moat-pack-'));
    for (const name of ['protocol', 'fingerprint'])
      execFileSync('pnpm', ['pack', '--pack-destination', out], { cwd: join(packages, name), stdio: 'pipe' });
    const tarballs = readdirSync(out);
    const protocol = tarballs.find((t) => t.startsWith('moat-protocol-')) as string;
    const fingerprint = tarballs.find((t) => t.startsWith('moat-fingerprint-')) as string;
    const contents = execFileSync('tar', ['tzf', join(out, fingerprint)], { encoding: 'utf8' })
      .trim()
      .split('\n');
    expect(contents.every((f) => /^package\/(dist\/|README\.md$|LICENSE$|CHANGELOG\.md$|package\.json$)/.test(f))).toBe(true);
    expect(contents.some((f) => f.endsWith('.test.js') || f.endsWith('.map') || f.startsWith('package/src/'))).toBe(false);

    const project = mkdtempSync(join(tmpdir(), 'moat-consumer-'));
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({
        name: 'consumer',
        private: true,
        type: 'module',
        dependencies: { '@moat/fingerprint': `file:${join(out, fingerprint)}`, '@moat/protocol': `file:${join(out, protocol)}` },
        overrides: { '@moat/protocol': `file:${join(out, protocol)}` },
      }),
    );
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error'], { cwd: project, stdio: 'pipe' });
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1] as string;
    writeFileSync(join(project, 'example.mjs'), example);
    const output = execFileSync(process.execPath, ['example.mjs'], { cwd: project, encoding: 'utf8' });
    expect(output.trim().split('\n')).toEqual(['match', 'clean', 'mismatch']);
  });
});
