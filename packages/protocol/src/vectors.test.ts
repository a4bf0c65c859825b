/**
 * The vector files themselves: their shape, and independent checks of the expected values
 * that matter most (computed here with node:crypto and @noble/curves, not by the code that
 * generated them). Every case runs through the conformance kit in conformance.test.ts, for
 * TypeScript and for the Python reference; nothing here dispatches cases by file.
 */
import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { describe, expect, it } from 'vitest';
import { loadVectors, VECTOR_FILES } from './conformance.js';
import * as p from './index.js';

const dir = new URL('../vectors/', import.meta.url);
const cases = (file: string, op: string): Array<Record<string, any>> =>
  loadVectors(dir)
    .filter((x) => x.file === file && x.vector.op === op)
    .map((x) => x.vector);
const fromHex = (t: string) => new Uint8Array(Buffer.from(t, 'hex'));

describe('vector files', () => {
  for (const file of VECTOR_FILES) {
    it(`${file}.json: specVersion ${p.SPEC_VERSION}, its count, unique names, and an error code on every refusal`, () => {
      const doc = JSON.parse(readFileSync(new URL(`${file}.json`, dir), 'utf8'));
      expect(doc.specVersion).toBe(p.SPEC_VERSION);
      expect(doc.file).toBe(file);
      expect(doc.count).toBe(doc.cases.length);
      expect(new Set(doc.cases.map((c: { op: string; name: string }) => `${c.op}:${c.name}`)).size).toBe(doc.count);
      // The kit compares whole answers, so every refusal is checked by its code.
      // (A verification answering `valid: false` is an outcome, not a refusal.)
      for (const c of doc.cases)
        if (c.valid === false && c.op !== 'verify' && c.op !== 'verify_ed25519')
          expect(c.error, `${c.op}: ${c.name}`).toMatch(/^ERR_[A-Z_]+$/);
    });
  }

  it('every file but fingerprint has valid and invalid cases', () => {
    for (const file of VECTOR_FILES.filter((f) => f !== 'fingerprint')) {
      const all = loadVectors(dir).filter((x) => x.file === file);
      const invalid = all.filter(
        ({ vector: c }) => c.valid === false || (c.status !== undefined && c.status !== 'found') || c.result === 'invalid',
      );
      expect(invalid.length, file).toBeGreaterThan(0);
      expect(invalid.length, file).toBeLessThan(all.length);
    }
  });
});

describe('expected values, computed independently', () => {
  it('stamp.compute: node:crypto HMAC over the request base (r1, i1) and the placeholder body, truncated', () => {
    for (const c of cases('stamp', 'compute').filter((x) => x.valid)) {
      const mac = createHmac('sha256', Buffer.from(c.key, 'hex'));
      if (c.request !== undefined) mac.update(p.requestBase(c.request));
      expect(mac.update(c.body).digest('hex').startsWith(c.stamp), c.name).toBe(true);
      expect(c.stamped.length).toBe(c.body.length);
    }
  });

  it('fingerprint: node:crypto SHA-256 of salt, chars and version', () => {
    for (const c of cases('fingerprint', 'fingerprint')) {
      const reference = createHash('sha256')
        .update(Buffer.from(p.utf8(c.salt + c.chars + c.version)))
        .digest('hex')
        .slice(0, 3);
      expect(c.fp, c.name).toBe(reference);
    }
    // chars of "Hello, how are you doing today?" at 4, 7, 20 are "o", "h", "o".
    const expected = createHash('sha256').update('moat-test-saltoho1.4.2').digest('hex').slice(0, 3);
    expect(cases('fingerprint', 'fingerprint').find((c) => c.name === 'ASCII text')?.fp).toBe(expected);
  });

  it('enroll.derive: @noble X25519 and HKDF; both sides of one agreement agree; RFC 7748 section 6.1', () => {
    const derive = cases('enroll', 'derive');
    for (const c of derive.filter((x) => x.valid)) {
      const z = x25519.getSharedSecret(fromHex(c.privateKey), fromHex(c.peerPublicKey));
      const info = p.lengthPrefixed(['moat-install/1', c.installId, c.ekid, c.installPublicKey]);
      expect(Buffer.from(hkdf(sha256, z, fromHex(c.challenge), info, 32)).toString('hex'), c.name).toBe(c.key);
    }
    const key = (name: string) => derive.find((c) => c.name.startsWith(name))?.key;
    expect(key('install side')).toBe(key('verifier side'));
    // RFC 7748 section 6.1: Alice's private key and Bob's public key give this shared secret.
    const rfc = derive.find((c) => c.name === 'RFC 7748 section 6.1 keys') as Record<string, string>;
    const z = Buffer.from(x25519.getSharedSecret(fromHex(rfc.privateKey as string), fromHex(rfc.peerPublicKey as string)));
    expect(z.toString('hex')).toBe('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
    for (const c of derive.filter((x) => x.name.startsWith('low-order'))) expect(c.error, c.name).toBe('ERR_ENROLLMENT');
  });

  it('stamp: the i1 vectors are stamped with the install key of enroll.json', () => {
    const installKey = cases('enroll', 'derive').find((c) => c.name.startsWith('install side'))?.key;
    const i1 = cases('stamp', 'compute').filter((c) => c.name.startsWith('i1: stamp under'));
    expect(i1).toHaveLength(1);
    expect(i1[0]?.key).toBe(installKey);
  });

  it('sign_hs256 and verify_ed25519: node:crypto HMAC and @noble/curves over the signing input', () => {
    for (const c of cases('signature', 'sign_hs256').filter((x) => x.signature !== undefined)) {
      const mac = createHmac('sha256', Buffer.from(c.key, 'hex')).update(fromHex(c.input)).digest();
      expect(Buffer.from(p.parseBlockSignature(c.signature).sig).equals(mac), c.name).toBe(true);
    }
    for (const c of cases('signature', 'verify_ed25519').filter((x) => x.input !== undefined)) {
      const sig = p.tryParseBlockSignature(c.signature);
      const own = sig.ok && sig.value.alg === c.context.alg && sig.value.kid === c.context.kid;
      const scope = c.context.context === undefined ? 'k' : 'c';
      const verifies = own && sig.value.scope === scope && ed25519.verify(sig.value.sig, fromHex(c.input), fromHex(c.publicKey));
      expect(verifies, c.name).toBe(c.valid);
    }
  });
});
