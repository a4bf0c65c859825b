import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/fingerprint',
    include: ['src/**/*.test.ts'],
  },
});
