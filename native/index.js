// Loads the addon: a static path first (so `bun build --compile` can embed the file), then
// node-gyp-build (prebuilds/ or build/); MOAT_NATIVE_PATH names another build's file instead.
// MOAT_NATIVE_DISABLE=1 or a missing/broken addon leave `native` undefined and `loadError`
// set: callers fall back and say so.
import { createRequire } from 'node:module';

const nodeRequire = createRequire(import.meta.url);

/** @type {import('./index.d.ts').NativeBinding | undefined} */
let native;
/** @type {Error | undefined} */
let loadError;

if (process.env.MOAT_NATIVE_DISABLE === '1') {
  loadError = new Error('the native addon is disabled (MOAT_NATIVE_DISABLE=1)');
} else if (process.env.MOAT_NATIVE_PATH) {
  // Another build of this addon (the sanitizer build that scripts/sanitize.sh makes): that
  // file or nothing, never a silent fall back to the production build.
  try {
    native = nodeRequire(process.env.MOAT_NATIVE_PATH);
  } catch (error) {
    loadError = error instanceof Error ? error : new Error(String(error));
  }
} else {
  try {
    // A literal require of the addon: Bun (and `bun build --compile`, which embeds the file)
    // provides require in ES modules; Node gets one from createRequire.
    native =
      typeof globalThis.Bun !== 'undefined' ? require('./build/Release/moat_native.node') : nodeRequire('./build/Release/moat_native.node');
  } catch (first) {
    try {
      native = nodeRequire('node-gyp-build')(new URL('.', import.meta.url).pathname);
    } catch (error) {
      loadError = error instanceof Error ? error : new Error(String(error));
      if (first instanceof Error && first.code !== 'MODULE_NOT_FOUND') loadError = first;
    }
  }
}

export { loadError, native };
