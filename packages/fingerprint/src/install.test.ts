/**
 * The release dry run: pack this layer and the protocol with pnpm, install the tarballs
 * alone into a fresh project, and run the README example there — what a user who installs
 * one layer from npm gets.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { packedConsumer } from '@moat/test-kit/packed-consumer';
import { describe, expect, it } from 'vitest';

describe('install from the packed tarballs', () => {
  it('a fresh project installs @moat/fingerprint alone and runs its README example', { timeout: 180_000 }, () => {
    const consumer = packedConsumer(['protocol', 'fingerprint']);
    const contents = execFileSync('tar', ['tzf', consumer.tarballs.fingerprint as string], { encoding: 'utf8' })
      .trim()
      .split('\n');
    expect(contents.every((f) => /^package\/(dist\/|README\.md$|LICENSE$|CHANGELOG\.md$|package\.json$)/.test(f))).toBe(true);
    expect(contents.some((f) => f.endsWith('.test.js') || f.endsWith('.map') || f.startsWith('package/src/'))).toBe(false);

    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1] as string;
    expect(consumer.run(example).trim().split('\n')).toEqual(['match', 'clean', 'mismatch']);
  });
});
