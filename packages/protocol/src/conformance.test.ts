import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  answerConformanceRequest,
  canonicalJson,
  compareAnswer,
  conformanceCases,
  KIT_OPERATIONS,
  loadRules,
  loadVectors,
  runConformance,
} from './conformance.js';
import { GATEWAY_RULES } from './gateway.js';

const vectors = new URL('../vectors/', import.meta.url);
const python = ['python3', '-B', new URL('../python/conformance.py', import.meta.url).pathname];
const cli = new URL('../dist/cli/moat-conformance.js', import.meta.url).pathname;

/** The kit's JSON report for the Python reference with `mutant` switched on (none: the reference itself). */
function kit(mutant?: string): {
  status: number | null;
  report: { failed: number; vectors: { run: number; total: number }; results: Array<{ name: string; pass: boolean; rules?: string[] }> };
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
    expect(new Set(cases.flatMap((c) => (c.vector === undefined ? [] : [c.vector]))).size).toBe(all.length);
    // Five derived signature.verify cases per hs256 vector that signs.
    const signing = all.filter((x) => x.vector.op === 'sign_hs256' && typeof x.vector.signature === 'string').length;
    expect(signing).toBeGreaterThan(0);
    expect(cases.filter((c) => c.vector === undefined)).toHaveLength(5 * signing);
    // Every operation the kit defines is exercised.
    expect(new Set(cases.map((c) => c.request.op))).toEqual(new Set(Object.keys(KIT_OPERATIONS)));
    // `valid` is part of the expected answer wherever the vector defines it.
    for (const c of cases) if (c.vector !== undefined && 'valid' in c.expected) expect(typeof c.expected.valid).toBe('boolean');
  });

  it('refuses a vector file whose count differs from its cases', () => {
    const copy = mkdtempSync(join(tmpdir(), 'moat-vectors-'));
    try {
      cpSync(new URL('../vectors/', import.meta.url), copy, { recursive: true });
      const file = join(copy, 'gateway.json');
      const doc = JSON.parse(readFileSync(file, 'utf8'));
      doc.cases.pop();
      writeFileSync(file, JSON.stringify(doc));
      expect(() => loadVectors(pathToFileURL(`${copy}/`))).toThrow(/gateway\.json: count says \d+, the file has \d+ cases/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('the TypeScript implementation answers every case exactly', () => {
    const cases = conformanceCases(vectors);
    const failed = cases.map((c) => compareAnswer(c, answerConformanceRequest(c.request))).filter((r) => !r.pass);
    expect(failed).toEqual([]);
  });

  it('the Python reference passes every case through the stdio interface, N of N vectors', { timeout: 60_000 }, async () => {
    const results = await runConformance(python, conformanceCases(vectors));
    // The Python reference's kit answers, counted in the workspace's test summary as its own runner.
    const passed = results.filter((r) => r.pass).length;
    mkdirSync(new URL('../test-results/', import.meta.url), { recursive: true });
    const summary = { passed, failed: results.length - passed, skipped: 0 };
    writeFileSync(new URL('../test-results/python.json', import.meta.url), `${JSON.stringify(summary)}\n`);
    expect(results.filter((r) => !r.pass)).toEqual([]);
    const good = spawnSync(process.execPath, [cli, '--', ...python], { encoding: 'utf8' });
    expect(good.status).toBe(0);
    const total = loadVectors(vectors).length;
    const cases = conformanceCases(vectors).length;
    expect(good.stdout).toContain(`conformance: ${cases} passed, 0 failed; ${total} of ${total} vectors`);
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

  it('compares an expected request refusal by its code alone, and nothing else that way', () => {
    const c = conformanceCases(vectors).find((x) => x.expected.error === 'ERR_CONFORMANCE_REQUEST') as Parameters<typeof compareAnswer>[0];
    expect(c.request.op).toBe('signature.signing_input');
    expect(compareAnswer(c, { id: 1, error: 'ERR_CONFORMANCE_REQUEST: context.context: expected a string' }).pass).toBe(true);
    expect(compareAnswer(c, { error: 'ERR_CONFORMANCE_REQUEST' }).pass).toBe(true);
    expect(compareAnswer(c, { error: 'ERR_CONFORMANCE_REQUESTS' }).pass).toBe(false);
    expect(compareAnswer(c, { error: 'ERR_CONFORMANCE_REQUEST: x', valid: false }).pass).toBe(false);
    expect(compareAnswer(c, { valid: true, input: '00' }).pass).toBe(false);
    const other = conformanceCases(vectors).find((x) => x.request.op === 'gateway.table' && x.expected.valid === false);
    expect(compareAnswer(other as Parameters<typeof compareAnswer>[0], { error: 'ERR_CONFORMANCE_REQUEST: x' }).pass).toBe(false);
  });

  it("sends gateway.detect the vector's table, and the built-in one when it has none", () => {
    const detect = conformanceCases(vectors).filter((x) => x.request.op === 'gateway.detect');
    const own = detect.filter((x) => x.request.table !== GATEWAY_RULES);
    expect(own.length).toBeGreaterThan(0);
    expect(own.length).toBeLessThan(detect.length);
    const byName = new Map(loadVectors(vectors).map(({ file, index, vector }) => [`${file}.json#${index}`, vector]));
    for (const c of detect) expect(c.request.table === GATEWAY_RULES, c.name).toBe(byName.get(c.vector as string)?.table === undefined);
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

describe('the rule table (vectors/rules.json, checked against fresh mutant runs by vectors/rules.ts --check)', () => {
  const rules = loadRules(vectors);
  const mutants = JSON.parse(
    spawnSync(
      'python3',
      [
        '-B',
        '-c',
        'import json,sys; sys.path.insert(0, sys.argv[1]); import conformance; print(json.dumps(conformance.MUTANTS))',
        new URL('../python', import.meta.url).pathname,
      ],
      {
        encoding: 'utf8',
      },
    ).stdout,
  ) as Record<string, string>;

  it('numbers every MUST of SPEC.md, and each rule has kit cases or named tests', () => {
    const spec = readFileSync(new URL('../SPEC.md', import.meta.url), 'utf8');
    // Every paragraph of the normative text (not the key words, not the rule convention, not the changelog) with a MUST.
    const normative = spec.slice(0, spec.indexOf('## 16. Changelog'));
    const musts = normative.split(/\n\n/).filter((para) => /\bMUST\b/.test(para) && !/RFC 2119|^\*\*Rules\.\*\*/.test(para));
    for (const para of musts) expect(para, para.slice(0, 120)).toMatch(/\*\*\[R[0-9.]+-[0-9]+\]\*\*/);
    expect(rules.map((r) => r.id)).toEqual([...spec.matchAll(/\*\*\[R([0-9.]+-[0-9]+)\]\*\*/g)].map((m) => m[1]));
    for (const r of rules) {
      if (r.kind === 'kit') expect(r.cases.length, r.id).toBeGreaterThan(0);
      else expect(r.checkedBy?.length, r.id).toBeGreaterThan(0);
    }
  });

  it('has one mutant per kit rule in the Python reference, and no mutant without a rule', () => {
    expect(Object.keys(mutants).sort()).toEqual(
      rules
        .filter((r) => r.kind === 'kit')
        .map((r) => r.id)
        .sort(),
    );
  });

  it('the kit reports the rule numbers of a failing case', { timeout: 60_000 }, () => {
    const { status, report } = kit('5.3-5');
    expect(status).toBe(1);
    const failed = report.results.filter((r) => !r.pass);
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.every((r) => r.rules?.includes('5.3-5'))).toBe(true);
    const text = spawnSync(process.execPath, [cli, '--', ...python], {
      encoding: 'utf8',
      env: { ...process.env, MOAT_CONFORMANCE_MUTANT: '5.3-5' },
    }).stdout;
    expect(text).toMatch(/^FAIL \[rule 5\.3-5\] stamp\.credential: repeated x-api-key headers/m);
  });
});
