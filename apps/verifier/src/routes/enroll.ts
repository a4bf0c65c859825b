/**
 * Enrollment of per-install keys (protocol 1.2, SPEC §5.4): `POST /v1/moat/enroll/challenge`
 * hands out a one-time challenge bound to the API key; `POST /v1/moat/enroll` checks, in this
 * order, the body, the release stamp (`r1`), the enrollment key id, the challenge, the install
 * key and the key's enrollment limits, then creates the install. Every attempt is recorded.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { type AttestationResult, verifyAttestation } from '@moat/attest/server';
import { deriveInstallKey, type EnrollmentRequest, parseEnrollmentRequest } from '@moat/protocol';
import { errorMessage } from '@moat/protocol/support';
import { apiKeyOf } from '../auth.js';
import { checkLimits, enrollmentLimits } from '../enrollment-policy.js';
import { ApiError, type ApiErrorType, unavailable } from '../errors.js';
import { readBody, sendJson } from '../http.js';
import type { EnrollmentRecord, EnrollOutcome } from '../installs.js';
import { receivedRequest } from '../pipeline/evidence.js';
import type { VerifierServices } from '../pipeline/services.js';
import type { RouteHandler } from '../router.js';

/** A refused enrollment: its status, reason code and what the enrollment record says. */
export class EnrollRefusal extends Error {
  override readonly name = 'EnrollRefusal';
  constructor(
    readonly status: number,
    readonly type: ApiErrorType,
    readonly code: string,
    readonly detail: string,
    readonly outcome: EnrollOutcome,
    readonly retryAfterSec?: number,
  ) {
    super(`${code}: ${detail}`);
  }
}

/** Challenges one API key may hold within one challenge lifetime: an install needs one at a time. */
export const MAX_OPEN_CHALLENGES = 32;

/** The credential a challenge is bound to: SHA-256 of the API key by §5.3's rule (hex). */
function credentialOfRequest(req: IncomingMessage): string {
  return createHash('sha256')
    .update(apiKeyOf(req.headers) ?? '')
    .digest('hex');
}

/** A keyed hash of the source address, as the gateway statistics make it (never the address). */
function addressOf(req: IncomingMessage, secret: Uint8Array): string | null {
  const address = req.socket.remoteAddress;
  if (address === undefined || address === '') return null;
  return createHmac('sha256', secret).update(address).digest('base64url').slice(0, 16);
}

/** `POST /v1/moat/enroll/challenge`: a one-time challenge for this API key (empty body or `{}`). */
export const challenge: RouteHandler = async ({ req, res, services }) => {
  if (services.enrollment.keyring.advertised() === undefined)
    throw new ApiError(404, 'not_found_error', 'enrollment is not enabled on this verifier');
  const raw = (await readBody(req, 1024)).toString('utf8').trim();
  if (raw !== '' && raw !== '{}')
    throw new ApiError(
      400,
      'invalid_request_error',
      `ERR_ENROLLMENT: expected an empty body or {}, got ${raw.length} bytes`,
    );
  const value = randomBytes(32).toString('base64url');
  const ttl = services.config.enrollChallengeSec;
  const credential = credentialOfRequest(req);
  if (
    !(await services.storage.installs.issueChallenge(value, credential, Date.now() + ttl * 1000, MAX_OPEN_CHALLENGES))
  )
    throw new ApiError(
      429,
      'rate_limit_error',
      `ERR_ENROLL_LIMIT: expected at most ${MAX_OPEN_CHALLENGES} challenges per key within ${ttl} s, got more`,
      { retryAfterSec: ttl },
    );
  sendJson(res, 200, { challenge: value, expires_in: ttl });
};

/** Step 2: the release stamp; only a valid `r1` enrolls. */
async function releaseStamp(raw: Buffer, req: IncomingMessage, services: VerifierServices): Promise<AttestationResult> {
  let stamp: AttestationResult;
  try {
    stamp = await verifyAttestation(raw, {
      keyring: services.attestationKeyring,
      nonceStore: services.storage,
      windowSec: services.config.windowSec,
      request: receivedRequest(req, services.config),
    });
  } catch (error) {
    throw unavailable('the replay cache', error);
  }
  if (stamp.signal === 'valid' && stamp.binding === 'request') return stamp;
  const why = stamp.reason === undefined ? '' : ` (${stamp.reason})`;
  if (stamp.signal === 'replayed')
    throw new EnrollRefusal(409, 'invalid_request_error', 'replayed', 'the enrollment was sent before', 'stamp');
  if (stamp.signal === 'revoked')
    throw new EnrollRefusal(403, 'permission_error', 'revoked', `release ${stamp.kid} is revoked`, 'stamp');
  if (stamp.signal === 'valid')
    throw new EnrollRefusal(401, 'authentication_error', 'invalid', 'expected an r1 stamp, got a v1 stamp', 'stamp');
  const code = stamp.signal === 'unavailable' ? 'missing' : stamp.signal;
  throw new EnrollRefusal(401, 'authentication_error', code, `release stamp ${stamp.signal}${why}`, 'stamp');
}

