import { runReadmeExample } from '@moat/test-kit/readme-example';
import { describe, expect, it } from 'vitest';

describe('README', () => {
  it('runs its example against the built package and prints what it promises', () => {
    expect(runReadmeExample(new URL('..', import.meta.url))).toEqual([
      'found',
      'ERR_ATTRIBUTION_FIELD_VALUE ERR_ATTRIBUTION_FIELD_VALUE: expected fp of 3 lowercase hex digits, got "A3F"',
    ]);
  });
});
