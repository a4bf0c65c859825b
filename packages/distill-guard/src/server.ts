export * from './decoy-calls.js';
export * from './decoys.js';
export * from './signing.js';
export * from './trace.js';
