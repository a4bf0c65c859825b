/**
 * The route that is classified is the route that is forwarded, against an upstream that
 * routes leniently, as permissive frameworks and proxies do (slashes merged, escapes decoded,
 * `;params` and trailing slashes stripped, dot segments resolved, case ignored). Every
 * variant of `/v1/messages` either runs through the pipeline or is refused and recorded;
 * the upstream only ever sees canonical paths under its base path; only the named upstream
 * routes pass through; hop-by-hop headers stay on their hop.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { posix } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { ROUTING_OVERRIDES } from './pipeline/upstream.js';
import { createVerifier, type Verifier } from './server.js';

interface Seen {
  readonly method: string;
  readonly raw: string;
  /** What the lenient upstream took the path for. */
  readonly route: string;
  readonly headers: IncomingHttpHeaders;
}

/** Where a permissive framework would route a raw target: decoded, merged, unparametrized, resolved, lowercased. */
function lenientRoute(raw: string): string {
  let path = raw.replace(/^[a-z]+:\/\/[^/]*/i, '').split('?')[0] ?? '';
  try {
    path = decodeURIComponent(path);
  } catch {
    // Left as it is, as a lenient framework would.
  }
  path = path.replace(/\\/g, '/').replace(/;[^/]*/g, '');
  path = posix.normalize(path).replace(/\/+$/, '').toLowerCase();
  return path.replace(/^\/anthropic(?=\/)/, '');
}

const seen: Seen[] = [];
let upstream: Server;
let verifier: Verifier;
let base = '';
let apiKey = '';

async function startVerifier(env: Record<string, string> = {}): Promise<Verifier> {
  const { port } = upstream.address() as AddressInfo;
  return createVerifier(
    loadConfig({ ...devEnvironment(), MOAT_VERIFIER_UPSTREAM: `http://127.0.0.1:${port}/anthropic/`, ...env }),
    {
      logLevel: 'silent',
    },
  );
}

beforeAll(async () => {
  upstream = createServer(async (req, res) => {
    for await (const _ of req) {
      // The body is not needed: the route is what this upstream gets wrong.
    }
    // A lenient upstream also routes by the override headers IIS, Symfony and others honour.
    const override = req.headers['x-original-url'] ?? req.headers['x-rewrite-url'];
    const route = lenientRoute(typeof override === 'string' ? override : (req.url ?? ''));
    if (req.headers['x-test-delay'] !== undefined)
      await new Promise((r) => setTimeout(r, Number(req.headers['x-test-delay'])));
    seen.push({ method: req.method ?? '', raw: req.url ?? '', route, headers: req.headers });
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
    if (route === '/v1/messages')
      return json(200, {
        id: 'msg_lenient',
        type: 'message',
        role: 'assistant',
        model: 'claude-mock',
        content: [{ type: 'text', text: 'served' }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: { input_tokens: 1, output_tokens: 1 },
      });
    if (route === '/v1/models')
      return json(
        200,
        { data: [], has_more: false },
        { connection: 'keep-alive, x-upstream-hop', 'x-upstream-hop': 'secret', 'x-kept': '1' },
      );
    if (route === '/v1/complete') return json(200, { type: 'completion', completion: 'served' });
    return json(404, { type: 'error', error: { type: 'not_found_error', message: 'nothing here' } });
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  verifier = await startVerifier();
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('routing')).key;
});

afterAll(async () => {
  await verifier.close();
  upstream.close();
});

const body = JSON.stringify({ model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: 'hello' }] });

/** Sends exactly `method target` over a socket of its own and returns the status and headers. */
function raw(
  url: string,
  method: string,
  target: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; head: string }> {
  const { port } = new URL(url);
  const lines = [
    `${method} ${target} HTTP/1.1`,
    'host: verifier.test',
    `x-api-key: ${apiKey}`,
    'content-type: application/json',
    `content-length: ${Buffer.byteLength(body)}`,
    'connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`));
    let out = '';
    socket.on('data', (d) => (out += d));
    socket.on('error', reject);
    socket.on('close', () => {
      const head = out.slice(0, out.indexOf('\r\n\r\n')).toLowerCase();
      resolve({ status: Number(/^http\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head });
    });
  });
}

