import { randomBytes } from 'node:crypto';
import { appendEnvelope, computeStamp, locateEnvelope, placeholderEnvelope, utf8 } from '@moat/protocol';
import { describe, expect, it } from 'vitest';
import { AttestationKeyring, MemoryNonceStore, type NonceStore, verifyAttestation } from './server.js';

const key = randomBytes(32);
const keyring = new AttestationKeyring([{ kid: 'k1', key }]);

/** A body stamped as the native addon would, at `ts` (Unix seconds). */
function stamped(ts: number): Uint8Array {
  const text = appendEnvelope('{"model":"m","messages":[]}', placeholderEnvelope({ kid: 'k1', ts, nonce: randomBytes(8).toString('hex') }));
  const bytes = utf8(text);
  const where = locateEnvelope(bytes);
  if (where.status !== 'found') throw new Error('no envelope');
  bytes.set(utf8(computeStamp(key, bytes, where.stampStart, where.stampEnd)), where.stampStart);
  return bytes;
}

describe('verifyAttestation and the replay cache', () => {
  it('spends the nonce of a stale stamp too: the same bytes are refused as replayed, not served as stale again', async () => {
    const now = 1_800_000_000;
    const store = new MemoryNonceStore();
    const old = stamped(now - 3_600);
    expect((await verifyAttestation(old, { keyring, nonceStore: store, now, windowSec: 300 })).signal).toBe('stale');
    expect((await verifyAttestation(old, { keyring, nonceStore: store, now, windowSec: 300 })).signal).toBe('replayed');
    // A stamp from the future stays remembered until it would leave the window too.
    const future = stamped(now + 3_600);
    const seen: number[] = [];
    const spy: NonceStore = {
      add: (kid, nonce, expiresAt) => {
        seen.push(expiresAt);
        return store.add(kid, nonce, expiresAt);
      },
    };
    expect((await verifyAttestation(future, { keyring, nonceStore: spy, now, windowSec: 300 })).signal).toBe('stale');
    expect(seen).toEqual([now + 3_600 + 300]);
    expect((await verifyAttestation(future, { keyring, nonceStore: store, now: now + 3_600, windowSec: 300 })).signal).toBe('replayed');
  });

  it('asks the store to keep a fresh nonce until the last second the stamp is accepted', async () => {
    const now = 1_800_000_000;
    const seen: number[] = [];
    const store: NonceStore = {
      add: (_k, _n, expiresAt) => {
        seen.push(expiresAt);
        return true;
      },
    };
    expect((await verifyAttestation(stamped(now - 300), { keyring, nonceStore: store, now, windowSec: 300 })).signal).toBe('valid');
    expect(seen).toEqual([now + 300]);
  });

  it("tells the store the stamp's own time, which a store that lost its data needs: the expiry counts from the check", async () => {
    const now = 1_800_000_000;
    const seen: Array<[number, number | undefined]> = [];
    const store: NonceStore = {
      add: (_k, _n, expiresAt, madeAt) => {
        seen.push([expiresAt, madeAt]);
        return true;
      },
    };
    for (const made of [now - 120, now, now + 30])
      expect((await verifyAttestation(stamped(made), { keyring, nonceStore: store, now, windowSec: 300 })).signal).toBe('valid');
    expect(seen).toEqual([
      [now + 300, now - 120],
      [now + 300, now],
      [now + 330, now + 30],
    ]);
  });

  it('rejects (never accepts) when the store cannot be reached', async () => {
    const down: NonceStore = {
      add: () => {
        throw new Error('ECONNREFUSED');
      },
    };
    await expect(verifyAttestation(stamped(Math.floor(Date.now() / 1000)), { keyring, nonceStore: down })).rejects.toThrow('ECONNREFUSED');
  });
});

