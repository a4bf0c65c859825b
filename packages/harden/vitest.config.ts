import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/harden',
    include: ['src/**/*.test.ts'],
  },
});
