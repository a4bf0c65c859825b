/**
 * Hostile input against a running verifier: malformed Messages shapes, bad bytes, oversized
 * and unauthenticated requests, requests Node's HTTP parser refuses — every one answered in
 * Anthropic's error shape, none with a 5xx of the verifier's own, each leaving exactly one
 * record. A fast-check fuzz sends 20,000 generated requests over HTTP: bodies, request targets,
 * header values and member names.
 */
import { connect } from 'node:net';
import fc from 'fast-check';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { createVerifier, type Verifier } from './server.js';
import { upstreamCallsLeft } from './services.test-util.js';

let verifier: Verifier;
let base = '';
let apiKey = '';
let pool: Pool;

const environment = devEnvironment();

beforeAll(async () => {
  verifier = await createVerifier(loadConfig({ ...environment, MOAT_VERIFIER_MAX_BODY_BYTES: String(1024 * 1024) }), {
    logLevel: 'silent',
  });
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('input')).key;
  pool = new Pool(base, { connections: 8 });
});
afterAll(async () => {
  await pool.close();
  await verifier.close();
});

const total = async () => (await verifier.storage.summary()).total;

interface Answer {
  status: number;
  json: { type?: string; error?: { type?: string; message?: string } };
  /** Whether the answer names its record (`moat-request-id`). */
  recorded: boolean;
}

async function send(body: string | Buffer, headers: Record<string, string> = {}, path = '/v1/messages'): Promise<Answer> {
  const res = await pool.request({
    path,
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey, ...headers },
    body,
  });
  const recorded = typeof res.headers['moat-request-id'] === 'string';
  const text = await res.body.text();
  let json = {};
  if (text.startsWith('event: '))
    return {
      status: res.statusCode,
      json: { type: text.includes('event: message_stop') ? 'stream' : 'broken stream' },
      recorded,
    };
  try {
    json = JSON.parse(text);
  } catch {
    json = { unparsable: text.slice(0, 100) };
  }
  return { status: res.statusCode, json, recorded };
}

const ok = { model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: 'hello' }] };

