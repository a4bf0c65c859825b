/**
 * Upstream answers are checked before they are passed on: an upstream that compresses
 * regardless of `accept-encoding` (the real @anthropic-ai/sdk must read the answers), one in a
 * coding nobody can decode, 200s that are not the API's shape, junk after `message_stop`, and
 * a stream whose upstream says it is JSON.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as zlib from 'node:zlib';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import type { ApiError } from './errors.js';
import { mockEvents, mockMessages } from './mock-upstream.js';
import { DECODED_ENCODINGS } from './pipeline/upstream.js';
import { createVerifier, type Verifier } from './server.js';

const upstreamKey = `sk-upstream-${randomBytes(8).toString('hex')}`;
/** How the upstream answers the next requests. */
let mode: { encoding?: string; body?: string | Buffer; after?: string; contentType?: string } = {};
let upstream: Server;
let verifier: Verifier;
let base = '';
let apiKey = '';
let client: Anthropic;

const ENCODERS: Record<string, (b: Buffer) => Buffer> = {
  gzip: zlib.gzipSync,
  deflate: zlib.deflateSync,
  br: zlib.brotliCompressSync,
  ...(typeof (zlib as { zstdCompressSync?: unknown }).zstdCompressSync === 'function'
    ? { zstd: (zlib as unknown as { zstdCompressSync: (b: Buffer) => Buffer }).zstdCompressSync }
    : {}),
};

function answer(res: ServerResponse, status: number, headers: Record<string, string>, body: Buffer): void {
  const encoding = mode.encoding;
  const encode = encoding === undefined ? undefined : ENCODERS[encoding];
  const bytes = encode === undefined ? body : encode(body);
  res.writeHead(status, {
    ...headers,
    ...(encoding === undefined ? {} : { 'content-encoding': encoding }),
    'content-length': String(bytes.length),
  });
  res.end(bytes);
}

async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  const body = (text === '' ? {} : JSON.parse(text)) as Record<string, unknown>;
  const json = (status: number, value: unknown) =>
    answer(res, status, { 'content-type': mode.contentType ?? 'application/json' }, Buffer.from(JSON.stringify(value)));
  if (mode.body !== undefined) return answer(res, 200, { 'content-type': mode.contentType ?? 'application/json' }, Buffer.from(mode.body));
  if (req.url === '/v1/messages/count_tokens') return json(200, { input_tokens: 7 });
  if ((body.model as string).includes('limited'))
    return json(429, { type: 'error', error: { type: 'rate_limit_error', message: 'slow down' } });
  let response: ReturnType<typeof mockMessages>;
  try {
    response = mockMessages(body);
  } catch (error) {
    const e = error as ApiError;
    return json(e.status, e.body());
  }
  if (body.stream !== true) return json(200, response);
  const events = [...mockEvents(response)].map((ev) => `event: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`).join('');
  answer(res, 200, { 'content-type': mode.contentType ?? 'text/event-stream' }, Buffer.from(events + (mode.after ?? '')));
}

beforeAll(async () => {
  upstream = createServer((req, res) => {
    serve(req, res).catch(() => res.destroy());
  });
  upstream.listen(0, '127.0.0.1');
  await new Promise((r) => upstream.once('listening', r));
  const env = {
    ...devEnvironment(),
    MOAT_VERIFIER_UPSTREAM_KEY: upstreamKey,
    MOAT_VERIFIER_UPSTREAM: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
  };
  verifier = await createVerifier(loadConfig(env), { logLevel: 'silent' });
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('answers')).key;
  client = new Anthropic({ apiKey, baseURL: base, maxRetries: 0 });
});
afterAll(async () => {
  await verifier.close();
  upstream.close();
});

const lastRecord = async () => (await verifier.storage.queryRecords({ limit: 1 }))[0];
const ask = { model: 'claude-mock', max_tokens: 64, messages: [{ role: 'user' as const, content: 'hello there' }] };

