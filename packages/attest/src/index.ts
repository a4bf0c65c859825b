/**
 * `@moat/attest` — layer 2. The client hands bodies with a placeholder stamp to native code
 * that stamps and sends them below JavaScript; the server verifies the stamp over the raw
 * bytes with key ids, rotation, revocation, a time window and a replay cache.
 *
 * @packageDocumentation
 */
export * from './client.js';
export * from './server.js';