describe('strict input', () => {
  it('answers malformed shapes 400 naming the path, with one record each', async () => {
    const cases: Array<[string | Buffer, number, RegExp]> = [
      [JSON.stringify({ ...ok, messages: [null] }), 400, /^messages\.0: expected an object/],
      [JSON.stringify({ ...ok, messages: [{ role: 'user', content: [null] }] }), 400, /^messages\.0\.content\.0: expected an object/],
      [JSON.stringify({ ...ok, tools: [null] }), 400, /^tools\.0: expected an object/],
      [JSON.stringify({ ...ok, model: 7 }), 400, /^model: expected a string/],
      ['{"model":"a","model":"claude-mock","max_tokens":1,"messages":[]}', 400, /^model: expected each member name once/],
      [
        Buffer.concat([
          Buffer.from('{"model":"claude-mock","max_tokens":1,"messages":[{"role":"user","content":"'),
          Buffer.from([0xc3, 0x28]),
          Buffer.from('"}]}'),
        ]),
        400,
        /UTF-8/,
      ],
      [
        `{"model":"claude-mock","max_tokens":1,"messages":[],"x":${'['.repeat(10_000)}${']'.repeat(10_000)}}`,
        400,
        /^x\.0(\.0)*: expected nesting at most 128 deep/,
      ],
      ['{"model":', 400, /^body: expected JSON/],
      ['[]', 400, /^body: expected a JSON object/],
      [JSON.stringify({ ...ok, padding: 'x'.repeat(2 * 1024 * 1024) }), 413, /exceeds the 1048576-byte limit/],
    ];
    for (const [body, status, message] of cases) {
      const before = await total();
      const r = await send(body);
      expect(r.status, String(body).slice(0, 80)).toBe(status);
      expect(r.json.type).toBe('error');
      expect(r.json.error?.message).toMatch(message);
      expect(await total(), String(body).slice(0, 80)).toBe(before + 1);
    }
    const records = await verifier.storage.queryRecords({ limit: 10 });
    expect(records.every((r) => r.verdict === 'block' && r.status !== null && r.status >= 400)).toBe(true);
  });

  it('a body that is no JSON object has no stamp: recorded attestation missing, never invalid', async () => {
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(ok))]);
    const cases: Array<[string | Buffer, RegExp]> = [
      [bom, /byte order mark/],
      ['', /expected JSON/],
      ['[]', /expected a JSON object/],
      ['hello', /expected JSON/],
      [Buffer.from([0xff, 0x7b, 0x7d]), /UTF-8/],
    ];
    for (const [body, message] of cases) {
      const r = await send(body);
      expect(r.status, String(body)).toBe(400);
      expect(r.json.error?.message).toMatch(message);
      const [record] = await verifier.storage.queryRecords({ limit: 1 });
      expect(record, String(body)).toMatchObject({ status: 400, attestation: 'missing', verdict: 'block' });
    }
  });

  it('refuses a coded request body 415, recorded, whatever the bytes', async () => {
    const { gzipSync } = await import('node:zlib');
    for (const [body, coding] of [
      [JSON.stringify(ok), 'gzip'],
      [gzipSync(JSON.stringify(ok)), 'gzip'],
      [JSON.stringify(ok), 'br, identity'],
    ] as const) {
      const before = await total();
      const r = await send(body, { 'content-encoding': coding });
      expect(r.status, coding).toBe(415);
      expect(r.json.error?.message).toMatch(/expected an uncompressed request body/);
      expect(await total()).toBe(before + 1);
    }
    expect((await send(JSON.stringify(ok), { 'content-encoding': 'identity' })).status).toBe(200);
  });

  it('records unauthenticated requests, and bounds what it stores of an oversized model name', async () => {
    const before = await total();
    const unauthenticated = await send(JSON.stringify(ok), { 'x-api-key': 'sk-wrong' });
    expect(unauthenticated.status).toBe(401);
    expect(unauthenticated.json.error?.type).toBe('authentication_error');
    expect(await total()).toBe(before + 1);
    const huge = 'claude-mock-'.padEnd(900_000, 'x');
    const r = await send(JSON.stringify({ ...ok, model: huge }));
    expect(r.status).toBe(200);
    const [record] = await verifier.storage.queryRecords({ limit: 1 });
    expect(record?.model?.length).toBeLessThanOrEqual(200);
    expect(r.json.type).toBe('message');
  });

  it('a body that breaks off (half closed before its length) or does not parse (a bad chunk) is answered 400, recorded once, its upstream call cut', async () => {
    const { port } = new URL(base);
    // Writes `head`, then half closes (or not) and reads whatever answer comes, until the server closes.
    const exchange = (text: string, halfClose: boolean) =>
      new Promise<string>((resolve) => {
        const socket = connect(Number(port), '127.0.0.1', () => {
          socket.write(text);
          if (halfClose) socket.end();
        });
        let out = '';
        socket.on('data', (d) => (out += d));
        socket.on('close', () => resolve(out));
        socket.on('error', () => resolve(out));
      });
    const messages = JSON.stringify(ok);
    const multipart =
      '--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello, partial';
    for (const [what, text, halfClose] of [
      [
        'Messages, half closed',
        `POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: ${apiKey}\r\ncontent-type: application/json\r\ncontent-length: ${messages.length + 500}\r\n\r\n${messages}`,
        true,
      ],
      [
        'an upload, half closed',
        `POST /v1/files HTTP/1.1\r\nhost: x\r\nx-api-key: ${apiKey}\r\nanthropic-beta: files-api-2025-04-14\r\ncontent-type: multipart/form-data; boundary=B\r\ncontent-length: 100000\r\n\r\n${multipart}`,
        true,
      ],
      [
        'Messages, a bad chunk size',
        `POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: ${apiKey}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\nzz\r\n`,
        false,
      ],
      [
        'an upload, a bad chunk size',
        `POST /v1/files HTTP/1.1\r\nhost: x\r\nx-api-key: ${apiKey}\r\nanthropic-beta: files-api-2025-04-14\r\ncontent-type: multipart/form-data; boundary=B\r\ntransfer-encoding: chunked\r\n\r\n${multipart.length.toString(16)}\r\n${multipart}\r\nzz\r\n`,
        false,
      ],
    ] as const) {
      const before = await total();
      const answer = await exchange(text, halfClose);
      expect(answer, what).toMatch(/^HTTP\/1\.1 400 /);
      expect(answer, what).toContain('malformed request body');
      expect(await total(), what).toBe(before + 1);
      const [record] = await verifier.storage.queryRecords({ limit: 1 });
      expect(record, what).toMatchObject({ status: 400, verdict: 'block' });
      expect(record?.reasons, what).toContain('malformed_body');
      expect(answer, what).toContain(`moat-request-id: ${record?.id}`);
    }
    // No upstream call is left waiting for the rest of a body that never comes.
    expect(await upstreamCallsLeft(base, environment.MOAT_VERIFIER_ADMIN_TOKEN as string)).toEqual([
      'moat_verifier_upstream_calls_active 0',
      'moat_verifier_upstream_calls_waiting 0',
    ]);
  });

  it("answers what Node's HTTP parser refuses in Anthropic's error shape", async () => {
    const { port } = new URL(base);
    const raw = (text: string) =>
      new Promise<string>((resolve) => {
        const socket = connect(Number(port), '127.0.0.1', () => socket.end(text));
        let out = '';
        socket.on('data', (d) => (out += d));
        socket.on('close', () => resolve(out));
        socket.on('error', () => resolve(out));
      });
    // Each parser refusal is recorded before it is answered, its record named in moat-request-id.
    const refusedAndRecorded = async (text: string, status: number, reason: RegExp) => {
      const before = await total();
      const answer = await raw(text);
      expect(answer, text.slice(0, 80)).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({
        type: 'error',
        error: { type: 'invalid_request_error' },
      });
      expect(await total(), text.slice(0, 80)).toBe(before + 1);
      const [record] = await verifier.storage.queryRecords({ limit: 1 });
      expect(record).toMatchObject({ status, verdict: 'block', keyId: null });
      expect(record?.reasons[0]).toMatch(reason);
      expect(answer).toContain(`moat-request-id: ${record?.id}\r\n`);
    };
    await refusedAndRecorded('GARBAGE\r\n\r\n', 400, /^400: malformed HTTP request \(HPE_/);
    await refusedAndRecorded(
      `GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(64 * 1024)}\r\n\r\n`,
      431,
      /^431: request headers too large/,
    );
    const post = `POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: ${apiKey}\r\n`;
    // Malformed in ways a lenient front end might pass on: an invalid header name, two lengths, a folded line.
    await refusedAndRecorded(`${post}bad header: 1\r\ncontent-length: 2\r\n\r\n{}`, 400, /^400: malformed HTTP request/);
    await refusedAndRecorded(`${post}content-length: 2\r\ncontent-length: 3\r\n\r\n{}`, 400, /^400: malformed HTTP request/);
    await refusedAndRecorded(`${post}x-folded: a\r\n b\r\ncontent-length: 2\r\n\r\n{}`, 400, /^400: malformed HTTP request/);
    await refusedAndRecorded(
      `${post}content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
      400,
      /^400: malformed HTTP request/,
    );
    const before = await total();
    const expectation = await raw(
      `POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: ${apiKey}\r\nexpect: 200-ok\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`,
    );
    expect(expectation).toMatch(/^HTTP\/1\.1 417/);
    expect(JSON.parse(expectation.slice(expectation.indexOf('\r\n\r\n') + 4))).toMatchObject({
      type: 'error',
      error: { type: 'invalid_request_error', message: 'expected no Expect header or "100-continue", got "200-ok"' },
    });
    expect(await total()).toBe(before + 1);
    expect((await verifier.storage.queryRecords({ limit: 1 }))[0]).toMatchObject({ status: 417, verdict: 'block' });
    await refusedAndRecorded('CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n', 405, /^405: CONNECT is not supported/);
    // One Host, as HTTP/1.1 wants it: two (a front end and the upstream may each read another) or none are refused, recorded.
    for (const [head, got] of [
      ['host: a.example\r\nhost: b.example\r\n', 2],
      ['', 0],
    ] as const) {
      const before = await total();
      const answer = await raw(
        `POST /v1/messages HTTP/1.1\r\n${head}x-api-key: ${apiKey}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`,
      );
      expect(answer, head).toMatch(/^HTTP\/1\.1 400/);
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({
        error: { type: 'invalid_request_error', message: `expected one Host header, got ${got}` },
      });
      expect(await total()).toBe(before + 1);
    }
    // Nor two of a header a check reads (Node keeps the first; another reader may take the second).
    for (const twice of [
      `authorization: Bearer ${apiKey}\r\nauthorization: Bearer other`,
      'content-type: application/json\r\ncontent-type: text/plain',
      'user-agent: a\r\nUser-Agent: b',
    ]) {
      const answer = await raw(
        `POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: ${apiKey}\r\n${twice}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`,
      );
      expect(answer, twice).toMatch(/^HTTP\/1\.1 400/);
      expect(answer).toMatch(/expected one (Authorization|Content-Type|User-Agent) header, got 2/);
    }
    // HTTP/1.0 has no Host to require.
    expect(await raw('GET /healthz HTTP/1.0\r\n\r\n')).toMatch(/^HTTP\/1\.1 200/);
  });
});

/** One fuzz case: a body, and the target and headers it goes with. */
interface FuzzCase {
  readonly body: string | Buffer;
  readonly path?: string;
  readonly headers?: Record<string, string>;
}

/** Request targets built from the pieces that confuse routers: slashes, escapes, dot segments, parameters. */
const targets = fc
  .array(
    fc.oneof(
      fc.constantFrom('/', '//', 'v1', 'messages', 'count_tokens', 'batches', 'results', 'moat', 'models', 'complete'),
      fc.constantFrom('%6D', '%2F', '%2f', '%5C', '%2e', '%2E%2E', '%3B', '%25', '%00', '%', '%zz', '%E0%A4%A', '%C3%A9'),
      fc.constantFrom('.', '..', ';x', '?', '?beta=true', '&', '[', ']', '@', ':', '*', '\\', '~', '!', '$', "'", '(', '|', '`', '^'),
      fc.string({ unit: fc.constantFrom(...'/%.;:?[]@!$&*+,=-_~abcAZ09'.split('')), maxLength: 6 }),
    ),
    { maxLength: 10 },
  )
  .map((parts) => `/${parts.join('')}`.replace(/#/g, ''));

/** Header values a client could send: printable ASCII, tabs, Latin-1, separators of lists and parameters. */
const headerValue = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 80 }),
  fc.string({ unit: fc.constantFrom('\t', ' ', ',', ';', '=', '"', 'a', '1', '\u00e9', '\u00ff', 'v1', 'r1'), maxLength: 40 }),
  fc.constantFrom('', ' ', 'unavailable', 'unavailable; reason=x', '2023-06-01', 'gzip, br', 'a'.repeat(4000)),
);
const headerName = fc.constantFrom(
  'anthropic-version',
  'anthropic-beta',
  'moat-attestation',
  'moat-version',
  'content-type',
  'user-agent',
  'x-forwarded-for',
  'forwarded',
  'via',
  'x-litellm-call-id',
  'helicone-auth',
  'accept',
  'accept-encoding',
  'authorization',
  'x-api-key',
  'x-stainless-lang',
);

/** A JSON member name as written: plain, escaped, or with an escape JSON does not have. */
const memberName = fc
  .array(fc.constantFrom('a', 'model', ' ', '\\x', '\\u12', '\\ud800', '\\udc00', '\\u0000', '\\"', '\\\\', '\\/', '\\q', '\\', '\u00e9'), {
    maxLength: 6,
  })
  .map((parts) => `"${parts.join('')}"`);

describe('fuzz', () => {
  it('no body, target, header or member name gets a 5xx of the verifier, and every answer it records leaves one record', {
    timeout: 300_000,
  }, async () => {
    const before = await total();
    let sent = 0;
    let recorded = 0;
    const statuses = new Map<number, number>();
    const check = async (c: FuzzCase) => {
      const r = await send(c.body, c.headers, c.path);
      sent++;
      if (r.recorded) recorded++;
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      const what = `${c.path ?? ''} ${JSON.stringify(c.headers ?? {}).slice(0, 200)} ${String(c.body).slice(0, 200)}`;
      expect(r.status, `${r.status} ${JSON.stringify(r.json).slice(0, 200)} for ${what}`).toBeLessThan(500);
      expect(r.json.type, what).toMatch(/^(message|error|stream)$/);
      // Every Messages request is recorded, whatever its target looked like on the way in.
      if ((c.path ?? '/v1/messages') === '/v1/messages') expect(r.recorded, what).toBe(true);
    };
    const bodies = fuzzBodies();
    const okBody = JSON.stringify(ok);
    const all: FuzzCase[] = [
      ...bodies.map((body) => ({ body })),
      ...fc.sample(targets, 2_500).map((path) => ({ body: okBody, path })),
      ...fc
        .sample(fc.array(fc.tuple(headerName, headerValue), { minLength: 1, maxLength: 4 }), 1_500)
        .map((pairs) => ({ body: okBody, headers: Object.fromEntries(pairs) })),
      ...fc.sample(fc.tuple(memberName, memberName, fc.boolean()), 2_000).map(([inner, outer, stream]) => ({
        body:
          `{"model":"claude-mock","max_tokens":5,"stream":${stream},"messages":[{"role":"user","content":` +
          `[{"type":"text","text":"hi",${inner}:1}]}],${outer}:2}`,
      })),
    ];
    let next = 0;
    // Run 8 at a time over keep-alive connections.
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < all.length) await check(all[next++] as FuzzCase);
      }),
    );
    expect(sent).toBe(20_000);
    expect(await total()).toBe(before + recorded);
    expect(recorded).toBeGreaterThan(17_000);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
  });
});

