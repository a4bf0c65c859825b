import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readBody } from './http.js';
import { runForWeb } from './web-adapter.js';

describe('runForWeb', () => {
  it('gives the handler the method, target, headers (host from the URL when absent), address and body', async () => {
    let seen: Record<string, unknown> = {};
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      readBody(req, 1024).then((body) => {
        seen = {
          method: req.method,
          url: req.url,
          host: req.headers.host,
          type: req.headers['content-type'],
          address: req.socket.remoteAddress,
          body: body.toString('utf8'),
        };
        res.writeHead(201, { 'content-type': 'text/plain', 'x-list': ['a', 'b'] });
        res.end('made');
      });
    };
    const res = await runForWeb(
      new Request('http://api.example:8443/v1/messages?beta=true', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"a":1}',
      }),
      '10.0.0.7',
      handler,
    );
    expect(seen).toEqual({
      method: 'POST',
      url: '/v1/messages?beta=true',
      host: 'api.example:8443',
      type: 'application/json',
      address: '10.0.0.7',
      body: '{"a":1}',
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('x-list')).toBe('a, b');
    expect(await res.text()).toBe('made');
  });

  it('a body over the limit is refused while it streams, not read whole first', async () => {
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(new Uint8Array(1024));
      },
    });
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      readBody(req, 4096).catch((error: { status: number }) => res.writeHead(error.status).end());
    };
    const res = await runForWeb(
      new Request('http://api.example/v1/messages', { method: 'POST', body: endless, duplex: 'half' } as RequestInit),
      undefined,
      handler,
    );
    expect(res.status).toBe(413);
    expect(pulled).toBeLessThan(64);
  });

  it('streams what is written in order, waits for a slow reader, and ends the stream', async () => {
    const chunks = Array.from({ length: 200 }, (_, i) => `event ${i} ${'x'.repeat(1000)}\n`);
    let waited = 0;
    const handler = async (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const chunk of chunks)
        if (!res.write(chunk)) {
          waited++;
          await once(res, 'drain');
        }
      res.end();
    };
    const res = await runForWeb(new Request('http://api.example/'), undefined, (req, r) => void handler(req, r));
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    for (;;) {
      await new Promise((r) => setTimeout(r, 1));
      const { done, value } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString('utf8');
    }
    expect(text).toBe(chunks.join(''));
    expect(waited).toBeGreaterThan(0);
  });

  it('a reader that cancels closes the response unfinished, as a client that hangs up', async () => {
    let closed: boolean | undefined;
    const handler = (_req: IncomingMessage, res: ServerResponse) => {
      res.on('close', () => {
        closed = res.writableFinished;
      });
      res.writeHead(200);
      res.write('first');
    };
    const res = await runForWeb(new Request('http://api.example/'), undefined, handler);
    await (res.body as ReadableStream<Uint8Array>).cancel();
    await new Promise((r) => setImmediate(r));
    expect(closed).toBe(false);
  });

  it("the request's signal closes the response; destroyed before its head, the answer is an empty 499 with the request's id", async () => {
    const client = new AbortController();
    let closed = false;
    const handler = (_req: IncomingMessage, res: ServerResponse) => {
      res.setHeader('moat-request-id', 'req_1');
      res.on('close', () => {
        closed = true;
      });
    };
    const answer = runForWeb(new Request('http://api.example/', { signal: client.signal }), undefined, handler);
    client.abort();
    const res = await answer;
    await new Promise((r) => setImmediate(r));
    expect(closed).toBe(true);
    expect(res.status).toBe(499);
    expect(res.headers.get('moat-request-id')).toBe('req_1');
    expect(await res.text()).toBe('');
  });

  it('an answer the handler destroys before its head, its client still there, is an empty 502', async () => {
    const res = await runForWeb(new Request('http://api.example/'), undefined, (_req, r) => r.destroy());
    expect(res.status).toBe(502);
    expect(await res.text()).toBe('');
  });

  it('an answer the runtime cannot make (a status out of range) is an empty 502, not a crash', async () => {
    const res = await runForWeb(new Request('http://api.example/'), undefined, (_req, r) => r.writeHead(999).end('x'));
    expect(res.status).toBe(502);
    expect(await res.text()).toBe('');
  });

  it('a request body that breaks off while nobody reads it ends nothing', async () => {
    const broken = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.error(new Error('client went away'));
      },
    });
    const request = new Request('http://api.example/', { method: 'POST', body: broken, duplex: 'half' } as RequestInit);
    const res = await runForWeb(request, undefined, (req, r) => {
      req.resume();
      r.writeHead(404).end();
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(res.status).toBe(404);
  });

  it('pipes a node stream into the answer (pass-through routes)', async () => {
    const { Readable } = await import('node:stream');
    const handler = (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      void pipeline(Readable.from([Buffer.from('a'), Buffer.from('b'), Buffer.from('c')]), res);
    };
    const res = await runForWeb(new Request('http://api.example/'), undefined, handler);
    expect(await res.text()).toBe('abc');
  });

  it('answers with exactly the bytes written, however they are split across write and end', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }),
        fc.boolean(),
        async (parts, head) => {
          const handler = (_req: IncomingMessage, res: ServerResponse) => {
            if (head) res.writeHead(200);
            const last = parts.at(-1);
            for (const part of parts.slice(0, -1)) res.write(Buffer.from(part));
            res.end(last === undefined ? undefined : Buffer.from(last));
          };
          const res = await runForWeb(new Request('http://api.example/'), undefined, handler);
          expect(Buffer.from(await res.arrayBuffer())).toEqual(Buffer.concat(parts.map((p) => Buffer.from(p))));
        },
      ),
      { numRuns: 100 },
    );
  });
});
