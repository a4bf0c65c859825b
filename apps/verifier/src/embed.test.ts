/**
 * `createMoatHandler` inside a real hono app (served by @hono/node-server) and a plain
 * node:http server, in front of a model call in process, driven by the official
 * `@anthropic-ai/sdk` and by stamps made below JavaScript by `@moat/native`: genuine requests
 * allowed, replayed and tampered ones blocked, SSE re-signed, records written, tags kept from
 * the model, bad options refused with a typed error.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { serve } from '@hono/node-server';
import { createAttestedFetch } from '@moat/attest/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { devKeyFile } from '@moat/native/dev-key';
import { runReadmeExampleAsync } from '@moat/test-kit/readme-example';
import { urlOf } from '@moat/test-kit/servers';
import Database from 'better-sqlite3';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configFromSettings } from './config.js';
import { createMoatHandler, embeddedRoutes, type MoatHandler, type MoatHandlerOptions } from './embed.js';
import { VerifierConfigError } from './errors.js';
import { mockModel } from './mock-model.js';
import { postRaw } from './raw-request.test-util.js';
import { createVerifier } from './server.js';
import { streamed } from './streamed.test-util.js';

const SALT = 'embed-test-salt';
const settings = () => ({
  fingerprintSalt: SALT,
  serverSecret: randomBytes(32).toString('hex'),
  signingSecret: randomBytes(32).toString('hex'),
  attestationKeyFile: devKeyFile,
  database: ':memory:',
});

/** The embedding server's own model call; every request it gets is kept. */
const seen: Array<{ url: string; body: string; headers: Headers }> = [];
const model = async (request: Request): Promise<Response> => {
  seen.push({ url: request.url, body: await request.clone().text(), headers: request.headers });
  return mockModel(request);
};

let moat: MoatHandler;
let apiKey = '';
let honoUrl = '';
let nodeUrl = '';
const servers: Server[] = [];

async function listening(server: Server): Promise<string> {
  servers.push(server);
  return urlOf(server);
}

beforeAll(async () => {
  // Uploads are passed through only where named (every key here is one tenant's).
  moat = await createMoatHandler({
    settings: { ...settings(), passthroughRoutes: 'GET /v1/models, POST /v1/skills' },
    upstream: model,
    logLevel: 'silent',
  });
  apiKey = (await moat.storage.createApiKey('embed')).key;
  const app = new Hono();
  app.get('/', (c) => c.text('the API server’s own route'));
  app.all('/v1/*', (c) => moat.fetch(c.req.raw));
  app.get('/api/features/*', (c) => moat.fetch(c.req.raw));
  honoUrl = await listening(serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server);
  nodeUrl = await listening(createServer(moat.node).listen(0, '127.0.0.1'));
});
afterAll(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
  await moat.close();
});

const last = async () => (await moat.storage.queryRecords({ limit: 1 }))[0];

/** Sends `ask` to `handler` with a key of its own and goes away once the model was called; the answer it got. */
async function leaveOnceCalled(handler: MoatHandler, reached: Promise<unknown>): Promise<Response> {
  const { key } = await handler.storage.createApiKey('leaving');
  const client = new AbortController();
  const answer = handler.fetch(
    new Request('http://api.example/v1/messages', {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify(ask),
      signal: client.signal,
    }),
  );
  await reached;
  client.abort();
  return answer;
}
const ask = {
  model: 'claude-mock',
  max_tokens: 64,
  messages: [{ role: 'user' as const, content: 'Hello in process' }],
};

/** A Messages body with the attribution block, as a genuine client tags it. */
function tagged(text: string) {
  const result = tagFingerprint(
    { ...ask, thinking: { type: 'enabled', budget_tokens: 1024 }, messages: [{ role: 'user', content: text }] },
    { salt: SALT, version: '1.4.2', entrypoint: 'cli' },
  );
  if (result.status !== 'tagged') throw new Error(result.reason);
  return result.request;
}

