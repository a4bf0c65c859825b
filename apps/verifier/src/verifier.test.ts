import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createAttestedFetch } from '@moat/attest/client';
import { AntiDistillationGate, keyIdentity, stripForeignSignedBlocks } from '@moat/distill-guard/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { devKeyFile } from '@moat/native/dev-key';
import { parseDiscovery } from '@moat/protocol';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig, type VerifierConfig } from './config.js';
import { mockMessages } from './mock-upstream.js';
import { encryptedPdfOf, paddedPdf, pdfOf } from './pdf.test-util.js';
import { postRaw } from './raw-request.test-util.js';
import { createVerifier, type Verifier } from './server.js';
import { upstreamCallsLeft } from './services.test-util.js';
import { streamed } from './streamed.test-util.js';

const SALT = 'verifier-test-salt';
const ADMIN = 'admin-token-0123456789';

function config(over: Partial<VerifierConfig> = {}): VerifierConfig {
  return loadConfig({
    ...devEnvironment({ adminToken: ADMIN, salt: SALT, attestationKeyFile: devKeyFile }),
    ...Object.fromEntries(
      Object.entries(over).map(([k, v]) => [`MOAT_VERIFIER_${k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`, String(v)]),
    ),
  });
}

let verifier: Verifier;
let base = '';
let apiKey = '';
const upstreamBodies: string[] = [];

beforeAll(async () => {
  verifier = await createVerifier(config(), { logLevel: 'silent', onUpstreamRequest: (b) => upstreamBodies.push(b) });
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('test')).key;
});
afterAll(() => verifier.close());

const attested = createAttestedFetch();

function request(text: string, extra: Record<string, unknown> = {}) {
  const base = {
    model: 'claude-mock',
    max_tokens: 256,
    thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: [{ role: 'user', content: text }],
    ...extra,
  };
  const tagged = tagFingerprint(base, { salt: SALT, version: '1.4.2', entrypoint: 'cli' });
  if (tagged.status !== 'tagged') throw new Error(tagged.reason);
  return tagged.request;
}

