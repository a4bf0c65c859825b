/**
 * Block signing and verification per second for both modes, against the bare primitive in
 * the same run: node:crypto HMAC-SHA-256 and Ed25519 over the same signing input (the floor
 * of what a signature costs), and @noble/hashes / @noble/curves (why the keyring uses
 * node:crypto).
 *
 * Run: pnpm --filter @moat/distill-guard bench (after a build).
 */
import { createHmac, createPrivateKey, verify as nodeVerify, sign } from 'node:crypto';
import { signingInput } from '@moat/protocol';
import { ed25519 } from '@noble/curves/ed25519.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { Bench } from 'tinybench';
import { BlockKeyring } from '../dist/index.js';

const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 400);
const secret = new Uint8Array(32).fill(7);
const seed = new Uint8Array(32).fill(9);
const hs = new BlockKeyring([{ kid: 'h1', alg: 'hs256', secret }], 'h1');
const ed = new BlockKeyring([{ kid: 'e1', alg: 'ed25519', seed }], 'e1');
const ctx = { apiKeyId: 'key_7f3a', model: 'claude-bench' };
const block = { type: 'thinking', thinking: 'Let me work through this carefully. '.repeat(30) };
const hsSigned = { ...block, signature: hs.sign(block, ctx) };
const edSigned = { ...block, signature: ed.sign(block, ctx) };
const input = signingInput(block, { alg: 'hs256', kid: 'h1', ...ctx });
const edKey = createPrivateKey({
  key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]),
  format: 'der',
  type: 'pkcs8',
});
const edSig = sign(null, input, edKey);
const noblePub = ed25519.getPublicKey(seed);
const nobleSig = ed25519.sign(input, seed);

const rows: Array<[string, string, string]> = [
  ['hs256 sign', 'node:crypto HMAC', '@noble/hashes HMAC'],
  ['hs256 verify', 'node:crypto HMAC', '@noble/hashes HMAC'],
  ['ed25519 sign', 'node:crypto Ed25519 sign', '@noble/curves Ed25519 sign'],
  ['ed25519 verify', 'node:crypto Ed25519 verify', '@noble/curves Ed25519 verify'],
];
const bench = new Bench({ time: TIME_MS, warmup: true });
bench
  .add('hs256 sign', () => hs.sign(block, ctx))
  .add('hs256 verify', () => hs.verify(hsSigned, ctx))
  .add('ed25519 sign', () => ed.sign(block, ctx))
  .add('ed25519 verify', () => ed.verify(edSigned, ctx))
  .add('node:crypto HMAC', () => createHmac('sha256', secret).update(input).digest())
  .add('@noble/hashes HMAC', () => hmac(sha256, secret, input))
  .add('node:crypto Ed25519 sign', () => sign(null, input, edKey))
  .add('node:crypto Ed25519 verify', () => nodeVerify(null, input, edKey, edSig))
  .add('@noble/curves Ed25519 sign', () => ed25519.sign(input, seed))
  .add('@noble/curves Ed25519 verify', () => ed25519.verify(nobleSig, input, noblePub));
await bench.run();

const hz = (name: string): number => {
  const result = bench.getTask(name)?.result;
  return result !== undefined && 'throughput' in result ? result.throughput.mean : Number.NaN;
};
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
console.log(`@moat/distill-guard benchmarks (${TIME_MS} ms per task, ${process.version}, ${input.length}-byte signing input)`);
console.log('| task | ops/s | bare node:crypto | ratio | @noble | ratio |');
console.log('|---|---:|---|---:|---|---:|');
for (const [task, node, noble] of rows) {
  console.log(
    `| ${task} | ${fmt(hz(task))} | ${fmt(hz(node))} | ${(hz(task) / hz(node)).toFixed(2)}× | ${fmt(hz(noble))} | ${(hz(task) / hz(noble)).toFixed(2)}× |`,
  );
}
