/**
 * An upstream that answers what the API never would, against the verifier's promises: no
 * decoy call and no block without Moat's signature reaches the client, whatever the stream's
 * shape; the record keeps the status the client got; an answer that decodes to more than the
 * verifier reads whole is a 502, not gigabytes; Moat's own headers are the verifier's.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { tagFingerprint } from '@moat/fingerprint/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { MAX_ANSWER_BYTES } from './pipeline/upstream.js';
import { createVerifier, type Verifier } from './server.js';
import { upstreamCallsLeft } from './services.test-util.js';

interface Answer {
  readonly status?: number;
  readonly headers?: Record<string, string>;
  readonly body: string | Buffer;
}
/** How the upstream answers the next request, given the body it was forwarded and the decoy names in it. */
let script: (decoys: readonly string[]) => Answer = () => ({ body: '' });
let upstream: Server;
let verifier: Verifier;
let base = '';
let apiKey = '';
const environment = devEnvironment();

async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { tools?: Array<{ name: string }> };
  // The client's requests carry no tools of their own: every tool forwarded is a decoy.
  const answer = script((body.tools ?? []).map((t) => t.name));
  res.writeHead(answer.status ?? 200, { 'content-type': 'application/json', ...answer.headers });
  res.end(answer.body);
}

beforeAll(async () => {
  upstream = createServer((req, res) => {
    serve(req, res).catch(() => res.destroy());
  });
  upstream.listen(0, '127.0.0.1');
  await new Promise((r) => upstream.once('listening', r));
  verifier = await createVerifier(
    loadConfig({
      ...environment,
      MOAT_VERIFIER_UPSTREAM_KEY: `sk-upstream-${randomBytes(8).toString('hex')}`,
      MOAT_VERIFIER_UPSTREAM: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
    }),
    { logLevel: 'silent' },
  );
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('hostile-upstream')).key;
});
afterAll(async () => {
  await verifier.close();
  upstream.close();
});

/** A request tagged as moat-chat tags it, asking for decoys. */
function ask(stream: boolean): string {
  const tagged = tagFingerprint(
    { model: 'claude-mock', max_tokens: 64, stream, messages: [{ role: 'user', content: 'Check the ledger' }] },
    { salt: 'moat-dev-salt', version: '1.4.2', entrypoint: 'cli' },
  );
  return JSON.stringify({ ...(tagged.request as object), anti_distillation: ['fake_tools'] });
}

async function send(stream: boolean): Promise<{ status: number; text: string; id: string | null }> {
  const res = await fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': apiKey }, body: ask(stream) });
  return { status: res.status, text: await res.text(), id: res.headers.get('moat-request-id') };
}

const lastRecord = async () => (await verifier.storage.queryRecords({ limit: 1 }))[0];

