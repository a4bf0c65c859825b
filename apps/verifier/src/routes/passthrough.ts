import { pipeline } from 'node:stream/promises';
import type { RouteHandler } from '../router.js';

/**
 * Every path under `/v1` the verifier does not own (models, message batches, files, whatever
 * the API adds): the client is authenticated with its verifier key, the request goes upstream
 * with the verifier's key, body and answer stream through unchanged (status, headers bar
 * hop-by-hop ones, content encoding), and a client that goes away aborts the upstream call.
 */
export const handlePassthrough: RouteHandler = async ({ req, res, services }) => {
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
  const upstream = await services.upstream.send({
    method: req.method ?? 'GET',
    path: req.url ?? '/',
    headers: req.headers,
    body: hasBody ? req : undefined,
    signal: abort.signal,
    raw: true,
  });
  res.writeHead(upstream.status, upstream.headers);
  await pipeline(upstream.body, res).catch(() => {
    // The client went away, or the upstream broke off: the socket is closed either way.
  });
};
