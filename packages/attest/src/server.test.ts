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

  it('rejects (never accepts) when the store cannot be reached', async () => {
    const down: NonceStore = {
      add: () => {
        throw new Error('ECONNREFUSED');
      },
    };
    await expect(verifyAttestation(stamped(Math.floor(Date.now() / 1000)), { keyring, nonceStore: down })).rejects.toThrow('ECONNREFUSED');
  });
});
