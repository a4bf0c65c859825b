/**
 * A verifier mounted under a path: clients send to `http://front/anthropic/v1/messages` and a
 * front end strips `/anthropic` before the verifier (`publicPathPrefix`). The client must
 * find everything Moat under its base URL (discovery, flags, telemetry, enrollment) and stamp
 * the path it sends; the front end answers 404 for anything outside the prefix, as a shared
 * host's other routes would.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { serve } from '@hono/node-server';
import { devKeyFile } from '@moat/native/dev-key';
import { urlOf } from '@moat/test-kit/servers';
import { createMoatHandler, createVerifier, devEnvironment, loadConfig, mockModel, type Verifier } from '@moat/verifier';
import fc from 'fast-check';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpointBase } from './endpoint.js';
import { createMoatFetch, type MoatFetchOptions } from './index.js';

const SALT = 'mounted-test-salt';
const PREFIX = '/anthropic';
let verifier: Verifier;
let front: Server;
let frontUrl = '';
let verifierUrl = '';
let apiKey = '';
let stateParent = '';
/** Every path the front end received, in order. */
const seen: string[] = [];

/**
 * A front end that serves each mount by stripping its prefix and forwarding to the verifier
 * behind it (the Host kept, as a front end in the same deployment keeps it), and answers 404
 * outside every mount, as a shared host's other routes would. It adds a gateway's trace to
 * every answer, so the client has a telemetry event to report; `seen` gets every path asked for.
 */
function frontEnd(mounts: Readonly<Record<string, URL>>, seen?: string[]): Server {
  return createServer((req, res) => {
    const url = req.url ?? '/';
    seen?.push(url);
    const prefix = Object.keys(mounts).find((m) => url.startsWith(`${m}/`));
    const target = prefix === undefined ? undefined : mounts[prefix];
    if (prefix === undefined || target === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not here');
      return;
    }
    const up = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: url.slice(prefix.length), headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, { ...answer.headers, 'helicone-id': 'front' });
        answer.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  }).listen(0, '127.0.0.1');
}

beforeAll(async () => {
  stateParent = mkdtempSync(join(tmpdir(), 'moat-client-mounted-'));
  verifier = await createVerifier(
    loadConfig({
      ...devEnvironment({ salt: SALT, attestationKeyFile: devKeyFile }),
      MOAT_VERIFIER_UA_PRODUCT: 'moat-client',
      MOAT_VERIFIER_PUBLIC_PATH_PREFIX: PREFIX,
    }),
    { logLevel: 'silent' },
  );
  verifierUrl = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('mounted')).key;
  front = frontEnd({ [PREFIX]: new URL(verifierUrl) }, seen);
  frontUrl = await urlOf(front);
});
afterAll(async () => {
  front.close();
  await verifier.close();
  rmSync(stateParent, { recursive: true, force: true });
});

function client(options: Partial<MoatFetchOptions> = {}) {
  const warnings: string[] = [];
  const moatFetch = createMoatFetch({
    salt: SALT,
    clientVersion: '2.0.0',
    onWarning: (m) => warnings.push(m),
    installKeys: { stateDir: mkdtempSync(join(stateParent, 'installs-')), keystore: 'file' },
    ...options,
  });
  return { moatFetch, warnings };
}

describe('endpointBase', () => {
  it('is the origin and the path before the last /v1 segment, or a base URL without its trailing /', () => {
    const of = (u: string) => endpointBase(new URL(u));
    expect(of('http://h/v1/messages')).toBe('http://h');
    expect(of('http://h/anthropic/v1/messages?beta=true')).toBe('http://h/anthropic');
    expect(of('http://h/a/b/v1/messages/count_tokens')).toBe('http://h/a/b');
    expect(of('http://h/a/v1/messages/batches')).toBe('http://h/a');
    expect(of('http://h:8080/anthropic/')).toBe('http://h:8080/anthropic');
    expect(of('http://h/anthropic//')).toBe('http://h/anthropic');
    expect(of('https://h/')).toBe('https://h');
    expect(of('https://h')).toBe('https://h');
    expect(of('https://h/anthropic/v1')).toBe('https://h/anthropic');
    expect(of('https://h/v1/moat')).toBe('https://h');
    expect(of('https://h/v10/x')).toBe('https://h/v10/x');
    expect(of('https://h/a/v1/b/v1/messages#f')).toBe('https://h/a/v1/b');
  });
  it('gives back the mount of any Messages URL and of its base URL (property)', () => {
    const segment = fc.stringMatching(/^[A-Za-z0-9._~-]{1,12}$/).filter((s) => s !== 'v1' && s !== '.' && s !== '..');
    const suffix = fc.constantFrom('/v1/messages', '/v1/messages/count_tokens', '/v1/messages/batches', '/v1', '/', '');
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 4 }), suffix, fc.constantFrom('', '?beta=true'), (segments, end, query) => {
        const prefix = segments.map((s) => `/${s}`).join('');
        expect(endpointBase(new URL(`https://gw.example:8443${prefix}${end}${query}`))).toBe(`https://gw.example:8443${prefix}`);
      }),
      { numRuns: 500 },
    );
  });
});

