import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  answerConformanceRequest,
  canonicalJson,
  compareAnswer,
  conformanceCases,
  KIT_OPERATIONS,
  loadVectors,
  runConformance,
} from './conformance.js';

const vectors = new URL('../vectors/', import.meta.url);
const python = ['python3', '-B', new URL('../python/conformance.py', import.meta.url).pathname];
const cli = new URL('../dist/cli/moat-conformance.js', import.meta.url).pathname;

/** The kit's JSON report for the Python reference with `mutant` switched on (none: the reference itself). */
function kit(mutant?: string): {
  status: number | null;
  report: { failed: number; vectors: { run: number; total: number }; results: Array<{ name: string; pass: boolean }> };
} {
  const r = spawnSync(process.execPath, [cli, '--json', '--', ...python], {
    encoding: 'utf8',
    env: { ...process.env, MOAT_CONFORMANCE_MUTANT: mutant ?? '' },
  });
  return { status: r.status, report: JSON.parse(r.stdout) };
}

describe('partner conformance kit', () => {
  it('runs every vector through an operation, and derives signature checks from the hs256 ones', () => {
    const cases = conformanceCases(vectors);
    const all = loadVectors(vectors);
    expect(all).toHaveLength(358);
    expect(new Set(cases.flatMap((c) => (c.vector === undefined ? [] : [c.vector]))).size).toBe(all.length);
    // 4 hs256 signing vectors × 5 derived signature.verify cases
    expect(cases.filter((c) => c.vector === undefined)).toHaveLength(20);
    // Every operation the kit defines is exercised.
    expect(new Set(cases.map((c) => c.request.op))).toEqual(new Set(Object.keys(KIT_OPERATIONS)));
    // `valid` is part of the expected answer wherever the vector defines it.
    for (const c of cases) if (c.vector !== undefined && 'valid' in c.expected) expect(typeof c.expected.valid).toBe('boolean');
  });

  it('the TypeScript implementation answers every case exactly', () => {
    const cases = conformanceCases(vectors);
    const failed = cases.map((c) => compareAnswer(c, answerConformanceRequest(c.request))).filter((r) => !r.pass);
    expect(failed).toEqual([]);
  });

  it('the Python reference passes every case through the stdio interface, N of N vectors', { timeout: 60_000 }, async () => {
    const results = await runConformance(python, conformanceCases(vectors));
    expect(results.filter((r) => !r.pass)).toEqual([]);
    const good = spawnSync(process.execPath, [cli, '--', ...python], { encoding: 'utf8' });
    expect(good.status).toBe(0);
    expect(good.stdout).toMatch(/conformance: 378 passed, 0 failed; 358 of 358 vectors/);
  });

  it('compares answers as canonical JSON: member order and escapes do not matter, a missing or extra member does', () => {
    const c = conformanceCases(vectors).find((x) => x.request.op === 'stamp.authority') as Parameters<typeof compareAnswer>[0];
    const authority = c.expected.authority as string;
    expect(compareAnswer(c, { id: 7, authority }).pass).toBe(true);
    expect(compareAnswer(c, JSON.parse(`{"authority":${JSON.stringify(authority).replace('a', '\\u0061')},"id":1}`)).pass).toBe(true);
    expect(compareAnswer(c, { authority, valid: true }).pass).toBe(false);
    expect(compareAnswer(c, {}).pass).toBe(false);
    expect(compareAnswer(c, undefined).detail).toBe('no answer');
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: 'é' }] })).toBe('{"a":[{"c":"é","d":2}],"b":1}');
  });

  it('answers a malformed request with an error, never a throw', () => {
    for (const bad of [
      null,
      42,
      [],
      {},
      { op: 'nope' },
      { op: 'signature.verify', key: 'zz', block: {}, context: {} },
      { op: 'stamp.credential' },
    ]) {
      expect(answerConformanceRequest(bad)).toHaveProperty('error');
    }
  });

  it('reports an implementation that does not answer', { timeout: 30_000 }, async () => {
    const results = await runConformance(['python3', '-c', 'import sys; sys.stdin.read()'], conformanceCases(vectors).slice(0, 2));
    expect(results.map((r) => r.pass)).toEqual([false, false]);
    expect(results[0]?.detail).toMatch(/no answer/);
  });
});

describe('the kit fails every known mutant of a correct implementation, by named case', () => {
  const mutants: Array<[string, RegExp]> = [
    ['utf16-indices', /^fingerprint\.fingerprint: astral characters at the sampled indices$/],
    ['missing-index-empty', /^fingerprint\.fingerprint: shorter than 5 code points: all three missing$/],
    ['stamp-case-insensitive', /^stamp\.verify: the genuine stamp in capitals is malformed$/],
    ['stamp-reserialized', /^stamp\.verify: a body with insignificant whitespace and escapes verifies on its raw bytes$/],
    ['signature-never-verified', /^signature\.verify: hs256 thinking, key scope, forged$/],
    ['signature-kid-scope-ignored', /^signature\.verify: hs256 thinking, key scope, its (kid|scope) altered$/],
    ['trim-all-whitespace', /^negotiation\.version_header: a no-break space is not trimmed$/],
    ['sort-utf16', /^gateway\.detect: evidence is sorted by UTF-8 bytes, not UTF-16 code units$/],
  ];
  for (const [mutant, expectedCase] of mutants) {
    it(mutant, { timeout: 60_000 }, () => {
      const { status, report } = kit(mutant);
      expect(status).toBe(1);
      const failed = report.results.filter((r) => !r.pass).map((r) => r.name);
      expect(
        failed.some((name) => expectedCase.test(name)),
        failed.join('\n'),
      ).toBe(true);
      expect(report.vectors).toEqual({ run: 358, total: 358 });
    });
  }
});
