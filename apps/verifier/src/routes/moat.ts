import type { IncomingMessage, ServerResponse } from 'node:http';
import { DISCOVERY_PATH, FEATURES, TELEMETRY_PATH } from '@moat/protocol';
import { DASHBOARD_HTML } from '../dashboard.js';
import { ApiError } from '../errors.js';
import { sendJson } from '../http.js';
import type { VerifierServices } from '../pipeline/services.js';
import { hasBearer } from './admin.js';

/**
 * Moat's own read-only endpoints: discovery, the client flags in GrowthBook's format, health,
 * metrics (operators only) and the dashboard page. Returns `false` for any other request.
 */
export async function handleMoatEndpoint(
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  services: VerifierServices,
  tokens: { readonly admin: Buffer; readonly metrics: Buffer | undefined },
): Promise<boolean> {
  if (req.method !== 'GET') return false;
  const { config } = services;
  if (url.pathname === DISCOVERY_PATH) {
    sendJson(res, 200, {
      moat: { versions: [1], features: [...FEATURES], telemetry: TELEMETRY_PATH, flags: `/api/features/${config.clientKey}` },
    });
    return true;
  }
  if (url.pathname.startsWith('/api/features/')) {
    if (url.pathname !== `/api/features/${config.clientKey}`) throw new ApiError(404, 'not_found_error', 'unknown client key');
    sendJson(res, 200, services.flags.clientPayload(services.attestationKeyring.revokedKids()));
    return true;
  }
  if (url.pathname === '/healthz') {
    // Liveness only: the process answers. Whether it should get traffic is /readyz.
    sendJson(res, 200, { ok: true });
    return true;
  }
  if (url.pathname === '/metrics') {
    // Per-signal series would tell a fake client which of its requests raised what: operators only.
    if (!hasBearer(req, tokens.admin) && (tokens.metrics === undefined || !hasBearer(req, tokens.metrics)))
      throw new ApiError(401, 'authentication_error', 'metrics bearer token (or the admin token) required');
    const text = await services.metrics.registry.metrics();
    res.writeHead(200, { 'content-type': services.metrics.registry.contentType });
    res.end(text);
    return true;
  }
  if (url.pathname === '/dashboard') {
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
    });
    res.end(DASHBOARD_HTML);
    return true;
  }
  return false;
}
