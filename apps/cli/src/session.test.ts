import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunked, formatStreamEvent, type MessagesResponse, streamEventsOf } from '@moat/protocol/messages';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChatError, ChatSession, deploymentSettings } from './session.js';

const toolInput = { path: '/srv/räksmörgås.txt', range: [1, 20], options: { follow: true, note: 'a "quoted" } brace' } };
const answer: MessagesResponse = {
  id: 'msg_split',
  type: 'message',
  role: 'assistant',
  model: 'claude-test',
  content: [
    { type: 'text', text: 'Reading the file.' },
    { type: 'tool_use', id: 'toolu_01', name: 'read_file', input: toolInput },
  ],
  stop_reason: 'tool_use',
  stop_sequence: null,
  usage: { input_tokens: 10, output_tokens: 20 },
};

let server: Server;
let base = '';
let streamed: (message: MessagesResponse) => string = () => '';

beforeAll(async () => {
  // An upstream nobody here wrote would split tool input anywhere: this one splits every string into one-character deltas.
  server = createServer((req, res) => {
    req.resume();
    if (req.url !== '/v1/messages') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end(streamed(answer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

async function session(): Promise<ChatSession> {
  return ChatSession.start({
    baseUrl: base,
    apiKey: 'sk-test',
    model: 'claude-test',
    antiDistillation: false,
    thinking: false,
    warn: () => {},
  });
}

describe('ChatSession', { timeout: 20_000 }, () => {
  it('joins a tool call whose input arrives in one-character deltas', async () => {
    streamed = (m) => [...streamEventsOf(m, chunked(1))].map(formatStreamEvent).join('');
    const chat = await session();
    let shown = '';
    const turn = await chat.send('read it', (t) => {
      shown += t;
    });
    expect(shown).toBe('Reading the file.');
    expect(turn.content).toEqual(answer.content);
    await chat.close();
  });

  it('reports a stream that ends in an error event as a ChatError', async () => {
    streamed = () =>
      formatStreamEvent({ event: 'message_start', data: { type: 'message_start', message: { ...answer, content: [] } } }) +
      formatStreamEvent({ event: 'error', data: { type: 'error', error: { type: 'overloaded_error', message: 'busy' } } });
    const chat = await session();
    await expect(chat.send('again', () => {})).rejects.toMatchObject({
      name: 'ChatError',
      code: 'ERR_STREAM',
    } satisfies Partial<ChatError>);
    expect(chat.history).toEqual([]);
    await chat.close();
  });
});

describe('deployment settings', () => {
  it('come from the provisioned client settings when MOAT_CLIENT_SETTINGS names them', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-chat-settings-')), 'moat.client.json');
    writeFileSync(
      file,
      JSON.stringify({ userAgentProduct: 'acme-chat', salt: 'pepper', attestationKid: 'k1', attestationKey: 'ab'.repeat(32) }),
    );
    const before = process.env.MOAT_CLIENT_SETTINGS;
    process.env.MOAT_CLIENT_SETTINGS = file;
    try {
      expect(deploymentSettings()).toEqual({ salt: 'pepper', userAgentProduct: 'acme-chat' });
    } finally {
      if (before === undefined) delete process.env.MOAT_CLIENT_SETTINGS;
      else process.env.MOAT_CLIENT_SETTINGS = before;
    }
  });
});
