import { defineConfig } from 'vitest/config';

// One project per workspace package; each package's own vitest.config.ts names it.
export default defineConfig({
  test: {
    projects: ['{packages,apps,tools}/*/vitest.config.ts', 'native/vitest.config.*'],
  },
});
