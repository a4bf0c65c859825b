import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { errorMessage } from '@moat/protocol/support';
import { type Loader, type Plugin, transform } from 'esbuild';
import { FEATURE_MODULES, replaceFeatureCalls } from './transform.js';

/** Options of {@link moatFlags}. */
export interface MoatFlagsOptions {
  /** Every registered feature and its value for the variant being built. */
  readonly features: Readonly<Record<string, boolean>>;
  /** Compile-time constants: expression → JavaScript source of its value. */
  readonly define?: Readonly<Record<string, string>>;
}

const LOADERS: Record<string, Loader> = {
  '.js': 'js',
  '.mjs': 'js',
  '.cjs': 'js',
  '.jsx': 'jsx',
  '.ts': 'ts',
  '.mts': 'ts',
  '.cts': 'ts',
  '.tsx': 'tsx',
};
const MENTIONS = new RegExp(FEATURE_MODULES.map((m) => m.replace(/[/:@-]/g, '\\$&')).join('|'));

/**
 * esbuild plugin (usable from tsup's `esbuildPlugins`): replaces `feature("NAME")` with
 * literals and adds `define` constants, so the bundler removes internal-only branches and
 * everything reachable only through them. Unknown flag names and non-literal arguments fail
 * the build with the file position.
 *
 * @example
 * ```ts
 * // tsup.config.ts
 * import { moatFlags } from '@moat/build-guard/esbuild';
 * import { flagsFor } from '@moat/build-guard';
 * import registry from './flags.ts';
 * export default { entry: ['src/main.ts'], esbuildPlugins: [moatFlags(flagsFor(registry, 'external'))] };
 * ```
 */
export function moatFlags(options: MoatFlagsOptions): Plugin {
  return {
    name: 'moat-flags',
    setup(build) {
      build.initialOptions.define = { ...build.initialOptions.define, ...options.define };
      // Dead branches are only dropped with syntax minification; it keeps identifiers readable.
      build.initialOptions.minifySyntax ??= true;
      const jsx = build.initialOptions;
      const filter = new RegExp(`^(${FEATURE_MODULES.map((m) => m.replace(/[/:@-]/g, '\\$&')).join('|')})$`);
      build.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'moat-feature' }));
      build.onLoad({ filter: /.*/, namespace: 'moat-feature' }, () => ({
        contents:
          'export function feature(name) { throw new Error("feature(" + JSON.stringify(name) + ") was not replaced at build time"); }',
        loader: 'js',
      }));
      build.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, async (args) => {
        if (args.path.includes('/node_modules/')) return undefined;
        const source = await readFile(args.path, 'utf8');
        if (!MENTIONS.test(source)) return undefined;
        const loader = LOADERS[extname(args.path)] ?? 'js';
        const js =
          loader === 'js'
            ? source
            : (
                await transform(source, {
                  loader,
                  sourcefile: args.path,
                  target: 'esnext',
                  ...(jsx.jsx === undefined ? {} : { jsx: jsx.jsx }),
                  ...(jsx.jsxFactory === undefined ? {} : { jsxFactory: jsx.jsxFactory }),
                  ...(jsx.jsxFragment === undefined ? {} : { jsxFragment: jsx.jsxFragment }),
                  ...(jsx.jsxImportSource === undefined ? {} : { jsxImportSource: jsx.jsxImportSource }),
                })
              ).code;
        try {
          return { contents: replaceFeatureCalls(js, options.features, args.path).code, loader: 'js' };
        } catch (error) {
          return { errors: [{ text: errorMessage(error), detail: error }] };
        }
      });
    },
  };
}
