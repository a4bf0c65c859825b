import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/cli',
    include: ['src/**/*.test.ts'],
  },
});
