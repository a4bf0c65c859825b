import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/adopt-test',
    // One publish of every package and one npm install from the local registry: minutes, not seconds.
    testTimeout: 300_000,
    hookTimeout: 420_000,
    include: ['src/**/*.test.ts'],
  },
});
