import { describe, expect, it } from 'vitest';
import { runReadmeExample } from '../../../scripts/readme-example.ts';

describe('README', () => {
  it('runs its example against the built package', { timeout: 30_000 }, () => {
    expect(runReadmeExample(new URL('..', import.meta.url))).toEqual(['valid']);
  });
});
