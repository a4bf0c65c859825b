import { describe, expect, it } from 'vitest';
import { runReadmeExample } from '../../../scripts/readme-example.ts';

describe('README', () => {
  it('runs its example against the built package', () => {
    expect(runReadmeExample(new URL('..', import.meta.url))).toEqual(['false undumpable,tracer_check', '21 false', 'harden_status']);
  });
});
