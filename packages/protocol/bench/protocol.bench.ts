/**
 * Protocol throughput, each against a named baseline measured in the same run:
 *
 * - fingerprint v1 vs one bare node:crypto SHA-256 of the same input (the hash alone), and
 *   vs the same algorithm on @noble/hashes (why the implementation uses node:crypto);
 * - attribution-block parse vs one node:crypto SHA-256 of the same block (the cost floor
 *   the fingerprint check pays anyway);
 * - locating the envelope in a 100 KiB body vs Buffer.indexOf over it (one memmem pass);
 * - computing a stamp vs a bare node:crypto HMAC over the same bytes, and vs @noble/hashes;
 * - an i1 stamp (protocol 1.2, under an install key) vs an r1 stamp of the same 2 KiB request;
 * - deriving an install key (X25519 + HKDF on node:crypto, what a verifier does once per
 *   install before caching it) vs the same on @noble/curves and @noble/hashes.
 *
 * Run: pnpm --filter @moat/protocol bench (after a build).
 */
import { createHash, createHmac } from 'node:crypto';
import { x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { Bench } from 'tinybench';
import * as p from '../dist/index.js';

const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 400);
const opts = { salt: 'moat-bench-salt', version: '1.4.2' };
const text = 'Please refactor the function below so that it handles empty input gracefully.';
const block = 'x-moat: v=1; cv=1.4.2; fp=a3f; ep=cli; build=abc123;';

const fpInput = opts.salt + p.fingerprintChars(text) + opts.version;
function nobleFingerprint(t: string): string {
  return p.toHex(sha256(p.utf8(opts.salt + p.fingerprintChars(t) + opts.version))).slice(0, 3);
}

const big = p.appendEnvelope(
  JSON.stringify({ model: 'm', max_tokens: 1024, messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] }),
  p.placeholderEnvelope({ kid: 'k2026a', ts: 1764000000, nonce: '9f2c4e7a1b3d5c6f' }),
);
const bigBytes = p.utf8(big);
const bigBuffer = Buffer.from(bigBytes);
const loc = p.locateEnvelope(bigBytes);
if (loc.status !== 'found') throw new Error('bench body has no envelope');
const key = new Uint8Array(32).fill(7);
const needle = Buffer.from('"moat_att"');

// A typical request, once with an r1 and once with an i1 envelope of the same length.
const request = { method: 'POST', authority: 'api.example.com', path: '/v1/messages', credential: 'sk-ant-bench-0001' };
const chat = JSON.stringify({ model: 'm', max_tokens: 1024, messages: [{ role: 'user', content: 'y'.repeat(2048) }] });
function bodyWith(kid: string, binding: 'request' | 'install') {
  const bytes = p.utf8(p.appendEnvelope(chat, p.placeholderEnvelope({ kid, ts: 1764000000, nonce: '9f2c4e7a1b3d5c6f', binding })));
  const at = p.locateEnvelope(bytes);
  if (at.status !== 'found') throw new Error('bench body has no envelope');
  return { bytes, start: at.stampStart, end: at.stampEnd };
}
const r1 = bodyWith('k2026a0000000000000000000', 'request');
const i1 = bodyWith('i0123456789abcdef01234567', 'install');
const installPrivate = new Uint8Array(32).fill(3);
const verifierPublic = x25519.getPublicKey(new Uint8Array(32).fill(4));
const enrollment = {
  privateKey: installPrivate,
  peerPublicKey: verifierPublic,
  challenge: new Uint8Array(32).fill(5),
  installId: 'i0123456789abcdef01234567',
  ekid: 'e2026a',
  installPublicKey: p.x25519PublicKey(new Uint8Array(32).fill(6)),
};
const installKey = p.deriveInstallKey(enrollment);
const info = p.lengthPrefixed([p.INSTALL_KEY_LABEL, enrollment.installId, enrollment.ekid, enrollment.installPublicKey]);

interface Pair {
  readonly name: string;
  readonly baseline: string;
  readonly run: () => unknown;
  readonly base: () => unknown;
}

const pairs: Pair[] = [
  {
    name: 'fingerprint',
    baseline: 'bare node:crypto sha256',
    run: () => p.fingerprint(text, opts),
    base: () => createHash('sha256').update(fpInput).digest(),
  },
  {
    name: 'fingerprint ',
    baseline: 'fingerprint on @noble/hashes',
    run: () => p.fingerprint(text, opts),
    base: () => nobleFingerprint(text),
  },
  {
    name: 'parseAttribution',
    baseline: 'node:crypto sha256(block)',
    run: () => p.parseAttribution(block),
    base: () => createHash('sha256').update(block).digest(),
  },
  {
    name: 'locateEnvelope (100 KiB)',
    baseline: 'Buffer.indexOf (100 KiB)',
    run: () => p.locateEnvelope(bigBytes),
    base: () => bigBuffer.indexOf(needle),
  },
  {
    name: 'computeStamp (100 KiB)',
    baseline: 'bare node:crypto HMAC (100 KiB)',
    run: () => p.computeStamp(key, bigBytes, loc.stampStart, loc.stampEnd),
    base: () => createHmac('sha256', key).update(bigBuffer).digest('hex'),
  },
  {
    name: 'computeStamp (100 KiB) ',
    baseline: 'HMAC on @noble/hashes (100 KiB)',
    run: () => p.computeStamp(key, bigBytes, loc.stampStart, loc.stampEnd),
    base: () => hmac(sha256, key, bigBytes),
  },
  {
    name: 'computeStamp i1 (2 KiB request)',
    baseline: 'computeStamp r1 (2 KiB request)',
    run: () => p.computeStamp(installKey, i1.bytes, i1.start, i1.end, request),
    base: () => p.computeStamp(key, r1.bytes, r1.start, r1.end, request),
  },
  {
    name: 'deriveInstallKey',
    baseline: 'X25519 + HKDF on @noble',
    run: () => p.deriveInstallKey(enrollment),
    base: () => hkdf(sha256, x25519.getSharedSecret(installPrivate, verifierPublic), enrollment.challenge, info, 32),
  },
];

const bench = new Bench({ time: TIME_MS, warmup: true });
for (const pair of pairs) {
  if (!bench.getTask(pair.name)) bench.add(pair.name, pair.run);
  bench.add(pair.baseline, pair.base);
}
await bench.run();

const hz = (name: string): number => {
  const result = bench.getTask(name)?.result;
  return result !== undefined && 'throughput' in result ? result.throughput.mean : Number.NaN;
};
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
console.log(`@moat/protocol benchmarks (${TIME_MS} ms per task, ${process.version})`);
console.log('| task | ops/s | baseline | ops/s | ratio |');
console.log('|---|---:|---|---:|---:|');
for (const pair of pairs) {
  const a = hz(pair.name);
  const b = hz(pair.baseline);
  console.log(`| ${pair.name.trim()} | ${fmt(a)} | ${pair.baseline} | ${fmt(b)} | ${(a / b).toFixed(2)}× |`);
}
