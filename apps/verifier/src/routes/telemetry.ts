import { parseTelemetryBatch, TELEMETRY_EVENT_TYPES } from '@moat/protocol';
import { errorMessage } from '@moat/protocol/support';
import { ApiError } from '../errors.js';
import { readBody, sendJson } from '../http.js';
import { labelValue } from '../metrics.js';
import type { RouteHandler } from '../router.js';

/**
 * The event types statistics and metric labels keep: the protocol's closed set. The protocol
 * accepts unknown types for forward compatibility; here they count as `other`, so a client
 * cannot make new labels or statistics keys.
 */
const KNOWN_TYPES: ReadonlySet<string> = new Set(TELEMETRY_EVENT_TYPES);

/** `POST /v1/telemetry`: a client's batched telemetry (SPEC.md §11), validated and stored. */
export const handleTelemetry: RouteHandler = async ({ req, res, services, keyId = null }) => {
  const { storage, metrics, gatewayStats } = services;
  const raw = await readBody(req, 65_536);
  let batch: ReturnType<typeof parseTelemetryBatch>;
  try {
    batch = parseTelemetryBatch(JSON.parse(raw.toString('utf8')), raw.length);
  } catch (error) {
    throw new ApiError(400, 'invalid_request_error', `telemetry batch: ${errorMessage(error)}`);
  }
  // Unknown types are stored as `other`, with the client's word kept as `declaredType`.
  const events = batch.events.map((e) => (KNOWN_TYPES.has(e.type) ? e : { ...e, type: 'other', declaredType: e.type }));
  await storage.insertTelemetry(keyId, events);
  for (const e of events) {
    metrics.telemetryEvents.inc({ type: labelValue(e.type) });
    if (keyId !== null && e.type === 'gateway_detected' && Array.isArray(e.gateways))
      gatewayStats.recordTelemetry(keyId, e.gateways as string[]);
  }
  sendJson(res, 202, { accepted: batch.events.length });
};