const total = async (v: Verifier) => (await v.storage.summary()).total;

describe('canonical routing', () => {
  it('sends every variant of /v1/messages through the pipeline or refuses and records it', async () => {
    const variants: Array<[string, string]> = [
      ['POST', '/v1/messages'],
      ['POST', '/v1//messages'],
      ['POST', '//v1/messages'],
      ['POST', '/v1/%6Dessages'],
      ['POST', '/v1/messages?beta=true'],
      ['POST', '/v1/messages/'],
      ['POST', '/v1/messages;x'],
      ['POST', '/v1/messages%3Bx'],
      ['POST', '/v1%2Fmessages'],
      ['POST', '/v1/x/../messages'],
      ['POST', '/v1/./messages'],
      ['POST', '/V1/Messages'],
      ['POST', '/v1/messages%2F'],
      ['POST', 'http://verifier.test/v1/messages'],
      ['POST', 'http://other.example/v1/messages'],
      ['GET', '/v1/messages'],
      ['PUT', '/v1/messages'],
      ['PATCH', '/v1/messages'],
      ['DELETE', '/v1/messages'],
      ['POST', '/v1/complete'],
      ['POST', '/v1/complete/'],
      ['GET', '/../v1/models'],
      ['GET', '/v1/models/..%2F..%2Fv1%2Fmessages'],
      ['POST', '/v1/models'],
      ['POST', '/v1/messages/batches/'],
    ];
    const before = await total(verifier);
    const pipelined = new Set<string>();
    for (const [method, target] of variants) {
      seen.length = 0;
      const answer = await raw(base, method, target);
      expect(answer.status, `${method} ${target}`).toBeGreaterThanOrEqual(200);
      expect(answer.status, `${method} ${target}`).toBeLessThan(500);
      for (const hit of seen) {
        // Whatever reached the upstream is canonical, under the base path, and was classified as exactly that.
        expect(hit.raw, `${method} ${target}`).toMatch(/^\/anthropic\/v1\/[a-z_/]+(\?beta=true)?$/);
        if (hit.route === '/v1/messages') {
          expect(`${hit.method} ${hit.raw.split('?')[0]}`, `${method} ${target}`).toBe('POST /anthropic/v1/messages');
          pipelined.add(`${method} ${target}`);
        }
      }
      if (answer.status >= 400) expect(seen, `${method} ${target}`).toEqual([]);
    }
    expect(await total(verifier)).toBe(before + variants.length);
    expect([...pipelined].sort()).toEqual(
      [
        'POST /v1/messages',
        'POST /v1//messages',
        'POST //v1/messages',
        'POST /v1/%6Dessages',
        'POST /v1/messages?beta=true',
      ].sort(),
    );
    const refused = await verifier.storage.queryRecords({ limit: 100, verdict: 'block' });
    expect(refused.map((r) => r.reasons[0]).join('\n')).toMatch(/^404: no route POST \/v1\/messages\/$/m);
    expect(refused.map((r) => r.reasons[0]).join('\n')).toMatch(
      /^400: request target: expected an origin-form target/m,
    );
    expect(refused.every((r) => r.keyId !== null)).toBe(true);
  });

  it('answers what it refuses in Anthropic’s shape', async () => {
    const res = await fetch(`${base}/v1/complete`, { method: 'POST', headers: { 'x-api-key': apiKey }, body });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({
      type: 'error',
      error: { type: 'not_found_error', message: 'no route POST /v1/complete' },
    });
    expect(res.headers.get('moat-request-id')).toMatch(/^req_/);
  });

  it('passes the named routes through at their canonical path, legacy completions only when named', async () => {
    seen.length = 0;
    const models = await fetch(`${base}/v1//models`, { headers: { 'x-api-key': apiKey } });
    expect(models.status).toBe(200);
    expect(seen.map((s) => s.raw)).toEqual(['/anthropic/v1/models']);
    const unauthenticated = await fetch(`${base}/v1/models`);
    expect(unauthenticated.status).toBe(401);
    const legacy = await startVerifier({ MOAT_VERIFIER_PASSTHROUGH_ROUTES: 'GET /v1/models,POST /v1/complete' });
    try {
      const url = await legacy.listen();
      const key = (await legacy.storage.createApiKey('legacy')).key;
      seen.length = 0;
      const res = await fetch(`${url}/v1/complete`, { method: 'POST', headers: { 'x-api-key': key }, body: '{}' });
      expect(res.status).toBe(200);
      expect(seen.map((s) => `${s.method} ${s.raw}`)).toEqual(['POST /anthropic/v1/complete']);
      const [record] = await legacy.storage.queryRecords({ limit: 1 });
      expect(record?.reasons).toEqual(['passthrough POST /v1/complete']);
      expect(record?.status).toBe(200);
    } finally {
      await legacy.close();
    }
  });
});

