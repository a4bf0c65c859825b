/**
 * `moat-verifier` as a library: create, listen, close (the CLI, `dist/cli.js`, wraps it); or
 * its pipeline embedded in a TypeScript API server as a web-standard and a `node:http`
 * handler in front of the server's own model call ({@link createMoatHandler}).
 *
 * @packageDocumentation
 */
export * from './config.js';
export * from './embed.js';
export * from './enrollment-policy.js';
export * from './errors.js';
export * from './flags.js';
export * from './install-keys.js';
export * from './installs.js';
export * from './mock-batches.js';
export * from './mock-model.js';
export * from './mock-upstream.js';
export * from './pg-storage.js';
export * from './router.js';
export { ROUTES } from './routes/table.js';
export { createVerifier, openStorage, type Verifier, type VerifierOptions } from './server.js';
export * from './storage.js';
