/**
 * Both sides end to end over HTTP on 127.0.0.1: a client behind the three gates and a
 * server that verifies blocks sent back, injects decoys, answers decoy calls itself, and
 * signs the thinking it returns. The "model" is a small deterministic stand-in.
 */
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANTI_DISTILLATION_FEATURE, AntiDistillationGate, type HistoryEntry, keyIdentity, stripForeignSignedBlocks } from './client.js';
import { type Decoy, decoyPeriod, decoyResult, decoyTools, findDecoyCall } from './decoys.js';
import { BlockKeyring, invalidBlockError, signResponse, verifyRequestBlocks } from './signing.js';
import { CanaryIndex } from './trace.js';

const serverSecret = new Uint8Array(32).fill(0x42);
const keyring = new BlockKeyring([{ kid: 's1', alg: 'hs256', secret: new Uint8Array(32).fill(0x43) }], 's1');
const served = new Set<string>();
let server: Server;
let base = '';

/** The server's identity for an API key: a keyed hash, never the key. */
const serverKeyId = (apiKey: string) => `key_${createHmac('sha256', serverSecret).update(apiKey).digest('hex').slice(0, 12)}`;

type Msg = { role: string; content: unknown };
function model(body: { model: string; messages: Msg[]; tools?: Array<{ name: string }> }) {
  const last = body.messages.at(-1);
  const toolResult = Array.isArray(last?.content)
    ? (last.content as Array<{ type: string; content?: string }>).find((b) => b.type === 'tool_result')
    : undefined;
  const lastText = typeof last?.content === 'string' ? last.content : '';
  const thinking = { type: 'thinking', thinking: `Considering: ${lastText || 'tool output'}`, signature: 'upstream-signature' };
  if (toolResult === undefined && /check/i.test(lastText) && body.tools?.[0] !== undefined) {
    return {
      role: 'assistant',
      model: body.model,
      content: [thinking, { type: 'tool_use', id: 'toolu_1', name: body.tools[0].name, input: { region: 'eu-west-2' } }],
      stop_reason: 'tool_use',
    };
  }
  const used = body.messages
    .flatMap((m) => (Array.isArray(m.content) ? (m.content as Array<{ type: string; name?: string }>) : []))
    .find((b) => b.type === 'tool_use');
  const text = used ? `Checked with ${used.name}: ${toolResult?.content}` : `Answer to: ${lastText}`;
  return { role: 'assistant', model: body.model, content: [thinking, { type: 'text', text }], stop_reason: 'end_turn' };
}

beforeAll(async () => {
  server = createServer(async (req, res) => {
    if (req.url === '/api/features/moat') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ features: { [ANTI_DISTILLATION_FEATURE]: { defaultValue: true } } }));
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const apiKeyId = serverKeyId(String(req.headers['x-api-key']));
    const check = verifyRequestBlocks(body, apiKeyId, keyring);
    if (check.signal === 'invalid') {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify(invalidBlockError(check.failures[0] as never)));
      return;
    }
    let decoys: Decoy[] = [];
    const { anti_distillation: ask, ...forward } = body;
    if (Array.isArray(ask) && ask.includes('fake_tools')) {
      decoys = decoyTools({
        secret: serverSecret,
        apiKeyId,
        period: decoyPeriod(),
        avoid: (forward.tools ?? []).map((t: { name: string }) => t.name),
      });
      forward.tools = [...decoys.map((d) => d.tool), ...(forward.tools ?? [])];
      served.add(apiKeyId);
    }
    // The server answers decoy calls itself: they never reach the client's executor.
    let reply = model(forward);
    const messages = [...forward.messages];
    for (let i = 0; i < 3; i++) {
      const call = (reply.content as Array<{ type: string; id: string; name: string; input: unknown }>).find((b) => b.type === 'tool_use');
      if (call === undefined || findDecoyCall(call, decoys) === undefined) break;
      messages.push({ role: 'assistant', content: reply.content }, { role: 'user', content: [decoyResult(call, serverSecret)] });
      reply = model({ ...forward, messages });
    }
    const { response } = signResponse(reply, { apiKeyId, model: forward.model }, keyring);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(response));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

