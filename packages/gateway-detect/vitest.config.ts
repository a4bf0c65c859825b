import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/gateway-detect',
    include: ['src/**/*.test.ts'],
  },
});
