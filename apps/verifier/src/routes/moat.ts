import { ENROLLMENT_CHALLENGE_PATH, ENROLLMENT_PATH, FEATURES, TELEMETRY_PATH } from '@moat/protocol';
import { DASHBOARD_CSP, DASHBOARD_HTML } from '../dashboard.js';
import { ApiError } from '../errors.js';
import { sendJson } from '../http.js';
import { OPERATOR_HEADERS, type RouteHandler } from '../router.js';

/** `GET /v1/moat`: version negotiation — versions, features, where telemetry and flags are. */
export const discovery: RouteHandler = ({ res, services }) => {
  // Per-install keys only when an enrollment key is active: its public half is what clients agree keys with.
  const enrollment = services.enrollment.keyring.advertised();
  sendJson(res, 200, {
    moat: {
      versions: [1],
      features: FEATURES.filter((f) => f !== 'install_keys' || enrollment !== undefined),
      telemetry: TELEMETRY_PATH,
      flags: `/api/features/${services.config.clientKey}`,
      ...(enrollment === undefined
        ? {}
        : { enrollment: { challenge: ENROLLMENT_CHALLENGE_PATH, enroll: ENROLLMENT_PATH, ...enrollment } }),
    },
  });
};

/** `GET /api/features/<client key>`: the client flags in GrowthBook's features-endpoint format. */
export const clientFeatures: RouteHandler = ({ res, params, services }) => {
  if (params['*'] !== services.config.clientKey) throw new ApiError(404, 'not_found_error', 'unknown client key');
  sendJson(res, 200, services.flags.clientPayload(services.attestationKeyring.revokedKids()));
};

/** `GET /healthz`: liveness only, the process answers. Whether it should get traffic is `/readyz`. */
export const healthz: RouteHandler = ({ res }) => sendJson(res, 200, { ok: true });

/** `GET /metrics`: Prometheus text (operators only: see the route's access). */
export const metrics: RouteHandler = async ({ res, services }) => {
  const text = await services.metrics.registry.metrics();
  res.writeHead(200, { 'content-type': services.metrics.registry.contentType });
  res.end(text);
};

/** `GET /dashboard`: the page; its data comes from the admin API with the token the operator enters. */
export const dashboard: RouteHandler = ({ res }) => {
  res.writeHead(200, {
    ...OPERATOR_HEADERS,
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': DASHBOARD_CSP,
  });
  res.end(DASHBOARD_HTML);
};

/** Any route the table refuses: 404 naming the method and path. */
export function notFound(what = 'route'): RouteHandler {
  return ({ req, url }) => {
    throw new ApiError(404, 'not_found_error', `no ${what} ${req.method} ${url.pathname}`);
  };
}
