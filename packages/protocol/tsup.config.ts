import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    'messages/index': 'src/messages/index.ts',
    'support/index': 'src/support/index.ts',
    conformance: 'src/conformance.ts',
    'cli/moat-conformance': 'src/cli/moat-conformance.ts',
  },
  format: ['esm'],
  dts: {
    entry: {
      index: 'src/index.ts',
      'messages/index': 'src/messages/index.ts',
      'support/index': 'src/support/index.ts',
      conformance: 'src/conformance.ts',
    },
  },
  clean: true,
  target: 'node24',
  sourcemap: false,
  treeshake: true,
});
