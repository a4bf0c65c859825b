import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { wilson } from '@moat/fingerprint/server';
import { ATTESTATION_SIGNALS, DECOY_SIGNALS, FINGERPRINT_SIGNALS, isKeyId, THINKING_SIGNALS, VERDICTS } from '@moat/protocol';
import { ApiError } from '../errors.js';
import { readBody, sendJson } from '../http.js';
import type { VerifierServices } from '../pipeline/services.js';
import { cutText } from '../record-text.js';
import type { RecordQuery } from '../storage.js';

/** A query parameter as an integer in `[min, max]`, or a 400 that names it. */
function intParam(url: URL, name: string, min: number, max: number): number | undefined {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '') return undefined;
  const n = Number(raw);
  if (!/^-?[0-9]+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new ApiError(
      400,
      'invalid_request_error',
      `${name}: expected an integer in ${min}..${max}, got ${JSON.stringify(raw.slice(0, 40))}`,
    );
  return n;
}

/** A query parameter from a closed vocabulary, or a 400 that lists it. */
function oneOf<T extends string>(url: URL, name: string, values: readonly T[]): T | undefined {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '') return undefined;
  if (!(values as readonly string[]).includes(raw))
    throw new ApiError(
      400,
      'invalid_request_error',
      `${name}: expected one of ${values.join(', ')}, got ${JSON.stringify(raw.slice(0, 40))}`,
    );
  return raw as T;
}

/** The time range of `?since=&until=` (Unix ms). */
function rangeOf(url: URL): { since?: number; until?: number } {
  const since = intParam(url, 'since', 0, 8_640_000_000_000);
  const until = intParam(url, 'until', 0, 8_640_000_000_000);
  if (since !== undefined && until !== undefined && until <= since)
    throw new ApiError(400, 'invalid_request_error', `until: expected a time after since (${since}), got ${until}`);
  return { ...(since === undefined ? {} : { since }), ...(until === undefined ? {} : { until }) };
}

/** `/admin/records` filters: key, time range, verdict and signal values. */
function recordQueryOf(url: URL): RecordQuery {
  const key = url.searchParams.get('key');
  const gateway = url.searchParams.get('gateway');
  if (gateway !== null && gateway !== '' && !/^[a-z0-9_-]{1,64}$/.test(gateway))
    throw new ApiError(400, 'invalid_request_error', `gateway: expected a rule id, got ${JSON.stringify(gateway.slice(0, 40))}`);
  const filters = {
    verdict: oneOf(url, 'verdict', VERDICTS),
    attestation: oneOf(url, 'attestation', ATTESTATION_SIGNALS),
    fingerprint: oneOf(url, 'fingerprint', FINGERPRINT_SIGNALS),
    thinking: oneOf(url, 'thinking', THINKING_SIGNALS),
    decoy: oneOf(url, 'decoy', DECOY_SIGNALS),
  };
  return {
    limit: intParam(url, 'limit', 1, 1000) ?? 100,
    ...rangeOf(url),
    ...(key === null || key === '' ? {} : { keyId: key.slice(0, 64) }),
    ...(gateway === null || gateway === '' ? {} : { gateway }),
    ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== undefined)),
  };
}

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
    return sendJson(res, 200, { records: await storage.queryRecords(recordQueryOf(url)) });
  }
  if (req.method === 'GET' && url.pathname === '/admin/activity') {
    // Per-key traffic in the range, with the key's label and its fingerprint standing.
    const range = rangeOf(url);
    const labels = new Map((await storage.listApiKeys()).map((k) => [k.id, k.label]));
    const keys = (await storage.keyActivity(range)).map((a) => {
      const n = a.match + a.mismatch;
      return {
        ...a,
        label: labels.get(a.keyId) ?? null,
        classification: fingerprintStats.report(a.keyId)?.classification ?? null,
        // The fingerprint mismatch rate in the range, with its 95% Wilson interval.
        mismatchRate: n === 0 ? null : { rate: a.mismatch / n, ...wilson(a.mismatch, n) },
      };
    });
    return sendJson(res, 200, { ...range, keys });
  }
  if (req.method === 'GET' && url.pathname === '/admin/summary') {
    const hits = await storage.decoyHits();
    return sendJson(res, 200, {
      ...(await storage.summary(rangeOf(url))),
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
      if (typeof parsed.label === 'string' && parsed.label !== '') label = cutText(parsed.label, 100);
    } catch {
      throw new ApiError(400, 'invalid_request_error', 'body: expected JSON { "label": string }');
    }
    const created = await storage.createApiKey(label);
    // The new key's decoys become traceable at once.
    services.supervisor.run('decoy-index', () => services.decoyIndex.refresh(true));
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
    const reason = typeof body.reason === 'string' ? cutText(body.reason, 200) : 'revoked by an operator';
    // Stored first (every replica picks it up), then applied here at once.
    await storage.revokeKid(body.kid, reason);
    services.attestationKeyring.revoke(body.kid);
    return sendJson(res, 200, { revoked: body.kid, reason });
  }
  throw new ApiError(404, 'not_found_error', `no admin route ${req.method} ${url.pathname}`);
}