async function post(send: typeof fetch, body: unknown, key = apiKey, headers: Record<string, string> = {}) {
  const res = await send(`${base}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key, 'user-agent': 'moat-chat/1.4.2', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, any> };
}

const lastRecord = async () => (await verifier.storage.queryRecords({ limit: 1 }))[0];

/** A conversation's next turn: the first question, the answer's blocks as they came back, the next question. */
const nextTurn = (first: string, answer: unknown, next: string) => [
  { role: 'user', content: first },
  { role: 'assistant', content: answer },
  { role: 'user', content: next },
];

describe('moat-verifier', () => {
  it('group commit: concurrent genuine requests share commits (fewer than their writes); each leaves its one record', async () => {
    const stats = () => (verifier.storage as unknown as { commitStats: { commits: number; writes: number } }).commitStats;
    const before = stats();
    const n = 24;
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => post(attested as typeof fetch, request(`batch ${i}`))));
    expect(answers.map((a) => a.status)).toEqual(Array(n).fill(200));
    const after = stats();
    // Each request writes its nonce, reserves its record, keeps the upstream's signature of its
    // thinking block and finishes the record: 4n writes, in fewer commits.
    expect(after.writes - before.writes).toBe(4 * n);
    expect(after.commits - before.commits).toBeLessThan(4 * n);
    const ids = answers.map((a) => a.headers.get('moat-request-id'));
    const records = (await verifier.storage.queryRecords({ limit: 200 })).filter((r) => ids.includes(r.id));
    expect(records).toHaveLength(n);
    for (const r of records) expect(r).toMatchObject({ status: 200, attestation: 'valid' });
  });

  it('group commit: a stamped request reserves its record in the commit that spends its nonce (3 commits, 4 writes)', async () => {
    const stats = () => (verifier.storage as unknown as { commitStats: { commits: number; writes: number } }).commitStats;
    const before = stats();
    const r = await post(attested as typeof fetch, request('one alone'));
    expect(r.status).toBe(200);
    expect(r.json.content[0]).toMatchObject({ type: 'thinking' });
    // Nonce and reserved record; the upstream's signature of the thinking block; the finished record.
    expect(stats().writes - before.writes).toBe(4);
    expect(stats().commits - before.commits).toBe(3);
    const [record] = (await verifier.storage.queryRecords({ limit: 5 })).filter((x) => x.id === r.headers.get('moat-request-id'));
    expect(record).toMatchObject({ status: 200, attestation: 'valid', fingerprint: 'match', verdict: 'allow' });
  });

  it('group commit: a stamped request refused by policy after its early reservation leaves one finished record', async () => {
    const body = `${JSON.stringify(request('forged'))}`.replace(/}$/, ',"moat_att":"v1.k0.1.00.00000000000000000000000000000000"}');
    const r = await post(fetch, body);
    const rows = (await verifier.storage.queryRecords({ limit: 20 })).filter((x) => x.id === r.headers.get('moat-request-id'));
    expect(rows).toHaveLength(1);
    expect(rows[0]?.status).toBe(r.status);
  });

  it('a genuine client is allowed: attestation valid, fingerprint match, decoys injected, tags stripped, thinking signed', async () => {
    const gate = await AntiDistillationGate.create({ compileTime: true, entrypoint: 'cli', remote: { apiHost: base, clientKey: 'moat' } });
    expect(gate.decision().enabled).toBe(true);
    const r = await post(attested as typeof fetch, gate.apply(request('Hello there, verifier!')));
    expect(r.status).toBe(200);
    expect(r.headers.get('moat-version')).toBe('1');
    expect(r.json.content[0]).toMatchObject({ type: 'thinking' });
    expect(r.json.content[0].signature).toMatch(/^ms1\.hs256\.s1\.k\./);
    expect(r.json.content[1]).toEqual({ type: 'text', text: 'Echo: Hello there, verifier!' });
    expect(await lastRecord()).toMatchObject({
      attestation: 'valid',
      fingerprint: 'match',
      thinking: 'none',
      verdict: 'allow',
      decoys: 3,
      status: 200,
    });
    const forwarded = upstreamBodies.at(-1) as string;
    for (const tag of ['x-moat:', 'moat_att', 'anti_distillation']) expect(forwarded).not.toContain(tag);
    expect(JSON.parse(forwarded).tools).toHaveLength(3);
  });

  it('a spoofed client (plain fetch, format copied, no envelope) is flagged as missing attestation', async () => {
    const spoofed = await post(fetch, request('Hello there, verifier!'));
    expect(spoofed.status).toBe(200);
    expect(await lastRecord()).toMatchObject({
      attestation: 'missing',
      fingerprint: 'match',
      verdict: 'flag',
      reasons: ['flag:attestation=missing'],
    });
  });

  it('no client-controlled header earns a better verdict than sending nothing (no downgrade by self-report)', async () => {
    const rank = { allow: 0, flag: 1, block: 2 } as const;
    await post(fetch, request('Downgrade probe'));
    const baseline = (await lastRecord())?.verdict as keyof typeof rank;
    expect(baseline).toBe('flag');
    const headerName = fc.oneof(
      fc.constantFrom(
        'moat-attestation',
        'moat-version',
        'user-agent',
        'x-forwarded-for',
        'forwarded',
        'via',
        'anthropic-beta',
        'x-moat',
        'x-moat-attestation',
        'x-real-ip',
      ),
      fc.stringMatching(/^x-[a-z-]{1,20}$/),
    );
    const headerValue = fc.oneof(
      fc.constantFrom('unavailable', 'unavailable; addon_missing', 'valid', 'stamped', '1', 'moat-chat/1.4.2', '127.0.0.1', 'v1'),
      fc.stringMatching(/^[ -~]{0,40}$/),
    );
    await fc.assert(
      fc.asyncProperty(fc.dictionary(headerName, headerValue, { minKeys: 1, maxKeys: 4 }), async (extra) => {
        const r = await post(fetch, request('Downgrade probe'), apiKey, extra);
        const record = await lastRecord();
        expect(r.status).toBeLessThan(500);
        expect(rank[record?.verdict as keyof typeof rank], JSON.stringify(extra)).toBeGreaterThanOrEqual(rank[baseline]);
      }),
      { numRuns: 60 },
    );
  });

  it("a request that brings back another key's decoy is a decoy hit, traced to that key; decoys go to the cli entry point only", async () => {
    const admin = (label: string) =>
      fetch(`${base}/admin/keys`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` }, body: JSON.stringify({ label }) }).then(
        (r) => r.json() as Promise<{ id: string; key: string }>,
      );
    const leaker = await admin('leaker');
    const distiller = await admin('distiller');
    // The leaker's genuine traffic gets decoys (seen upstream, never by the client).
    const gate = await AntiDistillationGate.create({ compileTime: true, entrypoint: 'cli', remote: { apiHost: base, clientKey: 'moat' } });
    await post(attested as typeof fetch, gate.apply(request('Plan the migration')), leaker.key);
    const decoyName = (JSON.parse(upstreamBodies.at(-1) as string).tools as Array<{ name: string }>).at(-1)?.name as string;
    expect(decoyName).toMatch(/^[a-z]+_[a-z]+_[a-z]+$/);
    // A distilled model, trained on that traffic, calls the decoy; its client sends the turn back under another key.
    const replayed = [
      { role: 'user', content: 'Plan the migration' },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_x', name: decoyName, input: {} }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_x', content: 'ok' }] },
    ];
    let record: Awaited<ReturnType<typeof lastRecord>>;
    for (let i = 0; i < 200; i++) {
      await post(fetch, request('Plan the migration', { messages: replayed }), distiller.key);
      record = await lastRecord();
      if (record?.decoy === 'hit') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(record).toMatchObject({ keyId: distiller.id, decoy: 'hit', verdict: 'flag' });
    expect(record?.reasons).toContain(`flag:decoy=hit`);
    expect(record?.reasons.some((r) => r.startsWith(`decoy traced to ${leaker.id}`))).toBe(true);
    const keys = (await (await fetch(`${base}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as {
      keys: Array<{ id: string; decoyHits: number }>;
    };
    expect(keys.keys.find((k) => k.id === distiller.id)?.decoyHits).toBeGreaterThanOrEqual(1);
    // The model's own words in the leaker's conversation (it listed its tools, or went on
    // after a decoy call the verifier answered) are not evidence against the leaker, nor is its
    // user asking about one or pasting it; the same words sent under another key are, and a
    // decoy call in the leaker's own conversation is (the verifier never lets one reach a client).
    const said = [
      { role: 'user', content: 'What tools do you have?' },
      { role: 'assistant', content: [{ type: 'text', text: `I can call ${decoyName} and get_weather.` }] },
      { role: 'user', content: 'Thanks' },
    ];
    await post(fetch, request('Thanks', { messages: said }), leaker.key);
    expect(await lastRecord()).toMatchObject({ keyId: leaker.id, decoy: 'none' });
    await post(fetch, request('Thanks', { messages: said }), distiller.key);
    expect(await lastRecord()).toMatchObject({ keyId: distiller.id, decoy: 'hit' });
    await post(fetch, request('Thanks', { messages: [{ role: 'user', content: `What does ${decoyName} do?` }] }), leaker.key);
    expect(await lastRecord()).toMatchObject({ keyId: leaker.id, decoy: 'none' });
    await post(fetch, request('Plan the migration', { messages: replayed }), leaker.key);
    expect(await lastRecord()).toMatchObject({ keyId: leaker.id, decoy: 'hit' });
    // Any kind of tool call block names a decoy as a call does: a server's or an MCP server's.
    for (const call of [
      { type: 'server_tool_use', id: 'srvtoolu_x', name: decoyName, input: {} },
      { type: 'mcp_tool_use', id: 'mcptoolu_x', name: decoyName, server_name: 's', input: {} },
    ]) {
      const made = [
        { role: 'user', content: 'Plan the migration' },
        { role: 'assistant', content: [call] },
        { role: 'user', content: 'go on' },
      ];
      await post(fetch, request('go on', { messages: made }), leaker.key);
      expect(await lastRecord(), call.type).toMatchObject({ keyId: leaker.id, decoy: 'hit' });
    }
    // However long the calls before it: a 256 KiB tool input ahead of the decoy call does not hide it.
    const padded = [
      { role: 'user', content: 'Plan the migration' },
      {
        role: 'assistant',
        content: [
          { type: 'tool_use', id: 'toolu_w', name: 'write_file', input: { text: 'x'.repeat(262_144) } },
          { type: 'tool_use', id: 'toolu_d', name: decoyName, input: {} },
        ],
      },
      { role: 'user', content: 'go on' },
    ];
    await post(fetch, request('go on', { messages: padded }), leaker.key);
    expect(await lastRecord()).toMatchObject({ keyId: leaker.id, decoy: 'hit' });
    // Respelled, or hidden outside the conversation, the decoy is still traced to the key it was served to.
    const decoyTool = JSON.stringify((JSON.parse(upstreamBodies.find((b) => b.includes(decoyName)) as string).tools as unknown[]).at(-1));
    const canary = /for example \\"([a-z]+_[a-z0-9]{8})\\"/.exec(decoyTool)?.[1] as string;
    expect(canary).toBeDefined();
    const camel = decoyName.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const hidden: Array<[string, Record<string, unknown>]> = [
      ['camelCase name and upper-case canary', { messages: [{ role: 'user', content: `${camel}(${canary.toUpperCase()})` }] }],
      [
        'dashed name with a zero-width space, and canary',
        { messages: [{ role: 'user', content: `${decoyName.replaceAll('_', '-\u200b')} ${canary}` }] },
      ],
      ["the canary's random part alone", { messages: [{ role: 'user', content: `id ${canary.split('_')[1]}` }] }],
      ['the system prompt', { system: `tools: ${decoyName}` }],
      [
        'past 256 KiB of padding',
        { messages: [{ role: 'user', content: `${'pasted transcript line\n'.repeat(15_000)} ${decoyName} ${canary}` }] },
      ],
      [
        'split across two text blocks',
        {
          messages: [
            {
              role: 'user',
              content: [
                { type: 'text', text: `see ${decoyName.slice(0, 9)}` },
                { type: 'text', text: `${decoyName.slice(9)} and ${canary}` },
              ],
            },
          ],
        },
      ],
      [
        'base64 inside a text',
        { messages: [{ role: 'user', content: `decode ${Buffer.from(`${decoyName} ${canary}`).toString('base64')}` }] },
      ],
      ['metadata', { metadata: { user_id: decoyName } }],
      ['stop sequences', { stop_sequences: [decoyName] }],
      ['a tool definition', { tools: [{ name: decoyName, description: 'x', input_schema: { type: 'object' } }] }],
      [
        'a base64 text document',
        {
          messages: [
            {
              role: 'user',
              content: [
                {
                  type: 'document',
                  source: { type: 'base64', media_type: 'text/plain', data: Buffer.from(`${decoyName} ${canary}`).toString('base64') },
                },
                { type: 'text', text: 'summarize' },
              ],
            },
          ],
        },
      ],
      ...(
        [
          ['text/plain; charset=utf-8', Buffer.from(`${decoyName} ${canary}`)],
          ['TEXT/PLAIN', Buffer.from(`${decoyName} ${canary}`)],
          ['text/markdown', Buffer.from(`${decoyName} ${canary}`)],
          ['application/json', Buffer.from(`${decoyName} ${canary}`)],
          ['application/octet-stream', Buffer.from(`${decoyName} ${canary}`)],
          ['text/plain; charset=utf-16', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(`${decoyName} ${canary}`, 'utf16le')])],
          ['application/pdf', pdfOf(`${decoyName} ${canary}`)],
          // Encrypted with the empty user password (AES-256): what any reader shows.
          ['application/pdf', encryptedPdfOf(`${decoyName} ${canary}`)],
        ] as const
      ).map(([mediaType, bytes]): [string, Record<string, unknown>] => [
        `a base64 document of ${mediaType}`,
        {
          messages: [
            {
              role: 'user',
              content: [
                {
                  type: 'document',
                  source: { type: 'base64', media_type: mediaType, data: bytes.toString('base64') },
                },
                { type: 'text', text: 'summarize' },
              ],
            },
          ],
        },
      ]),
      [
        'split across the end of the system prompt and the first message',
        { system: `Be brief. ${decoyName.slice(0, 9)}`, messages: [{ role: 'user', content: `${decoyName.slice(9)} please` }] },
      ],
      // Read in a trace worker: a request past 64 KiB, and a small one whose hidden gzip inflates past 256 KiB.
      [
        'a document behind 200 KB of text',
        {
          messages: [
            {
              role: 'user',
              content: [
                {
                  type: 'document',
                  source: {
                    type: 'base64',
                    media_type: 'text/plain',
                    data: Buffer.from(`${'padding words '.repeat(15_000)}${decoyName} ${canary}`).toString('base64'),
                  },
                },
                { type: 'text', text: 'summarize' },
              ],
            },
          ],
        },
      ],
      [
        'gzip in base64 behind 600 KB of inflated text',
        {
          messages: [
            { role: 'user', content: `blob ${gzipSync(`${'padding words '.repeat(45_000)}${decoyName}`).toString('base64')} end` },
          ],
        },
      ],
    ];
    for (const [where, extra] of hidden) {
      await post(fetch, request('Thanks', extra), distiller.key);
      const hit = await lastRecord();
      expect(hit, where).toMatchObject({ keyId: distiller.id, decoy: 'hit' });
      expect(
        hit?.reasons.some((r) => r.startsWith(`decoy traced to ${leaker.id}`)),
        where,
      ).toBe(true);
    }
    // Its words apart are common English, and a key's own tool definitions are never evidence against it.
    await post(fetch, request(`please ${decoyName.replaceAll('_', ' ')} today`), distiller.key);
    expect(await lastRecord()).toMatchObject({ keyId: distiller.id, decoy: 'none' });
    await post(
      fetch,
      request('Thanks', { tools: [{ name: decoyName, description: 'mine', input_schema: { type: 'object' } }] }),
      leaker.key,
    );
    expect(await lastRecord()).toMatchObject({ keyId: leaker.id, decoy: 'none' });
    // An SDK entry point asking for decoys does not get them.
    const sdk = tagFingerprint(
      { model: 'claude-mock', max_tokens: 64, messages: [{ role: 'user', content: 'from the sdk' }] },
      { salt: SALT, version: '1.4.2', entrypoint: 'sdk' },
    );
    await post(attested as typeof fetch, { ...sdk.request, anti_distillation: ['fake_tools'] });
    expect((await lastRecord())?.decoys).toBe(0);
  });

  it('says in the record when the decoy trace did not read a request whole: an encrypted PDF, a spent decode budget', async () => {
    const cutOf = async (pdfs: Buffer[]) => {
      const documents = pdfs.map((pdf) => ({
        type: 'document',
        source: { type: 'base64', media_type: 'application/pdf', data: pdf.toString('base64') },
      }));
      const body = request('Thanks', { messages: [{ role: 'user', content: [...documents, { type: 'text', text: 'summarize' }] }] });
      expect((await post(fetch, body)).status).toBe(200);
      return (await lastRecord())?.reasons.filter((r) => r.startsWith('decoy trace incomplete'));
    };
    expect(await cutOf([pdfOf('plain words')])).toEqual([]);
    expect(await cutOf([encryptedPdfOf('secret words', 'rc4')])).toEqual(['decoy trace incomplete: pdf_encrypted']);
    // Five PDFs padded to 8 MB: the request's 32 MiB is spent before the fifth is read.
    expect(await cutOf(Array.from({ length: 5 }, (_, i) => paddedPdf(8_000_000, `w${i}`)))).toEqual([
      'decoy trace incomplete: pdf_inflate_budget',
    ]);
  });

  it('replayed, tampered, injected and relayed bodies are blocked with a reason', async () => {
    // A stamped body taken off the wire by a proxy that forwards it as it came, Host included.
    const http = await import('node:http');
    const target = new URL(base);
    /** Sends raw bytes to the verifier with exactly these headers (an attacker picks any Host). */
    const sendRaw = (body: Buffer | string, headers: Record<string, string | string[] | undefined>) => postRaw(base, body, headers);
    const captured: Array<{ body: Buffer; headers: Record<string, string | string[] | undefined> }> = [];
    const tap = http.createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const headers = { host: req.headers.host, 'x-api-key': req.headers['x-api-key'], 'content-type': 'application/json' };
      captured.push({ body: Buffer.concat(chunks), headers });
      const upstream = await sendRaw(Buffer.concat(chunks), headers);
      res.writeHead(upstream.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(upstream.json));
    });
    await new Promise<void>((r) => tap.listen(0, '127.0.0.1', () => r()));
    const tapUrl = `http://127.0.0.1:${(tap.address() as { port: number }).port}`;
    try {
      const first = await attested(`${tapUrl}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
        body: JSON.stringify(request('Please review my pull request')),
      });
      expect(first.status).toBe(200);
      const genuineRecord = await lastRecord();
      expect(genuineRecord?.attestation).toBe('valid');
      expect(genuineRecord?.reasons).toEqual(['flag:gateway=ua_mismatch']);
      const { body: raw, headers } = captured[0] as (typeof captured)[number];
      const replay = await sendRaw(raw, headers);
      expect(replay.status).toBe(403);
      expect(replay.json.error.message).toMatch(/block:attestation=replayed/);
      const tampered = raw.toString('utf8').replace('Please review', 'Please delete');
      const t = await sendRaw(tampered, headers);
      expect(t.status).toBe(403);
      expect(await lastRecord()).toMatchObject({ attestation: 'invalid', fingerprint: 'mismatch', verdict: 'block' });
      const injected = raw.toString('utf8').replace('"max_tokens":256,', '"max_tokens":256,"temperature":0,');
      const i = await sendRaw(injected, headers);
      expect(i.status).toBe(403);
      expect(await lastRecord()).toMatchObject({ attestation: 'invalid', fingerprint: 'match' });

      // The next genuine request, taken off the wire before it arrives and relayed under
      // another key, or sent with the verifier's own Host: the stamp covers who sends it where.
      const { key: relayKey } = await verifier.storage.createApiKey('relay');
      const second = await attested(`${tapUrl}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
        body: JSON.stringify(request('Another genuine question')),
      });
      expect(second.status).toBe(200);
      const genuine = captured[1] as (typeof captured)[number];
      for (const relayed of [
        { ...genuine.headers, 'x-api-key': relayKey },
        { ...genuine.headers, host: target.host },
      ]) {
        const r = await sendRaw(genuine.body, relayed);
        expect(r.status).toBe(403);
        expect(await lastRecord()).toMatchObject({
          attestation: 'invalid',
          verdict: 'block',
          reasons: expect.arrayContaining(['block:attestation=invalid']),
        });
      }
    } finally {
      tap.close();
    }
  });

  it('streams SSE and signs thinking mid-stream', async () => {
    const res = await attested(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
      body: JSON.stringify(request('Stream this answer, please', { stream: true })),
    });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const text = await res.text();
    const events = text
      .trim()
      .split('\n\n')
      .map((block) => block.split('\n')[0]?.slice(7));
    expect(events[0]).toBe('message_start');
    expect(events.at(-1)).toBe('message_stop');
    const signature = /"signature_delta","signature":"(ms1\.[^"]+)"/.exec(text)?.[1];
    expect(signature).toBeDefined();
    const deltas = [...text.matchAll(/"text_delta","text":"([^"]*)"/g)].map((m) => m[1]).join('');
    expect(deltas).toBe('Echo: Stream this answer, please');
  });

  it('answers decoy calls itself: the client never sees them, as JSON or as SSE', async () => {
    const gate = await AntiDistillationGate.create({ compileTime: true, entrypoint: 'cli', remote: { apiHost: base, clientKey: 'moat' } });
    const metric = async () =>
      Number(
        /^moat_decoy_calls_total (\d+)/m.exec(
          await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text(),
        )?.[1] ?? Number.NaN,
      );
    const before = await metric();
    // Without real tools, the mock model calls the first tool it is given: a decoy.
    const r = await post(attested as typeof fetch, gate.apply(request('Please check the ledger for account 7')));
    expect(r.status).toBe(200);
    const decoyName = JSON.parse(upstreamBodies.at(-2) as string).tools[0].name as string;
    expect(r.json.content.map((b: { type: string }) => b.type)).toEqual(['thinking', 'text']);
    expect(r.json.content[1].text).toMatch(new RegExp(`^Checked with ${decoyName}: \\{"status":"ok"`));
    expect(r.json.stop_reason).toBe('end_turn');
    const tokens = (i: number) => mockMessages(JSON.parse(upstreamBodies.at(i) as string)).usage.output_tokens;
    expect(r.json.usage.output_tokens).toBe(tokens(-2) + tokens(-1));
    // The model's turn went back upstream with the verifier's answer to the decoy call.
    const continued = JSON.parse(upstreamBodies.at(-1) as string).messages as Array<{ role: string; content: unknown }>;
    expect(continued.at(-2)?.content).toContainEqual(expect.objectContaining({ type: 'tool_use', name: decoyName }));
    expect(continued.at(-1)?.content).toEqual([expect.objectContaining({ type: 'tool_result' })]);

    const res = await attested(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
      body: JSON.stringify(gate.apply(request('Please check the ledger for account 7', { stream: true }))),
    });
    const { events } = await streamed(res);
    expect(events.filter((e) => e.event === 'message_start')).toHaveLength(1);
    expect(events.filter((e) => e.event === 'message_stop')).toHaveLength(1);
    const starts = events.filter((e) => e.event === 'content_block_start').map((e) => e.data);
    expect(starts.map((d) => [d.index, (d.content_block as { type: string }).type])).toEqual([
      [0, 'thinking'],
      [1, 'thinking'],
      [2, 'text'],
    ]);
    expect(events.map((e) => JSON.stringify(e.data)).join('\n')).not.toMatch(/"tool_use"|input_json_delta/);
    const text = events
      .filter((e) => (e.data.delta as { type?: string } | undefined)?.type === 'text_delta')
      .map((e) => (e.data.delta as { text: string }).text)
      .join('');
    expect(text).toBe(r.json.content[1].text);
    const stop = events.find((e) => e.event === 'message_delta')?.data.delta as { stop_reason: string };
    expect(stop.stop_reason).toBe('end_turn');
    expect(await metric()).toBe(before + 2);
  });

  it("a streamed thinking block goes back upstream with the upstream's own signature", async () => {
    const res = await attested(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
      body: JSON.stringify(request('Think about primes, streaming', { stream: true })),
    });
    const { content } = await streamed(res);
    expect(content[0]?.signature).toMatch(/^ms1\./);
    const turn2 = await post(
      attested as typeof fetch,
      request('Think about primes, streaming', { messages: nextTurn('Think about primes, streaming', content, 'And the next one?') }),
    );
    expect(turn2.status).toBe(200);
    const forwarded = JSON.parse(upstreamBodies.at(-1) as string).messages[1].content[0];
    expect(forwarded.signature).toMatch(/^mock-/);
  });

  it('redacted_thinking: signed in front of its data (no signature member), as JSON and SSE, and goes back upstream as it came', async () => {
    for (const stream of [false, true]) {
      const res = await attested(`${base}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
        body: JSON.stringify(request('Secret plans [redact]', { stream })),
      });
      const content = stream ? (await streamed(res)).content : ((await res.json()) as { content: Array<Record<string, string>> }).content;
      const redacted = content[1] as Record<string, string>;
      expect(redacted.type).toBe('redacted_thinking');
      expect(redacted.signature).toBeUndefined();
      expect(redacted.data).toMatch(/^ms1\.hs256\.s1\.k\.[A-Za-z0-9_-]{43}~mockred_/);
      const turn2 = await post(
        attested as typeof fetch,
        request('Secret plans [redact]', { messages: nextTurn('Secret plans [redact]', content, 'Go on') }),
      );
      expect(turn2.status).toBe(200);
      expect((await lastRecord())?.thinking).toBe('valid');
      const forwarded = JSON.parse(upstreamBodies.at(-1) as string).messages[1].content[1];
      expect(forwarded).toEqual({ type: 'redacted_thinking', data: (redacted.data as string).split('~')[1] });
    }
  });

  it('checks signed thinking sent back: valid for the same key, 400 naming the block after a key switch unless the client strips', async () => {
    const first = await post(attested as typeof fetch, request('What is two plus two, verifier?'));
    const history = [
      { message: { role: 'user', content: 'What is two plus two, verifier?' } },
      { message: { role: 'assistant', content: first.json.content }, origin: { apiKeyId: keyIdentity(apiKey), model: 'claude-mock' } },
      { message: { role: 'user', content: 'And times three?' } },
    ];
    const turn2 = request('What is two plus two, verifier?', { messages: history.map((h) => h.message) });
    const ok = await post(attested as typeof fetch, turn2);
    expect(ok.status).toBe(200);
    expect(await lastRecord()).toMatchObject({ thinking: 'valid', verdict: 'allow' });

    const other = (await verifier.storage.createApiKey('other')).key;
    const naive = await post(attested as typeof fetch, turn2, other);
    expect(naive.status).toBe(400);
    expect(naive.json.error.message).toMatch(/^messages\.1\.content\.0: Invalid `signature` in `thinking` block/);
    const cleaned = stripForeignSignedBlocks(history, { apiKeyId: keyIdentity(other), model: 'claude-mock' });
    const switched = await post(
      attested as typeof fetch,
      request('What is two plus two, verifier?', { messages: cleaned.messages }),
      other,
    );
    expect(switched.status).toBe(200);
  });

  it('keeps the forwarded prefix byte-identical across turns (upstream prompt caching works)', async () => {
    const turn1 = request('Caching check, first message of the conversation', { thinking: undefined });
    await post(attested as typeof fetch, turn1);
    const a = upstreamBodies.at(-1) as string;
    const turn2 = { ...turn1, messages: [...turn1.messages, { role: 'assistant', content: 'ok' }, { role: 'user', content: 'second' }] };
    await post(attested as typeof fetch, tagFingerprint(turn2, { salt: SALT, version: '1.4.2', entrypoint: 'cli' }).request);
    const b = upstreamBodies.at(-1) as string;
    const firstMessage = JSON.stringify(turn1.messages[0]);
    const prefixEnd = a.indexOf(firstMessage) + firstMessage.length;
    expect(prefixEnd).toBeGreaterThan(firstMessage.length);
    expect(b.slice(0, prefixEnd)).toBe(a.slice(0, prefixEnd));
  });

  it('answers errors in the Anthropic shape and records malformed input', async () => {
    expect((await post(fetch, request('x'), 'sk-wrong')).json).toEqual({
      type: 'error',
      error: { type: 'authentication_error', message: 'invalid x-api-key' },
    });
    const before = (await verifier.storage.summary()).total;
    const bad = await post(fetch, '{"model": "m", "messages": [');
    expect(bad.status).toBe(400);
    expect(bad.json.error.type).toBe('invalid_request_error');
    expect((await verifier.storage.summary()).total).toBe(before + 1);
    expect(await lastRecord()).toMatchObject({ verdict: 'block', status: 400 });
    const overloaded = await post(attested as typeof fetch, request('Try the overloaded model', { model: 'claude-mock-overloaded' }));
    expect(overloaded.status).toBe(529);
    expect(overloaded.json.error.type).toBe('overloaded_error');
    const big = await post(fetch, JSON.stringify({ pad: 'x'.repeat(11 * 1024 * 1024) }));
    expect(big.status).toBe(413);
  });

  it('the mock model is as strict as the real API', () => {
    expect(() =>
      mockMessages({ model: 'claude-mock', max_tokens: 1, messages: [{ role: 'user', content: 'x' }], moat_att: 'v1…' }),
    ).toThrow(/moat_att: Extra inputs are not permitted/);
    expect(() =>
      mockMessages({ model: 'claude-mock', max_tokens: 1, messages: [{ role: 'user', content: 'x' }], anti_distillation: ['fake_tools'] }),
    ).toThrow(/Extra inputs/);
    expect(
      mockMessages({
        model: 'claude-mock',
        max_tokens: 1,
        messages: [{ role: 'user', content: 'check the ledger' }],
        tools: [{ name: 'lookup' }],
      }).stop_reason,
    ).toBe('tool_use');
  });

  it('accepts telemetry, validates it, and counts gateway reports', async () => {
    const send = (body: unknown) =>
      fetch(`${base}/v1/telemetry`, { method: 'POST', headers: { 'x-api-key': apiKey }, body: JSON.stringify(body) });
    const ok = await send({
      v: 1,
      client: { cv: '1.4.2', ep: 'cli' },
      events: [{ type: 'gateway_detected', ts: 1, gateways: ['litellm'] }],
    });
    expect(ok.status).toBe(202);
    const bad = await send({ v: 2 });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/ERR_TELEMETRY: expected "v": 1/);
    expect(await verifier.storage.telemetryCounts()).toMatchObject({ gateway_detected: 1 });
  });

  it('serves discovery, flags, health, metrics and the admin API behind its token', async () => {
    expect(parseDiscovery(await (await fetch(`${base}/v1/moat`)).json()).versions).toEqual([1]);
    expect(
      ((await (await fetch(`${base}/api/features/moat`)).json()) as { features: Record<string, unknown> }).features,
    ).not.toHaveProperty('moat-policy-attestation');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    const metrics = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
    expect(metrics).toMatch(/moat_requests_total\{verdict="allow"\} \d+/);
    expect((await fetch(`${base}/admin/records`)).status).toBe(401);
    expect((await fetch(`${base}/admin/records`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status).toBe(401);
    const admin = { authorization: `Bearer ${ADMIN}` };
    const records = (await (await fetch(`${base}/admin/records?limit=5`, { headers: admin })).json()) as { records: unknown[] };
    expect(records.records).toHaveLength(5);
    const created = (await (await fetch(`${base}/admin/keys`, { method: 'POST', headers: admin, body: '{"label":"ci"}' })).json()) as {
      key: string;
    };
    expect(await verifier.storage.lookupApiKey(created.key)).toMatch(/^key_/);
    const keys = (await (await fetch(`${base}/admin/keys`, { headers: admin })).json()) as {
      keys: Array<{ label: string; fingerprint: unknown }>;
    };
    expect(keys.keys.find((k) => k.label === 'test')?.fingerprint).toMatchObject({ classification: expect.any(String) });
  });

  it('revokes an API key: refused on its next request, gone from the list; an unknown or revoked id is 404, a bad one 400', async () => {
    const admin = { authorization: `Bearer ${ADMIN}` };
    const created = (await (await fetch(`${base}/admin/keys`, { method: 'POST', headers: admin, body: '{"label":"leaked"}' })).json()) as {
      id: string;
      key: string;
    };
    const ask = async () => (await post(fetch, request('hello'), created.key)).status;
    expect(await ask()).toBe(200);
    const revoke = (id: unknown) => fetch(`${base}/admin/keys/revoke`, { method: 'POST', headers: admin, body: JSON.stringify({ id }) });
    const revoked = await revoke(created.id);
    expect(revoked.status).toBe(200);
    expect(await revoked.json()).toEqual({ revoked: created.id });
    // This replica forgets the lookups it cached: the very next request is refused.
    expect(await ask()).toBe(401);
    const listed = (await (await fetch(`${base}/admin/keys`, { headers: admin })).json()) as { keys: Array<{ id: string }> };
    expect(listed.keys.map((k) => k.id)).not.toContain(created.id);
    for (const [id, status] of [
      [created.id, 404],
      ['key_nobody', 404],
      [42, 400],
      ['../x', 400],
    ] as const) {
      const res = await revoke(id);
      expect(res.status, String(id)).toBe(status);
    }
    expect((await fetch(`${base}/admin/keys/revoke`, { method: 'POST', body: JSON.stringify({ id: created.id }) })).status).toBe(401);
  });

  it('the admin and operator routes answer 400 naming what they expected to any body that is not a JSON object', async () => {
    const admin = { authorization: `Bearer ${ADMIN}` };
    const routes = [
      ['/admin/attestation-keys/revoke', admin, '{ "kid": string, "reason"?: string }'],
      ['/admin/installs/revoke', admin, '{ "install_id": "i…" } or { "release_kid": "…" }'],
      ['/admin/keys', admin, '{ "label": string }'],
      ['/admin/keys/revoke', admin, '{ "id": string }'],
      ['/v1/moat/conformance', { 'x-api-key': apiKey }, '{ "requests": [...] }'],
    ] as const;
    for (const [path, headers, shape] of routes)
      for (const [body, got] of [
        ['null', 'null'],
        ['[]', 'an array'],
        ['5', 'number'],
        ['"kid"', 'string'],
        ['true', 'boolean'],
      ] as const) {
        const res = await fetch(`${base}${path}`, { method: 'POST', headers, body });
        expect(res.status, `${path} ${body}`).toBe(400);
        expect(((await res.json()) as { error: { message: string } }).error.message).toBe(`body: expected JSON ${shape}, got ${got}`);
      }
    expect((await verifier.storage.revokedKids()).length).toBe(0);
  });
});

describe('partner conformance over HTTP', () => {
  it('moat-conformance --verifier passes against this verifier', { timeout: 60_000 }, async () => {
    const { spawn } = await import('node:child_process');
    const { createRequire } = await import('node:module');
    const { dirname } = await import('node:path');
    const cli = join(dirname(createRequire(import.meta.url).resolve('@moat/protocol/package.json')), 'dist/cli/moat-conformance.js');
    const out = await new Promise<string>((resolve) => {
      const child = spawn(process.execPath, [cli, '--verifier', base, '--api-key', apiKey, '--json']);
      let stdout = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.on('close', () => resolve(stdout));
    });
    const report = JSON.parse(out) as {
      passed: number;
      failed: number;
      vectors: { run: number; total: number };
      results: Array<{ name: string; pass: boolean }>;
    };
    expect(report.failed).toBe(0);
    // The discovery document, the telemetry bodies, and every case of every kit operation: counts derived, never written.
    const { conformanceCases, loadVectors } = await import('@moat/protocol/conformance');
    const { pathToFileURL } = await import('node:url');
    const vectors = new URL('vectors/', pathToFileURL(createRequire(import.meta.url).resolve('@moat/protocol/package.json')));
    const telemetry = report.results.filter((r) => r.name.startsWith('telemetry: ')).length;
    expect(telemetry).toBeGreaterThan(0);
    expect(report.passed).toBe(1 + telemetry + conformanceCases(vectors).length);
    expect(report.vectors).toEqual({ run: loadVectors(vectors).length, total: loadVectors(vectors).length });
  });

  it('POST /v1/moat/conformance answers 401 without a key and 400 with a reason for a bad body', async () => {
    const unauth = await fetch(`${base}/v1/moat/conformance`, { method: 'POST', body: '{"requests":[]}' });
    expect(unauth.status).toBe(401);
    for (const [body, reason] of [
      ['{"requests":', /expected JSON/],
      ['{"requests":{}}', /expected an array of at most 1000, got object/],
      [JSON.stringify({ requests: Array.from({ length: 1001 }, () => ({})) }), /got 1001 items/],
    ] as const) {
      const res = await fetch(`${base}/v1/moat/conformance`, { method: 'POST', headers: { 'x-api-key': apiKey }, body });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(reason);
    }
    const ok = await fetch(`${base}/v1/moat/conformance`, {
      method: 'POST',
      headers: { 'x-api-key': apiKey },
      body: JSON.stringify({ requests: [{ op: 'attribution.parse', input: 'x-moat: v=1; cv=1.0.0; fp=abc;' }, { op: 'nope' }] }),
    });
    const { answers } = (await ok.json()) as { answers: Array<Record<string, unknown>> };
    expect(answers[0]).toMatchObject({ valid: true, serialized: 'x-moat: v=1; cv=1.0.0; fp=abc;' });
    expect(answers[1]).toHaveProperty('error');
  });
});

describe('storage and configuration', () => {
  it('keeps records and statistics across a restart', async () => {
    const database = join(mkdtempSync(join(tmpdir(), 'moat-verifier-')), 'db.sqlite');
    const secret = randomBytes(32).toString('hex');
    const cfg = { ...config(), database, serverSecret: secret };
    const a = await createVerifier(cfg, { logLevel: 'silent' });
    const url = await a.listen();
    const key = (await a.storage.createApiKey('persist')).key;
    await fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key },
      body: JSON.stringify(request('persist me please, verifier')),
    }).then((r) => r.arrayBuffer());
    await a.close();
    const b = await createVerifier(cfg, { logLevel: 'silent' });
    expect(await b.storage.queryRecords({ limit: 10 })).toHaveLength(1);
    expect(await b.storage.lookupApiKey(key)).toBeDefined();
    expect(b.fingerprintStats.size).toBe(1);
    await b.close();
  });

  it('refuses bad settings with the setting, what was expected and what came', () => {
    expect(() => loadConfig({ MOAT_VERIFIER_ADMIN_TOKEN: 'short' })).toThrow(
      /ERR_VERIFIER_CONFIG: adminToken: expected at least 16 characters, got 5 characters/,
    );
    expect(() => config({ port: 70000 } as never)).toThrow(/port: expected an integer in 0..65535/);
    expect(() => config({ upstream: 'ftp://x' } as never)).toThrow(/upstream: expected "mock" or an http\(s\) URL/);
    expect(() =>
      loadConfig({ MOAT_VERIFIER_ADMIN_TOKEN: ADMIN, MOAT_VERIFIER_FINGERPRINT_SALT: 's', MOAT_VERIFIER_SERVER_SECRET: 'abcd' }),
    ).toThrow(/serverSecret: expected hex of at least 32 bytes/);
    expect(() => loadConfig({}, '/nonexistent/config.json')).toThrow(/config file: expected a readable file/);
  });
});

describe('after every request above', () => {
  it('every upstream call gave its connection back', async () => {
    expect(await upstreamCallsLeft(base, ADMIN)).toEqual([
      'moat_verifier_upstream_calls_active 0',
      'moat_verifier_upstream_calls_waiting 0',
    ]);
  });
});
