/**
 * `@moat/build-guard` — layer 1. Internal code that is never compiled into the public build
 * cannot be recovered from it: build-time flags (`feature("NAME")`, `define` constants) from
 * one typed registry, variants built from one codebase with esbuild/tsup or Bun, and
 * `moat-scan`, which proves on every build that no internal codename, source map or source
 * file ships.
 *
 * @packageDocumentation
 */
export * from './build.js';
export * from './errors.js';
export * from './esbuild.js';
export * from './registry.js';
export * from './standalone.js';
export * from './transform.js';
