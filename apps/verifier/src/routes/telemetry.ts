import { parseTelemetryBatch } from '@moat/protocol';
import { errorMessage } from '@moat/protocol/support';
import { ApiError } from '../errors.js';
import { readBody, sendJson } from '../http.js';
import type { RouteHandler } from '../router.js';

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
  await storage.insertTelemetry(keyId, batch.events);
  for (const e of batch.events) {
    metrics.telemetryEvents.inc({ type: e.type });
    if (keyId !== null && e.type === 'gateway_detected' && Array.isArray(e.gateways))
      gatewayStats.recordTelemetry(keyId, e.gateways as string[]);
  }
  sendJson(res, 202, { accepted: batch.events.length });
};
