/**
 * Per-install keys on a real verifier (127.0.0.1): the enrollment routes' order of checks,
 * one test per refusal; the `i1` stamp in the pipeline and the `install` signal; limits in
 * both modes; revocation; the admin routes.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ENROLLMENT_CHALLENGE_PATH,
  ENROLLMENT_PATH,
  enrollmentRequestBody,
  INSTALL_ID_PATTERN,
  x25519PublicKey,
} from '@moat/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { type Enrolled, enroll, messagesBody, post, type StampKey, stampBody } from './enroll.test-util.js';
import { createVerifier, type Verifier } from './server.js';

const release: StampKey = { scheme: 'r1', kid: 'k1_5_0', key: randomBytes(32) };
const revokedRelease: StampKey = { scheme: 'r1', kid: 'k1_4_0', key: randomBytes(32) };
const oldRelease: StampKey = { scheme: 'r1', kid: 'k1_1_0', key: randomBytes(32) };
const ADMIN = `admin-${randomBytes(8).toString('hex')}`;
const verifiers: Verifier[] = [];

/** A verifier with the three releases (the newest speaks install_keys), and `extra` settings. */
async function start(extra: Record<string, string> = {}): Promise<{ v: Verifier; url: string }> {
  const env = {
    ...devEnvironment({ adminToken: ADMIN, database: join(mkdtempSync(join(tmpdir(), 'moat-enroll-')), 'v.db') }),
    MOAT_VERIFIER_ATTESTATION_KEYS: JSON.stringify(
      [release, revokedRelease, oldRelease].map((r) => ({ kid: r.kid, key: Buffer.from(r.key).toString('hex') })),
    ),
    MOAT_VERIFIER_REVOKED_KIDS: revokedRelease.kid,
    MOAT_VERIFIER_RELEASES: JSON.stringify([
      { kid: release.kid, features: ['request_binding', 'install_keys'] },
      { kid: oldRelease.kid, features: ['request_binding'] },
    ]),
    ...extra,
  };
  const v = await createVerifier(loadConfig(env), { logLevel: 'silent' });
  verifiers.push(v);
  return { v, url: await v.listen() };
}

