/**
 * A request whose reused connection closes after its body went out, before any answer (a
 * verifier killed mid-request, a front end that drops the connection): libcurl would send the
 * same bytes again on a new connection — the model run twice, a batch created twice, and a
 * stamp the verifier refuses as `replayed`. The addon refuses the rewind: a POST fails as a
 * network error, as with fetch, and the app's retry policy decides; an idempotent request goes
 * again with a fresh stamp, so no stamp ever reaches the server twice.
 */
import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as netServer, type Socket } from 'node:net';
import { native } from '@moat/native';
import { readDevKey } from '@moat/native/dev-key';
import { receivedRequestComponents } from '@moat/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAttestedFetch, createAttestedRequest } from './client.js';
import { AttestationKeyring, MemoryNonceStore, verifyAttestation } from './server.js';

const dev = readDevKey() as { kid: string; key: string };
const keyring = new AttestationKeyring([{ kid: dev.kid, key: new Uint8Array(Buffer.from(dev.key, 'hex')) }]);
let server: Server;
let base = '';
/** Per body received: its stamp, whether it was answered, and what the verifier's check said. */
const seen: Array<{ stamp: string; answered: boolean; result: string }> = [];
const nonces = new MemoryNonceStore();
/** Requests answered so far per connection. */
const served = new WeakMap<Socket, number>();

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const stamp = /"moat_att":"([^"]+)"/.exec(raw.toString('utf8'))?.[1] ?? '';
    const request = [receivedRequestComponents({ method: req.method ?? '', target: req.url ?? '', headers: req.headers })];
    const result = await verifyAttestation(raw, { keyring, nonceStore: nonces, request });
    const n = served.get(req.socket) ?? 0;
    served.set(req.socket, n + 1);
    // `x-drop: reused`: dropped when it came on a connection used before; `all`: always.
    const drop = req.headers['x-drop'];
    const answered = !(drop === 'all' || (drop === 'reused' && n > 0));
    seen.push({ stamp, answered, result: result.signal });
    // The body was read (its nonce spent), then the connection goes, with no answer.
    if (!answered) return void req.socket.destroy();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, attestation: result.signal }));
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const body = (i: number) =>
  JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: `resend ${i} ${'x'.repeat(i * 4000)}` }] });

describe.skipIf(native === null)('a reused connection that closes after the stamped body went out', () => {
  for (const [name, make] of [
    ['createAttestedFetch', () => createAttestedFetch()],
    [
      'createAttestedRequest',
      () => {
        const request = createAttestedRequest();
        return (async (url: string, init: RequestInit) => {
          const r = await request(url, init as Parameters<typeof request>[1]);
          return new Response(await r.body.text(), { status: r.statusCode });
        }) as typeof fetch;
      },
    ],
  ] as const)
    it(`${name}: a POST is not sent again: the app gets a network error and the server saw one copy (small and large, stamped or not)`, async () => {
      const send = make();
      // Sizes: one that is stamped before it goes out, and one stamped as it is sent; a path
      // the addon does not stamp is not sent again either.
      for (const [path, size] of [
        ['/v1/messages', 0],
        ['/v1/messages', 64],
        ['/v1/other', 0],
      ] as const) {
        seen.length = 0;
        const first = await send(`${base}${path}`, { method: 'POST', headers: { 'x-api-key': 'k' }, body: body(size) });
        expect(first.status).toBe(200);
        await first.text();
        // The second request reuses the connection, which drops it after reading its body.
        await expect(
          send(`${base}${path}`, { method: 'POST', headers: { 'x-api-key': 'k', 'x-drop': 'reused' }, body: body(size + 1) }),
        ).rejects.toThrow(/fetch failed: the connection closed after the request went out, before any answer; a POST is not sent again/);
        expect(
          seen.map((s) => s.answered),
          `${path} ${size}`,
        ).toEqual([true, false]);
      }
    });

  it('an idempotent request (PUT) goes again once, freshly stamped, and the app gets its answer', async () => {
    const send = createAttestedFetch();
    for (const size of [0, 64]) {
      seen.length = 0;
      expect((await send(`${base}/v1/messages`, { method: 'PUT', headers: { 'x-api-key': 'k' }, body: body(size) })).status).toBe(200);
      const second = await send(`${base}/v1/messages`, {
        method: 'PUT',
        headers: { 'x-api-key': 'k', 'x-drop': 'reused' },
        body: body(size + 1),
      });
      expect(second.status).toBe(200);
      expect(seen.map((s) => s.answered)).toEqual([true, false, true]);
      // No stamp reached the server twice.
      expect(new Set(seen.map((s) => s.stamp)).size).toBe(3);
    }
  });

  it('an idempotent request whose every connection drops after the body fails as a network error, sent twice at most', async () => {
    const send = createAttestedFetch();
    seen.length = 0;
    expect((await send(`${base}/v1/messages`, { method: 'PUT', headers: { 'x-api-key': 'k' }, body: body(1) })).status).toBe(200);
    await expect(
      send(`${base}/v1/messages`, { method: 'PUT', headers: { 'x-api-key': 'k', 'x-drop': 'all' }, body: body(2) }),
    ).rejects.toThrow(/fetch failed/);
    expect(seen.length).toBeLessThanOrEqual(3);
    expect(new Set(seen.map((s) => s.stamp)).size).toBe(seen.length);
  });
});

describe.skipIf(native === null)('an answer cut off inside its header section', () => {
  it('is a network error, as with fetch, never an empty 200 (status line alone, or some headers)', async () => {
    for (const answer of [
      'HTTP/1.1 200 OK\r\n',
      'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n',
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n',
    ]) {
      const cut = netServer((socket) => {
        let head = '';
        socket.on('data', (d: Buffer) => {
          head += d.toString('latin1');
          const end = head.indexOf('\r\n\r\n');
          const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
          if (end >= 0 && head.length - end - 4 >= length) socket.end(answer, () => socket.destroy());
        });
        socket.on('error', () => {});
      });
      await new Promise<void>((r) => cut.listen(0, '127.0.0.1', () => r()));
      const url = `http://127.0.0.1:${(cut.address() as AddressInfo).port}/v1/messages`;
      try {
        const init = { method: 'POST', headers: { 'x-api-key': 'k' }, body: body(0) };
        await expect(createAttestedFetch()(url, init), JSON.stringify(answer)).rejects.toThrow(/header section ended/);
        await expect(createAttestedRequest()(url, init), JSON.stringify(answer)).rejects.toThrow(/header section ended/);
      } finally {
        await new Promise<void>((r) => cut.close(() => r()));
      }
    }
  });
});

describe.skipIf(native === null)('connections under concurrent requests', () => {
  it('are kept and reused: 10 in flight at a time open about 10 connections, not one per request', async () => {
    let connections = 0;
    const counting = createServer(async (req, res) => {
      for await (const _ of req);
      res.end('{"ok":true}');
    });
    counting.on('connection', () => connections++);
    counting.keepAliveTimeout = 30_000;
    await new Promise<void>((r) => counting.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(counting.address() as AddressInfo).port}/v1/messages`;
    try {
      const send = createAttestedFetch();
      let sent = 0;
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          while (sent++ < 300) await (await send(url, { method: 'POST', headers: { 'x-api-key': 'k' }, body: body(0) })).text();
        }),
      );
      expect(connections).toBeGreaterThan(0);
      expect(connections).toBeLessThanOrEqual(20);
    } finally {
      counting.closeAllConnections();
      await new Promise<void>((r) => counting.close(() => r()));
    }
  });
});
