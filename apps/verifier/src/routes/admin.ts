import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isKeyId } from '@moat/protocol';
import { ApiError } from '../errors.js';
import { readBody, sendJson } from '../http.js';
import type { VerifierServices } from '../pipeline/services.js';

/** Whether the request carries `Authorization: Bearer <token>` for `token`, compared in constant time. */
export function hasBearer(req: IncomingMessage, token: Buffer): boolean {
  const auth = req.headers.authorization;
  if (typeof auth !== 'string' || !auth.startsWith('Bearer ')) return false;
  const given = Buffer.from(auth.slice(7));
  return given.length === token.length && timingSafeEqual(given, token);
}

/** `/admin/*`: records, summary, keys and policy, behind the admin token. */
export async function handleAdmin(
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  services: VerifierServices,
  adminToken: Buffer,
): Promise<void> {
  const { storage, fingerprintStats, gatewayStats, flags, metrics } = services;
  if (!hasBearer(req, adminToken)) throw new ApiError(401, 'authentication_error', 'admin bearer token required');
  if (req.method === 'GET' && url.pathname === '/admin/records') {
    const limit = Math.min(1000, Math.max(1, Number(url.searchParams.get('limit') ?? 100) || 100));
    return sendJson(res, 200, { records: await storage.recentRecords(limit, url.searchParams.get('key') ?? undefined) });
  }
  if (req.method === 'GET' && url.pathname === '/admin/summary') {
    const hits = await storage.decoyHits();
    return sendJson(res, 200, {
      ...(await storage.summary()),
      telemetry: await storage.telemetryCounts(),
      gateways: gatewayStats.totals(),
      decoyCalls: metrics.decoyCallCount,
      decoyHits: Object.values(hits).reduce((a, b) => a + b, 0),
    });
  }
  if (req.method === 'GET' && url.pathname === '/admin/keys') {
    const hits = await storage.decoyHits();
    return sendJson(res, 200, {
      keys: (await storage.listApiKeys()).map((k) => ({
        ...k,
        fingerprint: fingerprintStats.report(k.id) ?? null,
        gateway: gatewayStats.report(k.id) ?? null,
        decoyHits: hits[k.id] ?? 0,
      })),
    });
  }
  if (req.method === 'POST' && url.pathname === '/admin/keys') {
    const raw = await readBody(req, 4096);
    let label = 'unnamed';
    try {
      const parsed = JSON.parse(raw.toString('utf8') || '{}') as { label?: unknown };
      if (typeof parsed.label === 'string' && parsed.label !== '') label = parsed.label.slice(0, 100);
    } catch {
      throw new ApiError(400, 'invalid_request_error', 'body: expected JSON { "label": string }');
    }
    const created = await storage.createApiKey(label);
    // The new key's decoys become traceable at once.
    void services.decoyIndex.refresh(true);
    return sendJson(res, 201, created);
  }
  if (req.method === 'GET' && url.pathname === '/admin/policy') return sendJson(res, 200, { features: flags.features });
  if (req.method === 'GET' && url.pathname === '/admin/attestation-keys') {
    return sendJson(res, 200, { active: services.attestationKeyring.kids(), revoked: await storage.revokedKids() });
  }
  if (req.method === 'POST' && url.pathname === '/admin/attestation-keys/revoke') {
    let body: { kid?: unknown; reason?: unknown };
    try {
      body = JSON.parse((await readBody(req, 4096)).toString('utf8')) as { kid?: unknown; reason?: unknown };
    } catch {
      throw new ApiError(400, 'invalid_request_error', 'body: expected JSON { "kid": string, "reason"?: string }');
    }
    if (!isKeyId(body.kid))
      throw new ApiError(
        400,
        'invalid_request_error',
        `kid: expected a key id ([A-Za-z0-9_-]{1,32}), got ${JSON.stringify(body.kid)?.slice(0, 40)}`,
      );
    const reason = typeof body.reason === 'string' ? body.reason.slice(0, 200) : 'revoked by an operator';
    // Stored first (every replica picks it up), then applied here at once.
    await storage.revokeKid(body.kid, reason);
    services.attestationKeyring.revoke(body.kid);
    return sendJson(res, 200, { revoked: body.kid, reason });
  }
  throw new ApiError(404, 'not_found_error', `no admin route ${req.method} ${url.pathname}`);
}
