import { describe, expect, it } from 'vitest';
import { runReadmeExample } from '../../../scripts/readme-example.ts';

describe('README', () => {
  it('runs its example against the built package', () => {
    expect(runReadmeExample(new URL('..', import.meta.url))).toEqual(['3 true', 'key_7f3a', 'invalid']);
  });
});
