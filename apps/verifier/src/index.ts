/**
 * `moat-verifier` as a library: create, listen, close. The CLI (`dist/cli.js`) wraps it.
 *
 * @packageDocumentation
 */
export * from './config.js';
export * from './enrollment-policy.js';
export * from './errors.js';
export * from './flags.js';
export * from './install-keys.js';
export * from './installs.js';
export * from './mock-batches.js';
export * from './mock-upstream.js';
export * from './pg-storage.js';
export * from './router.js';
export { ROUTES } from './routes/table.js';
export * from './server.js';
export * from './storage.js';
