import { pipeline } from 'node:stream/promises';
import { authenticate } from '../auth.js';
import { ApiError, unavailable } from '../errors.js';
import { abortWhenClientGone, clientToBeTold, cutByShutdown, endedBy, sendError } from '../http.js';
import { newRequestId, RecordStoreError, RequestLedger } from '../pipeline/record.js';
import { discardBody, type UpstreamResponse } from '../pipeline/upstream.js';
import type { RouteHandler } from '../router.js';

/**
 * A route the `passthroughRoutes` setting names (models, files, …): the client is
 * authenticated with its verifier key, the request goes upstream with the verifier's key at
 * exactly the canonical path that was routed, body and answer stream through unchanged
 * (status, headers bar hop-by-hop ones, content encoding), and a client that goes away
 * aborts the upstream call. Each request leaves one record (`passthrough` in its reasons),
 * durable before the answer's body goes out; nothing is forwarded that cannot be recorded.
 */
export const handlePassthrough: RouteHandler = async ({ req, res, services, target }) => {
  const ledger = new RequestLedger(services.guard, newRequestId());
  res.setHeader('moat-request-id', ledger.id);
  ledger.reason(`passthrough ${req.method} ${target.path}`);
  const abort = abortWhenClientGone(res);
  let upstream: UpstreamResponse | undefined;
  try {
    ledger.set({ keyId: await authenticate(req.headers, services.keyCache, services.storage) });
    services.guard.assertWritable();
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
    upstream = await services.upstream.send({
      method: req.method ?? 'GET',
      path: `${target.path}${target.query}`,
      headers: req.headers,
      ...(hasBody ? { body: req } : {}),
      signal: abort.signal,
      raw: true,
    });
    await ledger.finish(upstream.status);
  } catch (error) {
    if (upstream !== undefined) discardBody(upstream.body);
    if (abort.signal.aborted) {
      // The client went away (and the upstream call with it): recorded as the pipeline records it.
      const ended = endedBy(abort.signal);
      ledger.reason(ended.reason);
      await ledger.finish(ended.status).catch(() => {});
      // Cut by the shutdown, its client is still there: told to retry; its body malformed, told so.
      if (clientToBeTold(abort.signal) && !res.headersSent && !res.destroyed)
        sendError(
          res,
          cutByShutdown(abort.signal)
            ? unavailable('the verifier (shutting down)')
            : new ApiError(ended.status, ended.type, ended.detail),
        );
      return;
    }
    const apiError =
      error instanceof ApiError
        ? error
        : error instanceof RecordStoreError
          ? unavailable('the record store', error)
          : new ApiError(500, 'api_error', 'internal error', { cause: error });
    if (!(error instanceof ApiError)) services.log.error({ err: error, id: ledger.id }, 'passthrough failed');
    if (apiError.status < 500) ledger.set({ verdict: 'block' });
    ledger.reason(`${apiError.status}: ${apiError.detail}`);
    await ledger.finish(apiError.status).catch(() => {});
    if (abort.signal.aborted || res.destroyed) return;
    req.resume();
    return sendError(res, apiError);
  }
  res.writeHead(upstream.status, upstream.headers);
  await pipeline(upstream.body, res).catch(() => {
    // The client went away, or the upstream broke off: the socket is closed either way.
  });
};