for (const where of ['a hono app', 'a node:http server'] as const) {
  describe(`createMoatHandler in ${where}, with @anthropic-ai/sdk`, { timeout: 30_000 }, () => {
    const sdk = () => new Anthropic({ apiKey, baseURL: where === 'a hono app' ? honoUrl : nodeUrl, maxRetries: 0 });

    it('create, stream (thinking re-signed), count_tokens and models: through the pipeline to the model', async () => {
      const before = seen.length;
      const message = await sdk().messages.create(ask);
      expect(message.content).toEqual([{ type: 'text', text: 'Echo: Hello in process' }]);
      const created = await last();
      expect(created).toMatchObject({ status: 200, attestation: 'missing', verdict: 'flag', model: 'claude-mock' });

      const final = await sdk()
        .messages.stream({ ...ask, thinking: { type: 'enabled', budget_tokens: 1024 } })
        .finalMessage();
      expect(final.content[0]).toMatchObject({ type: 'thinking' });
      // Moat's signature, bound to this key and model; the model's own stays with the verifier.
      expect((final.content[0] as { signature: string }).signature).toMatch(/^ms1\./);
      expect(seen.at(-1)?.body).toContain('"stream":true');

      const count = await sdk().messages.countTokens({ model: ask.model, messages: ask.messages });
      expect(count.input_tokens).toBeGreaterThan(0);
      expect((await sdk().models.list()).data.map((m) => m.id)).toContain('claude-opus-5-5');
      expect(seen.length - before).toBe(4);
      // The model call never gets the client's key: the embedding server's call is its own.
      expect(seen.slice(before).map((s) => s.headers.get('x-api-key'))).toEqual([null, null, null, null]);
    });

    it('a request without a live key is refused before the model and recorded', async () => {
      const before = seen.length;
      const stranger = new Anthropic({ apiKey: 'sk-nobody', baseURL: sdk().baseURL, maxRetries: 0 });
      await expect(stranger.messages.create(ask)).rejects.toMatchObject({ status: 401 });
      expect(seen.length).toBe(before);
      expect(await last()).toMatchObject({ status: 401, verdict: 'block' });
    });
  });
}

