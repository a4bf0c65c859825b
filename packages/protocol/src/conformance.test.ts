import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { answerConformanceRequest, compareAnswer, conformanceCases, runConformance } from './conformance.js';
import { type SigningContext, signingInput } from './signature.js';

const vectors = new URL('../vectors/', import.meta.url);
const python = ['python3', '-B', new URL('../python/conformance.py', import.meta.url).pathname];

describe('partner conformance kit', () => {
  it('builds every case from the vectors', () => {
    const cases = conformanceCases(vectors);
    // 36 fingerprints + 44 attribution parses + 4 hs256 × 3 + 5 ed25519
    expect(cases).toHaveLength(97);
  });

  it('the Python reference implementation passes every case', { timeout: 60_000 }, async () => {
    const results = await runConformance(python, conformanceCases(vectors));
    expect(results.filter((r) => !r.pass)).toEqual([]);
  });

  it('a deliberately broken implementation (UTF-16 indices) fails, naming the cases', { timeout: 60_000 }, () => {
    const cli = new URL('../dist/cli/moat-conformance.js', import.meta.url).pathname;
    const r = spawnSync(process.execPath, [cli, '--json', '--', ...python], {
      encoding: 'utf8',
      env: { ...process.env, MOAT_CONFORMANCE_BREAK: 'utf16' },
    });
    expect(r.status).toBe(1);
    const report = JSON.parse(r.stdout) as { failed: number; results: Array<{ name: string; pass: boolean }> };
    expect(report.failed).toBeGreaterThanOrEqual(3);
    expect(report.results.filter((x) => !x.pass).every((x) => x.name.startsWith('fingerprint:'))).toBe(true);
    const good = spawnSync(process.execPath, [cli, '--', ...python], { encoding: 'utf8' });
    expect(good.status).toBe(0);
    expect(good.stdout).toMatch(/conformance: 97 passed, 0 failed/);
  });

  it('the TypeScript implementation passes every case, Ed25519 validity included', () => {
    const cases = conformanceCases(vectors);
    const results = cases.map((c) => compareAnswer(c, answerConformanceRequest(c.request)));
    expect(results.filter((r) => !r.pass)).toEqual([]);
    // it reports `valid` for every signature case, so none passed by leaving it out
    const signatures = cases.filter((c) => c.request.op === 'verify_signature');
    expect(signatures.every((c) => typeof answerConformanceRequest(c.request).valid === 'boolean')).toBe(true);
    expect(signatures.filter((c) => c.expected.valid === false).length).toBeGreaterThanOrEqual(9);
  });

  it('answers a malformed request with an error, never a throw', () => {
    for (const bad of [null, 42, {}, { op: 'nope' }, { op: 'verify_signature', alg: 'hs256', key: 'zz', block: {}, context: {} }]) {
      expect(answerConformanceRequest(bad)).toHaveProperty('error');
    }
    const c = conformanceCases(vectors)[0] as Parameters<typeof compareAnswer>[0];
    expect(compareAnswer(c, { chars: 'x', fp: '000' }).pass).toBe(false);
    expect(compareAnswer(c, undefined).detail).toBe('no answer');
  });

  it('reports an implementation that does not answer', { timeout: 30_000 }, async () => {
    const results = await runConformance(['python3', '-c', 'import sys; sys.stdin.read()'], conformanceCases(vectors).slice(0, 2));
    expect(results.map((r) => r.pass)).toEqual([false, false]);
    expect(results[0]?.detail).toMatch(/no answer/);
  });
});

describe('verify_signature binds the signature to its own kid, algorithm and scope', () => {
  it('a signature whose kid or scope was altered is not valid, in TypeScript and in Python', () => {
    const key = '4d6f61742d746573742d7369676e696e672d6b65792d6e6f742d612d736563726574';
    const block = { type: 'thinking', thinking: 'two plus two is four', signature: '' };
    const context = { alg: 'hs256', kid: 's2026a', apiKeyId: 'key_7f3a', model: 'claude-test-1' };
    const mac = createHmac('sha256', Buffer.from(key, 'hex'))
      .update(signingInput(block, context as SigningContext))
      .digest('base64url');
    const genuine = `ms1.hs256.s2026a.k.${mac}`;
    const requests = [genuine, `ms1.hs256.other.k.${mac}`, `ms1.hs256.s2026a.c.${mac}`].map((signature, id) => ({
      id,
      op: 'verify_signature',
      alg: 'hs256',
      key,
      block,
      context,
      signature,
    }));
    expect(requests.map((r) => answerConformanceRequest(r).valid)).toEqual([true, false, false]);
    const py = spawnSync(python[0] as string, python.slice(1), {
      input: requests.map((r) => JSON.stringify(r)).join('\n'),
      encoding: 'utf8',
    });
    expect(
      py.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { valid: boolean }).valid),
    ).toEqual([true, false, false]);
  });
});
