/**
 * `@moat/fingerprint` — layer 3. The client writes fingerprint v1 of the first user message
 * into the attribution block; the server recomputes it and keeps per-API-key statistics that
 * separate a proxy rewriting a key's traffic from noise. The algorithm itself lives in
 * `@moat/protocol`.
 *
 * @packageDocumentation
 */
export * from './client.js';
export * from './server.js';
