import { defineConfig } from 'tsup';

export default defineConfig({
  entry: [
    'src/index.ts',
    'src/feature.ts',
    'src/esbuild.ts',
    'src/scan/index.ts',
    'src/scan/worker.ts',
    'src/cli/moat-scan.ts',
    'src/cli/moat-scan-standalone.ts',
    'src/cli/moat-build.ts',
  ],
  format: ['esm'],
  dts: { entry: ['src/index.ts', 'src/feature.ts', 'src/esbuild.ts', 'src/scan/index.ts'] },
  clean: true,
  target: 'node24',
  sourcemap: false,
  treeshake: true,
  // The addon stays a package of its own (an optional dependency): never copied into dist.
  external: ['bun:bundle', '@moat/native'],
});
