import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  dts: true,
  clean: true,
  target: 'node24',
  sourcemap: false,
  treeshake: true,
  // Loaded at run time next to its .node file; bundling it would break the addon path.
  external: ['@moat/native'],
});
