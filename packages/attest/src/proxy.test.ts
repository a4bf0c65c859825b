/**
 * The app's proxy: attested requests go through the proxy named by `proxy` (the addon sends
 * them, so an undici dispatcher cannot carry them), and a request that brings its own
 * dispatcher goes through it, unattested, never around it.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { native } from '@moat/native';
import { readDevKey } from '@moat/native/dev-key';
import { receivedRequestComponents } from '@moat/protocol';
import { ProxyAgent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAttestedFetch } from './client.js';
import { AttestationKeyring, MemoryNonceStore, verifyAttestation } from './server.js';

const dev = readDevKey() as { kid: string; key: string };
const keyring = new AttestationKeyring([{ kid: dev.kid, key: new Uint8Array(Buffer.from(dev.key, 'hex')) }]);
const nonces = new MemoryNonceStore();
let server: Server;
let proxy: Server;
let base = '';
let proxyUrl = '';
/** What the server checked per request, and the targets the proxy forwarded. */
const checked: Array<{ attestation: string; unattested: string | undefined }> = [];
const proxied: string[] = [];

const read = async (req: IncomingMessage) => {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
};

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const raw = await read(req);
    const request = [receivedRequestComponents({ method: req.method ?? '', target: req.url ?? '', headers: req.headers })];
    const result = await verifyAttestation(raw, { keyring, nonceStore: nonces, request });
    checked.push({ attestation: result.signal, unattested: req.headers['moat-attestation'] as string | undefined });
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  // A forward proxy: requests in absolute form, sent on as they came.
  proxy = createServer(async (req, res) => {
    proxied.push(req.url ?? '');
    const target = new URL(req.url ?? '');
    const body = await read(req);
    const out = httpRequest(target, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.end(body);
  });
  // And tunnels (CONNECT), as undici's ProxyAgent asks for.
  proxy.on('connect', (req: IncomingMessage, socket: import('node:stream').Duplex, head: Buffer) => {
    proxied.push(`CONNECT ${req.url}`);
    const [host, port] = (req.url ?? '').split(':');
    const upstream = connect(Number(port), host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  for (const s of [server, proxy]) await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const s of [server, proxy]) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
});

const body = JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'through the proxy' }] });

describe.skipIf(native === null)("the app's proxy", () => {
  it('`proxy`: attested requests go through it, stamped and valid', async () => {
    checked.length = 0;
    proxied.length = 0;
    const send = createAttestedFetch({ proxy: proxyUrl });
    for (let i = 0; i < 2; i++) {
      const res = await send(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': 'k' }, body });
      expect(res.status).toBe(200);
      await res.text();
    }
    expect(proxied).toEqual([`${base}/v1/messages`, `${base}/v1/messages`]);
    expect(checked.map((c) => c.attestation)).toEqual(['valid', 'valid']);
  });

  it('a request with its own dispatcher goes through it, unattested and said so, never around it', async () => {
    checked.length = 0;
    proxied.length = 0;
    const warnings: string[] = [];
    const reasons: string[] = [];
    const send = createAttestedFetch({ onWarning: (w) => warnings.push(w), onUnattested: (reason) => reasons.push(reason) });
    const dispatcher = new ProxyAgent(proxyUrl);
    try {
      for (let i = 0; i < 2; i++) {
        const init = { method: 'POST', headers: { 'x-api-key': 'k' }, body, dispatcher } as unknown as RequestInit;
        const res = await send(`${base}/v1/messages`, init);
        expect(res.status).toBe(200);
        await res.text();
      }
    } finally {
      await dispatcher.close();
    }
    expect(proxied.length).toBeGreaterThan(0);
    expect(new Set(proxied)).toEqual(new Set([`CONNECT ${new URL(base).host}`]));
    expect(checked).toEqual([
      { attestation: 'missing', unattested: 'unavailable; reason=app_dispatcher' },
      { attestation: 'missing', unattested: 'unavailable; reason=app_dispatcher' },
    ]);
    expect(reasons).toEqual(['app_dispatcher', 'app_dispatcher']);
    expect(warnings.filter((w) => w.includes('own dispatcher'))).toHaveLength(1);
  });
});
