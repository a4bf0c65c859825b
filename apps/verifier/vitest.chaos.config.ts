import { defineProject } from 'vitest/config';

// The chaos test under load (`pnpm test:chaos`): real processes, HAProxy, a private PostgreSQL and Redis.
export default defineProject({
  test: {
    name: '@moat/verifier chaos',
    include: ['src/**/*.chaos.ts'],
    testTimeout: 240_000,
    hookTimeout: 60_000,
  },
});
