import { wilson } from '@moat/fingerprint/server';
import { isKeyId, VERDICTS } from '@moat/protocol';
import { ApiError } from '../errors.js';
import { readJsonObject, sendJson } from '../http.js';
import type { RecordQuery } from '../record-schema.js';
import { cutText } from '../record-text.js';
import type { RouteContext, RouteHandler } from '../router.js';
import { RECORDED_SIGNALS } from '../signals.js';

/** A query parameter as an integer in `[min, max]`, or a 400 that names it. */
export function intParam(url: URL, name: string, min: number, max: number): number | undefined {
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
export function oneOf<T extends string>(url: URL, name: string, values: readonly T[]): T | undefined {
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
  const range: { since?: number; until?: number } = {};
  if (since !== undefined) range.since = since;
  if (until !== undefined) range.until = until;
  return range;
}

/** `/admin/records` filters: key, time range, verdict, gateway, batch and every signal of the registry with a filter. */
function recordQueryOf(url: URL): RecordQuery {
  const key = url.searchParams.get('key');
  const gateway = url.searchParams.get('gateway');
  if (gateway !== null && gateway !== '' && !/^[a-z0-9_-]{1,64}$/.test(gateway))
    throw new ApiError(
      400,
      'invalid_request_error',
      `gateway: expected a rule id, got ${JSON.stringify(gateway.slice(0, 40))}`,
    );
  const query: Record<string, unknown> = { limit: intParam(url, 'limit', 1, 1000) ?? 100, ...rangeOf(url) };
  if (key !== null && key !== '') query.keyId = key.slice(0, 64);
  if (gateway !== null && gateway !== '') query.gateway = gateway;
  // A Message Batch: the create's record id, its items' and its retrievals' link.
  const batch = url.searchParams.get('batch');
  if (batch !== null && batch !== '') query.batch = batch.slice(0, 64);
  const verdict = oneOf(url, 'verdict', VERDICTS);
  if (verdict !== undefined) query.verdict = verdict;
  for (const row of RECORDED_SIGNALS) {
    const value = row.filter === undefined ? undefined : oneOf(url, row.filter, row.values);
    if (value !== undefined) query[row.name] = value;
  }
  return query as RecordQuery;
}

/** `GET /admin/records`: records matching the query's filters, newest first. */
export const listRecords: RouteHandler = async ({ res, url, services }) =>
  sendJson(res, 200, { records: await services.storage.queryRecords(recordQueryOf(url)) });

/** `GET /admin/activity`: per-key traffic in the range, with the key's label and its fingerprint standing. */
export const keyActivity: RouteHandler = async ({ res, url, services }) => {
  const { storage, fingerprintStats } = services;
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
  sendJson(res, 200, { ...range, keys });
};

/** `GET /admin/summary`: verdict and attestation counts, telemetry, gateways and decoys. */
export const summary: RouteHandler = async ({ res, url, services }) => {
  const { storage, gatewayStats, metrics } = services;
  const hits = await storage.decoyHits();
  sendJson(res, 200, {
    ...(await storage.summary(rangeOf(url))),
    telemetry: await storage.telemetryCounts(),
    gateways: gatewayStats.totals(),
    decoyCalls: metrics.decoyCallCount,
    decoyHits: Object.values(hits).reduce((a, b) => a + b, 0),
  });
};

/** `GET /admin/keys`: live API keys with their fingerprint, gateway and decoy standing. */
export const listKeys: RouteHandler = async ({ res, services }) => {
  const { storage, fingerprintStats, gatewayStats } = services;
  const hits = await storage.decoyHits();
  sendJson(res, 200, {
    keys: (await storage.listApiKeys()).map((k) => ({
      ...k,
      fingerprint: fingerprintStats.report(k.id) ?? null,
      gateway: gatewayStats.report(k.id) ?? null,
      decoyHits: hits[k.id] ?? 0,
    })),
  });
};

/** `POST /admin/keys` `{ label }`: a new API key, returned once. */
export const createKey: RouteHandler = async ({ req, res, services }) => {
  const parsed = await readJsonObject(req, 4096, '{ "label": string }', {});
  const label = typeof parsed.label === 'string' && parsed.label !== '' ? cutText(parsed.label, 100) : 'unnamed';
  const created = await services.storage.createApiKey(label);
  // The new key's decoys become traceable at once.
  services.supervisor.run('decoy-index', () => services.decoyIndex.refresh(true));
  sendJson(res, 201, created);
};

/**
 * `POST /admin/keys/revoke` `{ id }`: revokes an API key on every replica — at once on this
 * one, within the key cache's 5 s on the others. `404` when no live key has that id.
 */
export const revokeKey: RouteHandler = async ({ req, res, services }) => {
  const body = await readJsonObject(req, 4096, '{ "id": string }');
  if (typeof body.id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(body.id))
    throw new ApiError(
      400,
      'invalid_request_error',
      `id: expected an API key id ([A-Za-z0-9_-]{1,64}), got ${JSON.stringify(body.id)?.slice(0, 40)}`,
    );
  if (!(await services.storage.revokeApiKey(body.id)))
    throw new ApiError(404, 'not_found_error', `no live API key has the id ${body.id}`);
  // Lookups this replica cached are forgotten: the key is refused from its next request here.
  services.keyCache.clear();
  sendJson(res, 200, { revoked: body.id });
};

/** `GET /admin/policy`: the GrowthBook features in force. */
export const policy: RouteHandler = ({ res, services }) => sendJson(res, 200, { features: services.flags.features });

/** `GET /admin/attestation-keys`: active and revoked attestation key ids. */
export const attestationKeys: RouteHandler = async ({ res, services }) =>
  sendJson(res, 200, { active: services.attestationKeyring.kids(), revoked: await services.storage.revokedKids() });

/** `POST /admin/attestation-keys/revoke` `{ kid, reason? }`: revokes a key id on every replica. */
export const revokeKid: RouteHandler = async ({ req, res, services }: RouteContext) => {
  const body = await readJsonObject(req, 4096, '{ "kid": string, "reason"?: string }');
  if (!isKeyId(body.kid))
    throw new ApiError(
      400,
      'invalid_request_error',
      `kid: expected a key id ([A-Za-z0-9_-]{1,32}), got ${JSON.stringify(body.kid)?.slice(0, 40)}`,
    );
  const reason = typeof body.reason === 'string' ? cutText(body.reason, 200) : 'revoked by an operator';
  // Stored first (every replica picks it up), then applied here at once.
  await services.storage.revokeKid(body.kid, reason);
  services.attestationKeyring.revoke(body.kid);
  sendJson(res, 200, { revoked: body.kid, reason });
};
