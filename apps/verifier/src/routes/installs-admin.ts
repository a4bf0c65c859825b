import { INSTALL_ID_PATTERN, isKeyId } from '@moat/protocol';
import { ApiError } from '../errors.js';
import { readJsonObject, sendJson } from '../http.js';
import { ENROLL_OUTCOMES, type InstallRow } from '../installs.js';
import type { RouteHandler } from '../router.js';
import { intParam, oneOf } from './admin.js';

/** A key id from `?key=`, or a 400. */
function keyParam(url: URL): string | undefined {
  const key = url.searchParams.get('key');
  if (key === null || key === '') return undefined;
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(key))
    throw new ApiError(
      400,
      'invalid_request_error',
      `key: expected an API key id, got ${JSON.stringify(key.slice(0, 40))}`,
    );
  return key;
}

/**
 * `GET /admin/installs`: without `key`, installs per API key (most first); with `?key=<id>`,
 * that key's installs — created, last seen, revoked, over limit, distinct addresses seen by
 * this replica in the current fan-in window.
 */
export const listInstalls: RouteHandler = async ({ res, url, services }) => {
  const { storage, enrollment } = services;
  const limit = intParam(url, 'limit', 1, 1000) ?? 100;
  const key = keyParam(url);
  if (key === undefined) {
    sendJson(res, 200, { keys: await storage.installs.installsPerKey(limit) });
    return;
  }
  const rows = await storage.installs.listInstalls(key, limit);
  const installs = await Promise.all(
    rows.map(async (row: InstallRow) => ({
      installId: row.iid,
      created: row.created,
      lastSeen: (await storage.queryRecords({ installId: row.iid, limit: 1 }))[0]?.ts ?? null,
      revoked: row.revokedAt !== null,
      revokedAt: row.revokedAt,
      overLimit: row.overLimit,
      ekid: row.ekid,
      releaseKid: row.releaseKid,
      addresses: enrollment.fanIn.report(row.iid)?.distinctAddresses ?? 0,
    })),
  );
  sendJson(res, 200, { key, installs });
};

/**
 * `POST /admin/installs/revoke` `{ "install_id": "i…" }`: the install's next request is
 * `install: revoked` — at once on this replica, within the install cache's refresh (5 s) on
 * the others. The key's other installs and the release are untouched.
 *
 * `{ "release_kid": "k…" }`: every live install that release key enrolled, under any API key
 * — what a leaked release key calls for, since its installs stamp with their own keys and
 * revoking the release's key id alone stops only its own stamps and new enrollments.
 */
export const revokeInstall: RouteHandler = async ({ req, res, services }) => {
  const body = await readJsonObject(req, 4096, '{ "install_id": "i…" } or { "release_kid": "…" }');
  if (body.release_kid !== undefined && body.install_id === undefined) {
    const kid = body.release_kid;
    if (typeof kid !== 'string' || !isKeyId(kid))
      throw new ApiError(
        400,
        'invalid_request_error',
        `release_kid: expected a key id, got ${JSON.stringify(kid)?.slice(0, 40)}`,
      );
    const rows = await services.storage.installs.revokeReleaseInstalls(kid);
    for (const row of rows) services.enrollment.keys.revoked(row);
    sendJson(res, 200, {
      releaseKid: kid,
      revoked: rows.length,
      installs: rows.map((row) => ({ installId: row.iid, keyId: row.keyId })),
    });
    return;
  }
  const iid = body.install_id;
  if (typeof iid !== 'string' || !INSTALL_ID_PATTERN.test(iid))
    throw new ApiError(
      400,
      'invalid_request_error',
      `install_id: expected "i" and 24 hex digits (or release_kid alone), got ${JSON.stringify(iid)?.slice(0, 40)}`,
    );
  const row = await services.storage.installs.revokeInstall(iid);
  if (row === undefined) throw new ApiError(404, 'not_found_error', `no install ${iid}`);
  services.enrollment.keys.revoked(row);
  sendJson(res, 200, { revoked: row.iid, keyId: row.keyId, revokedAt: row.revokedAt });
};

/** `GET /admin/enrollments`: enrollment records, newest first (filters `key`, `outcome`, `since`, `limit`). */
export const listEnrollments: RouteHandler = async ({ res, url, services }) => {
  const query = {
    keyId: keyParam(url),
    outcome: oneOf(url, 'outcome', ENROLL_OUTCOMES),
    since: intParam(url, 'since', 0, 8_640_000_000_000),
    limit: intParam(url, 'limit', 1, 1000) ?? 100,
  };
  sendJson(res, 200, { enrollments: await services.storage.installs.enrollments(query) });
};
