/**
 * The verifier in front of a real upstream over HTTP on 127.0.0.1: an Anthropic-compatible
 * server (the mock model behind node:http, streaming with events split across writes) that
 * checks the verifier's own upstream key. JSON, SSE, signatures that go back upstream,
 * decoy calls answered in a stream, and upstream errors before and during a stream.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { AntiDistillationGate } from '@moat/distill-guard/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import type { ApiError } from './errors.js';
import { mockEvents, mockMessages } from './mock-upstream.js';
import { createVerifier, type Verifier } from './server.js';
import { streamed } from './streamed.test-util.js';

const upstreamKey = `sk-upstream-${randomBytes(8).toString('hex')}`;
const received: Array<{ key: unknown; version: unknown; body: Record<string, unknown> }> = [];
let upstream: Server;
let verifier: Verifier;
let base = '';
let apiKey = '';

beforeAll(async () => {
  upstream = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    received.push({ key: req.headers['x-api-key'], version: req.headers['anthropic-version'], body });
    const fail = (status: number, type: string, message: string) =>
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ type: 'error', error: { type, message } }));
    if (req.url !== '/v1/messages') return fail(404, 'not_found_error', 'no such route');
    if (req.headers['x-api-key'] !== upstreamKey) return fail(401, 'authentication_error', 'invalid x-api-key');
    let response: ReturnType<typeof mockMessages>;
    try {
      response = mockMessages(body);
    } catch (error) {
      const e = error as ApiError;
      return fail(e.status, e.type, e.detail);
    }
    if (body.stream !== true) return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(response));
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    if (String(body.model).includes('onewrite')) {
      // The whole stream in one write, as a model that buffers its output sends it.
      res.end([...mockEvents(response)].map((ev) => `event: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`).join(''));
      return;
    }
    for (const ev of mockEvents(response)) {
      const text = `event: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`;
      // Split every event across two writes: the verifier must reassemble them.
      res.write(text.slice(0, 7));
      await new Promise((r) => setImmediate(r));
      res.write(text.slice(7));
      if (ev.event === 'message_start' && String(body.model).includes('midstream')) {
        res.end('event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n');
        return;
      }
    }
    res.end();
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  verifier = await createVerifier(
    loadConfig({
      ...devEnvironment(),
      MOAT_VERIFIER_UPSTREAM: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      MOAT_VERIFIER_UPSTREAM_KEY: upstreamKey,
    }),
    { logLevel: 'silent' },
  );
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('upstream-test')).key;
});
afterAll(async () => {
  await verifier.close();
  await new Promise<void>((r) => upstream.close(() => r()));
});

const post = (body: unknown) =>
  fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey, 'anthropic-version': '2023-06-01' },
    body: JSON.stringify(body),
  });
const ask = (text: string, extra: Record<string, unknown> = {}) => ({
  model: 'claude-mock',
  max_tokens: 128,
  thinking: { type: 'enabled', budget_tokens: 1024 },
  messages: [{ role: 'user', content: text }],
  ...extra,
});

describe('moat-verifier in front of an upstream over HTTP', () => {
  it('forwards JSON with its own upstream key and none of Moat, and signs the thinking it returns', async () => {
    const res = await post(ask('Hello over the wire'));
    expect(res.status).toBe(200);
    const json = (await res.json()) as { content: Array<{ type: string; text?: string; signature?: string }> };
    expect(json.content[0]?.signature).toMatch(/^ms1\./);
    expect(json.content[1]).toEqual({ type: 'text', text: 'Echo: Hello over the wire' });
    const sent = received.at(-1);
    expect(sent?.key).toBe(upstreamKey);
    expect(sent?.version).toBe('2023-06-01');
  });

  it('streams, and a streamed thinking block goes back upstream with the upstream signature', async () => {
    const first = await streamed(await post(ask('Stream over the wire', { stream: true })));
    expect(first.events.at(-1)?.event).toBe('message_stop');
    expect(first.content[0]?.signature).toMatch(/^ms1\./);
    expect(first.content[1]?.text).toBe('Echo: Stream over the wire');
    const messages = [
      { role: 'user', content: 'Stream over the wire' },
      { role: 'assistant', content: first.content },
      { role: 'user', content: 'And again?' },
    ];
    const second = await post(ask('Stream over the wire', { messages, stream: true }));
    expect(second.status).toBe(200);
    expect((await streamed(second)).content[1]?.text).toBe('Echo: And again?');
    const messages2 = received.at(-1)?.body.messages as Array<{ content: Array<{ signature?: string }> }> | undefined;
    const back = messages2?.[1]?.content[0];
    expect(back?.signature).toMatch(/^mock-/);
  });

  it('answers a streamed decoy call itself, continuing upstream over HTTP', async () => {
    const gate = await AntiDistillationGate.create({ compileTime: true, entrypoint: 'cli', remote: { apiHost: base, clientKey: 'moat' } });
    const before = received.length;
    // Decoys go to the cli entry point only: the request says it is one (attribution block, ep=cli).
    const tagged = tagFingerprint(ask('Please check the ledger', { stream: true }), {
      salt: 'moat-dev-salt',
      version: '1.4.2',
      entrypoint: 'cli',
    });
    const { events, content } = await streamed(await post(gate.apply(tagged.request)));
    expect(received.length).toBe(before + 2);
    const tools = received[before]?.body.tools as Array<{ name: string }> | undefined;
    const decoy = tools?.[0]?.name as string;
    expect(JSON.stringify(events)).not.toContain('"tool_use"');
    expect(content.map((b) => b.type)).toEqual(['thinking', 'thinking', 'text']);
    expect(content[2]?.text).toMatch(new RegExp(`^Checked with ${decoy}: `));
    const continued = received.at(-1)?.body.messages as Array<{ role: string; content: Array<{ type: string }> }>;
    expect(continued.at(-1)?.content[0]?.type).toBe('tool_result');
  });

  it('passes upstream errors on: before the stream as the API error, during it as an SSE error event', async () => {
    const overloaded = await post(ask('Busy?', { model: 'claude-mock-overloaded' }));
    expect(overloaded.status).toBe(529);
    expect(((await overloaded.json()) as { error: { type: string } }).error.type).toBe('overloaded_error');
    const midstream = await streamed(await post(ask('Busy later?', { model: 'claude-mock-midstream', stream: true })));
    expect(midstream.events.map((e) => e.event)).toEqual(['message_start', 'error']);
    expect(midstream.events[1]?.data).toEqual({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
    expect((await verifier.storage.queryRecords({ limit: 1 }))[0]).toMatchObject({ model: 'claude-mock-midstream', status: 529 });
  });
});

describe('the embedded mock', () => {
  const tools = [{ name: 'Read' }, { name: 'lookup_invoice' }].map((t) => ({ ...t, input_schema: { type: 'object' } }));
  const ask = (content: unknown) =>
    mockMessages({ model: 'claude-sonnet-4-5', max_tokens: 64, tools, messages: [{ role: 'user', content }] });
  it('calls a tool the user names, as a word of its own', () => {
    expect(ask('please run lookup_invoice for 42').content[0]).toMatchObject({ type: 'tool_use', name: 'lookup_invoice' });
    expect(ask('Read the file').content[0]).toMatchObject({ type: 'tool_use', name: 'Read' });
    expect(ask('see the Readme').content[0]).toMatchObject({ type: 'text', text: 'Echo: see the Readme' });
  });
  it('reads past the system reminders a client adds to the turn (tool lists, agent types)', () => {
    const reminder = '<system-reminder>Use the Read tool or lookup_invoice; available agent types…</system-reminder>';
    expect(
      ask([
        { type: 'text', text: reminder },
        { type: 'text', text: 'Say hello' },
      ]).content[0],
    ).toMatchObject({
      type: 'text',
      text: 'Echo: Say hello',
    });
    expect(ask(`${reminder}\nSay hello`).content[0]).toMatchObject({ type: 'text', text: 'Echo: Say hello' });
  });
});

/** The data chunks of a chunked HTTP/1.1 answer, read off the socket (each is one write of the server's). */
function chunksOf(raw: Buffer): Buffer[] {
  const text = raw.toString('latin1');
  let at = text.indexOf('\r\n\r\n') + 4;
  const out: Buffer[] = [];
  for (;;) {
    const eol = text.indexOf('\r\n', at);
    const size = Number.parseInt(text.slice(at, eol), 16);
    if (!(size > 0)) return out;
    out.push(raw.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

describe('events that arrive together', () => {
  it('leave together: a stream the upstream sent in one write reaches the client in one write, not one per event', async () => {
    const body = JSON.stringify(ask('Many deltas in one go, '.repeat(8), { model: 'claude-mock-onewrite', stream: true }));
    const { port } = new URL(base);
    const socket = connect(Number(port), '127.0.0.1');
    // Written, not ended: a client that half-closes is one that went away. `connection: close` ends the answer.
    socket.write(
      `POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\n` +
        `x-api-key: ${apiKey}\r\nanthropic-version: 2023-06-01\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    const parts: Buffer[] = [];
    for await (const part of socket) parts.push(part as Buffer);
    const raw = Buffer.concat(parts);
    expect(raw.toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
    expect(raw.toString('latin1')).toMatch(/transfer-encoding: chunked/i);
    const chunks = chunksOf(raw);
    const events = Buffer.concat(chunks)
      .toString('utf8')
      .split('\n\n')
      .filter((e) => e !== '');
    expect(events.length).toBeGreaterThan(20);
    expect(events.at(-1)).toMatch(/^event: message_stop\n/);
    // One write for the batch (message_stop with it, after the record): at most a few if the
    // upstream's write reached the verifier in pieces, never one per event.
    expect(chunks.length).toBeLessThanOrEqual(3);
  });
});
