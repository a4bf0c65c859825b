/**
 * The Files API through the verifier with the real `@anthropic-ai/sdk` (`client.beta.files`),
 * against an upstream that keeps files in one account as Anthropic's does: a key sees, reads,
 * downloads, deletes and names in Messages and batch requests only the files it uploaded
 * through the verifier; another key's file, or one uploaded around the verifier, is 404.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Anthropic, { toFile } from '@anthropic-ai/sdk';
import { decoyPeriod, decoyTools } from '@moat/distill-guard/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig, type VerifierConfig } from './config.js';
import { handleMockRequest } from './mock-upstream.js';
import { encryptedPdfOf, pdfOf } from './pdf.test-util.js';
import { routeTable } from './routes/table.js';
import { createVerifier, type Verifier } from './server.js';

/** The files of the one upstream account, by id: metadata and bytes. */
const account = new Map<string, { meta: Record<string, unknown>; bytes: Buffer }>();
let upstream: Server;
let verifier: Verifier;
let config: VerifierConfig;
let base = '';
let upstreamUrl = '';
const keys = { alice: '', bob: '' };
const ids = { alice: '', bob: '' };

async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

beforeAll(async () => {
  upstream = createServer(async (req, res) => {
    const path = (req.url ?? '').split('?')[0] as string;
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (!path.startsWith('/v1/files')) return handleMockRequest(req, res);
    const [, , , id, content] = path.split('/');
    if (req.method === 'POST' && id === undefined) {
      const raw = await bodyOf(req);
      const filename = /filename="([^"]+)"/.exec(raw.toString('latin1'))?.[1] ?? 'upload';
      const fileId = `file_${randomUUID().replaceAll('-', '')}`;
      const meta = {
        id: fileId,
        type: 'file',
        filename,
        mime_type: 'text/plain',
        size_bytes: raw.length,
        created_at: new Date().toISOString(),
        downloadable: true,
      };
      account.set(fileId, { meta, bytes: raw });
      return json(200, meta);
    }
    req.resume();
    if (req.method === 'GET' && id === undefined) {
      const data = [...account.values()].map((f) => f.meta);
      return json(200, { data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: false });
    }
    const file = account.get(id as string);
    if (file === undefined) return json(404, { type: 'error', error: { type: 'not_found_error', message: 'File not found' } });
    if (req.method === 'DELETE') {
      account.delete(id as string);
      return json(200, { id, type: 'file_deleted' });
    }
    if (content === 'content') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      return res.end(file.bytes);
    }
    return json(200, file.meta);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  config = loadConfig({ ...devEnvironment(), MOAT_VERIFIER_UPSTREAM: upstreamUrl, MOAT_VERIFIER_UPSTREAM_KEY: 'sk-upstream' });
  verifier = await createVerifier(config, {
    logLevel: 'silent',
  });
  base = await verifier.listen();
  keys.alice = (await verifier.storage.createApiKey('alice')).key;
  keys.bob = (await verifier.storage.createApiKey('bob')).key;
});
afterAll(async () => {
  await verifier.close();
  upstream.closeAllConnections();
  upstream.close();
});

