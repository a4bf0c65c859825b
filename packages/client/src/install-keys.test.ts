/**
 * Per-install keys through @moat/client, against a small enrollment server that checks
 * stamps as a verifier does: enrollment on first use, i1 stamps after, r1 where discovery
 * does not advertise `install_keys`, the pin, fail-open with back-off, re-enrollment.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '@moat/native';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type EnrollServer, startEnrollServer } from './enroll-server.test-util.js';
import {
  attestationLayer,
  createMoatFetch,
  defaultInstallDir,
  type InstallKeyOptions,
  type MoatFetch,
} from './index.js';

let server: EnrollServer;
let dir = '';
const parents: string[] = [];
let warnings: string[] = [];
beforeEach(async () => {
  server = await startEnrollServer();
  const parent = mkdtempSync(join(tmpdir(), 'moat-client-installs-'));
  parents.push(parent);
  dir = join(parent, 'installs');
  warnings = [];
});
afterEach(() => server.close());
afterAll(() => {
  for (const p of parents) rmSync(p, { recursive: true, force: true });
});

function client(installKeys: InstallKeyOptions = {}): MoatFetch {
  return createMoatFetch({
    salt: 'install-salt',
    clientVersion: '1.0.0',
    onWarning: (w) => warnings.push(w),
    installKeys: { stateDir: dir, keystore: 'file', ...installKeys },
  });
}

async function ask(f: typeof fetch, apiKey = 'sk-install'): Promise<number> {
  const res = await f(`${server.url}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'hello there' }] }),
  });
  await res.text();
  return res.status;
}

describe('per-install keys', () => {
  it('enrolls on first use (enrollment stamped r1), stamps every call i1 after; the verifier checks them', async () => {
    const f = client();
    for (let i = 0; i < 3; i++) expect(await ask(f)).toBe(200);
    await f.close();
    expect(server.counts).toEqual({ challenge: 1, enroll: 1 });
    expect(server.stamps).toEqual(Array(3).fill({ scheme: 'i1', kid: server.enrolled[0], valid: true }));
    expect(readdirSync(dir)).toHaveLength(1);
    expect(warnings).toEqual([]);
    const status = await f.connect(server.url);
    expect(status.find((s) => s.layer === 'attest')?.detail).toContain(`install ${server.enrolled[0]} (i1)`);
  });

  it('keeps one install per API key (the verifier binds an install to the key that enrolled it)', async () => {
    const f = client();
    expect(await ask(f, 'sk-one')).toBe(200);
    expect(await ask(f, 'sk-two')).toBe(200);
    expect(await ask(f, 'sk-one')).toBe(200);
    await f.close();
    expect(server.enrolled).toHaveLength(2);
    expect(server.stamps.map((s) => [s.kid, s.valid])).toEqual([
      [server.enrolled[0], true],
      [server.enrolled[1], true],
      [server.enrolled[0], true],
    ]);
    expect(readdirSync(dir)).toHaveLength(2);
  });

  it('stamps r1 where discovery does not advertise install_keys, and makes no install state', async () => {
    server.advertise = false;
    const f = client();
    expect(await ask(f)).toBe(200);
    await f.close();
    expect(server.stamps).toEqual([{ scheme: 'r1', kid: native?.keyId(), valid: true }]);
    expect(server.counts).toEqual({ challenge: 0, enroll: 0 });
    expect(existsSync(dir)).toBe(false);
  });

  it('keeps i1 for an origin enrolled before, when discovery no longer advertises install_keys (pin)', async () => {
    const first = client();
    expect(await ask(first)).toBe(200);
    await first.close();
    server.advertise = false;
    const later = client();
    expect(await ask(later)).toBe(200);
    await later.close();
    expect(server.stamps.map((s) => [s.scheme, s.valid])).toEqual([
      ['i1', true],
      ['i1', true],
    ]);
    expect(server.counts.enroll).toBe(1);
  });

  it('a slow enrollment keeps a call at most waitMs (then it goes r1), never past its own cancellation; i1 once enrolled', async () => {
    server.challengeDelayMs = 1_500;
    const f = client({ waitMs: 200 });
    const started = Date.now();
    expect(await ask(f)).toBe(200);
    expect(Date.now() - started).toBeLessThan(1_200);
    expect(server.stamps.at(-1)).toMatchObject({ scheme: 'r1', valid: true });
    const asked = Date.now();
    const cancelled = f(`${server.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'sk-install', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'hello there' }] }),
      signal: AbortSignal.timeout(50),
    });
    await expect(cancelled).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(Date.now() - asked).toBeLessThan(1_000);
    for (let i = 0; i < 300 && server.enrolled.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await ask(f)).toBe(200);
    expect(server.stamps.at(-1)).toMatchObject({ scheme: 'i1', valid: true });
    expect(server.counts.challenge).toBe(1);
    expect(warnings).toEqual([]);
    await f.close();
  });

  it('replaces an install state that no longer opens (a corrupt file) at once, not after the back-off', async () => {
    const { writeFileSync } = await import('node:fs');
    const first = client();
    expect(await ask(first)).toBe(200);
    await first.close();
    const [file] = readdirSync(dir);
    writeFileSync(join(dir, file as string), '{"garbage":');
    const second = client({ retryMs: 60_000 });
    expect(await ask(second)).toBe(200);
    expect(server.counts.challenge).toBe(2);
    expect(server.stamps.at(-1)).toMatchObject({ scheme: 'i1', kid: server.enrolled[1], valid: true });
    expect(warnings.some((w) => w.includes('unusable') && w.includes('enrolling a new install'))).toBe(true);
    await second.close();
  });

  it('fails open on 429: r1, one warning, layer_degraded telemetry, no new attempt before the back-off', async () => {
    server.refuseEnroll = 429;
    let clock = 1_800_000_000_000;
    const f = client({ now: () => clock });
    for (let i = 0; i < 3; i++) expect(await ask(f)).toBe(200);
    expect(server.stamps.map((s) => [s.scheme, s.valid])).toEqual(Array(3).fill(['r1', true]));
    expect(server.counts.enroll).toBe(1);
    expect(warnings.filter((w) => w.includes('install enrollment'))).toHaveLength(1);
    // Past the back-off (at least the retry-after of 30 s, here the default first minute) it enrolls.
    server.refuseEnroll = undefined;
    clock += 61_000;
    expect(await ask(f)).toBe(200);
    await f.close();
    expect(server.counts.enroll).toBe(2);
    expect(server.stamps.at(-1)).toMatchObject({ scheme: 'i1', valid: true });
    expect(server.telemetry.join('\n')).toMatch(
      /"type":"layer_degraded".*"layer":"attest".*install enrollment: enrollment answered 429/,
    );
  });

  it('enrolls again, once, when the verifier no longer knows the install, and sends the call again', async () => {
    const f = client();
    expect(await ask(f)).toBe(200);
    server.drop(server.enrolled[0] as string);
    expect(await ask(f)).toBe(200);
    await f.close();
    expect(server.enrolled).toHaveLength(2);
    expect(server.stamps.map((s) => [s.scheme, s.kid, s.valid])).toEqual([
      ['i1', server.enrolled[0], true],
      ['i1', server.enrolled[0], false],
      ['i1', server.enrolled[1], true],
    ]);
    expect(readdirSync(dir)).toHaveLength(1);
  });

  it('sends the call again with r1 when a refused install cannot be forgotten (its state file not removable)', async () => {
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const f = client();
    expect(await ask(f)).toBe(200);
    // The state file becomes a directory with something in it: no unlink removes it (root included).
    const [file] = readdirSync(dir);
    rmSync(join(dir, file as string));
    mkdirSync(join(dir, file as string));
    writeFileSync(join(dir, file as string, 'pinned'), 'x');
    server.drop(server.enrolled[0] as string);
    expect(await ask(f)).toBe(200);
    expect(await ask(f)).toBe(200);
    await f.close();
    expect(server.stamps.map((s) => [s.scheme, s.valid])).toEqual([
      ['i1', true],
      ['i1', false],
      ['r1', true],
      ['r1', true],
    ]);
    expect(warnings.filter((w) => w.includes('could not be removed'))).toHaveLength(1);
  });

  it('stamps r1 with one warning when the addon has no install functions', async () => {
    if (native === undefined) throw new Error('the native addon is needed here');
    const old = { request: native.request.bind(native), keyId: native.keyId.bind(native), appendsEnvelope: true };
    const f = createMoatFetch({
      salt: 'install-salt',
      clientVersion: '1.0.0',
      onWarning: (w) => warnings.push(w),
      layers: (defaults) => [
        ...defaults.slice(0, -1),
        attestationLayer({ native: old, installKeys: { stateDir: dir }, onWarning: (w) => warnings.push(w) }),
      ],
    });
    expect(await ask(f)).toBe(200);
    expect(await ask(f)).toBe(200);
    await f.close();
    expect(server.stamps.map((s) => [s.scheme, s.valid])).toEqual(Array(2).fill(['r1', true]));
    expect(warnings.filter((w) => w.includes('no install keys'))).toHaveLength(1);
  });

  it('keeps its state in MOAT_INSTALL_DIR, else $XDG_CONFIG_HOME/moat/installs, else ~/.config/…', () => {
    expect(defaultInstallDir({ MOAT_INSTALL_DIR: '/srv/moat' })).toBe('/srv/moat');
    expect(defaultInstallDir({ XDG_CONFIG_HOME: '/home/u/.cfg' })).toBe('/home/u/.cfg/moat/installs');
    expect(defaultInstallDir({})).toMatch(/\/\.config\/moat\/installs$/);
  });
});
