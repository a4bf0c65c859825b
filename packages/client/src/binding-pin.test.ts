/**
 * No downgrade by discovery: a relay between client and verifier that removes
 * `request_binding` from `GET /v1/moat` (so the client would stamp `v1`, whose bytes the
 * relay can re-send under its own key). The verifier's release table scores a `v1` stamp from
 * a 1.1 release `invalid`; the client keeps binding an origin it has seen bind, and a release
 * build binds outright.
 */
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Anthropic from '@anthropic-ai/sdk';
import { devKeyFile } from '@moat/native/dev-key';
import { createVerifier, devEnvironment, loadConfig, type Verifier } from '@moat/verifier';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMoatFetch, type MoatFetchOptions } from './index.js';

const SALT = 'pin-test-salt';
let verifier: Verifier;
let relay: Server;
let direct = '';
let relayed = '';
let apiKey = '';
/** The stamp scheme of every Messages body the relay passed on. */
const schemes: string[] = [];

beforeAll(async () => {
  verifier = await createVerifier(
    loadConfig({
      ...devEnvironment({ salt: SALT, attestationKeyFile: devKeyFile }),
      MOAT_VERIFIER_RELEASES: JSON.stringify([{ minCv: '3.0.0', features: ['request_binding'] }]),
      MOAT_VERIFIER_UA_PRODUCT: 'moat-client',
    }),
    { logLevel: 'silent' },
  );
  direct = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('pin')).key;
  const target = new URL(direct);
  relay = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    if (req.url === '/v1/moat') {
      // The downgrade: the discovery document without request_binding.
      const doc = (await (await fetch(`${direct}/v1/moat`)).json()) as { moat: { features: string[] } };
      doc.moat.features = doc.moat.features.filter((f) => f !== 'request_binding');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
      return;
    }
    const scheme = /"moat_att":"(v1|r1)\./.exec(body.toString('utf8'))?.[1];
    if (scheme !== undefined) schemes.push(scheme);
    // Everything else as it came, Host included (so an r1 stamp still names the authority the client used).
    const up = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    up.end(body);
  });
  relay.listen(0, '127.0.0.1');
  await new Promise((r) => relay.once('listening', r));
  relayed = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
});
afterAll(async () => {
  relay.close();
  await verifier.close();
});

async function ask(baseURL: string, options: Partial<MoatFetchOptions> = {}) {
  // Protocol 1.1's binding alone: per-install keys (1.2), which the relay cannot strip either, are off here.
  const moatFetch = createMoatFetch({ salt: SALT, clientVersion: '3.1.0', installKeys: false, ...options });
  const sdk = new Anthropic({ apiKey, baseURL, fetch: moatFetch, maxRetries: 0 });
  const outcome = await sdk.messages
    .create({ model: 'claude-mock', max_tokens: 32, messages: [{ role: 'user', content: 'pinned or not' }] })
    .then(
      () => 'ok',
      (e: unknown) => (e instanceof Anthropic.APIError ? e.status : 'error'),
    );
  await moatFetch.close();
  const [record] = await verifier.storage.queryRecords({ limit: 1 });
  return { outcome, scheme: schemes.at(-1), attestation: record?.attestation, verdict: record?.verdict };
}

describe('no downgrade by discovery', { timeout: 60_000 }, () => {
  it('the verifier scores a v1 stamp from a release that binds requests invalid, and blocks it', async () => {
    expect(await ask(relayed)).toEqual({ outcome: 403, scheme: 'v1', attestation: 'invalid', verdict: 'block' });
  });

  it('a release build pins request binding outright: r1 through the relay, valid', async () => {
    expect(await ask(relayed, { requestBinding: 'always' })).toEqual({
      outcome: 'ok',
      scheme: 'r1',
      attestation: 'valid',
      verdict: 'allow',
    });
  });

  it('an origin seen binding stays pinned when its discovery later drops request_binding', async () => {
    const pins = new Set<string>();
    await ask(direct, { bindingPins: pins });
    expect([...pins]).toEqual([new URL(direct).origin]);
    // The same origin, now behind the relay that edits discovery (pins persisted by the app).
    pins.add(new URL(relayed).origin);
    expect(await ask(relayed, { bindingPins: pins })).toMatchObject({ outcome: 'ok', scheme: 'r1', attestation: 'valid' });
  });
});