describe('createMoatHandler: stamps made by @moat/native', { timeout: 30_000 }, () => {
  it('genuine is allowed; the same bytes again are blocked as replayed, tampered ones as invalid', async () => {
    // A relay takes the genuine request off the wire: the stamp binds the authority the client sent to, the relay's.
    const captured: Array<{ body: Buffer; headers: Record<string, string> }> = [];
    const tap = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const headers = {
        host: String(req.headers.host),
        'x-api-key': String(req.headers['x-api-key']),
        'content-type': 'application/json',
        'user-agent': 'moat-chat/1.4.2',
      };
      captured.push({ body: Buffer.concat(chunks), headers });
      const answer = await postRaw(honoUrl, Buffer.concat(chunks), headers);
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.json));
    }).listen(0, '127.0.0.1');
    const tapUrl = await listening(tap);
    const before = seen.length;
    const attested = createAttestedFetch();
    const first = await attested(`${tapUrl}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
      body: JSON.stringify(tagged('Please review my pull request')),
    });
    expect(first.status).toBe(200);
    expect(await last()).toMatchObject({
      attestation: 'valid',
      binding: 'request',
      fingerprint: 'match',
      verdict: 'allow',
      status: 200,
    });
    // Moat's tags never reach the model call.
    const forwarded = JSON.parse(seen.at(-1)?.body ?? '{}') as Record<string, unknown>;
    expect(forwarded).not.toHaveProperty('moat_att');
    expect(JSON.stringify(forwarded.system ?? '')).not.toContain('x-moat:');

    const { body, headers } = captured[0] as (typeof captured)[number];
    const replay = await postRaw(honoUrl, body, headers);
    expect(replay.status).toBe(403);
    expect(replay.json.error.message).toMatch(/block:attestation=replayed/);
    expect(await last()).toMatchObject({ attestation: 'replayed', verdict: 'block', status: 403 });

    const tampered = body.toString('utf8').replace('Please review', 'Please delete');
    const t = await postRaw(nodeUrl, tampered, headers);
    expect(t.status).toBe(403);
    expect(await last()).toMatchObject({ attestation: 'invalid', verdict: 'block' });
    // Only the genuine request reached the model.
    expect(seen.length - before).toBe(1);

    // Restarted on ':memory:' (its nonces gone), the same key provisioned again: the request
    // served before is refused, retryably, not served a second time.
    // However soon: a new store begins at the next whole second, and the handler waits for it.
    const restarted = await createMoatHandler({ settings: settings(), upstream: model, logLevel: 'silent' });
    try {
      await restarted.storage.importApiKey('key_embed_again', apiKey, 'embed');
      const again = await listening(createServer(restarted.node).listen(0, '127.0.0.1'));
      const replayed = await postRaw(again, body, headers);
      expect(replayed.status).toBe(503);
      expect(replayed.json.error.message).toMatch(/replay cache/);
      expect(seen.length - before).toBe(1);
    } finally {
      await restarted.close();
    }
  });
});

describe('createMoatHandler: what it serves', () => {
  it('discovery and flags; no admin, dashboard, metrics or probes; other routes refused, recorded', async () => {
    const discovery = await moat.fetch(new Request('http://api.example/v1/moat'));
    expect(discovery.status).toBe(200);
    expect(((await discovery.json()) as { moat: { versions: number[] } }).moat.versions).toEqual([1]);
    expect((await moat.fetch(new Request('http://api.example/api/features/moat'))).status).toBe(200);
    for (const path of ['/admin/records', '/dashboard', '/metrics', '/healthz', '/v1/nothing']) {
      const res = await moat.fetch(new Request(`http://api.example${path}`));
      expect(res.status, path).toBe(404);
      expect(res.headers.get('moat-request-id')).toMatch(/^req_/);
    }
    expect(await last()).toMatchObject({ status: 404, verdict: 'block' });
    // Metrics are the embedding server's to serve, behind its own operator access.
    const metrics = await moat.metrics();
    expect(metrics.contentType).toMatch(/^text\/plain/);
    expect(metrics.text).toMatch(/moat_requests_total\{verdict="flag"\} [1-9]/);
    expect(embeddedRoutes([]).some(([, pattern]) => pattern.startsWith('/admin'))).toBe(false);
  });

  it('fetch called directly streams SSE, thinking re-signed, record durable before message_stop', async () => {
    const res = await moat.fetch(
      new Request('http://api.example/v1/messages', {
        method: 'POST',
        headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
        body: JSON.stringify({ ...ask, stream: true, thinking: { type: 'enabled', budget_tokens: 1024 } }),
      }),
    );
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const { events, content } = await streamed(res);
    expect(events.at(-1)?.event).toBe('message_stop');
    const signatures = events.flatMap((e) => {
      const delta = (e.data as { delta?: { type?: string; signature?: string } }).delta;
      return delta?.type === 'signature_delta' ? [delta.signature] : [];
    });
    expect(signatures.length).toBeGreaterThan(0);
    for (const signature of signatures) expect(signature).toMatch(/^ms1\./);
    expect(content[1]).toEqual({ type: 'text', text: 'Echo: Hello in process' });
    expect(await last()).toMatchObject({ status: 200, thinking: 'none' });
  });

  it('a model stream still open after message_stop is cancelled unread, as a stop, not as a failure', async () => {
    // A whole answer, then nothing: the model's stream neither sends more nor closes.
    const answer = await (
      await mockModel(
        new Request('http://model/v1/messages', { method: 'POST', body: JSON.stringify({ ...ask, stream: true }) }),
      )
    ).text();
    const cancels: unknown[] = [];
    const open = await createMoatHandler({
      settings: settings(),
      logLevel: 'silent',
      upstream: async () =>
        new Response(
          new ReadableStream({
            start: (controller) => controller.enqueue(new TextEncoder().encode(answer)),
            pull: () => new Promise(() => {}),
            cancel: (reason) => {
              cancels.push(reason);
            },
          }),
          { status: 200, headers: { 'content-type': 'text/event-stream' } },
        ),
    });
    const { key } = await open.storage.createApiKey('open stream');
    const res = await open.fetch(
      new Request('http://api.example/v1/messages', {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({ ...ask, stream: true }),
      }),
    );
    const { events } = await streamed(res);
    expect(events.at(-1)?.event).toBe('message_stop');
    for (let i = 0; i < 100 && cancels.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    // Cancelled once, with no error: the verifier had the whole message and stopped reading.
    expect(cancels).toEqual([undefined]);
    expect((await open.storage.queryRecords({ limit: 1 }))[0]).toMatchObject({ status: 200 });
    await open.close();
  });

  it('pass-through routes stream the upload to the model call and pass its answer on', async () => {
    const res = await moat.fetch(
      new Request('http://api.example/v1/skills', {
        method: 'POST',
        headers: { 'x-api-key': apiKey, 'content-type': 'application/octet-stream' },
        body: 'file bytes',
      }),
    );
    // The mock model serves no skills: its 404 comes back as it answered.
    expect(res.status).toBe(404);
    expect(seen.at(-1)).toMatchObject({ url: 'http://api.example/v1/skills', body: 'file bytes' });
    expect(await last()).toMatchObject({ status: 404, reasons: ['passthrough POST /v1/skills'] });
  });

  it("mounted for the rest of a hono app's paths, every raw target is answered by Moat and recorded", async () => {
    const app = new Hono();
    app.get('/', (c) => c.text('the API server’s own route'));
    app.all('*', (c) => moat.fetch(c.req.raw));
    const url = new URL(await listening(serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server));
    const send = (path: string) =>
      new Promise<{ status: number; id: string | undefined }>((resolve, reject) => {
        const body = JSON.stringify(ask);
        const req = request(
          {
            host: url.hostname,
            port: url.port,
            path,
            method: 'POST',
            headers: {
              'x-api-key': apiKey,
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            res.resume();
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, id: res.headers['moat-request-id'] as string | undefined }),
            );
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const own = await fetch(`${url.origin}/`);
    expect(await own.text()).toBe('the API server’s own route');
    for (const [path, status] of [
      ['//v1/messages', 200],
      ['/V1/Messages', 404],
      ['/v1%2Fmessages', 400],
      ['/v1/./messages', 200],
      ['/v1/messages/', 404],
    ] as const) {
      const before = (await moat.storage.summary()).total;
      const res = await send(path);
      expect(res.status, path).toBe(status);
      expect(res.id, path).toMatch(/^req_/);
      expect((await moat.storage.summary()).total, path).toBe(before + 1);
      expect((await last())?.id).toBe(res.id);
    }
  });

  it('close cuts what still runs after the grace period: its client gets a 503 and its record says shutdown_cut', async () => {
    const database = join(mkdtempSync(join(tmpdir(), 'moat-embed-cut-')), 'verifier.db');
    let called: (value: unknown) => void = () => {};
    const reached = new Promise((resolve) => {
      called = resolve;
    });
    const hanging = await createMoatHandler({
      settings: { ...settings(), database, shutdownGraceMs: 100 },
      logLevel: 'silent',
      upstream: (request) =>
        new Promise((_, reject) => {
          called(true);
          request.signal.addEventListener('abort', () => reject(request.signal.reason));
        }),
    });
    const key = (await hanging.storage.createApiKey('cut')).key;
    const answer = hanging.fetch(
      new Request('http://api.example/v1/messages', {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'claude-mock',
          max_tokens: 8,
          messages: [{ role: 'user', content: 'never answered' }],
        }),
      }),
    );
    await reached;
    await hanging.close();
    const res = await answer;
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    const db = new Database(database, { readonly: true });
    try {
      const record = db
        .prepare('SELECT status, reasons FROM records WHERE id = ?')
        .get(res.headers.get('moat-request-id')) as {
        status: number;
        reasons: string;
      };
      expect(record.status).toBe(503);
      expect(record.reasons).toContain('shutdown_cut');
    } finally {
      db.close();
    }
  });

  it('a client that goes away aborts the model call and is recorded 499', async () => {
    let called: (value: unknown) => void = () => {};
    const reached = new Promise((resolve) => {
      called = resolve;
    });
    let aborted: (value: unknown) => void = () => {};
    const gone = new Promise((resolve) => {
      aborted = resolve;
    });
    const slow = await createMoatHandler({
      settings: settings(),
      logLevel: 'silent',
      upstream: (request) =>
        new Promise((_, reject) => {
          called(true);
          request.signal.addEventListener('abort', () => {
            aborted(true);
            reject(request.signal.reason);
          });
        }),
    });
    const res = await leaveOnceCalled(slow, reached);
    expect(await gone).toBe(true);
    expect(res.status).toBe(499);
    for (let i = 0; i < 200 && (await slow.storage.queryRecords({ limit: 1 }))[0]?.status !== 499; i++)
      await new Promise((r) => setTimeout(r, 10));
    const [record] = await slow.storage.queryRecords({ limit: 1 });
    expect(record).toMatchObject({ status: 499 });
    expect(res.headers.get('moat-request-id')).toBe(record?.id);
    await slow.close();
  });

  it.each([
    ['answers 200 after the client went away', 'late'],
    ['never answers', 'never'],
  ] as const)(
    'a model call that ignores request.signal and %s is recorded 499 when the client goes away',
    async (_, how) => {
      let called: (value: unknown) => void = () => {};
      const reached = new Promise((resolve) => {
        called = resolve;
      });
      let cancelled = false;
      const deaf = await createMoatHandler({
        settings: settings(),
        logLevel: 'silent',
        upstream: () =>
          new Promise<Response>((resolve) => {
            called(true);
            if (how === 'late')
              setTimeout(() => {
                const body = new ReadableStream({
                  pull: (controller) => controller.enqueue(new TextEncoder().encode('{}')),
                  cancel: () => {
                    cancelled = true;
                  },
                });
                resolve(new Response(body, { status: 200, headers: { 'content-type': 'application/json' } }));
              }, 300);
          }),
      });
      const res = await leaveOnceCalled(deaf, reached);
      expect(res.status).toBe(499);
      const settled = async () => (await deaf.storage.queryRecords({ limit: 1 }))[0];
      for (let i = 0; i < 200 && (await settled())?.status !== 499; i++) await new Promise((r) => setTimeout(r, 10));
      expect(await settled()).toMatchObject({ status: 499, reasons: expect.arrayContaining(['client_disconnected']) });
      expect(res.headers.get('moat-request-id')).toBe((await settled())?.id);
      if (how === 'late') {
        // The late answer is cancelled unread, and the record keeps the status the client got.
        for (let i = 0; i < 100 && !cancelled; i++) await new Promise((r) => setTimeout(r, 10));
        expect(cancelled).toBe(true);
        expect(await settled()).toMatchObject({ status: 499 });
      }
      expect((await deaf.storage.summary()).unfinished).toBe(0);
      await deaf.close();
    },
  );

  it('a request whose client was gone before it was handled never reaches the model; recorded 499', async () => {
    const before = seen.length;
    const client = new AbortController();
    client.abort();
    const answer = await moat.fetch(
      new Request('http://api.example/v1/messages', {
        method: 'POST',
        headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
        body: JSON.stringify(ask),
        signal: client.signal,
      }),
    );
    expect(answer.status).toBe(499);
    for (let i = 0; i < 200 && (await last())?.status !== 499; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await last()).toMatchObject({ status: 499 });
    expect(answer.headers.get('moat-request-id')).toBe((await last())?.id);
    expect((await last())?.reasons).toContain('client_disconnected');
    expect(seen.length).toBe(before);
  });

  it('a body that breaks off is a 400 saying so, recorded, and never reaches the model', async () => {
    const before = seen.length;
    const text = JSON.stringify(ask);
    const res = await moat.fetch(
      new Request('http://api.example/v1/messages', {
        method: 'POST',
        headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
        duplex: 'half',
        body: new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new TextEncoder().encode(text.slice(0, 20)));
            controller.error(new Error('connection reset by the client'));
          },
        }),
      } as RequestInit & { duplex: 'half' }),
    );
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe('invalid_request_error');
    expect(body.error.message).toBe('the request body could not be read (connection reset by the client)');
    expect(await last()).toMatchObject({ status: 400, verdict: 'block' });
    expect(seen.length).toBe(before);
  });

  it.each([
    [
      'throws',
      async (): Promise<Response> => {
        throw new Error('model down');
      },
      'upstream failed',
    ],
    [
      'answers a Response whose body it already read',
      async (): Promise<Response> => {
        const response = new Response('{"type":"message"}', { headers: { 'content-type': 'application/json' } });
        await response.text();
        return response;
      },
      'upstream answered a body already read',
    ],
    [
      'answers a Response whose body is locked',
      async (): Promise<Response> => {
        const response = new Response('{"type":"message"}', { headers: { 'content-type': 'application/json' } });
        response.body?.getReader();
        return response;
      },
      'upstream answered a body already read',
    ],
  ])('a model call that %s is a 502 the record keeps', async (_, upstream, message) => {
    const broken = await createMoatHandler({ settings: settings(), logLevel: 'silent', upstream });
    const { key } = await broken.storage.createApiKey('broken');
    const res = await broken.fetch(
      new Request('http://api.example/v1/messages', {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: JSON.stringify(ask),
      }),
    );
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { type: string; message: string } }).error).toEqual({
      type: 'api_error',
      message,
    });
    expect((await broken.storage.queryRecords({ limit: 1 }))[0]).toMatchObject({ status: 502 });
    await broken.close();
  });
});

