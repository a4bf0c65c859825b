import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/protocol',
    include: ['src/**/*.test.ts'],
  },
});
