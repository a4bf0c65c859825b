/**
 * The key rotation procedure, end to end: two releases with their own key ids, both active;
 * the old key leaks and is revoked through the admin API while traffic flows. Nothing is
 * refused during the change; the old release is flagged from then on, on every replica
 * (a second verifier on the same database picks the revocation up without a restart); the
 * new release stays valid; clients learn the revoked id from the flags endpoint.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { appendEnvelope, computeStamp, locateEnvelope, placeholderEnvelope, utf8 } from '@moat/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { createVerifier, type Verifier } from './server.js';

const releases = {
  old: { kid: 'k1_4_1', key: randomBytes(32) },
  new: { kid: 'k1_4_2', key: randomBytes(32) },
};
const ADMIN = `admin-${randomBytes(8).toString('hex')}`;
const verifiers: Verifier[] = [];
afterAll(async () => {
  for (const v of verifiers) await v.close();
});

/** A request as a release's native layer stamps it: body and request (r1), for `url` and `apiKey`. */
function stamped(release: keyof typeof releases, text: string, url: string, apiKey: string): Buffer {
  const { kid, key } = releases[release];
  const body = appendEnvelope(
    JSON.stringify({ model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: text }] }),
    placeholderEnvelope({ kid, ts: Math.floor(Date.now() / 1000), nonce: randomBytes(8).toString('hex'), binding: 'request' }),
  );
  const bytes = utf8(body);
  const where = locateEnvelope(bytes);
  if (where.status !== 'found') throw new Error('no envelope');
  const request = { method: 'POST', authority: new URL(url).host, path: '/v1/messages', credential: apiKey };
  bytes.set(utf8(computeStamp(key, bytes, where.stampStart, where.stampEnd, request)), where.stampStart);
  return Buffer.from(bytes);
}

describe('key rotation', { timeout: 60_000 }, () => {
  it('revoking the old release key: no downtime, old flagged everywhere, new valid, clients told', async () => {
    const env = {
      ...devEnvironment({ adminToken: ADMIN, database: join(mkdtempSync(join(tmpdir(), 'moat-rotation-')), 'v.db') }),
      MOAT_VERIFIER_ATTESTATION_KEYS: JSON.stringify(Object.values(releases).map((r) => ({ kid: r.kid, key: r.key.toString('hex') }))),
    };
    const [a, b] = [
      await createVerifier(loadConfig(env), { logLevel: 'silent' }),
      await createVerifier(loadConfig(env), { logLevel: 'silent' }),
    ] as [Verifier, Verifier];
    verifiers.push(a, b);
    const [urlA, urlB] = [await a.listen(), await b.listen()];
    const { key } = await a.storage.createApiKey('rotation');
    const send = async (url: string, release: keyof typeof releases) => {
      const res = await fetch(`${url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: stamped(release, release, url, key),
      });
      await res.arrayBuffer();
      const [record] = await a.storage.queryRecords({ limit: 1 });
      return { status: res.status, attestation: record?.attestation, verdict: record?.verdict };
    };
    expect(await send(urlA, 'old')).toEqual({ status: 200, attestation: 'valid', verdict: 'allow' });
    expect(await send(urlA, 'new')).toEqual({ status: 200, attestation: 'valid', verdict: 'allow' });

    // Traffic from both releases keeps flowing while the operator revokes the old key.
    let stop = false;
    const statuses: number[] = [];
    const traffic = (async () => {
      for (let i = 0; !stop; i++) {
        const res = await fetch(`${urlA}/v1/messages`, {
          method: 'POST',
          headers: { 'x-api-key': key, 'content-type': 'application/json' },
          body: stamped(i % 2 === 0 ? 'old' : 'new', `during ${i}`, urlA, key),
        });
        await res.arrayBuffer();
        statuses.push(res.status);
      }
    })();
    const sent = async (n: number) => {
      while (statuses.length < n) await new Promise((r) => setTimeout(r, 10));
    };
    await sent(4);
    const revoke = await fetch(`${urlA}/admin/attestation-keys/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ kid: releases.old.kid, reason: 'extracted from the 1.4.1 binary' }),
    });
    expect(revoke.status).toBe(200);
    await sent(statuses.length + 4);
    stop = true;
    await traffic;
    expect(statuses.length).toBeGreaterThan(4);
    expect(statuses.every((s) => s === 200)).toBe(true);

    expect(await send(urlA, 'old')).toEqual({ status: 200, attestation: 'revoked', verdict: 'flag' });
    expect(await send(urlA, 'new')).toEqual({ status: 200, attestation: 'valid', verdict: 'allow' });
    // The other replica learns it from the shared store, without a restart.
    let onB: Awaited<ReturnType<typeof send>> | undefined;
    for (let i = 0; i < 80 && onB?.attestation !== 'revoked'; i++) {
      onB = await send(urlB, 'old');
      if (onB.attestation !== 'revoked') await new Promise((r) => setTimeout(r, 100));
    }
    expect(onB).toEqual({ status: 200, attestation: 'revoked', verdict: 'flag' });
    expect(await send(urlB, 'new')).toEqual({ status: 200, attestation: 'valid', verdict: 'allow' });

    const listed = (await (await fetch(`${urlB}/admin/attestation-keys`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as {
      active: string[];
      revoked: Array<{ kid: string; reason: string }>;
    };
    expect(listed.active).toEqual([releases.new.kid]);
    expect(listed.revoked).toMatchObject([{ kid: releases.old.kid, reason: 'extracted from the 1.4.1 binary' }]);
    const flags = (await (await fetch(`${urlB}/api/features/moat`)).json()) as { features: Record<string, { defaultValue: unknown }> };
    expect(flags.features['moat-revoked-kids']?.defaultValue).toEqual([releases.old.kid]);
    const bad = await fetch(`${urlA}/admin/attestation-keys/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
      body: '{"kid":"no spaces allowed"}',
    });
    expect(bad.status).toBe(400);
  });
});
