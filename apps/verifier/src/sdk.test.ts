/**
 * The official `@anthropic-ai/sdk` against the verifier, with the embedded mock and with a real
 * upstream over HTTP: create, stream, count_tokens, models; the upstream's retry headers and
 * request id reach the SDK; a client that gives up aborts the upstream call.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { handleMockRequest } from './mock-upstream.js';
import { createVerifier, type Verifier } from './server.js';

const upstreamKey = `sk-upstream-${randomBytes(8).toString('hex')}`;
/** Scripted answers the upstream gives before it serves as the mock: by model name. */
const scripted = new Map<string, Array<(res: ServerResponse) => void>>();
const hits: Array<{ method: string; url: string; key: unknown }> = [];
let closedEarly = 0;
let upstream: Server;
const verifiers: Verifier[] = [];

async function verifierFor(upstreamUrl: string | undefined): Promise<{ verifier: Verifier; client: Anthropic }> {
  const env = devEnvironment();
  const verifier = await createVerifier(
    loadConfig(upstreamUrl === undefined ? env : { ...env, MOAT_VERIFIER_UPSTREAM: upstreamUrl, MOAT_VERIFIER_UPSTREAM_KEY: upstreamKey }),
    { logLevel: 'silent' },
  );
  verifiers.push(verifier);
  const baseURL = await verifier.listen();
  const { key } = await verifier.storage.createApiKey('sdk');
  return { verifier, client: new Anthropic({ apiKey: key, baseURL, maxRetries: 2 }) };
}

beforeAll(async () => {
  upstream = createServer((req: IncomingMessage, res: ServerResponse) => {
    hits.push({ method: req.method ?? '', url: req.url ?? '', key: req.headers['x-api-key'] });
    res.on('close', () => {
      if (!res.writableFinished) closedEarly++;
    });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const model = (() => {
        try {
          return String((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { model?: unknown }).model);
        } catch {
          return '';
        }
      })();
      const next = scripted.get(model)?.shift();
      if (next !== undefined) return next(res);
      // Serve as the mock, from the bytes already read.
      const replay = Object.assign(
        (async function* () {
          yield Buffer.concat(chunks);
        })(),
        { method: req.method, url: req.url, headers: req.headers },
      ) as unknown as IncomingMessage;
      handleMockRequest(replay, res, { apiKey: upstreamKey, slowEventMs: 200 }).catch(() => res.destroy());
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
});
afterAll(async () => {
  for (const v of verifiers) await v.close();
  await new Promise<void>((r) => upstream.close(() => r()));
});

const upstreamUrl = () => `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
const ask = { model: 'claude-opus-5-5', max_tokens: 64, messages: [{ role: 'user' as const, content: 'Hello from the SDK' }] };

for (const where of ['the embedded mock', 'an upstream over HTTP'] as const) {
  describe(`@anthropic-ai/sdk through the verifier, ${where}`, { timeout: 30_000 }, () => {
    let client: Anthropic;
    beforeAll(async () => {
      ({ client } = await verifierFor(where === 'the embedded mock' ? undefined : upstreamUrl()));
    });

    it('creates, streams, counts tokens and lists models', async () => {
      const message = await client.messages.create(ask);
      expect(message.content).toEqual([{ type: 'text', text: 'Echo: Hello from the SDK' }]);
      expect(message._request_id).toMatch(/^req_mock_/);

      const stream = client.messages.stream({ ...ask, thinking: { type: 'enabled', budget_tokens: 1024 } });
      const final = await stream.finalMessage();
      expect(final.content[0]).toMatchObject({ type: 'thinking' });
      expect((final.content[0] as { signature: string }).signature).toMatch(/^ms1\./);
      expect(final.content[1]).toEqual({ type: 'text', text: 'Echo: Hello from the SDK' });

      const count = await client.messages.countTokens({ model: ask.model, messages: ask.messages });
      expect(count.input_tokens).toBeGreaterThan(0);

      const models = await client.models.list();
      expect(models.data.map((m) => m.id)).toContain('claude-opus-5-5');
      expect((await client.models.retrieve('claude-opus-5')).id).toBe('claude-opus-5');

      await expect(client.messages.create({ ...ask, model: 'claude-no-such-model' })).rejects.toMatchObject({
        status: 404,
        error: { error: { type: 'not_found_error' } },
      });
    });
  });
}

describe('the upstream decides about retries, through the verifier', { timeout: 30_000 }, () => {
  it('x-should-retry: false stops the SDK; retry-after makes it wait and try again', async () => {
    const { client, verifier } = await verifierFor(upstreamUrl());
    const overloaded = (res: ServerResponse) =>
      res
        .writeHead(529, { 'content-type': 'application/json', 'x-should-retry': 'false', 'request-id': 'req_upstream_529' })
        .end(JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }));
    scripted.set('claude-mock-no-retry', [overloaded, overloaded, overloaded]);
    let before = hits.length;
    const error = await client.messages.create({ ...ask, model: 'claude-mock-no-retry' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Anthropic.APIError);
    expect((error as InstanceType<typeof Anthropic.APIError>).status).toBe(529);
    expect((error as InstanceType<typeof Anthropic.APIError>).requestID).toBe('req_upstream_529');
    expect(hits.length - before).toBe(1);

    const limited = (res: ServerResponse) =>
      res
        .writeHead(429, { 'content-type': 'application/json', 'retry-after-ms': '50', 'anthropic-ratelimit-requests-remaining': '0' })
        .end(JSON.stringify({ type: 'error', error: { type: 'rate_limit_error', message: 'slow down' } }));
    scripted.set('claude-mock-limited', [limited]);
    before = hits.length;
    const { data, response } = await client.messages.create({ ...ask, model: 'claude-mock-limited' }).withResponse();
    expect(data.content).toEqual([{ type: 'text', text: 'Echo: Hello from the SDK' }]);
    expect(response.headers.get('moat-request-id')).toMatch(/^req_/);
    expect(hits.length - before).toBe(2);
    const statuses = (await verifier.storage.queryRecords({ limit: 3 })).map((r) => r.status);
    expect(statuses).toEqual([200, 429, 529]);
  });

  it("a client's abort reaches the upstream and is recorded", async () => {
    const { client, verifier } = await verifierFor(upstreamUrl());
    const before = closedEarly;
    const controller = new AbortController();
    const stream = client.messages.stream({ ...ask, model: 'claude-mock-slow' }, { signal: controller.signal });
    await new Promise<void>((resolve) => stream.on('streamEvent', (ev) => ev.type === 'content_block_start' && resolve()));
    controller.abort();
    await stream.done().catch(() => {});
    for (let i = 0; i < 250 && closedEarly === before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(closedEarly).toBe(before + 1);
    for (let i = 0; i < 250 && (await verifier.storage.queryRecords({ limit: 1 }))[0]?.status !== 499; i++)
      await new Promise((r) => setTimeout(r, 20));
    const [record] = await verifier.storage.queryRecords({ limit: 1 });
    expect(record?.status).toBe(499);
    expect(record?.reasons).toContain('client_disconnected');
  });
});
