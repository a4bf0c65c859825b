import { connect } from 'node:net';
import { sendJson } from '../http.js';
import type { RouteHandler } from '../router.js';
import { probe, type ReadinessCheck } from '../storage.js';

/** Whether a TCP connection to the upstream opens, within `timeoutMs`. */
function upstreamReachable(url: string, timeoutMs: number): Promise<ReadinessCheck> {
  const { hostname, port, protocol } = new URL(url);
  return probe(
    'upstream',
    () =>
      new Promise<void>((resolve, reject) => {
        const socket = connect({
          host: hostname.replace(/^\[|\]$/g, ''),
          port: Number(port || (protocol === 'https:' ? 443 : 80)),
        });
        socket.setTimeout(timeoutMs);
        socket.once('connect', () => {
          socket.destroy();
          resolve();
        });
        socket.once('timeout', () => {
          socket.destroy();
          reject(new Error('connect timed out'));
        });
        socket.once('error', reject);
      }),
    timeoutMs,
  );
}

/**
 * `GET /readyz`: 200 when this replica should get traffic — the record store and the replay
 * cache take a real write, the upstream accepts a connection and has one free, the spool is
 * empty and its reserve in place, the decoy index is built, and the verifier is not shutting
 * down — else 503 naming what failed. Every check is bounded (1 s).
 * `/healthz` only says the process is alive.
 */
export const answerReadiness: RouteHandler = async ({ res, services, closing }) => {
  const checks = [
    ...(await services.storage.readiness()),
    // A model call in process (`upstream` a function) has nothing to connect to.
    /^https?:/.test(services.upstream.url)
      ? await upstreamReachable(services.upstream.url, 1_000)
      : { name: 'upstream', ok: true },
    ...services.supervisor.checks(),
  ];
  // Every connection held and requests waiting: this replica cannot take more now (hung calls hold them).
  const load = services.upstream.load?.();
  if (load !== undefined && load.waiting > 0)
    checks.push({
      name: 'upstream-connections',
      ok: false,
      error: `all ${load.limit} upstream connections busy, ${load.waiting} requests waiting`,
    });
  const { down, spool } = services.guard;
  checks.push(
    down === undefined
      ? { name: 'spool', ok: true }
      : { name: 'spool', ok: false, error: `records are spooled: ${down}` },
  );
  // Until the decoy index is first built (seconds after a start with many keys), decoys cannot be traced.
  if (!services.decoyIndex.built) {
    services.decoyIndex.current();
    checks.push({
      name: 'decoy-index',
      ok: false,
      error: 'the decoy index is being built: requests cannot be traced for decoys yet',
    });
  }
  if (!spool.reserveHeld)
    checks.push({ name: 'spool-reserve', ok: false, error: 'the disk has no room for the record spool reserve' });
  if (closing) checks.push({ name: 'shutdown', ok: false, error: 'shutting down' });
  const ready = checks.every((c) => c.ok);
  // Quarantined records do not make a replica unready (they block nothing); they are reported until looked at.
  const records = {
    spooled: spool.count(),
    quarantined: spool.quarantined(),
    unrecorded: services.guard.unrecorded,
  };
  sendJson(res, ready ? 200 : 503, { ready, checks, records }, ready ? {} : { 'retry-after': '1' });
};
