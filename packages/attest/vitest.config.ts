import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/attest',
    include: ['src/**/*.test.ts'],
  },
});
