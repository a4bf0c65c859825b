import type { IncomingMessage, ServerResponse } from 'node:http';
import { apiKeyOf } from '../auth.js';
import { type ApiError, unavailable } from '../errors.js';
import { sendError } from '../http.js';
import { newRequestId, RequestLedger } from '../pipeline/record.js';
import type { VerifierServices } from '../pipeline/services.js';

/** The key id of a request's API key when it names a live one; `null` otherwise (never an error). */
async function keyIdOf(req: IncomingMessage, services: VerifierServices): Promise<string | null> {
  const key = apiKeyOf(req.headers);
  if (key === undefined) return null;
  try {
    return (await services.keyCache.resolve(key, (k) => services.storage.lookupApiKey(k))) ?? null;
  } catch {
    return null;
  }
}

/**
 * Refuses a request no route takes (a target without a canonical form, a path or method the
 * table does not name) and records it, blocked, with the key it names when that key is live.
 * When the record cannot be written the client gets 503 instead.
 */
export async function refuseAndRecord(
  req: IncomingMessage,
  res: ServerResponse,
  services: VerifierServices,
  error: ApiError,
): Promise<void> {
  const ledger = new RequestLedger(services.guard, newRequestId());
  res.setHeader('moat-request-id', ledger.id);
  ledger.set({ keyId: await keyIdOf(req, services), verdict: 'block' });
  ledger.reason(`${error.status}: ${error.detail}`);
  let answer = error;
  try {
    await ledger.finish(error.status);
  } catch (storageError) {
    services.log.error({ err: String(storageError), id: ledger.id }, 'record not written');
    answer = unavailable('the record store');
  }
  req.resume();
  sendError(res, answer);
}
