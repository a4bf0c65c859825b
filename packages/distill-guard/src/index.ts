/**
 * `@moat/distill-guard` — layer 4. The client asks for decoys only when three gates pass and
 * keeps signed blocks out of requests made with another key or model; the server injects
 * decoy tools keyed to the API key, traces leaked decoys back to their key, and signs
 * thinking / redacted_thinking / connector_text blocks bound to key and model.
 *
 * @packageDocumentation
 */
export * from './client.js';
export * from './server.js';
