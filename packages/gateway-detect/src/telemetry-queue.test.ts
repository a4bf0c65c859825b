import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseTelemetryBatch, type TelemetryBatch } from '@moat/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { TelemetryQueue } from './telemetry-queue.js';

const client = { cv: '1.4.2', ep: 'cli' };
const servers: Server[] = [];
const queues: TelemetryQueue[] = [];

afterEach(async () => {
  await Promise.all(queues.splice(0).map((q) => q.close()));
  await Promise.all(
    servers.splice(0).map((s) => {
      const closed = new Promise((r) => s.close(r));
      s.closeAllConnections();
      return closed;
    }),
  );
});

/** A real telemetry endpoint on 127.0.0.1 that validates batches with the protocol parser. */
async function endpoint(respond: (req: IncomingMessage, res: ServerResponse, n: number) => boolean | undefined = () => undefined) {
  const batches: TelemetryBatch[] = [];
  let n = 0;
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    n++;
    if (respond(req, res, n)) return;
    const body = Buffer.concat(chunks);
    batches.push(parseTelemetryBatch(JSON.parse(body.toString('utf8')), body.length));
    res.writeHead(202).end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/telemetry`, batches, server };
}

function queue(options: Partial<ConstructorParameters<typeof TelemetryQueue>[0]> & { endpoint: string }): TelemetryQueue {
  const q = new TelemetryQueue({
    client,
    flushIntervalMs: 0,
    initialBackoffMs: 5,
    maxBackoffMs: 20,
    timeoutMs: 1_000,
    flushOnExit: false,
    ...options,
  });
  queues.push(q);
  return q;
}

const event = (i: number) => ({ type: 'gateway_detected', ts: 1_764_000_000 + i, gateways: ['litellm'] });

async function until(check: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('TelemetryQueue', { timeout: 30_000 }, () => {
  it('sends every event in protocol-valid batches of at most batchSize', async () => {
    const ep = await endpoint();
    const q = queue({ endpoint: ep.url, batchSize: 40 });
    for (let i = 0; i < 100; i++) q.push(event(i));
    await q.flush();
    await until(() => q.stats().sent === 100);
    expect(ep.batches.map((b) => b.events.length)).toEqual([40, 40, 20]);
    expect(ep.batches.flatMap((b) => b.events.map((e) => e.ts))).toEqual(Array.from({ length: 100 }, (_, i) => 1_764_000_000 + i));
    expect(ep.batches[0]?.client).toEqual(client);
  });

  it('flushes on its interval', async () => {
    const ep = await endpoint();
    const q = queue({ endpoint: ep.url, flushIntervalMs: 20 });
    q.push(event(1));
    // The endpoint has the batch before the client has read the answer: wait for the client.
    await until(() => q.stats().sent === 1);
    expect(ep.batches).toHaveLength(1);
    expect(q.stats()).toMatchObject({ sent: 1, queued: 0 });
  });

  it('survives a dead endpoint without blocking a request, drops the oldest beyond the bound, and reports the drops later', async () => {
    // A port that refuses connections: start a server, note its port, close it.
    const dead = await endpoint();
    const url = dead.url;
    await new Promise((r) => dead.server.close(r));
    servers.splice(servers.indexOf(dead.server), 1);
    const q = queue({ endpoint: url, maxQueued: 50, batchSize: 10 });

    // The user's request path: a real API server answers while telemetry keeps failing.
    const api = createServer((_req, res) => res.end('{"ok":true}'));
    api.listen(0, '127.0.0.1');
    await once(api, 'listening');
    servers.push(api);
    for (let i = 0; i < 120; i++) q.push(event(i)); // push is synchronous: it returns before any I/O
    const reply = await fetch(`http://127.0.0.1:${(api.address() as AddressInfo).port}/v1/messages`);
    expect(await reply.json()).toEqual({ ok: true });

    await q.flush();
    await until(() => q.stats().failures >= 2);
    const down = q.stats();
    expect(down.queued).toBeLessThanOrEqual(50);
    expect(down.dropped).toBe(70);
    expect(down.lastError).toBeDefined();

    // The endpoint comes back on the same port: the retry delivers, with the drop count.
    const port = Number(new URL(url).port);
    const batches: TelemetryBatch[] = [];
    const revived = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      batches.push(parseTelemetryBatch(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
      res.writeHead(204).end();
    });
    revived.listen(port, '127.0.0.1');
    await once(revived, 'listening');
    servers.push(revived);
    await until(() => q.stats().sent + q.stats().dropped === 120, 20_000);
    const events = batches.flatMap((b) => b.events);
    const delivered = events.filter((e) => e.type === 'gateway_detected').map((e) => e.ts);
    const degraded = events.find((e) => e.type === 'layer_degraded');
    const dropped = Number(/^dropped (\d+) events$/.exec(String(degraded?.reason))?.[1]);
    expect(degraded).toMatchObject({ layer: 'telemetry' });
    // Nothing is lost silently: every event was delivered or counted as dropped, and the
    // ones kept are the newest, in order.
    expect(dropped).toBeGreaterThanOrEqual(70);
    expect(delivered.length + dropped).toBe(120);
    expect(delivered).toEqual(Array.from({ length: 120 - dropped }, (_, i) => 1_764_000_000 + dropped + i));
    expect(q.stats()).toMatchObject({ dropped, sent: delivered.length, queued: 0 });
  });

  it('retries after 503 and 429 with backoff, then delivers', async () => {
    const ep = await endpoint((_req, res, n) => {
      if (n <= 2) {
        res.writeHead(n === 1 ? 503 : 429).end();
        return true;
      }
      return undefined;
    });
    const q = queue({ endpoint: ep.url });
    q.push(event(1));
    await q.flush();
    await until(() => q.stats().sent === 1);
    expect(q.stats()).toMatchObject({ failures: 2, sent: 1, rejected: 0 });
  });

  it('drops a batch the endpoint refuses as malformed instead of retrying it forever', async () => {
    const warnings: string[] = [];
    const ep = await endpoint((_req, res) => {
      res.writeHead(400).end('{"error":"bad batch"}');
      return true;
    });
    const q = queue({ endpoint: ep.url, onWarning: (m) => warnings.push(m) });
    q.push(event(1));
    q.push(event(2));
    await q.flush();
    expect(q.stats()).toMatchObject({ rejected: 2, sent: 0, queued: 0 });
    expect(warnings[0]).toMatch(/HTTP 400/);
  });

  it('times out a hanging endpoint and keeps the events', async () => {
    const ep = await endpoint(() => true); // never answers
    const q = queue({ endpoint: ep.url, timeoutMs: 50 });
    q.push(event(1));
    await q.flush();
    expect(q.stats()).toMatchObject({ failures: 1, queued: 1, lastError: 'timeout' });
  });

  it('splits batches to stay within the protocol byte limit and drops a single oversized event', async () => {
    const ep = await endpoint();
    const q = queue({ endpoint: ep.url });
    const bulky = (i: number) => ({ type: 'layer_degraded', ts: i, layer: 'x', reason: 'r'.repeat(250), pad: 'p'.repeat(900) });
    for (let i = 0; i < 100; i++) q.push(bulky(i));
    q.push({ type: 'huge', ts: 1, blob: 'z'.repeat(70_000) });
    await q.flush();
    await until(() => q.stats().queued === 0);
    expect(ep.batches.length).toBeGreaterThan(1);
    expect(ep.batches.flatMap((b) => b.events)).toHaveLength(100);
    expect(q.stats().rejected).toBe(1);
  });

  it('close() makes a last flush and ignores later pushes', async () => {
    const ep = await endpoint();
    const q = queue({ endpoint: ep.url });
    q.push(event(1));
    await q.close();
    q.push(event(2));
    expect(ep.batches.flatMap((b) => b.events)).toHaveLength(1);
    expect(q.stats().queued).toBe(0);
  });
});
