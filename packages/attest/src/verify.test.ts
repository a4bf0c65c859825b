import { createHmac, randomBytes } from 'node:crypto';
import { native } from '@moat/native';
import { type RequestComponents, requestBase, utf8 } from '@moat/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttestationKeyring, MemoryNonceStore, verifyAttestation } from './server.js';

// verifyAttestation checks stamps in the addon where it loads and with node:crypto otherwise:
// both must give the same result for every input.
const kid = 'k2026a';
const key = randomBytes(32);
const now = 1_764_000_000;
const request: RequestComponents = { method: 'POST', authority: 'api.example.com', path: '/v1/messages', credential: 'sk-ant-1' };

/** A body with an envelope stamped genuinely (with `request` for r1). */
function stamped(text: string, scheme: 'v1' | 'r1' = 'v1', hex = 32, signer = key): Buffer {
  const body = Buffer.from(
    `${JSON.stringify({ model: 'm', messages: [{ role: 'user', content: text }] }).slice(0, -1)},"moat_att":"${scheme}.${kid}.${now}.0011223344556677.${'0'.repeat(hex)}"}`,
  );
  const mac = createHmac('sha256', signer);
  if (scheme === 'r1') mac.update(requestBase(request));
  body.write(mac.update(body).digest('hex').slice(0, hex), body.length - 2 - hex, 'latin1');
  return body;
}

describe('the native stamp check in verifyAttestation', () => {
  it('is used once the addon has loaded, per key; node:crypto serves without it', async () => {
    const keyring = new AttestationKeyring([{ kid, key }]);
    await keyring.ready();
    expect(keyring.backend(kid)).toBe(native === undefined ? 'node:crypto' : 'native');
    expect(new AttestationKeyring([{ kid, key }], { native: null }).backend(kid)).toBe('node:crypto');
    // A key the addon refuses (over 1 KB) falls back to node:crypto for that key alone.
    keyring.add({ kid: 'long', key: randomBytes(2048) });
    expect(keyring.backend('long')).toBe('node:crypto');
  });

  it('gives node:crypto’s result for genuine, tampered, relabelled and foreign stamps', async () => {
    const withAddon = new AttestationKeyring([{ kid, key }]);
    await withAddon.ready();
    const plain = new AttestationKeyring([{ kid, key }], { native: null });
    const bodies: Array<[string, Buffer, RequestComponents | undefined]> = [
      ['v1 genuine', stamped('hello'), undefined],
      ['r1 genuine', stamped('hello', 'r1'), request],
      ['r1, another credential', stamped('hello', 'r1'), { ...request, credential: 'sk-ant-2' }],
      ['r1, an unsendable authority', stamped('hello', 'r1'), { ...request, authority: 'API.example.com' }],
      ['r1 relabelled v1', Buffer.from(stamped('hello', 'r1').toString().replace('"r1.', '"v1.')), undefined],
      ['64-digit stamp', stamped('hello', 'v1', 64), undefined],
      ['odd-length stamp', stamped('hello', 'v1', 33), undefined],
      ['another key', stamped('hello', 'v1', 32, randomBytes(32)), undefined],
      ['tampered text', Buffer.from(stamped('hello').toString().replace('hello', 'hellp')), undefined],
    ];
    const signals: string[] = [];
    for (const [what, body, req] of bodies) {
      const a = await verifyAttestation(body, { keyring: withAddon, now, ...(req && { request: req }) });
      const b = await verifyAttestation(body, { keyring: plain, now, ...(req && { request: req }) });
      expect(a, what).toEqual(b);
      signals.push(a.signal);
    }
    expect(signals).toEqual(['valid', 'valid', 'invalid', 'invalid', 'invalid', 'valid', 'invalid', 'invalid', 'invalid']);
  });

  it('agrees with node:crypto on any bytes (fast-check)', async () => {
    const withAddon = new AttestationKeyring([{ kid, key }]);
    await withAddon.ready();
    const plain = new AttestationKeyring([{ kid, key }], { native: null });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string().map((s) => stamped(s)),
          fc.string().map((s) => stamped(s, 'r1')),
          fc.tuple(fc.string(), fc.nat()).map(([s, at]) => {
            const body = stamped(s);
            body[at % body.length] = (body[at % body.length] as number) ^ 1;
            return body;
          }),
          fc.stringMatching(/^[0-9a-fA-F]{28,70}$/).map((h) => utf8(`{"x":1,"moat_att":"v1.${kid}.${now}.0011223344556677.${h}"}`)),
          fc.uint8Array({ maxLength: 300 }),
        ),
        fc.option(fc.record({ credential: fc.string() }), { nil: undefined }),
        async (body, change) => {
          const req = change === undefined ? request : { ...request, ...change };
          const a = await verifyAttestation(body, { keyring: withAddon, now, request: req, nonceStore: new MemoryNonceStore() });
          const b = await verifyAttestation(body, { keyring: plain, now, request: req, nonceStore: new MemoryNonceStore() });
          expect(a).toEqual(b);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('a replaced key verifies with the new bytes only; a revoked one is checked, never valid', async () => {
    const keyring = new AttestationKeyring([{ kid, key }]);
    await keyring.ready();
    const body = stamped('hello');
    expect((await verifyAttestation(body, { keyring, now })).signal).toBe('valid');
    const next = randomBytes(32);
    keyring.add({ kid, key: next });
    expect((await verifyAttestation(body, { keyring, now })).signal).toBe('invalid');
    expect((await verifyAttestation(stamped('hello', 'v1', 32, next), { keyring, now })).signal).toBe('valid');
    keyring.revoke(kid);
    // The revoked key's material is kept: its own stamps are revoked, the replaced key's bytes a forgery.
    expect((await verifyAttestation(stamped('hello', 'v1', 32, next), { keyring, now })).signal).toBe('revoked');
    expect((await verifyAttestation(body, { keyring, now })).signal).toBe('invalid');
  });
});
