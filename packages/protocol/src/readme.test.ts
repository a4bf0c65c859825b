import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runReadmeExample } from '@moat/test-kit/readme-example';
import { describe, expect, it } from 'vitest';

const here = new URL('..', import.meta.url);

/** Runs the ts block under `heading` of the README the way runReadmeExample runs the first one. */
function runSection(heading: string): string[] {
  const readme = readFileSync(new URL('README.md', here), 'utf8');
  const example = /```ts\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf(heading)))?.[1];
  if (example === undefined) throw new Error(`README.md: no ts example under ${heading}`);
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', example], { cwd: fileURLToPath(here), encoding: 'utf8' });
  return output.trimEnd().split('\n');
}

describe('README', () => {
  it('runs its example against the built package and prints what it promises', () => {
    expect(runReadmeExample(here)).toEqual([
      'found',
      'ERR_ATTRIBUTION_FIELD_VALUE ERR_ATTRIBUTION_FIELD_VALUE: expected fp of 3 lowercase hex digits, got "A3F"',
    ]);
  });

  it('runs its per-install keys example: both sides derive one key, and the i1 stamp verifies', () => {
    expect(runSection('## Per-install keys (protocol 1.2)')).toEqual(['{"v":1,"install_key":"', 'install true']);
  });
});