/** Steps 1 to 6; returns the install to create. */
async function checkEnrollment(
  req: IncomingMessage,
  raw: Buffer,
  keyId: string,
  services: VerifierServices,
  attempt: { releaseKid: string | null },
): Promise<{ request: EnrollmentRequest; iid: string; overLimit: boolean }> {
  const { installs } = services.storage;
  let request: EnrollmentRequest;
  try {
    request = parseEnrollmentRequest(JSON.parse(raw.toString('utf8')));
  } catch (error) {
    throw new EnrollRefusal(400, 'invalid_request_error', 'ERR_ENROLLMENT', errorMessage(error), 'bad_request');
  }
  const stamp = await releaseStamp(raw, req, services);
  attempt.releaseKid = stamp.kid ?? null;
  const enrollmentKey = services.enrollment.keyring.get(request.ekid);
  if (enrollmentKey === undefined || !services.enrollment.keyring.isActive(request.ekid))
    throw new EnrollRefusal(
      400,
      'invalid_request_error',
      'ERR_ENROLLMENT',
      `ekid: no active key ${request.ekid}`,
      'unknown_ekid',
    );
  if (!(await installs.consumeChallenge(request.challenge, credentialOfRequest(req))))
    throw new EnrollRefusal(
      409,
      'invalid_request_error',
      'ERR_ENROLL_CHALLENGE',
      'challenge unknown, expired, used or issued to another key',
      'challenge',
    );
  const iid = `i${randomBytes(12).toString('hex')}`;
  try {
    // The same derivation the stamp check makes later: a low-order install key fails it here.
    deriveInstallKey({
      privateKey: enrollmentKey.privateKey,
      peerPublicKey: Buffer.from(request.installKey, 'base64url'),
      challenge: Buffer.from(request.challenge, 'base64url'),
      installId: iid,
      ekid: request.ekid,
      installPublicKey: request.installKey,
    });
  } catch (error) {
    throw new EnrollRefusal(400, 'invalid_request_error', 'ERR_ENROLLMENT', errorMessage(error), 'weak_key');
  }
  const limits = enrollmentLimits(services.flags, keyId);
  const now = Date.now();
  const verdict = checkLimits(
    limits,
    await installs.countInstalls(keyId),
    await installs.countEnrollments(keyId, now - limits.windowSec * 1000),
    now,
  );
  if (verdict.over && limits.action === 'block')
    throw new EnrollRefusal(
      429,
      'rate_limit_error',
      'ERR_ENROLL_LIMIT',
      `over the enrollment limit of this key (${verdict.which})`,
      'limited',
      verdict.retryAfterSec,
    );
  return { request, iid, overLimit: verdict.over };
}

/** Per verifier, per API key: the enrollment under way (later ones wait for it). */
const ENROLLING = new WeakMap<VerifierServices, Map<string, Promise<unknown>>>();

/** Runs `work` after every earlier call for this key on this verifier has settled. */
async function oneAtATime<T>(services: VerifierServices, keyId: string, work: () => Promise<T>): Promise<T> {
  let byKey = ENROLLING.get(services);
  if (byKey === undefined) {
    byKey = new Map();
    ENROLLING.set(services, byKey);
  }
  const before = byKey.get(keyId) ?? Promise.resolve();
  const mine = before.catch(() => {}).then(work);
  const tail = mine.catch(() => {});
  byKey.set(keyId, tail);
  try {
    return await mine;
  } finally {
    if (byKey.get(keyId) === tail) byKey.delete(keyId);
  }
}

/** `POST /v1/moat/enroll`: one install for this API key, or the refusal of the first check that fails. */
export const enroll: RouteHandler = async ({ req, res, services, keyId }) => {
  if (keyId === undefined) throw new ApiError(401, 'authentication_error', 'x-api-key header is required');
  if (services.enrollment.keyring.advertised() === undefined)
    throw new ApiError(404, 'not_found_error', 'enrollment is not enabled on this verifier');
  const raw = await readBody(req, 8192);
  const attempt: { -readonly [K in keyof EnrollmentRecord]: EnrollmentRecord[K] } = {
    ts: Date.now(),
    keyId,
    address: addressOf(req, services.secret),
    releaseKid: null,
    outcome: 'bad_request',
    installId: null,
    reason: null,
  };
  try {
    // The limit check and the enrollment it allows are one step per key on this replica:
    // concurrent enrollments would all read the same count and all pass.
    const { request, iid } = await oneAtATime(services, keyId, async () => {
      const checked = await checkEnrollment(req, raw, keyId, services, attempt);
      await services.storage.installs.createInstall({
        iid: checked.iid,
        keyId,
        installKey: checked.request.installKey,
        ekid: checked.request.ekid,
        challenge: checked.request.challenge,
        created: Date.now(),
        revokedAt: null,
        overLimit: checked.overLimit,
        releaseKid: attempt.releaseKid,
      });
      Object.assign(attempt, {
        outcome: checked.overLimit ? 'over_limit' : 'created',
        installId: checked.iid,
        reason: '201',
      });
      await services.storage.installs.recordEnrollment(attempt);
      return checked;
    });
    services.metrics.enrollments.inc({ outcome: attempt.outcome });
    sendJson(res, 201, { install_id: iid, ekid: request.ekid });
  } catch (error) {
    if (!(error instanceof EnrollRefusal)) throw error;
    Object.assign(attempt, { outcome: error.outcome, reason: `${error.status} ${error.code}` });
    await services.storage.installs.recordEnrollment(attempt);
    services.metrics.enrollments.inc({ outcome: attempt.outcome });
    const headers = error.retryAfterSec === undefined ? {} : { 'retry-after': String(error.retryAfterSec) };
    sendJson(
      res,
      error.status,
      { type: 'error', error: { type: error.type, code: error.code, message: error.detail } },
      headers,
    );
  }
};