describe('routing overrides', () => {
  it('never forwards a header by which an upstream would route elsewhere', async () => {
    const overrides = Object.fromEntries(
      [...ROUTING_OVERRIDES].map((name) => [name, name.includes('method') ? 'POST' : '/v1/messages']),
    );
    seen.length = 0;
    const models = await raw(base, 'GET', '/v1/models', overrides);
    expect(models.status).toBe(200);
    const messages = await raw(base, 'POST', '/v1/messages', overrides);
    expect(messages.status).toBe(200);
    expect(seen.map((s) => s.route)).toEqual(['/v1/models', '/v1/messages']);
    for (const hit of seen) for (const name of ROUTING_OVERRIDES) expect(hit.headers[name], name).toBeUndefined();
  });
});

describe('a pass-through client that goes away', () => {
  it('aborts the upstream call and is recorded 499, as on the Messages routes', async () => {
    const before = await total(verifier);
    const { port } = new URL(base);
    const socket = connect(Number(port), '127.0.0.1', () =>
      socket.write(
        `GET /v1/models HTTP/1.1\r\nhost: verifier.test\r\nx-api-key: ${apiKey}\r\nx-test-delay: 400\r\n\r\n`,
      ),
    );
    await new Promise((r) => setTimeout(r, 100));
    socket.destroy();
    const last = async () => (await verifier.storage.queryRecords({ limit: 1 }))[0];
    for (let i = 0; i < 200 && (await last())?.status !== 499; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await last()).toMatchObject({ status: 499, reasons: ['passthrough GET /v1/models', 'client_disconnected'] });
    expect(await total(verifier)).toBe(before + 1);
  });
});

describe('hop-by-hop headers', () => {
  it('drops the headers Connection names, towards the upstream and back', async () => {
    seen.length = 0;
    const answer = await raw(base, 'POST', '/v1/messages', {
      'x-client-hop': 'secret',
      'x-client-kept': 'kept',
      connection: 'x-client-hop',
      'keep-alive': 'timeout=5',
      te: 'trailers',
    });
    expect(answer.status).toBe(200);
    expect(seen[0]?.headers['x-client-hop']).toBeUndefined();
    expect(seen[0]?.headers['keep-alive']).toBeUndefined();
    expect(seen[0]?.headers.te).toBeUndefined();
    expect(seen[0]?.headers['x-client-kept']).toBe('kept');
    const models = await raw(base, 'GET', '/v1/models');
    expect(models.status).toBe(200);
    expect(models.head).not.toContain('x-upstream-hop');
    expect(models.head).toContain('x-kept: 1');
  });
});
