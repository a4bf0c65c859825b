/**
 * Entry point of the standalone moat-scan executable (`bun build --compile`, see
 * `moat-scan standalone`): the same CLI, with the native addon imported statically so the
 * executable carries it, and no Node.js needed where it runs.
 */
import * as nativeModule from '@moat/native';
import { provideNativeModule } from '../scan/engine.js';
import { disableWorkerThreads } from '../scan/scanner.js';

provideNativeModule(nativeModule);
// The prefilter's native threads still scan in parallel; the exact scan's worker threads need a
// script file that the executable does not carry.
disableWorkerThreads();
// Not awaited: `--bytecode` builds CommonJS, which has no top-level await. The CLI handles its
// own errors; this catches only a failure to load it.
import('./moat-scan.js').catch((error: unknown) => {
  process.stderr.write(`moat-scan: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 2;
});
