import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/cli.ts', 'src/trace-worker.ts'],
  format: ['esm'],
  dts: { entry: ['src/index.ts'] },
  clean: true,
  target: 'node24',
  sourcemap: false,
  treeshake: true,
  external: ['@moat/native', 'better-sqlite3'],
});