const sdk = (key: string) => new Anthropic({ apiKey: key, baseURL: base, maxRetries: 0 });
const send = (key: string, method: string, path: string, body?: unknown) =>
  fetch(`${base}${path}`, {
    method,
    headers: { 'x-api-key': key, 'content-type': 'application/json', 'anthropic-beta': 'files-api-2025-04-14' },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
const naming = (fileId: string) => ({
  model: 'claude-mock',
  max_tokens: 16,
  messages: [
    {
      role: 'user',
      content: [
        { type: 'document', source: { type: 'file', file_id: fileId } },
        { type: 'text', text: 'Summarize it.' },
      ],
    },
  ],
});
const lastRecord = async () => (await verifier.storage.queryRecords({ limit: 1 }))[0];

describe('Files, per API key', () => {
  it('uploads through the verifier with the SDK: each file is its uploader’s', async () => {
    const alice = await sdk(keys.alice).beta.files.upload({
      file: await toFile(Buffer.from('alice secret plan'), 'plan.txt', { type: 'text/plain' }),
    });
    const bob = await sdk(keys.bob).beta.files.upload({
      file: await toFile(Buffer.from('bob notes'), 'notes.txt', { type: 'text/plain' }),
    });
    ids.alice = alice.id;
    ids.bob = bob.id;
    expect(alice.id).toMatch(/^file_/);
    expect(alice.filename).toBe('plan.txt');
    expect(await lastRecord()).toMatchObject({ status: 200, reasons: ['files upload'] });
    expect((await verifier.storage.fileOf(alice.id))?.recordId).toBeDefined();
  });

  it('lists, reads, downloads and deletes only the caller’s own files; another key’s is 404 and untouched', async () => {
    // One more file in the account, uploaded around the verifier: nobody's.
    const around = await fetch(`${upstreamUrl}/v1/files`, { method: 'POST', body: 'around' }).then(
      (r) => r.json() as Promise<{ id: string }>,
    );
    const listed = [];
    for await (const f of sdk(keys.alice).beta.files.list()) listed.push(f.id);
    expect(listed).toEqual([ids.alice]);
    expect((await sdk(keys.alice).beta.files.retrieveMetadata(ids.alice)).filename).toBe('plan.txt');
    expect(await (await sdk(keys.alice).beta.files.download(ids.alice)).text()).toContain('alice secret plan');
    for (const id of [ids.alice, around.id, 'file_does_not_exist'])
      for (const [method, path] of [
        ['GET', `/v1/files/${id}`],
        ['GET', `/v1/files/${id}/content`],
        ['DELETE', `/v1/files/${id}`],
      ] as const) {
        const res = await send(keys.bob, method, path);
        expect(res.status, `${method} ${path}`).toBe(404);
        expect(((await res.json()) as { error: { type: string; message: string } }).error).toEqual({
          type: 'not_found_error',
          message: `file ${id} not found`,
        });
        expect(await lastRecord()).toMatchObject({ status: 404, verdict: 'block' });
      }
    expect(account.has(ids.alice)).toBe(true);
    await expect(sdk(keys.bob).beta.files.retrieveMetadata(ids.alice)).rejects.toMatchObject({ status: 404 });
    // Deleted by its owner: gone upstream and forgotten here.
    expect(await sdk(keys.bob).beta.files.delete(ids.bob)).toMatchObject({ id: ids.bob, type: 'file_deleted' });
    expect(account.has(ids.bob)).toBe(false);
    expect(await verifier.storage.fileOf(ids.bob)).toBeUndefined();
    expect((await send(keys.bob, 'GET', `/v1/files/${ids.bob}`)).status).toBe(404);
  });

  it('a Messages, token count or batch request may name only its own key’s files', async () => {
    const ok = await send(keys.alice, 'POST', '/v1/messages', naming(ids.alice));
    expect(ok.status, await ok.clone().text()).toBe(200);
    for (const [path, body] of [
      ['/v1/messages', naming(ids.alice)],
      ['/v1/messages/count_tokens', naming(ids.alice)],
      // Spelled with an escape, as a hand-made body may be.
      ['/v1/messages', JSON.stringify(naming(ids.alice)).replace('"file_id"', '"file\\u005fid"')],
      ['/v1/messages/batches', { requests: [{ custom_id: 'a', params: naming(ids.alice) }] }],
    ] as const) {
      const res = await send(keys.bob, 'POST', path, body);
      expect(res.status, path).toBe(404);
      expect(((await res.json()) as { error: { message: string } }).error.message).toBe(`file ${ids.alice} not found`);
      expect(await lastRecord()).toMatchObject({ status: 404, verdict: 'block' });
    }
    // A `file_id` in the app's own JSON (a tool call's input, a tool's examples and schema) is no Files reference.
    const appOwn = {
      model: 'claude-mock',
      max_tokens: 16,
      tools: [
        {
          name: 'read_doc',
          description: 'reads a document of the app',
          input_schema: { type: 'object', properties: { file_id: { type: 'string', examples: [ids.alice] } } },
          input_examples: [{ file_id: 'doc_123' }],
        },
      ],
      messages: [
        { role: 'user', content: 'read it' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'read_doc', input: { file_id: ids.alice } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'the text' }] },
      ],
    };
    const own = await send(keys.bob, 'POST', '/v1/messages', appOwn);
    expect(own.status, await own.clone().text()).toBe(200);
    // Spelt another way, alone: an upstream that ignores letter case would read the file the owner check never saw.
    const spelt = (body: unknown, from: string, to: string) => JSON.stringify(body).replace(`"${from}"`, `"${to}"`);
    for (const [path, body] of [
      ['/v1/messages', spelt(naming(ids.alice), 'file_id', 'FILE_ID')],
      ['/v1/messages', spelt(naming(ids.alice), 'file_id', 'file_\\u0131d')],
      ['/v1/messages/count_tokens', spelt(naming(ids.alice), 'source', 'Source')],
      ['/v1/messages/batches', spelt({ requests: [{ custom_id: 'a', params: naming(ids.alice) }] }, 'messages', 'MESSAGES')],
    ] as const) {
      const res = await send(keys.bob, 'POST', path, body);
      expect(res.status, `${path} ${body}`).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/as the API spells it/);
      expect(await lastRecord()).toMatchObject({ status: 400, verdict: 'block' });
    }
  });

  it('a file holding another key’s decoys brings them back to the request that names it; the uploader’s own do not count', async () => {
    const ids = Object.fromEntries((await verifier.storage.listApiKeys()).map((k) => [k.label, k.id]));
    const secret = Buffer.from(config.serverSecret, 'hex');
    const [decoy] = decoyTools({ secret, apiKeyId: ids.alice as string, period: decoyPeriod() });
    const text = `notes\n${decoy?.tool.name} returned ${decoy?.canary}\n`;
    // The decoy index is built in the background after the first requests: upload until it is there.
    let fileId = '';
    for (let i = 0; i < 100 && fileId === ''; i++) {
      const up = await sdk(keys.bob).beta.files.upload({ file: await toFile(Buffer.from(text), 'notes.txt', { type: 'text/plain' }) });
      if ((await verifier.storage.fileOf(up.id))?.tracedTo !== undefined) fileId = up.id;
      else await new Promise((r) => setTimeout(r, 50));
    }
    expect(fileId).not.toBe('');
    expect((await verifier.storage.fileOf(fileId))?.tracedTo).toEqual([{ apiKeyId: ids.alice, confidence: expect.any(Number) }]);
    expect((await lastRecord())?.reasons.some((r) => r.startsWith(`decoy traced to ${ids.alice}`))).toBe(true);
    const res = await send(keys.bob, 'POST', '/v1/messages', naming(fileId));
    expect(res.status).toBe(200);
    const record = await lastRecord();
    expect(record).toMatchObject({ decoy: 'hit', verdict: 'flag' });
    expect(record?.reasons.some((r) => r.startsWith(`decoy traced to ${ids.alice}`))).toBe(true);
    // Alice's own file with her own decoys is her own text: not evidence against her.
    const own = await sdk(keys.alice).beta.files.upload({ file: await toFile(Buffer.from(text), 'mine.txt', { type: 'text/plain' }) });
    expect((await send(keys.alice, 'POST', '/v1/messages', naming(own.id))).status).toBe(200);
    expect(await lastRecord()).toMatchObject({ decoy: 'none' });
  });

  it('reads an uploaded PDF for what it shows, and a UTF-16 text file, for decoys', async () => {
    const ids = Object.fromEntries((await verifier.storage.listApiKeys()).map((k) => [k.label, k.id]));
    const [decoy] = decoyTools({ secret: Buffer.from(config.serverSecret, 'hex'), apiKeyId: ids.alice as string, period: decoyPeriod() });
    const line = `${decoy?.tool.name} ${decoy?.canary}`;
    for (const [name, bytes, type] of [
      ['notes.pdf', pdfOf(line), 'application/pdf'],
      ['locked.pdf', encryptedPdfOf(line), 'application/pdf'],
      ['notes.txt', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(line, 'utf16le')]), 'text/plain'],
    ] as const) {
      const up = await sdk(keys.bob).beta.files.upload({ file: await toFile(bytes, name, { type }) });
      expect((await verifier.storage.fileOf(up.id))?.tracedTo, name).toEqual([{ apiKeyId: ids.alice, confidence: expect.any(Number) }]);
    }
  });

  it('traces the file part wherever it starts: a preamble or other fields before it do not push it out of what is read', async () => {
    const ids = Object.fromEntries((await verifier.storage.listApiKeys()).map((k) => [k.label, k.id]));
    const [decoy] = decoyTools({ secret: Buffer.from(config.serverSecret, 'hex'), apiKeyId: ids.alice as string, period: decoyPeriod() });
    const body = Buffer.concat([
      Buffer.from('p'.repeat(4 * 1024 * 1024 + 100)),
      Buffer.from('\r\n--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nnotes\r\n'),
      Buffer.from('--B\r\nContent-Disposition: form-data; name="file"; filename="n.txt"\r\nContent-Type: text/plain\r\n\r\n'),
      Buffer.from(`${decoy?.tool.name} ${decoy?.canary}\r\n--B--\r\n`),
    ]);
    const res = await fetch(`${base}/v1/files`, {
      method: 'POST',
      headers: { 'x-api-key': keys.bob, 'content-type': 'multipart/form-data; boundary=B', 'anthropic-beta': 'files-api-2025-04-14' },
      body,
    });
    expect(res.status).toBe(200);
    const { id } = (await res.json()) as { id: string };
    expect((await verifier.storage.fileOf(id))?.tracedTo).toEqual([{ apiKeyId: ids.alice, confidence: expect.any(Number) }]);
    // The body's first 4 MiB were read, not all of it: the record says so.
    expect((await lastRecord())?.reasons).toContain('decoy trace incomplete: upload_bytes');
  });

  it('says in the record when an upload was not read whole: past its first 4 MiB, an encrypted PDF; nothing for one read whole', async () => {
    const cutsOf = async (bytes: Buffer, name: string, type: string) => {
      await sdk(keys.bob).beta.files.upload({ file: await toFile(bytes, name, { type }) });
      return (await lastRecord())?.reasons.filter((r) => r.startsWith('decoy trace incomplete'));
    };
    expect(await cutsOf(Buffer.from('short notes'), 'notes.txt', 'text/plain')).toEqual([]);
    expect(await cutsOf(pdfOf('plain words'), 'plain.pdf', 'application/pdf')).toEqual([]);
    expect(await cutsOf(Buffer.alloc(5 * 1024 * 1024, 'n'), 'long.txt', 'text/plain')).toEqual(['decoy trace incomplete: upload_bytes']);
    expect(await cutsOf(encryptedPdfOf('secret words', 'rc4'), 'locked.pdf', 'application/pdf')).toEqual([
      'decoy trace incomplete: pdf_encrypted',
    ]);
  });

  it('refuses a coded upload 415, recorded: its trace would read the compressed bytes', async () => {
    const res = await fetch(`${base}/v1/files`, {
      method: 'POST',
      headers: { 'x-api-key': keys.bob, 'content-type': 'multipart/form-data; boundary=x', 'content-encoding': 'gzip' },
      body: '--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nz\r\n--x--\r\n',
    });
    expect(res.status).toBe(415);
    expect(await lastRecord()).toMatchObject({
      status: 415,
      reasons: ['files upload', expect.stringMatching(/^415: expected an uncompressed request body/)],
    });
  });

  it('Files routes are the verifier’s own: a pass-through entry for one is a configuration error', () => {
    expect(() => routeTable([{ method: 'GET', pattern: '/v1/files' }])).toThrow(
      /passthroughRoutes: .*which its route "GET \/v1\/files" serves/,
    );
  });
});

