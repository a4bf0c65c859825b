import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  deriveInstallKey,
  locateEnvelope,
  placeholderEnvelope,
  type RequestComponents,
  receivedRequestComponents,
  verifyStamp,
} from '@moat/protocol';
import { type NativeBinding, STAMP_RESULTS } from '@moat/protocol/support';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDevKey } from '../dev-key.js';
import { native as loaded } from '../index.js';

const native = loaded as Required<NativeBinding>;
const dev = readDevKey() as { kid: string; key: string };
const ORIGIN = 'http://127.0.0.1:9';
let base = '';
const seen: Array<{ body: Buffer; request: RequestComponents }> = [];
const server = createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  seen.push({
    body: Buffer.concat(chunks),
    request: receivedRequestComponents({ method: req.method ?? '', target: req.url ?? '', headers: req.headers }),
  });
  res.end('ok');
});
const dirs: string[] = [];
beforeAll(async () => {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh state directory (0700, made by the addon) under a temporary parent. */
function stateDir(): string {
  const parent = mkdtempSync(join(tmpdir(), 'moat-install-'));
  dirs.push(parent);
  return join(parent, 'state');
}

function stateFile(dir: string): string {
  const files = readdirSync(dir).filter((f) => f.endsWith('.install'));
  expect(files).toHaveLength(1);
  return join(dir, files[0] as string);
}

const raw = (key: KeyObject): Buffer => Buffer.from(key.export({ format: 'jwk' }).x as string, 'base64url');
const rawPrivate = (key: KeyObject): Buffer => Buffer.from(key.export({ format: 'jwk' }).d as string, 'base64url');

/** A verifier's enrollment key pair and one enrollment's answer. */
function enrollment() {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  return {
    verifierPublic: raw(publicKey).toString('base64url'),
    verifierPrivate: rawPrivate(privateKey),
    challenge: randomBytes(32).toString('base64url'),
    installId: `i${randomBytes(12).toString('hex')}`,
    ekid: 'e2026a',
  };
}

/** Sends `body` with `envelope` appended through the addon; the stamp result and what the server received. */
function send(envelope: string, install?: string, body = '{"model":"m","max_tokens":1}') {
  return new Promise<{ stamp: string; body: Buffer; request: RequestComponents }>((resolve, reject) => {
    let stamp = '';
    native.request(
      {
        method: 'POST',
        url: `${base}/v1/messages`,
        headers: ['x-api-key: sk-install-test', 'content-type: application/json'],
        body,
        envelope,
        ...(install === undefined ? {} : { install }),
      },
      (event, a, _b, c) => {
        if (event === 'headers') stamp = STAMP_RESULTS[c ?? 1] as string;
        if (event === 'end') {
          const mine = seen.find((s) => s.body.includes(envelope.slice(0, -32))) as {
            body: Buffer;
            request: RequestComponents;
          };
          resolve({ stamp, ...mine });
        }
        if (event === 'error') reject(new Error(String(a)));
      },
    );
  });
}

const i1 = (installId: string) =>
  placeholderEnvelope({
    kid: installId,
    ts: Math.floor(Date.now() / 1000),
    nonce: randomBytes(8).toString('hex'),
    binding: 'install',
  });

/** The verifier's check of a received i1 stamp: K_i from its own private key and the install's public key. */
function verifiesAsVerifier(
  got: { body: Buffer; request: RequestComponents },
  e: ReturnType<typeof enrollment>,
  publicKey: string,
) {
  const where = locateEnvelope(new Uint8Array(got.body));
  if (where.status !== 'found') throw new Error('no envelope');
  expect(where.envelope.binding).toBe('install');
  expect(where.envelope.kid).toBe(e.installId);
  const k = deriveInstallKey({
    privateKey: e.verifierPrivate,
    peerPublicKey: Buffer.from(publicKey, 'base64url'),
    challenge: Buffer.from(e.challenge, 'base64url'),
    installId: e.installId,
    ekid: e.ekid,
    installPublicKey: publicKey,
  });
  return verifyStamp(k, new Uint8Array(got.body), where.stampStart, where.stampEnd, got.request);
}

describe('install keys', () => {
  it('makes a key pair once, in a 0700 directory and a 0600 file, and reopens it', () => {
    const dir = stateDir();
    const made = native.installOpen(dir, ORIGIN, { keystore: 'file' });
    expect(made).toEqual({ publicKey: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), enrolled: false, sealed: 'file' });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(stateFile(dir)).mode & 0o777).toBe(0o600);
    expect(native.installOpen(dir, ORIGIN, { keystore: 'file' })).toEqual(made);
    // Another origin is another install.
    expect(native.installOpen(dir, 'https://api.example.com')?.publicKey).not.toBe(made?.publicKey);
    native.installForget('https://api.example.com');
    expect(native.installOpen(stateDir(), ORIGIN, { create: false })).toBeNull();
  });

  it('stamps i1 with K_i, which the verifier derives on its side and verifyStamp accepts', async () => {
    const dir = stateDir();
    const opened = native.installOpen(dir, ORIGIN, { keystore: 'file' });
    const e = enrollment();
    native.installActivate(ORIGIN, e.installId, e.ekid, e.verifierPublic, e.challenge);
    const got = await send(i1(e.installId), ORIGIN);
    expect(got.stamp).toBe('stamped');
    expect(verifiesAsVerifier(got, e, opened?.publicKey as string)).toBe(true);
    // Another verifier key (another K_i) does not verify it: the stamp is the install's.
    expect(
      verifiesAsVerifier(
        got,
        { ...e, verifierPrivate: rawPrivate(generateKeyPairSync('x25519').privateKey) },
        opened?.publicKey as string,
      ),
    ).toBe(false);

    // At the next start K_i is derived again from the state file.
    const reopened = native.installOpen(dir, ORIGIN, { keystore: 'file' });
    expect(reopened).toEqual({ ...opened, enrolled: true, installId: e.installId, ekid: e.ekid });
    const again = await send(i1(e.installId), ORIGIN);
    expect(again.stamp).toBe('stamped');
    expect(verifiesAsVerifier(again, e, opened?.publicKey as string)).toBe(true);
    // The file keeps what re-derives K_i, never K_i.
    expect(readFileSync(stateFile(dir), 'utf8')).toMatch(
      new RegExp(`^moat-install/1\\norigin=${ORIGIN}\\n.*iid=${e.installId}\\n`, 's'),
    );
  });

  it('stamps large bodies with the install key too, as they go out or on the stamping thread', async () => {
    const opened = native.installOpen(stateDir(), ORIGIN, { keystore: 'file' });
    const e = enrollment();
    native.installActivate(ORIGIN, e.installId, e.ekid, e.verifierPublic, e.challenge);
    const big = JSON.stringify({ model: 'm', pad: 'x'.repeat(200_000) });
    // One alone (stamped as it is sent), then four at once (the loop hands them to its stamping thread).
    const alone = await send(i1(e.installId), ORIGIN, big);
    const together = await Promise.all([1, 2, 3, 4].map(() => send(i1(e.installId), ORIGIN, big)));
    for (const got of [alone, ...together]) {
      expect(got.stamp).toBe('stamped');
      expect(verifiesAsVerifier(got, e, opened?.publicKey as string)).toBe(true);
    }
  });

  it('stamps only the envelope of its kind: i1 with the install, r1 and v1 with the release key', async () => {
    const dir = stateDir();
    native.installOpen(dir, ORIGIN, { keystore: 'file' });
    const e = enrollment();
    native.installActivate(ORIGIN, e.installId, e.ekid, e.verifierPublic, e.challenge);
    const r1 = placeholderEnvelope({ kid: dev.kid, ts: 1764000000, nonce: '0011223344556677', binding: 'request' });
    expect((await send(r1, ORIGIN)).stamp).toBe('wrong_kid');
    expect((await send(i1(e.installId))).stamp).toBe('wrong_kid');
    expect((await send(i1('i000000000000000000000000'), ORIGIN)).stamp).toBe('wrong_kid');
    expect((await send(r1)).stamp).toBe('stamped');
  });

  it('refuses a request for an origin without an enrolled install, and forgets one', async () => {
    const dir = stateDir();
    native.installOpen(dir, 'http://waiting.example', { keystore: 'file' });
    expect(() => native.request({ method: 'POST', url: base, install: 'http://waiting.example' }, () => {})).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_UNKNOWN' }),
    );
    const e = enrollment();
    expect(() =>
      native.installActivate('http://never.example', e.installId, e.ekid, e.verifierPublic, e.challenge),
    ).toThrow(expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_UNKNOWN' }));
    native.installActivate('http://waiting.example', e.installId, e.ekid, e.verifierPublic, e.challenge);
    expect(() =>
      native.installActivate('http://waiting.example', e.installId, e.ekid, e.verifierPublic, e.challenge),
    ).toThrow(expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_UNKNOWN' }));
    const file = stateFile(dir);
    native.installForget('http://waiting.example');
    expect(() => statSync(file)).toThrow();
    expect(() => native.request({ method: 'POST', url: base, install: 'http://waiting.example' }, () => {})).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_UNKNOWN' }),
    );
  });

  it('refuses a verifier key whose shared secret is all zero, and still waits for a good one', () => {
    native.installOpen(stateDir(), ORIGIN, { keystore: 'file' });
    const e = enrollment();
    const zero = Buffer.alloc(32).toString('base64url');
    expect(() => native.installActivate(ORIGIN, e.installId, e.ekid, zero, e.challenge)).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_KEY' }),
    );
    native.installActivate(ORIGIN, e.installId, e.ekid, e.verifierPublic, e.challenge);
  });

  it('takes arguments only in their shapes (typed errors)', () => {
    const e = enrollment();
    const bad: Array<() => unknown> = [
      () => native.installOpen('', ORIGIN),
      () => native.installOpen(stateDir(), 'has space'),
      () => native.installOpen(stateDir(), ORIGIN, { keystore: 'vault' as 'file' }),
      () => native.installOpen(1 as unknown as string, ORIGIN),
      () => native.installActivate(ORIGIN, 'bad id!', e.ekid, e.verifierPublic, e.challenge),
      () => native.installActivate(ORIGIN, e.installId, e.ekid, 'short', e.challenge),
      () => native.installActivate(ORIGIN, e.installId, e.ekid, e.verifierPublic, `${e.challenge}A`),
    ];
    for (const call of bad) expect(call).toThrow(expect.objectContaining({ code: 'ERR_NATIVE_OPTIONS' }));
  });

  it('refuses a state file or directory others can open, and a symbolic link', () => {
    const dir = stateDir();
    native.installOpen(dir, ORIGIN, { keystore: 'file' });
    const file = stateFile(dir);
    for (const mode of [0o644, 0o604, 0o620]) {
      chmodSync(file, mode);
      expect(() => native.installOpen(dir, ORIGIN)).toThrow(
        expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_PERMISSIONS' }),
      );
    }
    chmodSync(file, 0o600);
    chmodSync(dir, 0o755);
    expect(() => native.installOpen(dir, ORIGIN)).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_PERMISSIONS' }),
    );
    chmodSync(dir, 0o700);
    expect(native.installOpen(dir, ORIGIN)?.sealed).toBe('file');
  });

  it('refuses a state file that is a named pipe at once, never blocking on it', () => {
    const dir = stateDir();
    native.installOpen(dir, ORIGIN, { keystore: 'file' });
    const file = stateFile(dir);
    rmSync(file);
    execFileSync('mkfifo', ['-m', '600', file]);
    // In a process of its own: an open that blocked would hang this one for good.
    const index = new URL('../index.js', import.meta.url).href;
    const script = `const { native } = await import(${JSON.stringify(index)});
      try { native.installOpen(${JSON.stringify(dir)}, ${JSON.stringify(ORIGIN)}); console.log('opened'); }
      catch (error) { console.log(error.code); }`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(r.signal).toBeNull();
    expect(r.stdout.trim()).toBe('ERR_NATIVE_INSTALL_IO');
  });

  it('refuses a corrupted or edited state file with a typed error', () => {
    const dir = stateDir();
    native.installOpen(dir, ORIGIN, { keystore: 'file' });
    const file = stateFile(dir);
    const good = readFileSync(file, 'utf8');
    const other = native.installOpen(stateDir(), 'http://other.example', { keystore: 'file' });
    const corrupt = [
      '',
      good.slice(0, good.length - 5),
      good.replace('moat-install/1', 'moat-install/2'),
      good.replace(ORIGIN, 'http://other.example'),
      good.replace(/public=.*\n/, `public=${other?.publicKey}\n`),
      `${good}extra=1\n`,
      good.replace('seal=file', 'seal=vault'),
      'x'.repeat(3000),
    ];
    for (const text of corrupt) {
      writeFileSync(file, text, { mode: 0o600 });
      expect(() => native.installOpen(dir, ORIGIN)).toThrow(
        expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_STATE' }),
      );
    }
    writeFileSync(file, good, { mode: 0o600 });
    expect(native.installOpen(dir, ORIGIN)?.enrolled).toBe(false);
  });

  it('seals the private key with the kernel keyring where it answers, else the file alone', async () => {
    const dir = stateDir();
    const opened = native.installOpen(dir, ORIGIN);
    const file = stateFile(dir);
    const text = readFileSync(file, 'utf8');
    if (opened?.sealed !== 'keyring') {
      // A container that denies keyctl: the file alone, said so.
      expect(opened?.sealed).toBe('file');
      expect(text).toContain('\nseal=file\n');
      return;
    }
    expect(text).toMatch(/\nseal=keyring:[0-9a-f]{32}\nsecret=[A-Za-z0-9_-]{80}\n$/);
    const e = enrollment();
    native.installActivate(ORIGIN, e.installId, e.ekid, e.verifierPublic, e.challenge);
    const enrolled = readFileSync(file, 'utf8');
    expect(native.installOpen(dir, ORIGIN)).toEqual({
      ...opened,
      enrolled: true,
      installId: e.installId,
      ekid: e.ekid,
    });
    const got = await send(i1(e.installId), ORIGIN);
    expect(verifiesAsVerifier(got, e, opened.publicKey)).toBe(true);
    // Every line before the secret is authenticated: an edited install id does not open.
    writeFileSync(file, enrolled.replace(e.installId, `i${'0'.repeat(24)}`), { mode: 0o600 });
    expect(() => native.installOpen(dir, ORIGIN)).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_STATE' }),
    );
    // A keyring key that is gone (a reboot empties the keyring): a typed error, not a new key.
    writeFileSync(file, enrolled.replace(/seal=keyring:[0-9a-f]{32}/, `seal=keyring:${'0'.repeat(32)}`), {
      mode: 0o600,
    });
    expect(() => native.installOpen(dir, ORIGIN)).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_SEALED' }),
    );
    writeFileSync(file, enrolled, { mode: 0o600 });
    expect(native.installOpen(dir, ORIGIN)?.installId).toBe(e.installId);
    // Forgetting drops the keyring key too: the same file no longer opens.
    native.installForget(ORIGIN);
    writeFileSync(file, enrolled, { mode: 0o600 });
    expect(() => native.installOpen(dir, ORIGIN)).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_INSTALL_SEALED' }),
    );
    native.installForget(ORIGIN, dir);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('property: any origin round-trips; one byte changed in the state opens to the same key or fails typed', () => {
    const dir = stateDir();
    const origin = fc.stringMatching(/^[!-~]{1,80}$/);
    fc.assert(
      fc.property(origin, fc.nat(), fc.integer({ min: 1, max: 255 }), fc.boolean(), (name, at, flip, enroll) => {
        native.installForget(name, dir);
        const made = native.installOpen(dir, name, { keystore: 'file' });
        if (enroll) {
          const e = enrollment();
          native.installActivate(name, e.installId, e.ekid, e.verifierPublic, e.challenge);
        }
        expect(native.installOpen(dir, name, { create: false })?.publicKey).toBe(made?.publicKey);
        const file = join(dir, readdirSync(dir).find((f) => f.endsWith('.install')) ?? '');
        const good = readFileSync(file);
        const bad = Buffer.from(good);
        bad[at % bad.length] = ((bad[at % bad.length] as number) ^ flip) & 0xff;
        writeFileSync(file, bad, { mode: 0o600 });
        try {
          const opened = native.installOpen(dir, name, { create: false });
          // A change that still parses (a kid's letter, say) is another state, never another key.
          expect(opened?.publicKey === made?.publicKey || opened === null).toBe(true);
        } catch (error) {
          expect((error as { code?: string }).code).toMatch(/^ERR_NATIVE_INSTALL_(STATE|PERMISSIONS)$/);
        }
        native.installForget(name, dir);
        expect(readdirSync(dir).filter((f) => f.endsWith('.install'))).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });
});
