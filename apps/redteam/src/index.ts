/**
 * `moat demo` and `moat redteam`: every Moat layer against its attack, as a trust report.
 *
 * @packageDocumentation
 */
export * from './demo.js';
export * from './proxy.js';
export * from './report.js';
export * from './scenarios.js';
