/**
 * Requests sent one behind another on one connection (HTTP/1.1 pipelining, HTTP/1.0
 * keep-alive), over a raw socket, against a verifier in front of an upstream that counts what
 * reaches it: each request is handled once the answer before it ended, so none is forwarded
 * whose answer could not go out, and every record says what the client got.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { createVerifier, type Verifier } from './server.js';

let upstream: Server;
let verifier: Verifier;
let port = 0;
let apiKey = '';
/** The Messages requests the upstream received, by the prompt they carried. */
const reached: string[] = [];

function answer(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { stream?: boolean; messages: Array<{ content: string }> };
    const prompt = body.messages.at(-1)?.content ?? '';
    reached.push(prompt);
    const message = {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'claude-mock',
      content: [{ type: 'text', text: `Echo: ${prompt}` }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 1, output_tokens: 1 },
    };
    if (body.stream !== true) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(message));
      return;
    }
    const event = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end(
      event('message_start', { type: 'message_start', message: { ...message, content: [], stop_reason: null } }) +
        event('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }) +
        event('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'hi' } }) +
        event('content_block_stop', { type: 'content_block_stop', index: 0 }) +
        event('message_delta', {
          type: 'message_delta',
          delta: { stop_reason: 'end_turn', stop_sequence: null },
          usage: { output_tokens: 1 },
        }) +
        event('message_stop', { type: 'message_stop' }),
    );
  });
}

beforeAll(async () => {
  upstream = createServer(answer).listen(0, '127.0.0.1');
  await new Promise((r) => upstream.once('listening', r));
  verifier = await createVerifier(
    loadConfig({ ...devEnvironment(), MOAT_VERIFIER_UPSTREAM: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }),
    { logLevel: 'silent' },
  );
  port = Number(new URL(await verifier.listen()).port);
  apiKey = (await verifier.storage.createApiKey('pipelining')).key;
});
afterAll(async () => {
  await verifier.close();
  upstream.close();
});

/** A Messages request as raw bytes, in HTTP/`version`. */
function messages(version: '1.0' | '1.1', prompt: string, stream = false): string {
  const body = JSON.stringify({ model: 'claude-mock', max_tokens: 16, stream, messages: [{ role: 'user', content: prompt }] });
  return (
    `POST /v1/messages HTTP/${version}\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\nx-api-key: ${apiKey}\r\n` +
    `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

/**
 * Writes `bytes` at once on a new connection and reads until the verifier closes it (or `ms`
 * pass); `halfClose` ends the sending side after them (a FIN, as `nc -N` sends).
 */
function exchange(bytes: string, ms = 5_000, halfClose = false): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => (halfClose ? socket.end(bytes) : socket.write(bytes)));
    let out = '';
    const timer = setTimeout(() => socket.destroy(), ms);
    socket.on('data', (d) => {
      out += d;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    socket.on('error', () => {});
  });
}

const statusLines = (text: string) => text.match(/HTTP\/1\.[01] \d{3}/g) ?? [];
const idsIn = (text: string) => [...text.matchAll(/^moat-request-id: (\S+)/gim)].map((m) => m[1]);

/** The records of `ids`, once each has its status. */
async function recordsOf(ids: readonly string[]): Promise<Array<{ id: string; status: number | null }>> {
  for (let i = 0; i < 300; i++) {
    const records = (await verifier.storage.queryRecords({ limit: 50 })).filter((r) => ids.includes(r.id));
    if (records.length === ids.length && records.every((r) => r.status !== null)) return records;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`expected records for ${ids.join(', ')}`);
}

describe('requests one behind another on one connection', { timeout: 30_000 }, () => {
  it('HTTP/1.1 pipelining: each is answered, in order, forwarded once, and recorded 200', async () => {
    reached.length = 0;
    const out = await exchange(
      messages('1.1', 'first') + messages('1.1', 'second') + messages('1.1', 'third').replace('keep-alive', 'close'),
    );
    expect(statusLines(out)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 200']);
    expect(out.indexOf('Echo: first')).toBeLessThan(out.indexOf('Echo: second'));
    expect(out.indexOf('Echo: second')).toBeLessThan(out.indexOf('Echo: third'));
    expect(reached).toEqual(['first', 'second', 'third']);
    const ids = idsIn(out);
    expect(ids).toHaveLength(3);
    expect((await recordsOf(ids as string[])).map((r) => r.status)).toEqual([200, 200, 200]);
  });

  it('HTTP/1.0: a request behind an answer that closes the connection is never forwarded, and recorded 499', async () => {
    reached.length = 0;
    const before = (await verifier.storage.summary()).total;
    // A stream has no length: over HTTP/1.0 its end is the connection's, so the request behind it has no way back.
    const out = await exchange(messages('1.0', 'streamed', true) + messages('1.0', 'behind'));
    expect(statusLines(out)).toEqual(['HTTP/1.1 200']);
    expect(out).toContain('event: message_stop');
    for (let i = 0; i < 300 && (await verifier.storage.summary()).total < before + 2; i++) await new Promise((r) => setTimeout(r, 10));
    const records = await verifier.storage.queryRecords({ limit: 2 });
    expect(records.map((r) => r.status).sort()).toEqual([200, 499]);
    expect(records.find((r) => r.status === 499)?.reasons).toContain('client_disconnected');
    expect(reached).toEqual(['streamed']);
  });

  it('a client that half-closes once its request is sent is taken as gone: no answer, recorded 499, as nginx does', async () => {
    const before = (await verifier.storage.summary()).total;
    const out = await exchange(messages('1.1', 'half closed'), 5_000, true);
    expect(statusLines(out)).toEqual([]);
    for (let i = 0; i < 300 && (await verifier.storage.summary()).total < before + 1; i++) await new Promise((r) => setTimeout(r, 10));
    const [record] = await verifier.storage.queryRecords({ limit: 1 });
    expect(record?.status).toBe(499);
    expect(record?.reasons).toContain('client_disconnected');
  });

  it('bytes that do not parse behind a request: its answer goes out first, then the 400, both recorded', async () => {
    reached.length = 0;
    const out = await exchange(`${messages('1.1', 'before garbage')}GARBAGE\r\n\r\n`);
    expect(statusLines(out)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 400']);
    expect(out.indexOf('Echo: before garbage')).toBeLessThan(out.indexOf('HTTP/1.1 400'));
    const ids = idsIn(out);
    // The 400 is recorded too, before it goes out.
    expect(ids).toHaveLength(2);
    const statusOf = new Map((await recordsOf(ids as string[])).map((r) => [r.id, r.status]));
    expect((ids as string[]).map((id) => statusOf.get(id))).toEqual([200, 400]);
    expect(reached).toEqual(['before garbage']);
  });
});
