/**
 * Attested send (stamped and sent by the native addon over libcurl) against the strongest
 * plain baselines — `undici.request` and the global `fetch` — to the same loopback server in
 * another process: 1 KB and 100 KB JSON bodies, sequential and 32 concurrent, five rounds
 * (the ratio is the median with its range). Both attested shapes run: `createAttestedRequest`
 * (shaped like `undici.request`) and `createAttestedFetch` (a WHATWG `Response`). A third
 * reference, the addon's `request` alone (a prepared buffer, no envelope, no stamp, no
 * JavaScript layer), is the transport's own cost; CPU time per request, the client's and the
 * server's, shows which side bounds throughput. Last, server-side verifications per second
 * for 10 KB bodies on one core, against a bare node:crypto HMAC of the same bytes keyed with
 * a `KeyObject` (what the keyring holds).
 *
 * Run: pnpm --filter @moat/attest bench (after a build).
 */
import { spawn } from 'node:child_process';
import { createHmac, createSecretKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '@moat/native';
import { readDevKey } from '@moat/native/dev-key';
import { placeholderEnvelope } from '@moat/protocol';
import { Bench } from 'tinybench';
import { request } from 'undici';
import { AttestationKeyring, createAttestedFetch, createAttestedRequest, verifyAttestation } from '../dist/index.js';

// The server reports its CPU time over IPC, outside the timed runs.
const server = spawn(
  process.execPath,
  [
    '-e',
    `require('node:http').createServer((q, s) => { q.resume(); q.on('end', () => s.end('{"ok":true}')); }).listen(0, '127.0.0.1', function () { console.log(this.address().port); });
     process.on('message', () => { const c = process.cpuUsage(); process.send(c.user + c.system); });`,
  ],
  { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] },
);
if (server.stdout === null) throw new Error('the server has no stdout');
const [portLine] = (await once(server.stdout, 'data')) as [Buffer];
const url = `http://127.0.0.1:${portLine.toString().trim()}/v1/messages`;
const serverCpu = async (): Promise<number> => {
  server.send('cpu');
  return ((await once(server, 'message')) as [number])[0];
};
const attested = createAttestedFetch();
const attestedRequest = createAttestedRequest();

const body = (bytes: number) =>
  JSON.stringify({ model: 'm', max_tokens: 16, messages: [{ role: 'user', content: 'x'.repeat(bytes - 80) }] });

type Send = (payload: string) => Promise<void>;
const addonAlone = (payload: Buffer): Promise<void> =>
  new Promise((resolve, reject) => {
    if (native === undefined) throw new Error('the addon did not load');
    native.request(
      { method: 'POST', url, headers: ['content-type: application/json', 'accept-encoding: identity'], body: payload },
      (event, a) => {
        if (event === 'end') resolve();
        else if (event === 'error') reject(new Error(String(a)));
      },
    );
  });
const buffers = new Map<string, Buffer>();
const sends: Record<string, Send> = {
  'undici.request': async (payload) => {
    const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: payload });
    await res.body.arrayBuffer();
  },
  fetch: async (payload) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: payload });
    await res.arrayBuffer();
  },
  'addon alone': (payload) => {
    let bytes = buffers.get(payload);
    if (bytes === undefined) {
      bytes = Buffer.from(payload);
      buffers.set(payload, bytes);
    }
    return addonAlone(bytes);
  },
  'attested request': async (payload) => {
    const res = await attestedRequest(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: payload });
    await res.body.arrayBuffer();
  },
  'attested fetch': async (payload) => {
    const res = await attested(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: payload });
    await res.arrayBuffer();
  },
};

/** One timed run after a discarded warm-up run: wall ms, and client and server CPU µs per request. */
async function timeIt(
  send: Send,
  payload: string,
  total: number,
  concurrency: number,
): Promise<{ ms: number; client: number; server: number }> {
  let next = 0;
  const worker = async () => {
    while (next < total) {
      next++;
      await send(payload);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker)); // warm-up run, discarded
  const serverBefore = await serverCpu();
  const cpu = process.cpuUsage();
  const start = performance.now();
  next = 0;
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ms = performance.now() - start;
  const used = process.cpuUsage(cpu);
  return { ms, client: (used.user + used.system) / total, server: ((await serverCpu()) - serverBefore) / total };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const spread = (xs: number[]) => `${median(xs).toFixed(2)}× (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})`;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);

