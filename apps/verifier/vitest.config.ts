import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/verifier',
    include: ['src/**/*.test.ts'],
  },
});
