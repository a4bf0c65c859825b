import { DISCOVERY_PATH, ENROLLMENT_CHALLENGE_PATH, ENROLLMENT_PATH, TELEMETRY_PATH } from '@moat/protocol';
import { VerifierConfigError } from '../errors.js';
import { handleBatchCreate } from '../pipeline/batch.js';
import { handleMessagesRequest, type MessagesEndpoint } from '../pipeline/index.js';
import { createRouter, type RouteHandler, type RouteRow } from '../router.js';
import * as admin from './admin.js';
import * as batches from './batches.js';
import { CONFORMANCE_PATH, handleConformance } from './conformance.js';
import * as enroll from './enroll.js';
import * as files from './files.js';
import * as installs from './installs-admin.js';
import * as moat from './moat.js';
import { handlePassthrough } from './passthrough.js';
import { answerReadiness } from './readiness.js';
import { handleTelemetry } from './telemetry.js';

/** A route whose body runs through the whole decision pipeline as `endpoint`. */
const pipeline =
  (endpoint: MessagesEndpoint): RouteHandler =>
  ({ req, res, services, target }) =>
    handleMessagesRequest(req, res, endpoint, services, target);

/**
 * Every route of the verifier's own, first match wins: method (`*` any), pattern (`:name` one
 * segment, trailing `*` any rest), mode, access, handler. The upstream routes the
 * `passthroughRoutes` setting names follow ({@link routeTable}); a request no row takes is
 * answered 404 and recorded.
 */
export const ROUTES: readonly RouteRow[] = [
  ['POST', '/v1/messages', 'pipeline', 'client', pipeline('messages')],
  ['POST', '/v1/messages/count_tokens', 'pipeline', 'client', pipeline('count_tokens')],
  [
    'POST',
    '/v1/messages/batches',
    'pipeline',
    'client',
    ({ req, res, services, target }) => handleBatchCreate(req, res, services, target),
  ],
  ['GET', '/v1/messages/batches', 'pipeline', 'client', batches.listBatches],
  ['GET', '/v1/messages/batches/:id', 'pipeline', 'client', batches.batchObject('retrieve')],
  ['POST', '/v1/messages/batches/:id/cancel', 'pipeline', 'client', batches.batchObject('cancel')],
  ['DELETE', '/v1/messages/batches/:id', 'pipeline', 'client', batches.batchObject('delete')],
  ['GET', '/v1/messages/batches/:id/results', 'pipeline', 'client', batches.batchResults],
  ['POST', '/v1/files', 'pipeline', 'client', files.uploadFile],
  ['GET', '/v1/files', 'pipeline', 'client', files.listFiles],
  ['GET', '/v1/files/:id', 'pipeline', 'client', files.fileMetadata],
  ['DELETE', '/v1/files/:id', 'pipeline', 'client', files.deleteFile],
  ['GET', '/v1/files/:id/content', 'pipeline', 'client', files.fileContent],
  ['POST', TELEMETRY_PATH, 'local', 'client', handleTelemetry],
  ['POST', CONFORMANCE_PATH, 'local', 'client', handleConformance],
  ['POST', ENROLLMENT_CHALLENGE_PATH, 'local', 'client', enroll.challenge],
  ['POST', ENROLLMENT_PATH, 'local', 'client', enroll.enroll],
  ['GET', DISCOVERY_PATH, 'local', 'public', moat.discovery],
  ['GET', '/api/features/*', 'local', 'public', moat.clientFeatures],
  ['GET', '/healthz', 'local', 'public', moat.healthz],
  ['GET', '/readyz', 'local', 'public', answerReadiness],
  ['GET', '/metrics', 'local', 'metrics', moat.metrics],
  ['GET', '/dashboard', 'local', 'public', moat.dashboard],
  // Browsers ask for it on every dashboard visit: answered without a record of its own.
  ['GET', '/favicon.ico', 'local', 'public', moat.notFound('icon')],
  ['GET', '/admin/records', 'local', 'admin', admin.listRecords],
  ['GET', '/admin/activity', 'local', 'admin', admin.keyActivity],
  ['GET', '/admin/summary', 'local', 'admin', admin.summary],
  ['GET', '/admin/keys', 'local', 'admin', admin.listKeys],
  ['POST', '/admin/keys', 'local', 'admin', admin.createKey],
  ['POST', '/admin/keys/revoke', 'local', 'admin', admin.revokeKey],
  ['GET', '/admin/policy', 'local', 'admin', admin.policy],
  ['GET', '/admin/attestation-keys', 'local', 'admin', admin.attestationKeys],
  ['POST', '/admin/attestation-keys/revoke', 'local', 'admin', admin.revokeKid],
  ['GET', '/admin/installs', 'local', 'admin', installs.listInstalls],
  ['POST', '/admin/installs/revoke', 'local', 'admin', installs.revokeInstall],
  ['GET', '/admin/enrollments', 'local', 'admin', installs.listEnrollments],
  ['*', '/admin/*', 'local', 'admin', moat.notFound('admin route')],
];

/** One upstream route forwarded without Moat's checks: a method and a pattern of exact and `:name` segments. */
export interface PassthroughRoute {
  readonly method: string;
  readonly pattern: string;
}

/** The verifier's routes, then the pass-through routes of the configuration. */
export function routeTable(passthrough: readonly PassthroughRoute[]): RouteRow[] {
  const own = createRouter(ROUTES);
  for (const { method, pattern } of passthrough) {
    const entry = JSON.stringify(`${method} ${pattern}`);
    const segments = pattern.split('/').slice(1);
    // Every request target with a ":" is refused before routing: such a segment never matches.
    if (segments.some((s) => s.indexOf(':', 1) !== -1))
      throw new VerifierConfigError('passthroughRoutes', 'segments that are a name or one ":name" parameter', entry);
    // A row the verifier serves itself wins: the entry would silently do nothing (or, embedded, reach the model).
    const served = own.match(method, `/${segments.map((s) => (s.startsWith(':') ? 'x' : s)).join('/')}`);
    if (served !== undefined)
      throw new VerifierConfigError(
        'passthroughRoutes',
        'routes the verifier does not serve itself (its own are matched first)',
        `${entry}, which its route "${served.route.method} ${served.route.pattern}" serves`,
      );
  }
  return [
    ...ROUTES,
    ...passthrough.map(
      ({ method, pattern }): RouteRow => [method, pattern, 'passthrough', 'client', handlePassthrough],
    ),
  ];
}