console.log(`@moat/attest benchmarks (${process.version}), ${ROUNDS} rounds, medians`);
console.log(
  '| body | mode | undici.request | fetch | addon alone | attested request | attested fetch | attested request ÷ undici.request | attested fetch ÷ fetch | attested fetch ÷ undici.request | addon alone ÷ undici.request |',
);
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
const cpuRows: string[] = [];
for (const size of [1024, 100 * 1024]) {
  // Runs long enough (a few hundred ms) for a stable median on a loaded two-core machine.
  for (const [mode, concurrency, total] of [
    ['sequential', 1, size === 1024 ? 2_000 : 1_000],
    ['32 concurrent', 32, size === 1024 ? 10_000 : 3_000],
  ] as const) {
    const payload = body(size);
    const names = Object.keys(sends);
    const runs: Record<string, { ms: number; client: number; server: number }[]> = Object.fromEntries(names.map((n) => [n, []]));
    for (let round = 0; round < ROUNDS; round++)
      // Rotated order, so no sender always runs first on a cold server.
      for (const name of names.slice(round % names.length).concat(names.slice(0, round % names.length)))
        runs[name]?.push(await timeIt(sends[name] as Send, payload, total, concurrency));
    const times = (name: string) => (runs[name] ?? []).map((r) => r.ms);
    const ratio = (of: string, base: string) => spread(times(of).map((t, i) => t / (times(base)[i] as number)));
    const ms = (name: string) => `${median(times(name)).toFixed(0)} ms`;
    const cpu = (name: string, side: 'client' | 'server') => `${median((runs[name] ?? []).map((r) => r[side])).toFixed(1)}`;
    const label = `${size === 1024 ? '1 KB' : '100 KB'} | ${mode} (${total} requests)`;
    console.log(
      `| ${label} | ${ms('undici.request')} | ${ms('fetch')} | ${ms('addon alone')} | ${ms('attested request')} | ${ms('attested fetch')} | ${ratio('attested request', 'undici.request')} | ${ratio('attested fetch', 'fetch')} | ${ratio('attested fetch', 'undici.request')} | ${ratio('addon alone', 'undici.request')} |`,
    );
    cpuRows.push(
      `| ${label} | ${cpu('undici.request', 'client')} / ${cpu('undici.request', 'server')} | ${cpu('addon alone', 'client')} / ${cpu('addon alone', 'server')} | ${cpu('attested request', 'client')} / ${cpu('attested request', 'server')} | ${cpu('attested fetch', 'client')} / ${cpu('attested fetch', 'server')} |`,
    );
  }
}
console.log('');
console.log('CPU time per request, µs, client / server (medians; the client is one process on one core, the server another):');
console.log('');
console.log('| body | mode | undici.request | addon alone | attested request | attested fetch |');
console.log('|---|---|---:|---:|---:|---:|');
for (const row of cpuRows) console.log(row);
await installVersusRelease();
server.kill();

/**
 * Per-install keys (protocol 1.2): the addon's request with an i1 envelope stamped with an
 * enrolled install's key (`options.install`) against the same request with an r1 envelope
 * stamped with the release key — same bodies, same headers, interleaved in each round (the
 * order alternating), sequential; wall time and client CPU per request, i1 ÷ r1.
 */