describe('upstream answers are read before they are passed on', () => {
  it.each([
    ['a list without data', '{"object":"list"}'],
    ['null', 'null'],
    ['a list whose data is not an array', '{"data":{"id":"x"}}'],
  ])('answers a batch list that is %s 502, and records the 502', async (_name, body) => {
    mode = { body };
    const res = await fetch(`${base}/v1/messages/batches`, { headers: { 'x-api-key': apiKey } });
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { message: string } }).error.message).toBe('upstream answered a batch list without data');
    expect(await lastRecord()).toMatchObject({ status: 502, reasons: ['batch list', '502: upstream answered a batch list without data'] });
  });

  it('leaves out batch list entries that are not batches, and records the 200 the client got', async () => {
    mode = { body: '{"data":[null,5,"x",[],{"id":"msgbatch_other"}],"has_more":false}' };
    const res = await fetch(`${base}/v1/messages/batches`, { headers: { 'x-api-key': apiKey } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ data: [], has_more: false, first_id: null, last_id: null });
    expect(await lastRecord()).toMatchObject({ status: 200, reasons: ['batch list'] });
  });

  it.each(DECODED_ENCODINGS.filter((e) => e !== 'x-gzip'))('decodes a %s answer sent regardless of accept-encoding', async (encoding) => {
    mode = { encoding };
    const message = await client.messages.create(ask);
    expect(message.content[0]).toMatchObject({ type: 'text' });
    const streamed = await client.messages.stream(ask).finalMessage();
    expect(streamed.content).toEqual(message.content);
    expect((await client.messages.countTokens({ model: 'claude-mock', messages: ask.messages })).input_tokens).toBe(7);
  });

  it('passes a gzipped 429 on as a readable API error', async () => {
    mode = { encoding: 'gzip' };
    const error = await client.messages.create({ ...ask, model: 'claude-mock-limited' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Anthropic.RateLimitError);
    expect((error as InstanceType<typeof Anthropic.RateLimitError>).error).toMatchObject({ error: { message: 'slow down' } });
  });

  it('refuses an answer in a coding it cannot decode: 502, recorded', async () => {
    mode = { encoding: 'compress', body: 'whatever' };
    const res = await fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': apiKey }, body: JSON.stringify(ask) });
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/cannot decode \(compress\)/);
    expect(await lastRecord()).toMatchObject({ status: 502 });
  });

  it.each([
    ['cut-short JSON', '{"id":"msg_1","type":"message","content":[{"type":"text","text":"hel'],
    ['an HTML page', '<html><body>502 Bad Gateway</body></html>'],
    ['an empty body', ''],
    ['another shape', '{"ok":true}'],
  ])('answers a 200 with %s 502, and records it as an upstream error', async (_name, body) => {
    mode = { body };
    const res = await fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': apiKey }, body: JSON.stringify(ask) });
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { type: string; message: string } }).error).toMatchObject({
      type: 'api_error',
      message: expect.stringMatching(/^upstream answered an unreadable message/),
    });
    const record = await lastRecord();
    expect(record).toMatchObject({ status: 502 });
    expect(record?.reasons.some((r) => r.startsWith('502: upstream answered an unreadable message'))).toBe(true);
    mode = { body };
    const counted = await fetch(`${base}/v1/messages/count_tokens`, {
      method: 'POST',
      headers: { 'x-api-key': apiKey },
      body: JSON.stringify({ model: 'claude-mock', messages: ask.messages }),
    });
    expect(counted.status).toBe(502);
  });

  it('passes nothing after message_stop: junk there is not an error event', async () => {
    mode = { after: 'event: content_block_delta\ndata: {not json\n\n' };
    const res = await fetch(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': apiKey },
      body: JSON.stringify({ ...ask, stream: true }),
    });
    const text = await res.text();
    expect(text.trimEnd().endsWith('data: {"type":"message_stop"}')).toBe(true);
    expect(text).not.toContain('event: error');
    expect(await lastRecord()).toMatchObject({ status: 200 });
  });

  it('sends SSE error events with the stream content type when the upstream named none; another media type is a 502 before the stream', async () => {
    const body = 'event: message_start\ndata: {"type":"message_start","message":{"id":"m","content":[]}}\n\n';
    const streamed = async () =>
      fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': apiKey }, body: JSON.stringify({ ...ask, stream: true }) });
    mode = { contentType: '', body };
    const res = await streamed();
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    expect(await res.text()).toContain('event: error');
    expect(await lastRecord()).toMatchObject({ status: 502 });
    mode = { contentType: 'application/json', body };
    const refused = await streamed();
    expect(refused.status).toBe(502);
    expect(refused.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await refused.json()).toMatchObject({ error: { message: expect.stringMatching(/not text\/event-stream$/) } });
    expect(await lastRecord()).toMatchObject({ status: 502 });
  });
});
