/**
 * `@moat/client` with the SDKs people use, against a real verifier (embedded mock upstream,
 * the native development key): the official `@anthropic-ai/sdk` (create, stream, tools,
 * thinking across turns, a key switch, a model fallback) and the Vercel AI SDK
 * (`@ai-sdk/anthropic` with `ai`'s generateText and streamText).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAnthropic } from '@ai-sdk/anthropic';
import Anthropic from '@anthropic-ai/sdk';
import { devKeyFile } from '@moat/native/dev-key';
import { runReadmeExampleAsync } from '@moat/test-kit/readme-example';
import { createVerifier, devEnvironment, loadConfig, type Verifier } from '@moat/verifier';
import { generateText, streamText } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMoatFetch, type MoatFetch } from './index.js';

const SALT = 'client-test-salt';
let verifier: Verifier;
let base = '';
let keyA = '';
let keyB = '';
let moatFetch: MoatFetch;
const warnings: string[] = [];

beforeAll(async () => {
  verifier = await createVerifier(
    loadConfig({ ...devEnvironment({ salt: SALT, attestationKeyFile: devKeyFile }), MOAT_VERIFIER_UA_PRODUCT: 'moat-client' }),
    { logLevel: 'silent' },
  );
  base = await verifier.listen();
  keyA = (await verifier.storage.createApiKey('client-a')).key;
  keyB = (await verifier.storage.createApiKey('client-b')).key;
  moatFetch = createMoatFetch({ salt: SALT, clientVersion: '2.0.0', onWarning: (m) => warnings.push(m) });
});
afterAll(async () => {
  await moatFetch.close();
  await verifier.close();
});

const last = async () => (await verifier.storage.queryRecords({ limit: 1 }))[0];
const sdk = (apiKey: string) => new Anthropic({ apiKey, baseURL: base, fetch: moatFetch, maxRetries: 0 });

describe('@moat/client with @anthropic-ai/sdk', { timeout: 30_000 }, () => {
  it('create and stream: tagged, fingerprinted, attested below JavaScript, allowed', async () => {
    const message = await sdk(keyA).messages.create({
      model: 'claude-opus-5-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Hello through Moat' }],
    });
    expect(message.content).toEqual([{ type: 'text', text: 'Echo: Hello through Moat' }]);
    expect(await last()).toMatchObject({ attestation: 'valid', fingerprint: 'match', verdict: 'allow', status: 200 });
    const final = await sdk(keyA)
      .messages.stream({ model: 'claude-opus-5-5', max_tokens: 64, messages: [{ role: 'user', content: 'And streamed' }] })
      .finalMessage();
    expect(final.content).toEqual([{ type: 'text', text: 'Echo: And streamed' }]);
    expect(await last()).toMatchObject({ attestation: 'valid', fingerprint: 'match', verdict: 'allow' });
    expect(warnings).toEqual([]);
  });

  it('tools: a tool call and its result across two turns', async () => {
    const tools = [
      {
        name: 'lookup_invoice',
        description: 'Find an invoice',
        input_schema: { type: 'object' as const, properties: { id: { type: 'string' } } },
      },
    ];
    const first = await sdk(keyA).messages.create({
      model: 'claude-opus-5-5',
      max_tokens: 64,
      tools,
      messages: [{ role: 'user', content: 'check invoice 42 with lookup_invoice' }],
    });
    const call = first.content.find((b) => b.type === 'tool_use');
    expect(call).toMatchObject({ type: 'tool_use', name: 'lookup_invoice' });
    const second = await sdk(keyA).messages.create({
      model: 'claude-opus-5-5',
      max_tokens: 64,
      tools,
      messages: [
        { role: 'user', content: 'check invoice 42 with lookup_invoice' },
        { role: 'assistant', content: first.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: (call as { id: string }).id, content: 'paid' }] },
      ],
    });
    expect(second.content[0]).toMatchObject({ type: 'text', text: 'Checked with lookup_invoice: paid' });
    expect(await last()).toMatchObject({ verdict: 'allow' });
  });

  it('thinking across turns stays valid; after a key switch or a model fallback the foreign thinking is dropped, not refused', async () => {
    const ask = { max_tokens: 256, thinking: { type: 'enabled' as const, budget_tokens: 1024 } };
    const turn1 = await sdk(keyA).messages.create({
      ...ask,
      model: 'claude-opus-5-5',
      messages: [{ role: 'user', content: 'Think about primes' }],
    });
    expect(turn1.content[0]).toMatchObject({ type: 'thinking' });
    const history = (next: string) => [
      { role: 'user' as const, content: 'Think about primes' },
      { role: 'assistant' as const, content: turn1.content },
      { role: 'user' as const, content: next },
    ];
    await sdk(keyA).messages.create({ ...ask, model: 'claude-opus-5-5', messages: history('Go on') });
    expect(await last()).toMatchObject({ thinking: 'valid', verdict: 'allow', status: 200 });
    // Another API key (a login switch): the verifier would refuse A's thinking under B with 400.
    const switched = await sdk(keyB).messages.create({ ...ask, model: 'claude-opus-5-5', messages: history('Same question, new login') });
    expect(switched.content.at(-1)).toMatchObject({ type: 'text' });
    expect(await last()).toMatchObject({ thinking: 'none', status: 200 });
    // Another model (a fallback): the same.
    await sdk(keyA).messages.create({ ...ask, model: 'claude-sonnet-5-5', messages: history('On the fallback model') });
    expect(await last()).toMatchObject({ thinking: 'none', status: 200 });
  });
});

describe('@moat/client with Message Batches', { timeout: 30_000 }, () => {
  it('stamps a batch create as a whole and tags each item, so the verifier checks every one', async () => {
    const batch = await sdk(keyA).messages.batches.create({
      requests: [
        { custom_id: 'one', params: { model: 'claude-opus-5-5', max_tokens: 16, messages: [{ role: 'user', content: 'First item' }] } },
        { custom_id: 'two', params: { model: 'claude-opus-5-5', max_tokens: 16, messages: [{ role: 'user', content: 'Second item' }] } },
      ],
    });
    expect(batch.id).toMatch(/^msgbatch_/);
    const records = await verifier.storage.queryRecords({ limit: 3 });
    expect(records).toHaveLength(3);
    expect(records.every((r) => r.attestation === 'valid' && r.verdict === 'allow' && r.status === 200)).toBe(true);
    expect(records.filter((r) => r.fingerprint === 'match')).toHaveLength(2);
    // The batch's record says what its one stamp was, as its items' records do.
    expect(new Set(records.map((r) => JSON.stringify([r.binding, r.install, r.installId])))).toEqual(
      new Set([JSON.stringify([records[1]?.binding, records[1]?.install, records[1]?.installId])]),
    );
    expect(records[0]?.binding).not.toBe('none');
    const results = [];
    for await (const line of await sdk(keyA).messages.batches.results(batch.id)) results.push(line);
    expect(results.map((r) => r.custom_id).sort()).toEqual(['one', 'two']);
  });

  it("a result's thinking, sent back under another model, is dropped as an answer's is, not refused", async () => {
    const ask = { max_tokens: 256, thinking: { type: 'enabled' as const, budget_tokens: 1024 } };
    const batch = await sdk(keyA).messages.batches.create({
      requests: [
        { custom_id: 'think', params: { ...ask, model: 'claude-opus-5-5', messages: [{ role: 'user', content: 'Think in a batch' }] } },
      ],
    });
    let content: Anthropic.ContentBlock[] = [];
    for await (const line of await sdk(keyA).messages.batches.results(batch.id))
      if (line.result.type === 'succeeded') content = line.result.message.content;
    expect(content[0]).toMatchObject({ type: 'thinking' });
    // The results were read in the background: give that read its turn.
    await new Promise((r) => setTimeout(r, 50));
    const history = [
      { role: 'user' as const, content: 'Think in a batch' },
      { role: 'assistant' as const, content },
      { role: 'user' as const, content: 'On the fallback model' },
    ];
    const answer = await sdk(keyA).messages.create({ ...ask, model: 'claude-sonnet-5-5', messages: history });
    expect(answer.content.at(-1)).toMatchObject({ type: 'text' });
    expect(await last()).toMatchObject({ thinking: 'none', status: 200 });
    // Under its own model it stays and is valid.
    await sdk(keyA).messages.create({ ...ask, model: 'claude-opus-5-5', messages: history });
    expect(await last()).toMatchObject({ thinking: 'valid', status: 200 });
  });
});

describe('@moat/client with the Vercel AI SDK', { timeout: 30_000 }, () => {
  it('generateText and streamText through @ai-sdk/anthropic', async () => {
    const anthropic = createAnthropic({ apiKey: keyA, baseURL: `${base}/v1`, fetch: moatFetch });
    const { text } = await generateText({ model: anthropic('claude-opus-5-5'), prompt: 'Hello from the AI SDK', maxOutputTokens: 64 });
    expect(text).toBe('Echo: Hello from the AI SDK');
    expect(await last()).toMatchObject({ attestation: 'valid', fingerprint: 'match', verdict: 'allow' });
    const streamed = streamText({ model: anthropic('claude-opus-5-5'), prompt: 'Streaming from the AI SDK', maxOutputTokens: 64 });
    let out = '';
    for await (const part of streamed.textStream) out += part;
    expect(out).toBe('Echo: Streaming from the AI SDK');
  });
});

describe('@moat/client fails open', { timeout: 30_000 }, () => {
  it('an endpoint without Moat gets the request untouched, and the answer comes back', async () => {
    const received: string[] = [];
    const plainApi = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url !== '/v1/messages') return res.writeHead(404).end();
        received.push(Buffer.concat(chunks).toString('utf8'));
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            id: 'msg_p',
            type: 'message',
            role: 'assistant',
            model: 'm',
            content: [{ type: 'text', text: 'plain' }],
            stop_reason: 'end_turn',
            stop_sequence: null,
            usage: { input_tokens: 1, output_tokens: 1 },
          }),
        );
      });
    });
    await new Promise<void>((r) => plainApi.listen(0, '127.0.0.1', r));
    const plain = createMoatFetch({ salt: SALT, clientVersion: '2.0.0', onWarning: () => {} });
    try {
      const client = new Anthropic({
        apiKey: 'sk-plain',
        baseURL: `http://127.0.0.1:${(plainApi.address() as AddressInfo).port}`,
        fetch: plain,
        maxRetries: 0,
      });
      const message = await client.messages.create({ model: 'm', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
      expect(message.content).toEqual([{ type: 'text', text: 'plain' }]);
      expect(JSON.parse(received[0] as string)).toEqual({ model: 'm', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
    } finally {
      await plain.close();
      plainApi.close();
    }
  });

  it('runs its README example (five lines) against the verifier', async () => {
    const env = { ...process.env, ANTHROPIC_BASE_URL: base, ANTHROPIC_API_KEY: keyA, MOAT_SALT: SALT };
    expect((await runReadmeExampleAsync(new URL('../', import.meta.url), env)).at(-1)).toBe('Echo: Hello');
    expect(await last()).toMatchObject({ attestation: 'valid', fingerprint: 'match' });
  });
});
