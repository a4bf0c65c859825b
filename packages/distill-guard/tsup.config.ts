import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/client.ts', 'src/server.ts', 'src/cli/moat-distill.ts'],
  format: ['esm'],
  dts: { entry: ['src/index.ts', 'src/client.ts', 'src/server.ts'] },
  clean: true,
  target: 'node24',
  sourcemap: false,
  treeshake: true,
});
