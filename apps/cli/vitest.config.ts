import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: '@moat/cli',
    // turbo runs packages side by side on two cores: a slow moment is not a failure
    testTimeout: 30_000,
    hookTimeout: 60_000,
    include: ['src/**/*.test.ts'],
    // Install state (per-install keys) of the clients under test: never the user's config directory.
    env: { MOAT_INSTALL_DIR: join(mkdtempSync(join(tmpdir(), 'moat-test-installs-')), 'installs') },
  },
});
