/**
 * The embedded mock bounds what it echoes: a huge tool name or block type is refused 400 in
 * the API's shape, through a running verifier, with a message of bounded size.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { createVerifier, type Verifier } from './server.js';

let verifier: Verifier;
let base = '';
let apiKey = '';

beforeAll(async () => {
  verifier = await createVerifier(loadConfig(devEnvironment()), { logLevel: 'silent' });
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('mock-bounds')).key;
});
afterAll(async () => {
  await verifier.close();
});

async function send(body: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
    body: JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

describe('the embedded mock bounds what it echoes', () => {
  it('refuses a 70 KB tool name 400, naming the member, without echoing it', async () => {
    const name = 'x'.repeat(70_000);
    const r = await send({
      model: 'claude-mock',
      max_tokens: 16,
      tools: [{ name, input_schema: { type: 'object' } }],
      messages: [{ role: 'user', content: `please use ${name}` }],
    });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.text).error).toMatchObject({ type: 'invalid_request_error', message: expect.stringMatching(/^tools\.0\.name: /) });
    expect(r.text.length).toBeLessThan(1_024);
  });

  it('refuses a 5 MB block type 400 and quotes 100 characters of it', async () => {
    const r = await send({
      model: 'claude-mock',
      max_tokens: 16,
      messages: [{ role: 'user', content: [{ type: 'y'.repeat(5 * 1024 * 1024) }] }],
    });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.text).error.message).toMatch(/^messages\.0\.content\.0\.type: Input tag "y{100}…" does not match/);
    expect(r.text.length).toBeLessThan(1_024);
  });
});
