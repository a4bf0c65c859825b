import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/build-guard',
    include: ['src/**/*.test.ts'],
  },
});
