export * from './base64-text.js';
export * from './decoy-calls.js';
export * from './decoys.js';
export * from './pdf-text.js';
export * from './signing.js';
export * from './trace.js';