/** 14,000 request bodies: Messages shapes with hostile parts, nearly valid requests, raw bytes. */
function fuzzBodies(): Array<string | Buffer> {
  const block = fc.oneof(
    fc.record({ type: fc.constant('text'), text: fc.oneof(fc.string(), fc.anything()) }),
    fc.record(
      {
        type: fc.constantFrom('tool_use', 'tool_result', 'thinking', 'redacted_thinking', 'image', 'x'),
        id: fc.anything(),
        name: fc.anything(),
        tool_use_id: fc.anything(),
        content: fc.anything(),
        signature: fc.anything(),
      },
      { requiredKeys: ['type'] },
    ),
    fc.anything(),
  );
  const message = fc.oneof(
    fc.record({
      role: fc.constantFrom('user', 'assistant', 'system', 'x'),
      content: fc.oneof(fc.string(), fc.array(block, { maxLength: 4 }), fc.anything()),
    }),
    fc.anything(),
  );
  const body = fc.record(
    {
      model: fc.oneof(fc.constant('claude-mock'), fc.string(), fc.anything()),
      max_tokens: fc.oneof(fc.integer(), fc.anything()),
      messages: fc.oneof(fc.array(message, { maxLength: 4 }), fc.anything()),
      system: fc.oneof(fc.string(), fc.array(block, { maxLength: 3 }), fc.anything()),
      tools: fc.oneof(
        fc.array(fc.oneof(fc.record({ name: fc.string(), input_schema: fc.object() }), fc.anything()), { maxLength: 3 }),
        fc.anything(),
      ),
      stream: fc.oneof(fc.boolean(), fc.anything()),
      anti_distillation: fc.oneof(fc.constant(['fake_tools']), fc.anything()),
      thinking: fc.oneof(fc.constant({ type: 'enabled', budget_tokens: 1024 }), fc.anything()),
    },
    { requiredKeys: [] },
  );
  // Well-formed requests with hostile parts, so the fuzz reaches the upstream and the response stage too.
  const nearlyValid = fc
    .tuple(
      fc.array(
        fc.record({
          role: fc.constant('user'),
          content: fc.oneof(
            fc.string({ minLength: 1 }),
            fc.array(fc.record({ type: fc.constant('text'), text: fc.string() }), { minLength: 1, maxLength: 3 }),
          ),
        }),
        { minLength: 1, maxLength: 3 },
      ),
      body,
      fc.boolean(),
    )
    .map(([messages, extra, stream]) => ({ ...extra, model: 'claude-mock', max_tokens: 16, messages, stream }));
  // Shapes (most of the budget) and raw bytes.
  const shapes = [
    ...fc.sample(
      body.map((b) => JSON.stringify(b) ?? 'null'),
      8_000,
    ),
    ...fc.sample(
      nearlyValid.map((b) => JSON.stringify(b)),
      3_000,
    ),
  ];
  const bytes = fc.sample(
    fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      fc
        .string({ unit: 'binary', maxLength: 200 })
        .map((s) => `{"model":"claude-mock","max_tokens":5,"messages":[{"role":"user","content":${s}}]}`),
      fc.json({ maxDepth: 4 }),
    ),
    3_000,
  );
  return [...shapes, ...bytes];
}