describe('a revoked key id: the MAC before the verdict', () => {
  it('scores a genuine stamp of the revoked release revoked and a forgery under its id invalid', async () => {
    const now = Math.floor(Date.now() / 1000);
    const ring = new AttestationKeyring([{ kid: 'k1', key }], { native: null });
    ring.revoke('k1');
    const genuine = stamped(now);
    expect((await verifyAttestation(genuine, { keyring: ring, now })).signal).toBe('revoked');
    // The same envelope with random stamp digits: what a tool without the key sends.
    const forged = Uint8Array.from(genuine);
    const where = locateEnvelope(forged);
    if (where.status !== 'found') throw new Error('no envelope');
    forged.set(utf8(randomBytes(16).toString('hex')), where.stampStart);
    const result = await verifyAttestation(forged, { keyring: ring, now });
    expect(result).toMatchObject({ signal: 'invalid', kid: 'k1', reason: 'MAC mismatch' });
    // Re-adding the key by mistake does not un-revoke it.
    ring.add({ kid: 'k1', key });
    expect((await verifyAttestation(stamped(now), { keyring: ring, now })).signal).toBe('revoked');
    expect(ring.kids()).toEqual([]);
  });

  it('scores a revoked id whose material was never held unknown_key: nothing can tell its stamps apart', async () => {
    const ring = new AttestationKeyring([], { native: null });
    ring.revoke('k1');
    const result = await verifyAttestation(stamped(Math.floor(Date.now() / 1000)), { keyring: ring });
    expect(result).toMatchObject({ signal: 'unknown_key', reason: 'revoked key id without key material' });
  });
});

describe('i1 stamps (per-install keys) through an install resolver', () => {
  const iid = `i${'ab'.repeat(12)}`;
  const installKey = randomBytes(32);
  const request = { method: 'POST', authority: 'api.example.com', path: '/v1/messages', credential: 'sk-user' };
  const now = 1_800_000_000;
  /** A body stamped i1 by the install, for `request`. */
  function installStamped(ts = now, stampKey: Uint8Array = installKey): Uint8Array {
    const placeholder = placeholderEnvelope({ kid: iid, ts, nonce: randomBytes(8).toString('hex'), binding: 'install' });
    const bytes = utf8(appendEnvelope('{"model":"m","messages":[]}', placeholder));
    const where = locateEnvelope(bytes);
    if (where.status !== 'found') throw new Error('no envelope');
    bytes.set(utf8(computeStamp(stampKey, bytes, where.stampStart, where.stampEnd, request)), where.stampStart);
    return bytes;
  }
  const options = (revoked = false) => ({
    keyring,
    nonceStore: new MemoryNonceStore(),
    now,
    request,
    installs: (id: string) => (id === iid ? { key: installKey, revoked } : undefined),
  });

  it('a genuine i1 stamp is valid with binding install; its nonce is spent under the install id', async () => {
    const o = options();
    const body = installStamped();
    expect(await verifyAttestation(body, o)).toMatchObject({ signal: 'valid', binding: 'install', kid: iid });
    expect((await verifyAttestation(body, o)).signal).toBe('replayed');
  });

  it('an i1 stamp is unknown_key without a resolver or for an install not enrolled', async () => {
    expect((await verifyAttestation(installStamped(), { keyring, now, request })).signal).toBe('unknown_key');
    const none = { ...options(), installs: () => undefined };
    expect((await verifyAttestation(installStamped(), none)).signal).toBe('unknown_key');
  });

  it('another key, other bytes or another request are invalid; a revoked install is revoked; old stamps stale', async () => {
    expect((await verifyAttestation(installStamped(now, randomBytes(32)), options())).signal).toBe('invalid');
    expect((await verifyAttestation(installStamped(), { ...options(), request: { ...request, credential: 'sk-other' } })).signal).toBe(
      'invalid',
    );
    expect((await verifyAttestation(installStamped(), options(true))).signal).toBe('revoked');
    expect((await verifyAttestation(installStamped(now - 3_600), options())).signal).toBe('stale');
  });

  it('rejects when the resolver cannot answer (the caller refuses, never accepts)', async () => {
    const failing = { ...options(), installs: () => Promise.reject(new Error('store down')) };
    await expect(verifyAttestation(installStamped(), failing)).rejects.toThrow('store down');
  });
});