const sse = (events: ReadonlyArray<readonly [string, unknown]>): Answer => ({
  headers: { 'content-type': 'text/event-stream' },
  body: events.map(([name, data]) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`).join(''),
});
const message = (content: unknown[] = []) => ({
  id: 'msg_hostile',
  type: 'message',
  role: 'assistant',
  model: 'claude-mock',
  content,
  stop_reason: null,
  stop_sequence: null,
  usage: { input_tokens: 1, output_tokens: 1 },
});
const decoyCall = (name: string) => ({ type: 'tool_use', id: 'toolu_x', name, input: { account_id: 'acct_x' } });
const ending: ReadonlyArray<readonly [string, unknown]> = [
  ['message_delta', { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 1 } }],
  ['message_stop', { type: 'message_stop' }],
];
const textBlock: ReadonlyArray<readonly [string, unknown]> = [
  ['content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'hello' } }],
  ['content_block_stop', { type: 'content_block_stop', index: 1 }],
];

describe('a stream the verifier would read otherwise than the client is broken off', () => {
  it.each([
    [
      'a decoy call inside message_start',
      (decoys: readonly string[]) =>
        sse([['message_start', { type: 'message_start', message: message([decoyCall(decoys[0] as string)]) }], ...textBlock, ...ending]),
      /message_start with content blocks/,
    ],
    [
      'a decoy call under an event named otherwise than its type',
      (decoys: readonly string[]) =>
        sse([
          ['message_start', { type: 'message_start', message: message() }],
          ['x', { type: 'content_block_start', index: 0, content_block: { ...decoyCall(decoys[0] as string), input: {} } }],
          ['x', { type: 'content_block_stop', index: 0 }],
          ...ending,
        ]),
      /an event named "x" carrying "content_block_start"/,
    ],
    [
      'an unnamed event carrying a block',
      (decoys: readonly string[]) => ({
        headers: { 'content-type': 'text/event-stream' },
        body:
          sse([['message_start', { type: 'message_start', message: message() }]]).body +
          `data: ${JSON.stringify({ type: 'content_block_start', index: 0, content_block: decoyCall(decoys[0] as string) })}\n\n` +
          sse(ending).body,
      }),
      /an event named "message" carrying "content_block_start"/,
    ],
    [
      'a thinking block never stopped before message_stop',
      () =>
        sse([
          ['message_start', { type: 'message_start', message: message() }],
          [
            'content_block_start',
            { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } },
          ],
          ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'secret' } }],
          ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'UPSTREAM_SIG' } }],
          ...ending,
        ]),
      /message_stop with block 0 not stopped/,
    ],
  ])('%s: an SSE error to the client, nothing of it passed on, recorded 502', async (_name, answer, reason) => {
    let decoys: readonly string[] = [];
    script = (names) => {
      decoys = names;
      return answer(names);
    };
    const res = await send(true);
    expect(decoys.length).toBeGreaterThan(0);
    expect(res.status).toBe(200);
    expect(res.text).toMatch(/event: error\ndata: {"type":"error","error":{"type":"api_error","message":"upstream stream broke off"}}/);
    for (const name of decoys) expect(res.text).not.toContain(name);
    expect(res.text).not.toContain('UPSTREAM_SIG');
    expect(res.text).not.toContain('event: message_stop');
    const record = await lastRecord();
    expect(record).toMatchObject({ id: res.id, status: 502 });
    expect(record?.reasons.some((r) => reason.test(r))).toBe(true);
  });
});

describe('the record keeps the status the client got', () => {
  it('records a streamed 201 as 201', async () => {
    script = () => ({
      ...sse([['message_start', { type: 'message_start', message: message() }], ...textBlock, ...ending]),
      status: 201,
    });
    const res = await send(true);
    expect(res.status).toBe(201);
    expect(res.text).toContain('event: message_stop');
    expect(await lastRecord()).toMatchObject({ id: res.id, status: 201 });
  });

  it('refuses a streamed 204 (no body to carry the stream) with a 502 before anything goes out', async () => {
    script = () => ({ status: 204, body: '' });
    const res = await send(true);
    expect(res.status).toBe(502);
    expect(JSON.parse(res.text)).toMatchObject({ error: { message: 'upstream answered a stream request 204, without a body' } });
    expect(await lastRecord()).toMatchObject({ id: res.id, status: 502 });
  });

  it('refuses a stream request answered in another media type (JSON, text) with a 502 before anything goes out', async () => {
    for (const type of ['application/json', 'text/plain; charset=utf-8']) {
      script = () => ({
        headers: { 'content-type': type },
        body: JSON.stringify({ ...message([{ type: 'text', text: 'hi' }]), stop_reason: 'end_turn' }),
      });
      const res = await send(true);
      expect(res.status, type).toBe(502);
      expect(JSON.parse(res.text)).toMatchObject({ error: { message: expect.stringMatching(/not text\/event-stream$/) } });
      expect(await lastRecord()).toMatchObject({ id: res.id, status: 502 });
    }
  });

  it("never lets the upstream set Moat's own headers: the client's moat-request-id is its record's", async () => {
    for (const stream of [false, true]) {
      script = () =>
        stream
          ? {
              ...sse([['message_start', { type: 'message_start', message: message() }], ...textBlock, ...ending]),
              headers: { 'content-type': 'text/event-stream', 'moat-request-id': 'req_forged' },
            }
          : {
              body: JSON.stringify({ ...message([{ type: 'text', text: 'hi' }]), stop_reason: 'end_turn' }),
              headers: { 'moat-request-id': 'req_forged' },
            };
      const res = await send(stream);
      expect(res.status).toBe(200);
      expect(res.id).toMatch(/^req_[0-9a-f]{24}$/);
      expect((await lastRecord())?.id).toBe(res.id);
    }
  });
});

describe('a JSON answer goes out as the message the verifier read', () => {
  it('signs a thinking block whose type is written with an escape', async () => {
    script = () => ({
      body: JSON.stringify({ ...message(), stop_reason: 'end_turn' }).replace(
        '"content":[]',
        '"content":[{"type":"th\\u0069nking","thinking":"secret reasoning","signature":"UPSTREAM_SIG"},{"type":"text","text":"hi"}]',
      ),
    });
    const res = await send(false);
    expect(res.status).toBe(200);
    const answer = JSON.parse(res.text) as { content: Array<{ type: string; signature?: string }> };
    expect(answer.content[0]?.type).toBe('thinking');
    expect(answer.content[0]?.signature).toMatch(/^ms1\./);
    expect(res.text).not.toContain('UPSTREAM_SIG');
  });

  it('sends a block with a member written twice as it was read: no first-member reader sees a decoy', async () => {
    let decoys: readonly string[] = [];
    script = (names) => {
      decoys = names;
      return {
        body: JSON.stringify({ ...message(), stop_reason: 'tool_use' }).replace(
          '"content":[]',
          `"content":[{"type":"tool_use","id":"toolu_1","name":"${names[0]}","name":"get_weather","input":{"city":"Paris"}}]`,
        ),
      };
    };
    const res = await send(false);
    expect(res.status).toBe(200);
    for (const name of decoys) expect(res.text).not.toContain(name);
    expect((JSON.parse(res.text) as { content: Array<{ name?: string }> }).content[0]?.name).toBe('get_weather');
  });

  it('refuses an answer that decodes past the limit it reads whole: 502, recorded, not gigabytes', async () => {
    const json = JSON.stringify({ ...message([{ type: 'text', text: 'hi' }]), stop_reason: 'end_turn' });
    const bomb = gzipSync(Buffer.concat([Buffer.from(json.slice(0, -1)), Buffer.alloc(MAX_ANSWER_BYTES + 1, ' '), Buffer.from('}')]));
    expect(bomb.length).toBeLessThan(MAX_ANSWER_BYTES / 100);
    script = () => ({ headers: { 'content-encoding': 'gzip' }, body: bomb });
    const res = await send(false);
    expect(res.status).toBe(502);
    expect(JSON.parse(res.text)).toMatchObject({ error: { message: `upstream answer over the ${MAX_ANSWER_BYTES}-byte limit` } });
    expect(await lastRecord()).toMatchObject({ id: res.id, status: 502 });
  });
});

describe('after every hostile answer', () => {
  it('every upstream call gave its connection back', async () => {
    expect(await upstreamCallsLeft(base, environment.MOAT_VERIFIER_ADMIN_TOKEN as string)).toEqual([
      'moat_verifier_upstream_calls_active 0',
      'moat_verifier_upstream_calls_waiting 0',
    ]);
  });
});
