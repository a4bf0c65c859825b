import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/native',
    include: ['test/**/*.test.ts'],
  },
});
