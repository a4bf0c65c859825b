/**
 * `@moat/client` against the verifier's pipeline embedded in the API server itself
 * (`createMoatHandler` in a hono app and in a plain node:http server, the model a function
 * in process): the genuine request moat-chat sends — entrypoint `cli`, anti-distillation on,
 * an `r1` stamp made below JavaScript, the `moat-chat` user agent — is checked as by the
 * verifier server: attested, bound, fingerprinted, decoys injected, thinking re-signed, allowed.
 */
import { createServer, type Server } from 'node:http';
import Anthropic from '@anthropic-ai/sdk';
import { serve } from '@hono/node-server';
import { devKeyFile } from '@moat/native/dev-key';
import { urlOf } from '@moat/test-kit/servers';
import { createMoatHandler, type MoatHandler, mockModel } from '@moat/verifier';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMoatFetch, type MoatFetch } from './index.js';

const SALT = 'embedded-client-salt';
let moat: MoatHandler;
let apiKey = '';
const bases: Record<'hono' | 'node', string> = { hono: '', node: '' };
const servers: Server[] = [];
const forwarded: string[] = [];
let moatFetch: MoatFetch;
const warnings: string[] = [];

async function listening(server: Server): Promise<string> {
  servers.push(server);
  return urlOf(server);
}

beforeAll(async () => {
  moat = await createMoatHandler({
    settings: {
      fingerprintSalt: SALT,
      serverSecret: 'ab'.repeat(32),
      signingSecret: 'cd'.repeat(32),
      attestationKeyFile: devKeyFile,
      database: ':memory:',
      userAgentProduct: 'moat-chat',
    },
    upstream: async (request) => {
      forwarded.push(await request.clone().text());
      return mockModel(request);
    },
    logLevel: 'silent',
  });
  apiKey = (await moat.storage.createApiKey('embedded')).key;
  const app = new Hono();
  app.all('/v1/*', (c) => moat.fetch(c.req.raw));
  app.get('/api/features/*', (c) => moat.fetch(c.req.raw));
  bases.hono = await listening(serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server);
  bases.node = await listening(createServer(moat.node).listen(0, '127.0.0.1'));
  moatFetch = createMoatFetch({
    salt: SALT,
    clientVersion: '1.4.2',
    entrypoint: 'cli',
    antiDistillation: true,
    userAgentProduct: 'moat-chat',
    onWarning: (m) => warnings.push(m),
  });
});
afterAll(async () => {
  await moatFetch.close();
  for (const s of servers) await new Promise((r) => s.close(r));
  await moat.close();
});

const last = async () => (await moat.storage.queryRecords({ limit: 1 }))[0];

for (const where of ['hono', 'node'] as const) {
  describe(`@moat/client against createMoatHandler in ${where === 'hono' ? 'a hono app' : 'a node:http server'}`, {
    timeout: 30_000,
  }, () => {
    it("moat-chat's request: attested, bound, fingerprinted, decoys in, thinking re-signed, allowed", async () => {
      const sdk = new Anthropic({ apiKey, baseURL: bases[where], fetch: moatFetch, maxRetries: 0 });
      const ask = {
        model: 'claude-opus-5-5',
        max_tokens: 256,
        thinking: { type: 'enabled' as const, budget_tokens: 1024 },
        messages: [{ role: 'user' as const, content: `Hello from ${where}` }],
      };
      const message = await sdk.messages.create(ask);
      expect(message.content.at(-1)).toEqual({ type: 'text', text: `Echo: Hello from ${where}` });
      expect(await last()).toMatchObject({
        attestation: 'valid',
        binding: 'request',
        fingerprint: 'match',
        verdict: 'allow',
        status: 200,
      });
      expect((await last())?.decoys).toBeGreaterThan(0);
      // The model call got decoy tools and none of Moat's tags.
      const body = JSON.parse(forwarded.at(-1) ?? '{}') as Record<string, unknown>;
      expect((body.tools as unknown[]).length).toBeGreaterThan(0);
      for (const member of ['moat_att', 'anti_distillation']) expect(body).not.toHaveProperty(member);

      const final = await sdk.messages.stream(ask).finalMessage();
      expect((final.content[0] as { signature: string }).signature).toMatch(/^ms1\./);
      expect(await last()).toMatchObject({ attestation: 'valid', binding: 'request', verdict: 'allow', status: 200 });
      // The next turn sends the re-signed thinking back: valid for this key and model.
      await sdk.messages.create({
        ...ask,
        messages: [...ask.messages, { role: 'assistant', content: final.content }, { role: 'user', content: 'Go on' }],
      });
      expect(await last()).toMatchObject({ thinking: 'valid', verdict: 'allow', status: 200 });
      expect(warnings).toEqual([]);
    });
  });
}