describe('@moat/client under a base URL with a path', { timeout: 30_000 }, () => {
  it('discovers, reads flags, enrolls and reports under the base; the stamp binds the path it sent', async () => {
    const { moatFetch, warnings } = client();
    const sdk = new Anthropic({ apiKey, baseURL: `${frontUrl}${PREFIX}`, fetch: moatFetch, maxRetries: 0 });
    const status = await moatFetch.connect(`${frontUrl}${PREFIX}`, apiKey);
    expect(status.find((s) => s.layer === 'anti-distillation')?.state).not.toBe('degraded');
    for (let i = 0; i < 2; i++) {
      const message = await sdk.messages.create({
        model: 'claude-mock',
        max_tokens: 32,
        messages: [{ role: 'user', content: `mounted ${i}` }],
      });
      expect(message.type).toBe('message');
    }
    await moatFetch.close();
    const records = await verifier.storage.queryRecords({ limit: 2 });
    expect(records).toHaveLength(2);
    for (const r of records) {
      expect(r).toMatchObject({ attestation: 'valid', binding: 'install', fingerprint: 'match', verdict: 'allow', status: 200 });
      expect(r.installId).not.toBeNull();
    }
    // Nothing of Moat's was asked for outside the prefix: no 404 for discovery, flags, telemetry or enrollment.
    expect(seen.filter((p) => !p.startsWith(`${PREFIX}/`))).toEqual([]);
    const moatPaths = new Set(seen.map((p) => p.split('?')[0]));
    expect(moatPaths).toEqual(
      new Set([
        `${PREFIX}/v1/moat`,
        `${PREFIX}/api/features/moat`,
        `${PREFIX}/v1/moat/enroll/challenge`,
        `${PREFIX}/v1/moat/enroll`,
        `${PREFIX}/v1/messages`,
        `${PREFIX}/v1/telemetry`,
      ]),
    );
    expect(warnings).toEqual([]);
  });

  it('the same verifier reached under its prefix, with no front end: routed, bound, allowed', async () => {
    const { moatFetch, warnings } = client();
    const sdk = new Anthropic({ apiKey, baseURL: `${verifierUrl}${PREFIX}`, fetch: moatFetch, maxRetries: 0 });
    const message = await sdk.messages.create({ model: 'claude-mock', max_tokens: 32, messages: [{ role: 'user', content: 'direct' }] });
    expect(message.type).toBe('message');
    await moatFetch.close();
    const [record] = await verifier.storage.queryRecords({ limit: 1 });
    expect(record).toMatchObject({ attestation: 'valid', binding: 'install', fingerprint: 'match', verdict: 'allow', status: 200 });
    expect(warnings).toEqual([]);
  });

  it('the same verifier reached at its root (a client without the prefix): its stamps match too', async () => {
    const { moatFetch, warnings } = client({ installKeys: false });
    const sdk = new Anthropic({ apiKey, baseURL: verifierUrl, fetch: moatFetch, maxRetries: 0 });
    const message = await sdk.messages.create({ model: 'claude-mock', max_tokens: 32, messages: [{ role: 'user', content: 'root' }] });
    expect(message.type).toBe('message');
    await moatFetch.close();
    const [record] = await verifier.storage.queryRecords({ limit: 1 });
    expect(record).toMatchObject({ attestation: 'valid', binding: 'request', verdict: 'allow', status: 200 });
    expect(warnings).toEqual([]);
  });

  it("serves the API and Moat's client routes under the prefix, never the operator's (admin, metrics, dashboard, readiness)", async () => {
    const status = async (path: string) => (await fetch(`${verifierUrl}${path}`)).status;
    for (const path of ['/admin/records', '/admin/keys', '/metrics', '/dashboard', '/admin/anything'])
      expect(await status(`${PREFIX}${path}`), path).toBe(404);
    expect(await status('/admin/records')).toBe(401);
    expect(await status(`${PREFIX}/healthz`)).toBe(200);
    // Readiness names the checks that fail and why: the operator's, at the root only.
    expect(await status(`${PREFIX}/readyz`)).toBe(404);
    expect(await status('/readyz')).toBe(200);
    expect(await status(`${PREFIX}/v1/moat`)).toBe(200);
  });

  it('createMoatHandler in a hono app under a path: the prefix is its own, the stamp still matches', async () => {
    const moat = await createMoatHandler({
      settings: {
        fingerprintSalt: SALT,
        serverSecret: 'ab'.repeat(32),
        signingSecret: 'cd'.repeat(32),
        attestationKeyFile: devKeyFile,
        database: ':memory:',
        userAgentProduct: 'moat-client',
        publicPathPrefix: PREFIX,
      },
      upstream: mockModel,
      logLevel: 'silent',
    });
    const app = new Hono();
    app.all(`${PREFIX}/*`, (c) => moat.fetch(c.req.raw));
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
    try {
      const key = (await moat.storage.createApiKey('embedded-mounted')).key;
      const { moatFetch, warnings } = client({ installKeys: false });
      const sdk = new Anthropic({ apiKey: key, baseURL: `${await urlOf(server)}${PREFIX}`, fetch: moatFetch, maxRetries: 0 });
      const message = await sdk.messages.create({
        model: 'claude-mock',
        max_tokens: 32,
        messages: [{ role: 'user', content: 'embedded' }],
      });
      expect(message.type).toBe('message');
      await moatFetch.close();
      const [record] = await moat.storage.queryRecords({ limit: 1 });
      expect(record).toMatchObject({ attestation: 'valid', binding: 'request', fingerprint: 'match', verdict: 'allow', status: 200 });
      expect(warnings).toEqual([]);
    } finally {
      await new Promise((r) => server.close(r));
      await moat.close();
    }
  });

  it('two verifiers mounted under two paths of one host are two endpoints: an install each, no re-enrollment between them', async () => {
    const mounts = ['/a', '/b'] as const;
    const verifiers = await Promise.all(
      mounts.map((prefix) =>
        createVerifier(
          loadConfig({
            ...devEnvironment({ salt: SALT, attestationKeyFile: devKeyFile }),
            MOAT_VERIFIER_UA_PRODUCT: 'moat-client',
            MOAT_VERIFIER_PUBLIC_PATH_PREFIX: prefix,
          }),
          { logLevel: 'silent' },
        ),
      ),
    );
    const targets = await Promise.all(verifiers.map(async (v) => new URL(await v.listen())));
    const shared = 'sk-shared-between-two-tenants-0001';
    for (const v of verifiers) await v.storage.importApiKey('key_shared', shared, 'shared');
    const host = frontEnd(Object.fromEntries(mounts.map((m, i) => [m, targets[i] as URL])));
    try {
      const hostUrl = await urlOf(host);
      const { moatFetch, warnings } = client();
      for (const prefix of ['/a', '/b', '/a', '/b']) {
        const sdk = new Anthropic({ apiKey: shared, baseURL: `${hostUrl}${prefix}`, fetch: moatFetch, maxRetries: 0 });
        const message = await sdk.messages.create({ model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: prefix }] });
        expect(message.type).toBe('message');
      }
      await moatFetch.close();
      const records = await Promise.all(verifiers.map((v) => v.storage.queryRecords({ limit: 10 })));
      for (const list of records) {
        expect(list.map((r) => [r.attestation, r.binding, r.status])).toEqual([
          ['valid', 'install', 200],
          ['valid', 'install', 200],
        ]);
        expect(new Set(list.map((r) => r.installId)).size).toBe(1);
      }
      expect(records[0]?.[0]?.installId).not.toBe(records[1]?.[0]?.installId);
      expect(warnings).toEqual([]);
    } finally {
      await new Promise((r) => host.close(r));
      for (const v of verifiers) await v.close();
    }
  });

  it('the verifier without publicPathPrefix would score that stamp invalid: the setting is what makes it match', async () => {
    const other = await createVerifier(
      loadConfig({ ...devEnvironment({ salt: SALT, attestationKeyFile: devKeyFile }), MOAT_VERIFIER_UA_PRODUCT: 'moat-client' }),
      { logLevel: 'silent' },
    );
    try {
      const target = new URL(await other.listen());
      const key = (await other.storage.createApiKey('unmounted')).key;
      const strip = frontEnd({ [PREFIX]: target });
      const url = `${await urlOf(strip)}${PREFIX}`;
      const { moatFetch } = client({ installKeys: false });
      const sdk = new Anthropic({ apiKey: key, baseURL: url, fetch: moatFetch, maxRetries: 0 });
      const outcome = await sdk.messages
        .create({ model: 'claude-mock', max_tokens: 32, messages: [{ role: 'user', content: 'unmounted' }] })
        .then(
          () => 200,
          (e: unknown) => (e instanceof Anthropic.APIError ? e.status : 'error'),
        );
      await moatFetch.close();
      strip.close();
      const [record] = await other.storage.queryRecords({ limit: 1 });
      expect(record?.attestation).toBe('invalid');
      expect(record?.verdict).toBe('block');
      expect(outcome).toBe(403);
    } finally {
      await other.close();
    }
  });
});