async function admin(url: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${url}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${ADMIN}` },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, ...((await res.json()) as object) };
}

/** Sends a Messages request stamped by `stamp`; returns the status and the request's record. */
async function message(url: string, v: Verifier, apiKey: string, stamp: StampKey, tamper = false) {
  let body = stampBody(messagesBody('hello'), stamp, url, '/v1/messages', apiKey);
  if (tamper) body = Buffer.from(body.toString('utf8').replace('hello', 'hellO'));
  const res = await post(`${url}/v1/messages`, apiKey, body);
  const [record] = await v.storage.queryRecords({ limit: 1 });
  return { status: res.status, record: record as any };
}

const installStamp = (e: Enrolled): StampKey => ({ scheme: 'i1', kid: e.iid as string, key: e.key as Uint8Array });

let main: { v: Verifier; url: string };
beforeAll(async () => {
  main = await start();
});
afterAll(async () => {
  for (const v of verifiers) await v.close();
});

describe('discovery and the challenge', () => {
  it('advertises install_keys with the enrollment member when an enrollment key is configured', async () => {
    const doc = (await (await fetch(`${main.url}/v1/moat`)).json()) as any;
    expect(doc.moat.features).toContain('install_keys');
    expect(doc.moat.enrollment).toMatchObject({ challenge: ENROLLMENT_CHALLENGE_PATH, enroll: ENROLLMENT_PATH });
    expect(Buffer.from(doc.moat.enrollment.key, 'base64url')).toHaveLength(32);
  });

  it('does not advertise install_keys without an enrollment key', async () => {
    const { url } = await start({ MOAT_VERIFIER_ENROLLMENT_KEYS: '[]' });
    const doc = (await (await fetch(`${url}/v1/moat`)).json()) as any;
    expect(doc.moat.features).not.toContain('install_keys');
    expect(doc.moat.enrollment).toBeUndefined();
  });

  it('hands out a one-time challenge of 32 bytes to an authenticated key only', async () => {
    const { key } = await main.v.storage.createApiKey('challenge');
    const res = await post(`${main.url}${ENROLLMENT_CHALLENGE_PATH}`, key, '{}');
    expect(res.status).toBe(200);
    expect(Buffer.from(res.json.challenge, 'base64url')).toHaveLength(32);
    expect(res.json.expires_in).toBe(60);
    expect((await post(`${main.url}${ENROLLMENT_CHALLENGE_PATH}`, 'sk-unknown', '')).status).toBe(401);
    expect((await post(`${main.url}${ENROLLMENT_CHALLENGE_PATH}`, key, '{"x":1}')).status).toBe(400);
  });

  it('a key that asks for challenges it never uses is refused past 32 open ones (429 with retry-after)', async () => {
    const { key } = await main.v.storage.createApiKey('challenge flood');
    const statuses: number[] = [];
    for (let i = 0; i < 33; i++) statuses.push((await post(`${main.url}${ENROLLMENT_CHALLENGE_PATH}`, key, '')).status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(32);
    const refused = await post(`${main.url}${ENROLLMENT_CHALLENGE_PATH}`, key, '');
    expect([refused.status, refused.headers.get('retry-after')]).toEqual([429, '60']);
  });
});

describe('POST /v1/moat/enroll, in its order of checks', () => {
  it('enrolls a genuine install: 201 with an install id, recorded', async () => {
    const { id, key } = await main.v.storage.createApiKey('genuine');
    const e = await enroll(main.url, key, release);
    expect(e.status).toBe(201);
    expect(e.iid).toMatch(INSTALL_ID_PATTERN);
    const records = await admin(main.url, `/admin/enrollments?key=${id}`);
    expect(records.enrollments).toMatchObject([{ outcome: 'created', installId: e.iid, releaseKid: release.kid }]);
  });

  it('1. a body that is not an enrollment request: 400 ERR_ENROLLMENT', async () => {
    const { key } = await main.v.storage.createApiKey('bad body');
    const bad = stampBody('{"v":2}', release, main.url, ENROLLMENT_PATH, key);
    const res = await post(`${main.url}${ENROLLMENT_PATH}`, key, bad);
    expect([res.status, res.json.error.code]).toEqual([400, 'ERR_ENROLLMENT']);
    expect((await post(`${main.url}${ENROLLMENT_PATH}`, key, 'not json')).status).toBe(400);
  });

  it('2. a release stamp that is not a valid r1: 401, 403 for a revoked release, 409 when replayed', async () => {
    const { key } = await main.v.storage.createApiKey('stamps');
    const forged: StampKey = { ...release, key: randomBytes(32) };
    expect((await enroll(main.url, key, forged)).answer.error).toMatchObject({ code: 'invalid' });
    expect((await enroll(main.url, key, forged)).status).toBe(401);
    expect((await enroll(main.url, key, { ...release, kid: 'k_nobody' })).answer.error.code).toBe('unknown_key');
    const revoked = await enroll(main.url, key, revokedRelease);
    expect([revoked.status, revoked.answer.error.code]).toEqual([403, 'revoked']);
    // An install key cannot enroll another install (i1 → 401).
    const first = await enroll(main.url, key, release);
    expect((await enroll(main.url, key, installStamp(first))).status).toBe(401);
    const replayed = await post(`${main.url}${ENROLLMENT_PATH}`, key, first.sent);
    expect([replayed.status, replayed.json.error.code]).toEqual([409, 'replayed']);
  });

  it('2. a request without a stamp: 401 missing', async () => {
    const { key } = await main.v.storage.createApiKey('unstamped');
    const challenge = (await post(`${main.url}${ENROLLMENT_CHALLENGE_PATH}`, key, '')).json.challenge;
    const body = JSON.stringify({ v: 1, install_key: randomBytes(32).toString('base64url'), challenge, ekid: 'e1' });
    const res = await post(`${main.url}${ENROLLMENT_PATH}`, key, body);
    expect([res.status, res.json.error.code]).toEqual([401, 'missing']);
  });

  it('3. an ekid that is not an active enrollment key: 400 ERR_ENROLLMENT', async () => {
    const { key } = await main.v.storage.createApiKey('ekid');
    const res = await enroll(main.url, key, release, { ekid: 'e_retired' });
    expect([res.status, res.answer.error.code]).toEqual([400, 'ERR_ENROLLMENT']);
  });

  it('4. a challenge unknown, used, or issued to another key: 409 ERR_ENROLL_CHALLENGE', async () => {
    const a = await main.v.storage.createApiKey('challenge a');
    const b = await main.v.storage.createApiKey('challenge b');
    const unknown = await enroll(main.url, a.key, release, { challenge: randomBytes(32).toString('base64url') });
    expect([unknown.status, unknown.answer.error.code]).toEqual([409, 'ERR_ENROLL_CHALLENGE']);
    const theirs = (await post(`${main.url}${ENROLLMENT_CHALLENGE_PATH}`, b.key, '')).json.challenge;
    expect((await enroll(main.url, a.key, release, { challenge: theirs })).status).toBe(409);
    // Still good for the key it was issued to: a refusal under another key does not spend it.
    expect((await enroll(main.url, b.key, release, { challenge: theirs })).status).toBe(201);
    // Re-stamped (a fresh nonce) with the spent challenge: the replayed enrollment is refused.
    expect((await enroll(main.url, b.key, release, { challenge: theirs })).status).toBe(409);
  });

  it('4. an expired challenge is refused (the store checks the expiry)', async () => {
    const installs = main.v.storage.installs;
    await installs.issueChallenge('c-expiry', 'cred', Date.now() + 60_000);
    expect(await installs.consumeChallenge('c-expiry', 'cred', Date.now() + 61_000)).toBe(false);
    expect(await installs.consumeChallenge('c-expiry', 'cred')).toBe(true);
    expect(await installs.consumeChallenge('c-expiry', 'cred')).toBe(false);
  });

  it('5. a low-order install key (all-zero shared secret): 400 ERR_ENROLLMENT', async () => {
    const { key } = await main.v.storage.createApiKey('low order');
    const res = await enroll(main.url, key, release, { installKey: Buffer.alloc(32).toString('base64url') });
    expect([res.status, res.answer.error.code]).toEqual([400, 'ERR_ENROLLMENT']);
  });
});

describe('enrollment limits (policy moat-policy-enrollment)', () => {
  const flags = (value: object) => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-flags-')), 'flags.json');
    writeFileSync(file, JSON.stringify({ features: { 'moat-policy-enrollment': { defaultValue: value } } }));
    return { MOAT_VERIFIER_FLAGS_FILE: file };
  };

  it('block: past the enrollments per window 429 ERR_ENROLL_LIMIT with retry-after, recorded as limited', async () => {
    const { v, url } = await start(flags({ perWindow: 2, windowSec: 600 }));
    const { id, key } = await v.storage.createApiKey('limited');
    expect((await enroll(url, key, release)).status).toBe(201);
    expect((await enroll(url, key, release)).status).toBe(201);
    const third = await enroll(url, key, release);
    expect([third.status, third.answer.error.code]).toEqual([429, 'ERR_ENROLL_LIMIT']);
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(500);
    const refused = await admin(url, `/admin/enrollments?key=${id}&outcome=limited`);
    expect(refused.enrollments).toHaveLength(1);
    const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
    expect(metrics).toContain('moat_enrollments_total{outcome="limited"} 1');
    expect(metrics).toContain('moat_enrollments_total{outcome="created"} 2');
    // Another key has its own window.
    expect((await enroll(url, (await v.storage.createApiKey('other')).key, release)).status).toBe(201);
  });

  it('block: enrollments sent all at once (their bodies made first) pass the limit by none', async () => {
    const { v, url } = await start(flags({ perWindow: 20, windowSec: 600 }));
    const { key } = await v.storage.createApiKey('burst');
    const ekid = ((await (await fetch(`${url}/v1/moat`)).json()) as { moat: { enrollment: { kid: string } } }).moat
      .enrollment.kid;
    const bodies: Buffer[] = [];
    for (let i = 0; i < 32; i++) {
      const challenge = (await post(`${url}${ENROLLMENT_CHALLENGE_PATH}`, key, '')).json.challenge as string;
      const json = enrollmentRequestBody({ installKey: x25519PublicKey(randomBytes(32)), challenge, ekid });
      bodies.push(stampBody(json, release, url, ENROLLMENT_PATH, key));
    }
    const statuses = (await Promise.all(bodies.map((body) => post(`${url}${ENROLLMENT_PATH}`, key, body)))).map(
      (r) => r.status,
    );
    expect(statuses.filter((s) => s === 201)).toHaveLength(20);
    expect(statuses.filter((s) => s === 429)).toHaveLength(12);
  });

  it('a GrowthBook rule sets one key’s limits; other keys keep the default', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-flags-')), 'flags.json');
    const rule = { condition: { id: 'key_fleet' }, force: { perWindow: 3 } };
    writeFileSync(
      file,
      JSON.stringify({ features: { 'moat-policy-enrollment': { defaultValue: { perWindow: 1 }, rules: [rule] } } }),
    );
    const { v, url } = await start({ MOAT_VERIFIER_FLAGS_FILE: file });
    const fleet = `sk-fleet-${randomBytes(8).toString('hex')}`;
    await v.storage.importApiKey('key_fleet', fleet, 'ci fleet');
    const person = await v.storage.createApiKey('person');
    const statuses = async (key: string, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await enroll(url, key, release)).status);
      return out;
    };
    expect(await statuses(fleet, 4)).toEqual([201, 201, 201, 429]);
    expect(await statuses(person.key, 2)).toEqual([201, 429]);
  });

  it('a retired enrollment key enrolls nothing new; the installs it enrolled keep stamping', async () => {
    const [oldKey, newKey] = [randomBytes(32).toString('hex'), randomBytes(32).toString('hex')];
    const database = join(mkdtempSync(join(tmpdir(), 'moat-enroll-')), 'v.db');
    const first = await start({
      MOAT_VERIFIER_DATABASE: database,
      MOAT_VERIFIER_ENROLLMENT_KEYS: JSON.stringify([{ kid: 'e_old', key: oldKey }]),
    });
    const { id, key } = await first.v.storage.createApiKey('rotation');
    const enrolled = await enroll(first.url, key, release);
    await first.v.close();
    verifiers.splice(verifiers.indexOf(first.v), 1);
    const second = await start({
      MOAT_VERIFIER_DATABASE: database,
      MOAT_VERIFIER_ENROLLMENT_KEYS: JSON.stringify([
        { kid: 'e_new', key: newKey },
        { kid: 'e_old', key: oldKey, retired: true },
      ]),
    });
    // Each start() has its own server secret, which API keys are hashed with: the key is taken over.
    await second.v.storage.importApiKey(id, key, 'rotation');
    const doc = (await (await fetch(`${second.url}/v1/moat`)).json()) as any;
    expect(doc.moat.enrollment.kid).toBe('e_new');
    expect((await enroll(second.url, key, release, { ekid: 'e_old' })).status).toBe(400);
    expect((await enroll(second.url, key, release)).status).toBe(201);
    expect((await message(second.url, second.v, key, installStamp(enrolled))).record).toMatchObject({
      attestation: 'valid',
      install: 'new',
    });
  });

  it('block: past the installs per key, whatever the window; a revoked install frees its place', async () => {
    const { v, url } = await start(flags({ installsPerKey: 1 }));
    const { key } = await v.storage.createApiKey('capped');
    const first = await enroll(url, key, release);
    expect((await enroll(url, key, release)).status).toBe(429);
    await admin(url, '/admin/installs/revoke', { install_id: first.iid });
    expect((await enroll(url, key, release)).status).toBe(201);
  });

  it('flag: created past the limit, marked over_limit, and its requests scored over_limit', async () => {
    const { v, url } = await start(flags({ perWindow: 1, action: 'flag' }));
    const { id, key } = await v.storage.createApiKey('flagged');
    const first = await enroll(url, key, release);
    const second = await enroll(url, key, release);
    expect([first.status, second.status]).toEqual([201, 201]);
    const listed = await admin(url, `/admin/installs?key=${id}`);
    expect(listed.installs.find((i: any) => i.installId === second.iid).overLimit).toBe(true);
    expect((await message(url, v, key, installStamp(second))).record).toMatchObject({
      install: 'over_limit',
      verdict: 'flag',
    });
    expect((await message(url, v, key, installStamp(first))).record).toMatchObject({
      install: 'new',
      verdict: 'allow',
    });
  });
});

describe('i1 stamps in the pipeline', () => {
  it('a genuine i1 request is allowed: attestation valid, binding install, install new', async () => {
    const { key } = await main.v.storage.createApiKey('i1');
    const e = await enroll(main.url, key, release);
    const { status, record } = await message(main.url, main.v, key, installStamp(e));
    expect(status).toBe(200);
    expect(record).toMatchObject({
      attestation: 'valid',
      binding: 'install',
      install: 'new',
      verdict: 'allow',
      installId: e.iid,
    });
  });

  it('an i1 stamp on a body that is not a Messages request is still told genuine (and its nonce spent)', async () => {
    const { key } = await main.v.storage.createApiKey('i1 bad body');
    const e = await enroll(main.url, key, release);
    const res = await post(
      `${main.url}/v1/messages`,
      key,
      stampBody('{"model":1}', installStamp(e), main.url, '/v1/messages', key),
    );
    expect(res.status).toBe(400);
    const [record] = await main.v.storage.queryRecords({ limit: 1 });
    expect(record).toMatchObject({ attestation: 'valid', verdict: 'block' });
  });

  it('an install enrolled before the window is known', async () => {
    const { v, url } = await start({ MOAT_VERIFIER_INSTALL_NEW_HOURS: '0' });
    const { key } = await v.storage.createApiKey('known');
    const e = await enroll(url, key, release);
    expect((await message(url, v, key, installStamp(e))).record).toMatchObject({ install: 'known', verdict: 'allow' });
  });

  it('a tampered i1 request is invalid and blocked', async () => {
    const { key } = await main.v.storage.createApiKey('tampered');
    const e = await enroll(main.url, key, release);
    const { status, record } = await message(main.url, main.v, key, installStamp(e), true);
    expect(status).toBe(403);
    expect(record).toMatchObject({ attestation: 'invalid', install: 'none', verdict: 'block' });
  });

  it('an unknown install id is unknown_key', async () => {
    const { key } = await main.v.storage.createApiKey('unknown iid');
    const fake: StampKey = { scheme: 'i1', kid: `i${randomBytes(12).toString('hex')}`, key: randomBytes(32) };
    expect((await message(main.url, main.v, key, fake)).record).toMatchObject({
      attestation: 'unknown_key',
      verdict: 'block',
    });
  });

  it('an install key used under another API key is invalid', async () => {
    const owner = await main.v.storage.createApiKey('owner');
    const other = await main.v.storage.createApiKey('other');
    const e = await enroll(main.url, owner.key, release);
    const { status, record } = await message(main.url, main.v, other.key, installStamp(e));
    expect(status).toBe(403);
    expect(record).toMatchObject({ attestation: 'invalid', verdict: 'block' });
  });

  it('a 1.1 client (r1 from a release without install_keys) is served and scored as before: install none', async () => {
    const { key } = await main.v.storage.createApiKey('1.1');
    const { status, record } = await message(main.url, main.v, key, oldRelease);
    expect(status).toBe(200);
    expect(record).toMatchObject({ attestation: 'valid', binding: 'request', install: 'none', verdict: 'allow' });
  });

  it('a release key that stamps requests itself, when its release enrolls, is release_only (flagged)', async () => {
    const { key } = await main.v.storage.createApiKey('release only');
    const { status, record } = await message(main.url, main.v, key, release);
    expect(status).toBe(200);
    expect(record).toMatchObject({ attestation: 'valid', install: 'release_only', verdict: 'flag' });
  });

  it('with releases named by version, a release stamp without an attribution block (no version to look up) is release_only too', async () => {
    const byVersion = await start({
      MOAT_VERIFIER_RELEASES: JSON.stringify([{ minCv: '1.0.0', features: ['request_binding', 'install_keys'] }]),
    });
    const { key } = await byVersion.v.storage.createApiKey('no attribution');
    const { status, record } = await message(byVersion.url, byVersion.v, key, oldRelease);
    expect(status).toBe(200);
    expect(record).toMatchObject({ attestation: 'valid', install: 'release_only', verdict: 'flag' });
  });

  it('revoking one install mid-session: its next request is revoked, the other install unaffected', async () => {
    const { id, key } = await main.v.storage.createApiKey('revoke');
    const [a, b] = [await enroll(main.url, key, release), await enroll(main.url, key, release)];
    expect((await message(main.url, main.v, key, installStamp(a))).record.install).toBe('new');
    const revoked = await admin(main.url, '/admin/installs/revoke', { install_id: a.iid });
    expect(revoked).toMatchObject({ status: 200, revoked: a.iid, keyId: id });
    expect((await message(main.url, main.v, key, installStamp(a))).record).toMatchObject({
      attestation: 'revoked',
      install: 'revoked',
      verdict: 'flag',
    });
    expect((await message(main.url, main.v, key, installStamp(b))).record).toMatchObject({
      install: 'new',
      verdict: 'allow',
    });
    // The release is untouched: it still enrolls.
    expect((await enroll(main.url, key, release)).status).toBe(201);
    // The registry's filter: the revoked install's request, by its signal value.
    const filtered = await admin(main.url, `/admin/records?key=${id}&install=revoked`);
    expect(filtered.records.map((r: any) => r.installId)).toEqual([a.iid]);
    const listed = await admin(main.url, `/admin/installs?key=${id}`);
    expect(listed.installs).toHaveLength(3);
    expect(listed.installs.find((i: any) => i.installId === a.iid)).toMatchObject({ revoked: true });
    expect(listed.installs.find((i: any) => i.installId === b.iid).lastSeen).toBeGreaterThan(0);
  });

  it('revoking a release key’s installs: every install it enrolled, under every API key, is revoked; others are not', async () => {
    const leaked: StampKey = { scheme: 'r1', kid: 'k1_3_0', key: randomBytes(32) };
    const v = await start({
      MOAT_VERIFIER_ATTESTATION_KEYS: JSON.stringify(
        [release, leaked].map((k) => ({ kid: k.kid, key: Buffer.from(k.key).toString('hex') })),
      ),
      MOAT_VERIFIER_RELEASES: JSON.stringify(
        [release, leaked].map((k) => ({ kid: k.kid, features: ['request_binding', 'install_keys'] })),
      ),
    });
    const [one, two] = [await v.v.storage.createApiKey('one'), await v.v.storage.createApiKey('two')];
    const fromLeaked = [await enroll(v.url, one.key, leaked), await enroll(v.url, two.key, leaked)];
    const fromCurrent = await enroll(v.url, one.key, release);
    const revoked = await admin(v.url, '/admin/installs/revoke', { release_kid: leaked.kid });
    expect(revoked).toMatchObject({ status: 200, releaseKid: leaked.kid, revoked: 2 });
    expect(revoked.installs.map((i: any) => i.installId).sort()).toEqual(fromLeaked.map((e) => e.iid).sort());
    for (const [e, key] of [
      [fromLeaked[0], one.key],
      [fromLeaked[1], two.key],
    ] as const)
      expect((await message(v.url, v.v, key, installStamp(e as Enrolled))).record).toMatchObject({
        attestation: 'revoked',
        install: 'revoked',
      });
    expect((await message(v.url, v.v, one.key, installStamp(fromCurrent))).record).toMatchObject({
      attestation: 'valid',
      install: 'new',
    });
    expect((await admin(v.url, '/admin/installs/revoke', { release_kid: 'not a kid!' })).status).toBe(400);
    expect(await admin(v.url, '/admin/installs/revoke', { release_kid: leaked.kid })).toMatchObject({
      status: 200,
      revoked: 0,
    });
  });

  it('a revocation on another replica reaches this one once the install cache refreshes', async () => {
    const { key } = await main.v.storage.createApiKey('replica');
    const e = await enroll(main.url, key, release);
    expect((await message(main.url, main.v, key, installStamp(e))).record.install).toBe('new');
    // Another replica wrote it to the shared store.
    await main.v.storage.installs.revokeInstall(e.iid as string);
    await new Promise((r) => setTimeout(r, 5_200));
    expect((await message(main.url, main.v, key, installStamp(e))).record.install).toBe('revoked');
  });

  it('the admin routes refuse bad input with a reason', async () => {
    expect((await admin(main.url, '/admin/installs/revoke', { install_id: 'nope' })).status).toBe(400);
    const unknown = `i${randomBytes(12).toString('hex')}`;
    expect((await admin(main.url, '/admin/installs/revoke', { install_id: unknown })).status).toBe(404);
    expect((await admin(main.url, '/admin/enrollments?outcome=bogus')).status).toBe(400);
    expect((await admin(main.url, '/admin/installs')).keys.length).toBeGreaterThan(0);
  });
});
