import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/redteam',
    include: ['src/**/*.test.ts'],
  },
});