describe('createVerifier with the model call in process', { timeout: 30_000 }, () => {
  it('serves Messages through the function and is ready without an upstream to connect to', async () => {
    const verifier = await createVerifier(
      configFromSettings({ ...settings(), port: 0, adminToken: 'admin-token-0123456789' }),
      {
        upstream: model,
        logLevel: 'silent',
      },
    );
    try {
      const base = await verifier.listen();
      const { key } = await verifier.storage.createApiKey('server');
      const before = seen.length;
      const message = await new Anthropic({ apiKey: key, baseURL: base, maxRetries: 0 }).messages.create(ask);
      expect(message.content).toEqual([{ type: 'text', text: 'Echo: Hello in process' }]);
      expect(seen.length - before).toBe(1);
      const ready = await fetch(`${base}/readyz`);
      expect(((await ready.json()) as { checks: unknown[] }).checks).toContainEqual({ name: 'upstream', ok: true });
      expect(ready.status).toBe(200);
    } finally {
      await verifier.close();
    }
  });
});

describe('createMoatHandler: the README example', { timeout: 30_000 }, () => {
  it('runs as written and prints the answer and its record', async () => {
    const { fingerprintSalt, serverSecret, signingSecret } = settings();
    const env = {
      ...process.env,
      MOAT_FINGERPRINT_SALT: fingerprintSalt,
      MOAT_SERVER_SECRET: serverSecret,
      MOAT_SIGNING_SECRET: signingSecret,
    };
    expect(await runReadmeExampleAsync(new URL('../', import.meta.url), env)).toEqual([
      '200 flag flag:attestation=missing',
      'Echo: Hello',
    ]);
  });
});

