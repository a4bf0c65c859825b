import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const packageDir = fileURLToPath(new URL('..', import.meta.url));

describe('README', () => {
  it('runs its example against the built package and prints what it promises', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    // The package imports itself by name through its exports map, exactly as a user would.
    const output = execFileSync(process.execPath, ['--input-type=module', '-e', example as string], { cwd: packageDir, encoding: 'utf8' });
    expect(output).toContain('found');
    expect(output).toContain('ERR_ATTRIBUTION_FIELD_VALUE ERR_ATTRIBUTION_FIELD_VALUE: expected fp of 3 lowercase hex digits, got "A3F"');
  });
});
