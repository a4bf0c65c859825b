export * from './engine.js';
export * from './matcher.js';
export * from './needles.js';
export * from './pack.js';
export * from './prefilter.js';
export * from './report.js';
export * from './scanner.js';
export * from './tar.js';