async function send(
  apiKey: string,
  body: unknown,
): Promise<{ status: number; json: { content?: Array<Record<string, unknown>>; error?: { message: string } } }> {
  const res = await fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as { content?: Array<Record<string, unknown>>; error?: { message: string } } };
}

describe('distill-guard end to end', () => {
  it('gated decoys, server-answered decoy calls, signed history, key switch and model fallback, tracing', async () => {
    const gate = await AntiDistillationGate.create({ compileTime: true, entrypoint: 'cli', remote: { apiHost: base, clientKey: 'moat' } });
    expect(gate.decision().enabled).toBe(true);

    // Turn 1: decoys injected server-side; the model calls one; the server answers it.
    const keyA = 'sk-test-aaaa';
    const history: HistoryEntry[] = [{ message: { role: 'user', content: 'Please check my quarterly numbers.' } }];
    const t1 = await send(keyA, gate.apply({ model: 'm1', max_tokens: 256, messages: history.map((h) => h.message) }));
    expect(t1.status).toBe(200);
    const content1 = t1.json.content ?? [];
    expect(content1.some((b) => b.type === 'tool_use')).toBe(false); // the decoy call never reached the client
    const text1 = String(content1.find((b) => b.type === 'text')?.text);
    expect(text1).toMatch(/^Checked with [a-z]+_[a-z]+_[a-z]+: \{"status":"ok"/);
    expect(String(content1[0]?.signature)).toMatch(/^ms1\.hs256\.s1\.k\./);
    history.push({ message: { role: 'assistant', content: content1 }, origin: { apiKeyId: keyIdentity(keyA), model: 'm1' } });
    history.push({ message: { role: 'user', content: 'Thanks, and the total?' } });

    // Turn 2, same key and model: the signed thinking goes back and verifies.
    const t2 = await send(
      keyA,
      gate.apply({
        model: 'm1',
        max_tokens: 256,
        messages: stripForeignSignedBlocks(history, { apiKeyId: keyIdentity(keyA), model: 'm1' }).messages,
      }),
    );
    expect(t2.status).toBe(200);

    // Key switch: a client that does not strip gets the signature error naming the block…
    const keyB = 'sk-test-bbbb';
    const naive = await send(keyB, { model: 'm1', max_tokens: 256, messages: history.map((h) => h.message) });
    expect(naive.status).toBe(400);
    expect(naive.json.error?.message).toMatch(/^messages\.1\.content\.0: Invalid `signature` in `thinking` block/);
    // …the genuine client strips the other key's blocks and goes on.
    const switched = stripForeignSignedBlocks(history, { apiKeyId: keyIdentity(keyB), model: 'm1' });
    expect(switched.stripped).toBe(1);
    expect((await send(keyB, { model: 'm1', max_tokens: 256, messages: switched.messages })).status).toBe(200);

    // Model fallback on the same key: same story.
    expect((await send(keyA, { model: 'm2', max_tokens: 256, messages: history.map((h) => h.message) })).status).toBe(400);
    const fallback = stripForeignSignedBlocks(history, { apiKeyId: keyIdentity(keyA), model: 'm2' });
    expect((await send(keyA, { model: 'm2', max_tokens: 256, messages: fallback.messages })).status).toBe(200);

    // A distiller recorded the traffic: tracing names key A from its transcript.
    const others = Array.from({ length: 999 }, (_, i) => serverKeyId(`sk-other-${i}`));
    const index = new CanaryIndex({ secret: serverSecret, keys: [...others, ...served], periods: [decoyPeriod()] });
    const transcript = JSON.stringify([t1.json, t2.json]);
    const found = index.trace(transcript);
    expect(found[0]?.apiKeyId).toBe(serverKeyId(keyA));
    expect(index.trace(JSON.stringify(history.filter((h) => h.message.role === 'user')))).toEqual([]);
  });
});