describe('Files with the embedded mock model (upstream "mock"), as an adopter tries them', () => {
  it('uploads, lists, reads, downloads and deletes through the verifier with the SDK, per key', async () => {
    const v = await createVerifier(loadConfig({ ...devEnvironment(), MOAT_VERIFIER_UPSTREAM: 'mock' }), { logLevel: 'silent' });
    try {
      const url = await v.listen();
      const client = (key: string) => new Anthropic({ apiKey: key, baseURL: url, maxRetries: 0 });
      const [alice, bob] = [(await v.storage.createApiKey('alice')).key, (await v.storage.createApiKey('bob')).key];
      const up = await client(alice).beta.files.upload({
        file: await toFile(Buffer.from('line one\nline two\n'), 'notes.md', { type: 'text/markdown' }),
      });
      expect(up).toMatchObject({ type: 'file', filename: 'notes.md', mime_type: 'text/markdown', size_bytes: 18 });
      const listed = [];
      for await (const f of client(alice).beta.files.list()) listed.push(f.id);
      expect(listed).toEqual([up.id]);
      expect((await client(alice).beta.files.retrieveMetadata(up.id)).filename).toBe('notes.md');
      expect(await (await client(alice).beta.files.download(up.id)).text()).toBe('line one\nline two\n');
      await expect(client(bob).beta.files.retrieveMetadata(up.id)).rejects.toMatchObject({ status: 404 });
      const bobs = [];
      for await (const f of client(bob).beta.files.list()) bobs.push(f.id);
      expect(bobs).toEqual([]);
      expect(await client(alice).beta.files.delete(up.id)).toEqual({ id: up.id, type: 'file_deleted' });
      await expect(client(alice).beta.files.retrieveMetadata(up.id)).rejects.toMatchObject({ status: 404 });
    } finally {
      await v.close();
    }
  });
});

describe('readiness and the decoy index', () => {
  it('a fresh verifier is not ready until its decoy index is built: nothing could be traced before', async () => {
    const v = await createVerifier(loadConfig({ ...devEnvironment(), MOAT_VERIFIER_UPSTREAM: 'mock' }), { logLevel: 'silent' });
    try {
      const url = await v.listen();
      const first = await fetch(`${url}/readyz`);
      expect(first.status).toBe(503);
      expect(((await first.json()) as { checks: unknown[] }).checks).toContainEqual({
        name: 'decoy-index',
        ok: false,
        error: 'the decoy index is being built: requests cannot be traced for decoys yet',
      });
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        status = (await fetch(`${url}/readyz`)).status;
      }
      expect(status).toBe(200);
    } finally {
      await v.close();
    }
  });
});
