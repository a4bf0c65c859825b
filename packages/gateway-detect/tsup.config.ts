import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/client.ts', 'src/server.ts'],
  format: ['esm'],
  dts: true,
  clean: true,
  target: 'node24',
  sourcemap: false,
  treeshake: true,
});
