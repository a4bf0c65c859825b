import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/conformance.ts', 'src/cli/moat-conformance.ts'],
  format: ['esm'],
  dts: { entry: ['src/index.ts', 'src/conformance.ts'] },
  clean: true,
  target: 'node24',
  sourcemap: false,
  treeshake: true,
});
