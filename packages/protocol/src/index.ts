/**
 * `@moat/protocol` — the Moat wire contract v1: attribution blocks, the attestation
 * envelope, fingerprint v1, block signatures, the gateway rule table, version negotiation,
 * install enrollment (protocol 1.2), telemetry and the signal vocabulary. No secrets, no I/O; both sides import it.
 *
 * @packageDocumentation
 */
export * from './attribution.js';
export * from './enrollment.js';
export * from './envelope.js';
export * from './errors.js';
export * from './fingerprint.js';
export * from './flags.js';
export * from './gateway.js';
export * from './key-id.js';
export * from './negotiation.js';
export * from './request.js';
export * from './signals.js';
export * from './signature.js';
export * from './stamp.js';
export * from './stream.js';
export * from './telemetry.js';
export { codePointAt, toHex, utf8, utf8Length } from './text.js';

/** Version of the specification this package implements; equals `specVersion` in the vectors. */
export const SPEC_VERSION = '1.2.1';
