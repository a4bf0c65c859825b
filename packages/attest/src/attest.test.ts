import { once } from 'node:events';
import http, { createServer, type IncomingMessage, type Server } from 'node:http';
import https from 'node:https';
import { type AddressInfo, connect, createServer as createTcpServer } from 'node:net';
import { native } from '@moat/native';
import { readDevKey } from '@moat/native/dev-key';
import { locateEnvelope, type RequestComponents, receivedRequestComponents, utf8 } from '@moat/protocol';
import fc from 'fast-check';
import { Agent, getGlobalDispatcher, setGlobalDispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAttestedFetch, createAttestedRequest, UNATTESTED_HEADER } from './client.js';
import { AttestationKeyring, MemoryNonceStore, type VerifyAttestationOptions, verifyAttestation } from './server.js';

/** The development key the addon was built with (written by native/scripts/gen-key.mjs). */
const dev = readDevKey() as {
  kid: string;
  key: string;
};
const key = new Uint8Array(Buffer.from(dev.key, 'hex'));
const keyring = () => new AttestationKeyring([{ kid: dev.kid, key }]);

interface Received {
  raw: Buffer;
  headers: IncomingMessage['headers'];
  /** Method, Host, path and credential as this server received them (what an r1 stamp covers). */
  request: RequestComponents;
}

/** Verifies bytes as received with the request they came in (or `request`, to try another sender). */
const verifyReceived = (r: Received, options: Partial<VerifyAttestationOptions> = {}, raw: Buffer = r.raw) =>
  verifyAttestation(raw, { keyring: keyring(), request: r.request, ...options });
let server: Server;
let base = '';
const received: Received[] = [];

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    try {
      for await (const c of req) chunks.push(c as Buffer);
    } catch {
      // A client that aborts while its body is still arriving (the abort tests, on a slow machine): nothing to answer.
      return;
    }
    received.push({
      raw: Buffer.concat(chunks),
      headers: req.headers,
      request: receivedRequestComponents({ method: req.method ?? '', target: req.url ?? '', headers: req.headers }),
    });
    if (req.url === '/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let i = 0; i < 3; i++) {
        res.write(`event: ping\ndata: {"n":${i}}\n\n`);
        await new Promise((r) => setTimeout(r, 30));
      }
      res.end();
      return;
    }
    if (req.url === '/slow') {
      await new Promise((r) => setTimeout(r, 2_000));
    }
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'yes' });
    res.end(JSON.stringify({ ok: true, bytes: Buffer.concat(chunks).length }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.closeAllConnections();
  return new Promise<void>((r) => server.close(() => r()));
});

const body = (text = 'Summarize the design document, please.') =>
  JSON.stringify({
    model: 'claude-test',
    max_tokens: 64,
    system: [{ type: 'text', text: 'x-moat: v=1; cv=1.4.2; ep=cli;' }],
    messages: [{ role: 'user', content: text }],
  });

