import { runReadmeExample } from '@moat/test-kit/readme-example';
import { describe, expect, it } from 'vitest';

describe('README', () => {
  it('runs its example against the built package', () => {
    expect(runReadmeExample(new URL('..', import.meta.url))).toEqual(['false undumpable,tracer_check', '21 false', 'harden_status']);
  });
});
