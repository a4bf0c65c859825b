import { runReadmeExample } from '@moat/test-kit/readme-example';
import { describe, expect, it } from 'vitest';

describe('README', () => {
  it('runs its example against the built package', { timeout: 60_000 }, () => {
    expect(runReadmeExample(new URL('..', import.meta.url))).toEqual(['"external"', 'internal Capybara plain', 'external clean']);
  });
});