describe('attested fetch over the native addon', () => {
  it('sends on the transport this process asked for: libcurl on the event loop, or a thread per request', () => {
    expect(native?.transportMode()).toBe(process.env.MOAT_NATIVE_TRANSPORT === 'thread' ? 'thread' : 'loop');
  });

  it('stamps below JavaScript: interceptors on fetch, http, https and undici see nothing; the stamp verifies', async () => {
    const seen: string[] = [];
    const originalFetch = globalThis.fetch;
    const originalHttp = http.request;
    const originalHttps = https.request;
    const originalDispatcher = getGlobalDispatcher();
    globalThis.fetch = ((...args: Parameters<typeof fetch>) => {
      seen.push('fetch');
      return originalFetch(...args);
    }) as typeof fetch;
    (http as { request: unknown }).request = (...args: unknown[]) => {
      seen.push('http.request');
      return (originalHttp as (...a: unknown[]) => unknown)(...args);
    };
    (https as { request: unknown }).request = (...args: unknown[]) => {
      seen.push('https.request');
      return (originalHttps as (...a: unknown[]) => unknown)(...args);
    };
    setGlobalDispatcher(
      new Agent().compose((dispatch) => (opts, handler) => {
        seen.push(`undici:${String(opts.body ?? '').slice(0, 20)}`);
        return dispatch(opts, handler);
      }),
    );
    try {
      const attestedFetch = createAttestedFetch();
      const res = await attestedFetch(`${base}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body(),
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-upstream')).toBe('yes');
      expect(await res.json()).toMatchObject({ ok: true });
      expect(seen).toEqual([]);
      const last = received.at(-1) as Received;
      expect((await verifyReceived(last, { nonceStore: new MemoryNonceStore() })).signal).toBe('valid');
      // Control: the interceptors do see an ordinary fetch.
      await originalFetch(`${base}/control`).then((r) => r.arrayBuffer());
      await globalThis.fetch(`${base}/control`).then((r) => r.arrayBuffer());
      expect(seen.some((s) => s === 'fetch')).toBe(true);
      expect(seen.some((s) => s.startsWith('undici'))).toBe(true);
    } finally {
      globalThis.fetch = originalFetch;
      (http as { request: unknown }).request = originalHttp;
      (https as { request: unknown }).request = originalHttps;
      setGlobalDispatcher(originalDispatcher);
    }
  });

  it('decides valid, invalid, replayed, stale, unknown_key and missing on the real bytes', async () => {
    const attestedFetch = createAttestedFetch();
    await (await attestedFetch(`${base}/v1/messages`, { method: 'POST', body: body() })).arrayBuffer();
    const first = received.at(-1) as Received;
    const genuine = first.raw;
    const store = new MemoryNonceStore();
    const valid = await verifyReceived(first, { nonceStore: store });
    expect(valid).toMatchObject({ signal: 'valid', binding: 'request' });
    // The same bytes again: replayed.
    expect((await verifyReceived(first, { nonceStore: store })).signal).toBe('replayed');
    // Any byte changed after stamping: invalid.
    for (const at of [0, 10, genuine.indexOf('Summarize'), genuine.length - 40]) {
      const tampered = Buffer.from(genuine);
      tampered[at] = (tampered[at] as number) ^ 0x01;
      expect((await verifyReceived(first, {}, tampered)).signal).toBe('invalid');
    }
    // An old timestamp: stale.
    const oldFetch = createAttestedFetch({ now: () => Date.now() - 3_600_000 });
    await (await oldFetch(`${base}/v1/messages`, { method: 'POST', body: body() })).arrayBuffer();
    expect((await verifyReceived(received.at(-1) as Received)).signal).toBe('stale');
    // A revoked key id: revoked, even if the key is added again by mistake.
    const revoked = keyring();
    revoked.revoke(dev.kid);
    expect((await verifyReceived(first, { keyring: revoked })).signal).toBe('revoked');
    revoked.add({ kid: dev.kid, key });
    expect((await verifyReceived(first, { keyring: revoked })).signal).toBe('revoked');
    expect(revoked.revokedKids()).toEqual([dev.kid]);
    // Plain fetch: missing.
    await (await fetch(`${base}/v1/messages`, { method: 'POST', body: body() })).arrayBuffer();
    expect((await verifyReceived(received.at(-1) as Received)).signal).toBe('missing');
  });

  it('binds the stamp to the request the addon sends: the same bytes under another key, path, host or method do not verify', async () => {
    const attestedFetch = createAttestedFetch();
    // JavaScript asks for another Host: the addon sends (and stamps) the URL's own authority.
    const res = await attestedFetch(`${base}/v1/messages?beta=true`, {
      method: 'POST',
      headers: { 'x-api-key': 'sk-ant-user-0001', host: 'spoofed.example' },
      body: body(),
    });
    await res.arrayBuffer();
    const last = received.at(-1) as Received;
    expect(last.headers.host).toBe(new URL(base).host);
    expect(last.request).toEqual({ method: 'POST', authority: new URL(base).host, path: '/v1/messages', credential: 'sk-ant-user-0001' });
    expect(await verifyReceived(last)).toMatchObject({ signal: 'valid', binding: 'request' });
    const relayed: Array<[string, Partial<RequestComponents>]> = [
      ['another API key (a relay re-sending under its own key)', { credential: 'sk-ant-relay-0002' }],
      ['no API key', { credential: '' }],
      ['another path', { path: '/v1/messages/count_tokens' }],
      ['another host', { authority: 'partner.example.net' }],
      ['another port', { authority: '127.0.0.1:1' }],
      ['another method', { method: 'PUT' }],
    ];
    for (const [what, change] of relayed) {
      const r = await verifyReceived(last, { request: { ...last.request, ...change } });
      expect(r.signal, what).toBe('invalid');
    }
    // A bearer token is the credential when there is no x-api-key.
    await (
      await attestedFetch(`${base}/v1/messages`, { method: 'POST', headers: { authorization: 'Bearer tok-0003' }, body: body() })
    ).arrayBuffer();
    const bearer = received.at(-1) as Received;
    expect(bearer.request.credential).toBe('tok-0003');
    expect((await verifyReceived(bearer)).signal).toBe('valid');
  });

  it('stamps the body only (v1) for an endpoint that does not bind requests', async () => {
    const attestedFetch = createAttestedFetch({ bindRequestFor: () => false });
    await (await attestedFetch(`${base}/v1/messages`, { method: 'POST', body: body() })).arrayBuffer();
    const last = received.at(-1) as Received;
    expect(last.raw.toString('utf8')).toContain('"moat_att":"v1.');
    expect(await verifyReceived(last, { request: { ...last.request, credential: 'anyone' } })).toMatchObject({
      signal: 'valid',
      binding: 'body',
    });
  });

  it('stamps only the anchored envelope: the same text in a user message arrives unchanged and verifies', async () => {
    const pasted = `Why does my request end with ,"moat_att":"v1.${dev.kid}.1764000000.0011223344556677.${'0'.repeat(32)}"} ?`;
    const attestedFetch = createAttestedFetch();
    await (await attestedFetch(`${base}/v1/messages`, { method: 'POST', body: body(pasted) })).arrayBuffer();
    const last = received.at(-1) as Received;
    expect(JSON.parse(last.raw.toString('utf8')).messages[0].content).toBe(pasted);
    expect((await verifyReceived(last)).signal).toBe('valid');
  });

  it('keeps the cacheable prefix byte-identical across turns; only the envelope differs', async () => {
    const attestedFetch = createAttestedFetch();
    const raws: Buffer[] = [];
    for (let i = 0; i < 2; i++) {
      await (await attestedFetch(`${base}/v1/messages`, { method: 'POST', body: body() })).arrayBuffer();
      raws.push((received.at(-1) as Received).raw);
    }
    const [a, b] = raws as [Buffer, Buffer];
    const la = locateEnvelope(utf8(a.toString('latin1')));
    const lb = locateEnvelope(new Uint8Array(b));
    if (la.status !== 'found' || lb.status !== 'found') throw new Error('no envelope');
    expect(a.subarray(0, la.memberStart).equals(b.subarray(0, lb.memberStart))).toBe(true);
    expect(a.equals(b)).toBe(false);
  });

  it('a tampering proxy that rewrites the user message makes the stamp invalid', async () => {
    // A real TCP proxy in between that rewrites one word of the body (same length).
    const proxy = createTcpServer((client) => {
      const upstream = connect(Number(new URL(base).port), '127.0.0.1');
      client.on('data', (chunk) => upstream.write(Buffer.from(chunk.toString('latin1').replace('Summarize', 'Summarise'), 'latin1')));
      upstream.on('data', (chunk) => client.write(chunk));
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    try {
      const attestedFetch = createAttestedFetch();
      await (
        await attestedFetch(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}/v1/messages`, { method: 'POST', body: body() })
      ).arrayBuffer();
      const last = received.at(-1) as Received;
      expect(last.raw.toString('utf8')).toContain('Summarise');
      expect((await verifyReceived(last)).signal).toBe('invalid');
    } finally {
      proxy.close();
    }
  });

  it('streams SSE as it arrives, and aborts', async () => {
    const attestedFetch = createAttestedFetch();
    const res = await attestedFetch(`${base}/sse`, { method: 'POST', body: body() });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain('"n":0');
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += new TextDecoder().decode(r.value);
    expect(rest).toContain('"n":2');

    const controller = new AbortController();
    const pending = attestedFetch(`${base}/slow`, { method: 'POST', body: body(), signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    const timed = createAttestedFetch({ timeoutMs: 200 });
    await expect(timed(`${base}/slow`, { method: 'POST', body: body() })).rejects.toThrow(/fetch failed: timeout/);
  });

  it('stamps large bodies too (off the event loop in the loop transport), and aborts them', async () => {
    const attestedFetch = createAttestedFetch();
    const big = body('y'.repeat(200_000));
    const results = await Promise.all(
      [0, 1, 2].map(async () => (await attestedFetch(`${base}/v1/messages`, { method: 'POST', body: big })).json()),
    );
    expect(results.map((r) => (r as { bytes: number }).bytes)).toEqual(Array(3).fill(received.at(-1)?.raw.length));
    const nonces = new MemoryNonceStore();
    for (const r of received.slice(-3))
      expect(await verifyReceived(r, { nonceStore: nonces })).toMatchObject({ signal: 'valid', binding: 'request' });
    const controller = new AbortController();
    const pending = attestedFetch(`${base}/slow`, { method: 'POST', body: big, signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('createAttestedRequest: the same stamp in an undici.request shape; chunks as they arrive; abort; fail-open', async () => {
    const request = createAttestedRequest();
    const res = await request(`${base}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body() });
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-upstream']).toBe('yes');
    expect(await res.body.json()).toMatchObject({ ok: true });
    await expect(res.body.text()).rejects.toThrow(/already read/);
    const last = received.at(-1) as Received;
    expect(await verifyReceived(last, { nonceStore: new MemoryNonceStore() })).toMatchObject({ signal: 'valid', binding: 'request' });

    const sse = await request(`${base}/sse`, { method: 'POST', body: utf8(body()) });
    const chunks: string[] = [];
    for await (const chunk of sse.body) chunks.push(new TextDecoder().decode(chunk));
    expect(chunks.join('')).toContain('"n":2');
    expect(chunks.length).toBeGreaterThan(1);

    const controller = new AbortController();
    const pending = request(`${base}/slow`, { method: 'POST', body: body(), signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });

    const unattested: string[] = [];
    const fallback = createAttestedRequest({ native: null, onWarning: () => {}, onUnattested: (r) => unattested.push(r) });
    const plain = await fallback(`${base}/v1/messages`, { method: 'POST', body: body() });
    expect(plain.statusCode).toBe(200);
    expect(await plain.body.json()).toMatchObject({ ok: true });
    expect((received.at(-1) as Received).headers[UNATTESTED_HEADER]).toBe('unavailable; reason=addon_missing');
    expect(unattested).toEqual(['addon_missing']);
  });

  it('reuses a parsed URL only for the same text and only where no callback is handed it; every nonce is new', async () => {
    const request = createAttestedRequest();
    const before = received.length;
    const paths: string[] = [];
    // 600 requests: more than two batches of 256 nonces.
    for (let i = 0; i < 600; i++) {
      const path = i % 3 === 0 ? '/v1/messages' : i % 3 === 1 ? '/v1/messages/count_tokens' : '/v1/complete';
      paths.push(path);
      const res = await request(`${base}${path}`, { method: 'POST', body: body(`turn ${i}`) });
      await res.body.arrayBuffer();
    }
    const sent = received.slice(before);
    expect(sent.map((r) => r.request.path)).toEqual(paths);
    const nonces = sent.map((r) => {
      const where = locateEnvelope(new Uint8Array(r.raw));
      return where.status === 'found' ? where.envelope.nonce : '';
    });
    expect(nonces.filter((n) => /^[0-9a-f]{16}$/.test(n))).toHaveLength(600);
    expect(new Set(nonces).size).toBe(600);

    // A callback that changes the URL it is handed changes that request only.
    let first = true;
    const redirecting = createAttestedRequest({
      envelopeFor: (url) => {
        if (first) url.pathname = '/changed';
        first = false;
        return true;
      },
    });
    for (let i = 0; i < 2; i++) await (await redirecting(`${base}/v1/messages`, { method: 'POST', body: body() })).body.arrayBuffer();
    expect(received.slice(-2).map((r) => r.request.path)).toEqual(['/changed', '/v1/messages']);
  });

  it('sends the headers it is given, plain object or Headers, and refuses the ones fetch refuses', async () => {
    const request = createAttestedRequest();
    const attestedFetch = createAttestedFetch();
    const given = { 'X-Trace': ' a ', 'x-trace': 'b', 'Accept-Encoding': 'gzip', 'x-api-key': 'sk-ant-user-0004', 'x-empty': '' };
    for (const send of [
      () => request(`${base}/v1/messages`, { method: 'POST', headers: given, body: body() }).then((r) => r.body.arrayBuffer()),
      () =>
        attestedFetch(`${base}/v1/messages`, { method: 'POST', headers: new Headers(given), body: body() }).then((r) => r.arrayBuffer()),
      () =>
        attestedFetch(`${base}/v1/messages`, { method: 'POST', headers: Object.entries(given), body: body() }).then((r) => r.arrayBuffer()),
    ]) {
      await send();
      const last = received.at(-1) as Received;
      expect(last.headers['x-trace']).toBe('a, b');
      expect(last.headers['accept-encoding']).toBe('identity');
      expect(last.headers['x-empty']).toBe('');
      expect(last.request.credential).toBe('sk-ant-user-0004');
      expect(await verifyReceived(last)).toMatchObject({ signal: 'valid', binding: 'request' });
    }
    const before = received.length;
    for (const headers of [{ 'bad name': 'x' }, { 'x-ok': 'line\r\nx-smuggled: 1' }, { 'x-nul': 'a\0b' }, { 'x-wide': 'price €5' }]) {
      const refusal = (() => {
        try {
          new Headers(headers);
          return undefined;
        } catch (e) {
          return (e as Error).message;
        }
      })();
      expect(refusal, JSON.stringify(headers)).toBeDefined();
      await expect(request(`${base}/v1/messages`, { method: 'POST', headers, body: body() })).rejects.toThrow(refusal as string);
      await expect(attestedFetch(`${base}/v1/messages`, { method: 'POST', headers, body: body() })).rejects.toThrow(refusal as string);
    }
    expect(received.length).toBe(before);
  });

  it('a header value from a plain object arrives as the Headers class normalizes it, or is refused as it refuses it (fast-check)', async () => {
    const request = createAttestedRequest();
    let sentCount = 0;
    let refusedCount = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ unit: fc.constantFrom(' ', '\t', 'a', 'b', '-'), maxLength: 8 }),
          fc.string({ unit: fc.constantFrom(' ', '\t', '\r', '\n', 'a', 'b', '-'), maxLength: 8 }),
          // A line break inside the value: always refused.
          fc
            .tuple(fc.constantFrom('a', 'ab', 'x-1'), fc.constantFrom('\r', '\n', '\r\n'), fc.constantFrom('b', 'x: 1'))
            .map(([before, brk, after]) => before + brk + after),
        ),
        async (value) => {
          let expected: string | undefined;
          try {
            expected = new Headers({ 'x-probe': value }).get('x-probe') ?? undefined;
          } catch {
            expected = undefined;
          }
          const outcome = await request(`${base}/v1/messages`, { method: 'POST', headers: { 'x-probe': value }, body: body() }).then(
            async (r) => {
              await r.body.arrayBuffer();
              return (received.at(-1) as Received).headers['x-probe'];
            },
            () => undefined,
          );
          if (expected === undefined) refusedCount++;
          else sentCount++;
          expect(outcome).toBe(expected);
        },
      ),
      { numRuns: 150 },
    );
    expect(sentCount).toBeGreaterThan(40);
    expect(refusedCount).toBeGreaterThan(20);
  });

  it('leaves framing to the transport: its own Content-Length goes out; a header it refuses sends the request unattested', async () => {
    const warnings: string[] = [];
    const unattested: string[] = [];
    const attestedFetch = createAttestedFetch({ onWarning: (m) => warnings.push(m), onUnattested: (r) => unattested.push(r) });
    const dropped = await attestedFetch(`${base}/v1/messages`, { method: 'POST', headers: { 'content-length': '1' }, body: body() });
    expect(dropped.status).toBe(200);
    const last = received.at(-1) as Received;
    expect(last.headers['content-length']).toBe(String(last.raw.length));
    expect(await verifyReceived(last)).toMatchObject({ signal: 'valid' });
    const refused = await attestedFetch(`${base}/v1/messages`, { method: 'POST', headers: { trailer: 'x-late' }, body: body() });
    expect(refused.status).toBe(200);
    expect((received.at(-1) as Received).headers[UNATTESTED_HEADER]).toBe('unavailable; reason=addon_failed');
    expect(unattested).toEqual(['addon_failed']);
    expect(warnings.join('\n')).toMatch(/native transport failed \(expected options.headers\[\d+\] as a header the transport sets itself/);
  });

  it('fails open without the addon: plain fetch, placeholder left, tagged, one warning', async () => {
    const warnings: string[] = [];
    const unattested: string[] = [];
    const attestedFetch = createAttestedFetch({
      native: null,
      onWarning: (m) => warnings.push(m),
      onUnattested: (r) => unattested.push(r),
    });
    for (let i = 0; i < 2; i++) expect((await attestedFetch(`${base}/v1/messages`, { method: 'POST', body: body() })).status).toBe(200);
    const last = received.at(-1) as Received;
    expect(last.headers[UNATTESTED_HEADER]).toBe('unavailable; reason=addon_missing');
    expect(warnings).toHaveLength(1);
    expect(unattested).toEqual(['addon_missing', 'addon_missing']);
    const r = await verifyReceived(last, { clientUnavailable: true });
    expect(r.signal).toBe('unavailable');
    expect((await verifyReceived(last)).signal).toBe('invalid');
  });

  it("without the addon, sends through the app's own fetch when it gave one", async () => {
    const seen: string[] = [];
    const attestedFetch = createAttestedFetch({
      native: null,
      onWarning: () => {},
      fetch: (input, init) => {
        seen.push(String(input));
        return fetch(input, init);
      },
    });
    expect((await attestedFetch(`${base}/v1/messages`, { method: 'POST', body: body() })).status).toBe(200);
    expect(seen).toEqual([`${base}/v1/messages`]);
    expect((received.at(-1) as Received).headers[UNATTESTED_HEADER]).toBe('unavailable; reason=addon_missing');
  });

  it('the addon appends the envelope as it copies the body; what it leaves to JavaScript gets what appendEnvelope gives', async () => {
    const calls: Array<{ body: unknown; envelope: string | undefined }> = [];
    const addon = native as NonNullable<typeof native>;
    const recording = (appendsEnvelope: boolean) => ({
      keyId: () => addon.keyId(),
      ...(appendsEnvelope ? { appendsEnvelope } : {}),
      request: (options: Parameters<typeof addon.request>[0], onEvent: Parameters<typeof addon.request>[1]) => {
        calls.push({ body: options.body, envelope: options.envelope });
        return addon.request(options, onEvent);
      },
    });
    const warnings: string[] = [];
    const send = async (given: string | Uint8Array, appendsEnvelope = true) => {
      calls.length = 0;
      const request = createAttestedRequest({ native: recording(appendsEnvelope), onWarning: (m) => warnings.push(m) });
      await (await request(`${base}/v1/messages`, { method: 'POST', body: given })).body.arrayBuffer();
      return { raw: (received.at(-1) as Received).raw, calls: [...calls], verdict: await verifyReceived(received.at(-1) as Received) };
    };

    // A JSON object body: the string itself goes to the addon, which appends the envelope.
    const plain = await send(body());
    expect(plain.calls).toEqual([{ body: body(), envelope: expect.stringMatching(/^r1\./) }]);
    expect(plain.verdict).toMatchObject({ signal: 'valid', binding: 'request' });
    // An addon from before: JavaScript appends, the addon stamps.
    const older = await send(body(), false);
    expect(older.calls).toEqual([{ body: expect.any(Buffer), envelope: undefined }]);
    expect(older.verdict).toMatchObject({ signal: 'valid' });

    // A byte-order mark, and bytes that are not UTF-8: the addon refuses, JavaScript decodes
    // (dropping the mark, replacing the bytes) and appends; the stamp covers what is sent.
    const bom = await send(new Uint8Array([0xef, 0xbb, 0xbf, ...Buffer.from(body())]));
    expect(bom.calls.map((c) => c.envelope === undefined)).toEqual([false, true]);
    expect(bom.raw[0]).toBe(0x7b);
    expect(bom.verdict).toMatchObject({ signal: 'valid' });
    const latin1 = await send(Buffer.concat([Buffer.from('{"text":"'), Buffer.from([0xe9]), Buffer.from('"}')]));
    expect(latin1.raw.subarray(0, 13).toString()).toBe('{"text":"\ufffd"');
    expect(latin1.verdict).toMatchObject({ signal: 'valid' });

    // A body that already names the member: sent as it is, with a warning; not an object: as it is, silently.
    const before = warnings.length;
    const taken = await send('{"moat_att":"mine"}');
    expect(taken.raw.toString()).toBe('{"moat_att":"mine"}');
    expect(warnings.slice(before)).toEqual([expect.stringMatching(/no envelope added \(ERR_BODY_HAS_ENVELOPE/)]);
    const list = await send('[1,2]');
    expect(list.raw.toString()).toBe('[1,2]');
    expect(list.calls).toEqual([{ body: '[1,2]', envelope: undefined }]);
    expect(warnings.length).toBe(before + 1);
  });

  it('a request that cannot start rejects, before and after the addon has loaded; it never throws', async () => {
    const request = createAttestedRequest();
    for (let i = 0; i < 2; i++) {
      let pending: Promise<unknown> | undefined;
      expect(() => {
        pending = request('not a url', { method: 'POST', body: body() });
      }).not.toThrow();
      await expect(pending).rejects.toThrow(TypeError);
      await (await request(`${base}/v1/messages`, { method: 'POST', body: body() })).body.arrayBuffer();
    }
    const aborted = AbortSignal.abort();
    await expect(request(`${base}/v1/messages`, { method: 'POST', body: body(), signal: aborted })).rejects.toMatchObject({
      name: 'AbortError',
    });
  });

  it('connection errors reject like fetch does', async () => {
    const attestedFetch = createAttestedFetch({ connectTimeoutMs: 1_000 });
    await expect(attestedFetch('http://127.0.0.1:9/v1/messages', { method: 'POST', body: body() })).rejects.toThrow(
      /fetch failed: connect/,
    );
  });
});

describe('verifyAttestation never throws', () => {
  it('gives a status for any bytes (fast-check)', async () => {
    const kr = keyring();
    const stamped = `{"a":1,"moat_att":"v1.${dev.kid}.1764000000.0011223344556677.`;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 400 }),
          fc.string().map((s) => utf8(`${stamped}${s}"}`)),
          fc.jsonValue().map((v) => utf8(JSON.stringify(v))),
          fc
            .tuple(fc.jsonValue(), fc.stringMatching(/^[0-9a-f]{30,70}$/))
            .map(([v, h]) => utf8(`{"x":${JSON.stringify(v)},"moat_att":"v1.${dev.kid}.1764000000.0011223344556677.${h}"}`)),
        ),
        async (bytes) => {
          const r = await verifyAttestation(bytes, { keyring: kr, nonceStore: new MemoryNonceStore() });
          expect(['valid', 'invalid', 'missing', 'replayed', 'stale', 'unknown_key', 'unavailable', 'revoked']).toContain(r.signal);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('keyring and nonce store guard their inputs', () => {
    expect(() => new AttestationKeyring([{ kid: 'k', key: new Uint8Array(16) }])).toThrow(/at least 32 bytes/);
    const store = new MemoryNonceStore({ maxEntries: 2 });
    expect(store.add('k', 'a', 100, undefined, 50)).toBe(true);
    expect(store.add('k', 'a', 100, undefined, 60)).toBe(false);
    expect(store.add('k', 'b', 100, undefined, 60)).toBe(true);
    expect(store.add('k', 'c', 100, undefined, 60)).toBe(false); // full of live nonces: refuse rather than forget
    expect(store.add('k', 'c', 300, undefined, 200)).toBe(true); // the others expired and were swept
  });
});
