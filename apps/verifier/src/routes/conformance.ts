import { setImmediate as nextTurn } from 'node:timers/promises';
import { answerConformanceRequest } from '@moat/protocol/conformance';
import { ApiError } from '../errors.js';
import { readJsonObject, sendJson } from '../http.js';
import type { RouteHandler } from '../router.js';

/** Where the verifier answers the conformance interface (SPEC.md §15). */
export const CONFORMANCE_PATH = '/v1/moat/conformance';
const CONFORMANCE_MAX_REQUESTS = 1000;

/** SPEC.md §15: the stdio conformance interface over HTTP, so partners can check a running verifier. */
export const handleConformance: RouteHandler = async ({ req, res }) => {
  const { requests } = await readJsonObject(req, 1_048_576, '{ "requests": [...] }');
  if (!Array.isArray(requests) || requests.length > CONFORMANCE_MAX_REQUESTS) {
    const got = Array.isArray(requests) ? `${requests.length} items` : typeof requests;
    const expected = `an array of at most ${CONFORMANCE_MAX_REQUESTS}`;
    throw new ApiError(400, 'invalid_request_error', `requests: expected ${expected}, got ${got}`);
  }
  // Some operations cost a key derivation: other requests get their turns between parts.
  const answers: unknown[] = [];
  for (const [i, request] of requests.entries()) {
    if (i > 0 && i % 64 === 0) await nextTurn();
    answers.push(answerConformanceRequest(request));
  }
  sendJson(res, 200, { answers });
};
