import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANTI_DISTILLATION_FEATURE, AntiDistillationGate, keyIdentity, STRIPPED_PLACEHOLDER, stripForeignSignedBlocks } from './client.js';

let server: Server;
let apiHost = '';
let flagOn = true;
let hits = 0;
const dir = mkdtempSync(join(tmpdir(), 'moat-gate-'));

beforeAll(async () => {
  // A features endpoint in GrowthBook's own format, read by the stock SDK.
  server = createServer((req, res) => {
    hits++;
    if (req.url !== '/api/features/moat-client') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ status: 200, features: { [ANTI_DISTILLATION_FEATURE]: { defaultValue: flagOn } } }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  apiHost = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const request = { model: 'm', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] };
const gate = (
  over: { compileTime?: boolean; entrypoint?: string; host?: string; cacheFile?: string; defaultValue?: boolean; warn?: string[] } = {},
) =>
  AntiDistillationGate.create({
    compileTime: over.compileTime ?? true,
    entrypoint: over.entrypoint ?? 'cli',
    remote: {
      apiHost: over.host ?? apiHost,
      clientKey: 'moat-client',
      timeoutMs: 1_000,
      ...(over.cacheFile === undefined ? {} : { cacheFile: over.cacheFile }),
      ...(over.defaultValue === undefined ? {} : { defaultValue: over.defaultValue }),
    },
    onWarning: (m) => over.warn?.push(m),
  });

describe('AntiDistillationGate: three gates, all required', () => {
  it('all open: the request asks for decoys', async () => {
    flagOn = true;
    const g = await gate();
    expect(g.decision()).toEqual({ enabled: true, gates: { compileTime: true, entrypoint: true, remote: true }, remoteSource: 'network' });
    expect(g.apply(request)).toEqual({ ...request, anti_distillation: ['fake_tools'] });
  });

  it('a remote value the app already read: no fetch of its own, and refresh keeps it', async () => {
    const before = hits;
    const on = await AntiDistillationGate.create({ compileTime: true, entrypoint: 'cli', remote: { value: true } });
    expect(on.decision()).toEqual({ enabled: true, gates: { compileTime: true, entrypoint: true, remote: true }, remoteSource: 'network' });
    expect(await on.refresh()).toMatchObject({ enabled: true });
    const off = await AntiDistillationGate.create({ compileTime: true, entrypoint: 'cli', remote: { value: false, source: 'default' } });
    expect(off.decision()).toMatchObject({ enabled: false, remoteSource: 'default' });
    expect(off.apply(request)).toBe(request);
    expect(hits).toBe(before);
  });

  it('compile-time flag off: no decoys, and no network call at all', async () => {
    const before = hits;
    const g = await gate({ compileTime: false });
    expect(g.decision().enabled).toBe(false);
    expect(g.apply(request)).toBe(request);
    expect(hits).toBe(before);
  });

  it('entrypoint is the SDK, not the CLI: no decoys', async () => {
    const g = await gate({ entrypoint: 'sdk' });
    expect(g.decision()).toMatchObject({ enabled: false, gates: { entrypoint: false } });
    expect(g.apply(request)).not.toHaveProperty('anti_distillation');
  });

  it('remote flag off: no decoys; the SDK really read it', async () => {
    flagOn = false;
    const before = hits;
    const g = await gate();
    expect(hits).toBeGreaterThan(before);
    expect(g.decision()).toEqual({
      enabled: false,
      gates: { compileTime: true, entrypoint: true, remote: false },
      remoteSource: 'network',
    });
    flagOn = true;
  });

  it('flag server unreachable: last cached value, else the default; never blocks or throws', async () => {
    const cacheFile = join(dir, 'flags.json');
    flagOn = true;
    await gate({ cacheFile }); // a run that reached the server leaves the value behind
    expect(JSON.parse(readFileSync(cacheFile, 'utf8'))).toMatchObject({ feature: ANTI_DISTILLATION_FEATURE, value: true });
    const warn: string[] = [];
    const down = 'http://127.0.0.1:9';
    const cached = await gate({ host: down, cacheFile, warn });
    expect(cached.decision()).toMatchObject({ enabled: true, remoteSource: 'cache' });
    expect(warn[0]).toMatch(/flag server http:\/\/127\.0\.0\.1:9 not reached/);
    const none = await gate({ host: down });
    expect(none.decision()).toMatchObject({ enabled: false, remoteSource: 'default' });
    const defaultOn = await gate({ host: down, defaultValue: true });
    expect(defaultOn.decision()).toMatchObject({ enabled: true, remoteSource: 'default' });
    writeFileSync(cacheFile, '{not json');
    const broken: string[] = [];
    expect((await gate({ host: down, cacheFile, warn: broken })).decision().remoteSource).toBe('default');
    expect(broken.some((m) => /cannot read the flag cache/.test(m))).toBe(true);
  });
});

describe('stripForeignSignedBlocks', () => {
  const a = { apiKeyId: keyIdentity('sk-old'), model: 'model-a' };
  const thinking = { type: 'thinking', thinking: 'step by step', signature: 'ms1.hs256.k.k.x' };
  const history = [
    { message: { role: 'user', content: 'Q1' } },
    { message: { role: 'assistant', content: [thinking, { type: 'text', text: 'A1' }] }, origin: a },
    { message: { role: 'user', content: 'Q2' } },
    { message: { role: 'assistant', content: [{ type: 'redacted_thinking', data: 'xyz' }] }, origin: a },
    { message: { role: 'user', content: 'Q3' } },
  ];

  it('keeps everything for the same key and model', () => {
    const r = stripForeignSignedBlocks(history, a);
    expect(r.stripped).toBe(0);
    expect(r.messages).toEqual(history.map((h) => h.message));
  });

  it('strips signed blocks after a key switch, keeping the rest intact', () => {
    const r = stripForeignSignedBlocks(history, { ...a, apiKeyId: keyIdentity('sk-new') });
    expect(r.stripped).toBe(2);
    expect(r.messages[1]).toEqual({ role: 'assistant', content: [{ type: 'text', text: 'A1' }] });
    expect(r.messages[3]).toEqual({ role: 'assistant', content: [{ type: 'text', text: STRIPPED_PLACEHOLDER }] });
    expect(r.messages.filter((m) => m.role === 'user')).toEqual(history.filter((h) => h.message.role === 'user').map((h) => h.message));
  });

  it('strips after a model fallback and for turns of unknown origin', () => {
    expect(stripForeignSignedBlocks(history, { ...a, model: 'model-b' }).stripped).toBe(2);
    expect(stripForeignSignedBlocks([{ message: history[1]?.message as { role: string; content: unknown } }], a).stripped).toBe(1);
  });

  it('never keeps the key itself', () => {
    expect(keyIdentity('sk-ant-secret')).toMatch(/^k_[0-9a-f]{16}$/);
    expect(keyIdentity('sk-ant-secret')).not.toContain('secret');
  });
});
