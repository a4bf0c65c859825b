import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/distill-guard',
    include: ['src/**/*.test.ts'],
  },
});
