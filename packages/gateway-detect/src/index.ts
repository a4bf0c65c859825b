/**
 * `@moat/gateway-detect` — layer 6. The client notices AI gateways between itself and the
 * API (response header prefixes, base-URL hosts) and reports them as batched telemetry; the
 * server recognises relay traces on incoming requests and aggregates them per key. The rule
 * table is data in `@moat/protocol`. Detection never blocks anything.
 *
 * @packageDocumentation
 */
export * from './client.js';
export * from './server.js';
