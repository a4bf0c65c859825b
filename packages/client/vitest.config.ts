import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/client',
    // turbo runs packages side by side on two cores: a slow moment is not a failure
    testTimeout: 30_000,
    hookTimeout: 60_000,
    include: ['src/**/*.test.ts'],
  },
});