async function installVersusRelease(): Promise<void> {
  const addon = native;
  if (addon?.installOpen === undefined || addon.installActivate === undefined || addon.installForget === undefined) {
    console.log('\ni1 against r1: the addon has no install keys');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'moat-bench-installs-'));
  const origin = 'http://bench.invalid';
  const installId = `i${randomBytes(12).toString('hex')}`;
  addon.installOpen(dir, origin, { keystore: 'file' });
  const verifier = generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' }).x as string;
  addon.installActivate(origin, installId, 'e2026b', verifier, randomBytes(32).toString('base64url'));
  const kid = addon.keyId();
  const sendWith = (scheme: 'r1' | 'i1', payload: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const envelope = placeholderEnvelope({
        kid: scheme === 'i1' ? installId : kid,
        ts: Math.floor(Date.now() / 1000),
        nonce: randomBytes(8).toString('hex'),
        binding: scheme === 'i1' ? 'install' : 'request',
      });
      addon.request(
        {
          method: 'POST',
          url,
          headers: ['content-type: application/json', 'accept-encoding: identity', 'x-api-key: sk-bench'],
          body: payload,
          envelope,
          ...(scheme === 'i1' ? { install: origin } : {}),
        },
        (event, a, _b, c) => {
          if (event === 'headers' && c !== 0) reject(new Error(`${scheme} not stamped (${c})`));
          else if (event === 'end') resolve();
          else if (event === 'error') reject(new Error(String(a)));
        },
      );
    });
  /** A batch of sequential requests: wall ms and client CPU µs per request. */
  const batch = async (scheme: 'r1' | 'i1', payload: string, n: number) => {
    const cpu = process.cpuUsage();
    const start = performance.now();
    for (let i = 0; i < n; i++) await sendWith(scheme, payload);
    const used = process.cpuUsage(cpu);
    return { ms: performance.now() - start, client: (used.user + used.system) / n };
  };
  const PAIRS = 10 * ROUNDS;
  console.log('');
  console.log(
    `Per-install keys: the addon's request stamped i1 (install key) ÷ the same request stamped r1 (release key), sequential; ${PAIRS} interleaved pairs of batches (the order alternating), the ratio per pair, median and range (target ≤ 1.05×):`,
  );
  console.log('');
  console.log(
    '| body | requests per batch | r1 per request | i1 per request | i1 ÷ r1 (time) | r1 client CPU µs | i1 client CPU µs | i1 ÷ r1 (client CPU) |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const size of [1024, 100 * 1024]) {
    const payload = body(size);
    const n = size === 1024 ? 100 : 40;
    await batch('r1', payload, n); // warm-up, discarded
    await batch('i1', payload, n);
    const runs: Record<'r1' | 'i1', { ms: number; client: number }[]> = { r1: [], i1: [] };
    for (let pair = 0; pair < PAIRS; pair++)
      for (const scheme of pair % 2 === 0 ? (['r1', 'i1'] as const) : (['i1', 'r1'] as const))
        runs[scheme].push(await batch(scheme, payload, n));
    const us = (scheme: 'r1' | 'i1') => `${((median(runs[scheme].map((r) => r.ms)) * 1000) / n).toFixed(0)} µs`;
    const cpu = (scheme: 'r1' | 'i1') => median(runs[scheme].map((r) => r.client)).toFixed(1);
    const ratio = (field: 'ms' | 'client') => spread(runs.i1.map((r, i) => r[field] / (runs.r1[i]?.[field] as number)));
    console.log(
      `| ${size === 1024 ? '1 KB' : '100 KB'} | ${n} | ${us('r1')} | ${us('i1')} | ${ratio('ms')} | ${cpu('r1')} | ${cpu('i1')} | ${ratio('client')} |`,
    );
  }
  addon.installForget(origin);
  rmSync(dir, { recursive: true, force: true });
}

// Server-side verification, one core.
const dev = readDevKey() as {
  kid: string;
  key: string;
};
const key = new Uint8Array(Buffer.from(dev.key, 'hex'));
// The addon's stamp check (OpenSSL, the key's HMAC state set up once) and node:crypto alone.
const keyrings = {
  addon: new AttestationKeyring([{ kid: dev.kid, key }]),
  'node:crypto': new AttestationKeyring([{ kid: dev.kid, key }], { native: null }),
};
await keyrings.addon.ready();
const raw = Buffer.from(
  `${body(10 * 1024).slice(0, -1)},"moat_att":"v1.${dev.kid}.${Math.floor(Date.now() / 1000)}.0011223344556677.${'0'.repeat(32)}"}`,
);
const stamp = createHmac('sha256', key).update(raw).digest('hex').slice(0, 32);
raw.write(stamp, raw.length - 34, 'latin1');
const bytes = new Uint8Array(raw);
const keyObject = createSecretKey(key);
const verifyRatios: Record<string, number[]> = { addon: [], 'node:crypto': [] };
const perSecond: Record<string, number> = {};
let h = Number.NaN;
for (let round = 0; round < ROUNDS; round++) {
  const bench = new Bench({ time: Number(process.env.BENCH_TIME_MS ?? 500), warmup: true });
  for (const [name, keyring] of Object.entries(keyrings))
    bench.add(`verifyAttestation, ${name} (10 KB)`, async () => {
      await verifyAttestation(bytes, { keyring });
    });
  bench.add('bare node:crypto HMAC, KeyObject (10 KB)', () => createHmac('sha256', keyObject).update(raw).digest());
  await bench.run();
  const hz = (name: string): number => {
    const result = bench.getTask(name)?.result;
    return result !== undefined && 'throughput' in result ? result.throughput.mean : Number.NaN;
  };
  h = hz('bare node:crypto HMAC, KeyObject (10 KB)');
  for (const name of Object.keys(keyrings)) {
    perSecond[name] = hz(`verifyAttestation, ${name} (10 KB)`);
    verifyRatios[name]?.push((perSecond[name] as number) / h);
  }
}
console.log('');
for (const name of Object.keys(keyrings))
  console.log(
    `verifyAttestation, stamp checked by ${name === 'node:crypto' ? 'node:crypto' : keyrings.addon.backend(dev.kid) === 'native' ? '@moat/native' : 'node:crypto (the addon did not load)'}, 10 KB bodies: ${Math.round(perSecond[name] as number).toLocaleString('en-US')}/s, ${spread(verifyRatios[name] as number[])} a bare node:crypto HMAC keyed with a KeyObject (${Math.round(h).toLocaleString('en-US')}/s in the last round)`,
  );