describe('createMoatHandler: options', () => {
  const cases: Array<[string, unknown, string]> = [
    ['no upstream', { settings: settings() }, 'upstream'],
    ['an upstream URL', { settings: settings(), upstream: 'http://model' }, 'upstream'],
    ['no settings', { upstream: mockModel }, 'settings'],
    ['a server-only setting', { settings: { ...settings(), port: 8080 }, upstream: mockModel }, 'port'],
    [
      'an unknown setting',
      { settings: { ...settings(), fingerprintSlat: 'x' }, upstream: mockModel },
      'fingerprintSlat',
    ],
    ['a short secret', { settings: { ...settings(), serverSecret: 'abcd' }, upstream: mockModel }, 'serverSecret'],
    [
      'a missing salt',
      { settings: { ...settings(), fingerprintSalt: undefined }, upstream: mockModel },
      'fingerprintSalt',
    ],
    ['not an object', null, 'options'],
  ];
  for (const [what, options, setting] of cases)
    it(`${what}: VerifierConfigError naming ${setting}`, async () => {
      const error = await createMoatHandler(options as MoatHandlerOptions).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(VerifierConfigError);
      expect(error).toMatchObject({ code: 'ERR_VERIFIER_CONFIG', setting });
      expect((error as Error).message).toMatch(/expected .+, got .+/);
      // A secret's value is never in the message.
      expect((error as Error).message).not.toContain('abcd');
    });
});
