/**
 * Generates `rules.json`: every numbered rule of SPEC.md (`**[R5.3-4]**`) with what pins it.
 *
 * - A rule the conformance kit can observe has a deliberate bug in the Python reference
 *   (`MUTANTS` in ../python/conformance.py, switched on by MOAT_CONFORMANCE_MUTANT). The kit
 *   runs with each one; the cases it then fails are the rule's cases.
 * - A rule about a client's or verifier's behaviour, which no kit operation observes, names
 *   the tests of the reference implementation that check it (`DEPLOYMENT` below).
 *
 *   node vectors/rules.ts          rewrite rules.json
 *   node vectors/rules.ts --check  fail if it differs, if a rule has no mutant and no tests,
 *                                  if a mutant's rule is not in SPEC.md, or if the kit does
 *                                  not fail a mutant
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ConformanceCase, compareAnswer, conformanceCases, type SpecRule } from '../dist/conformance.js';
import { SPEC_VERSION } from '../dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
const python = join(here, '..', 'python');

/** Rules no kit operation can observe, and the tests (`path: words of the test name`) that check them. */
const DEPLOYMENT: Readonly<Record<string, readonly string[]>> = {
  '1-1': [
    'packages/protocol/src/request.test.ts: gives identical system prefixes across the turns of one conversation',
    'packages/attest/src/attest.test.ts: keeps the cacheable prefix byte-identical across turns',
  ],
  '1-2': ['packages/attest/src/attest.test.ts: keeps the cacheable prefix byte-identical across turns; only the envelope differs'],
  '3.1-1': ['packages/protocol/src/request.test.ts: puts the block first and keeps a string system prompt after it'],
  '3.1-2': ['packages/protocol/src/request.test.ts: replaces an existing block instead of stacking a second one'],
  '4.4-1': ['packages/client/src/client.test.ts: an endpoint without Moat gets the request untouched'],
  '4.4-2': ['packages/attest/src/attest.test.ts: stamps the body only (v1) for an endpoint that does not bind requests'],
  '4.4-3': [
    'packages/protocol/src/request.test.ts: removes the block, the envelope and anti_distillation and nothing else',
    'apps/verifier/src/verifier.test.ts: tags stripped',
  ],
  '5.2-2': [
    'apps/verifier/src/storage.test.ts: keeps a nonce at the window edge until the last millisecond its stamp is accepted',
    'packages/attest/src/server.test.ts: asks the store to keep a fresh nonce until the last second the stamp is accepted',
  ],
  '5.2-3': ['apps/verifier/src/faults.test.ts: down: 503 with retry-after'],
  '5.2-4': ['apps/verifier/src/verifier.test.ts: no client-controlled header earns a better verdict than sending nothing'],
  '5.2-5': ['apps/verifier/src/faults.test.ts: back without persistence: a captured request stays refused'],
  '5.3-7': ['packages/attest/src/attest.test.ts: binds the stamp to the request the addon sends'],
  '7-1': ['packages/protocol/src/messages/validate.test.ts: keeps an unknown anti_distillation measure'],
  '7-2': ['apps/verifier/src/verifier.test.ts: answers decoy calls itself: the client never sees them'],
  '10-4': ['packages/client/src/client.test.ts: an endpoint without Moat gets the request untouched'],
  '12-1': [
    'packages/protocol/src/request.test.ts: removes the block, the envelope and anti_distillation and nothing else',
    'apps/verifier/src/verifier.test.ts: tags stripped',
  ],
  '15-1': ['packages/protocol/src/conformance.test.ts: refuses a vector file whose count differs from its cases'],
};

/** The numbered rules of SPEC.md, in document order, each with the sentence that carries it. */
export function specRules(spec: string): Array<{ id: string; text: string }> {
  const out: Array<{ id: string; text: string }> = [];
  const marker = /\*\*\[R(\d+(?:\.\d+)?-\d+)\]\*\*/g;
  for (const m of spec.matchAll(marker)) {
    const before = spec.slice(0, m.index);
    // The clause: back to the previous sentence end, clause, list item, table cell, paragraph or rule.
    const bounds = ['. ', '.\n', '; ', '| ', '\n\n', '\n- ', ']**'].map((b) => before.lastIndexOf(b) + b.length);
    const text = before
      .slice(Math.max(0, ...bounds))
      .replace(/\s+/g, ' ')
      .replace(/\*\*/g, '')
      .trim();
    out.push({ id: m[1] as string, text: text.length > 240 ? `${text.slice(0, 237)}...` : text });
  }
  return out;
}

function mutants(): Record<string, string> {
  const code = 'import json, sys; sys.path.insert(0, sys.argv[1]); import conformance; print(json.dumps(conformance.MUTANTS))';
  return JSON.parse(execFileSync('python3', ['-B', '-c', code, python], { encoding: 'utf8' })) as Record<string, string>;
}

/**
 * Mutant name ("" for none) → the cases the kit fails with it switched on in the Python
 * reference. One process answers every case once per mutant (`--every-mutant`).
 */
function failedByMutant(cases: readonly ConformanceCase[]): Map<string, string[]> {
  const input = cases.map((c, id) => JSON.stringify({ id, ...c.request })).join('\n');
  const out = execFileSync('python3', ['-B', join(python, 'conformance.py'), '--every-mutant'], {
    input,
    encoding: 'utf8',
    maxBuffer: 1024 * 1024 * 1024,
  });
  const answers = new Map<string, Map<number, Record<string, unknown>>>();
  for (const line of out.split('\n')) {
    if (line === '') continue;
    const tab = line.indexOf('\t');
    const answer = JSON.parse(line.slice(tab + 1)) as Record<string, unknown>;
    const mutant = line.slice(0, tab);
    if (!answers.has(mutant)) answers.set(mutant, new Map());
    if (typeof answer.id === 'number') answers.get(mutant)?.set(answer.id, answer);
  }
  const failed = new Map<string, string[]>();
  for (const [mutant, byId] of answers)
    failed.set(
      mutant,
      cases.flatMap((c, id) => (compareAnswer(c, byId.get(id)).pass ? [] : [c.name])),
    );
  return failed;
}

async function main(): Promise<number> {
  const check = process.argv.includes('--check');
  const spec = readFileSync(join(here, '..', 'SPEC.md'), 'utf8');
  const numbered = specRules(spec);
  const known = mutants();
  const problems: string[] = [];
  const ids = numbered.map((r) => r.id);
  for (const id of new Set(ids.filter((id, i) => ids.indexOf(id) !== i))) problems.push(`rule ${id} is numbered twice in SPEC.md`);
  for (const id of Object.keys(known)) if (!ids.includes(id)) problems.push(`mutant ${id} names no rule of SPEC.md`);
  for (const id of Object.keys(DEPLOYMENT)) if (!ids.includes(id)) problems.push(`DEPLOYMENT names ${id}, no rule of SPEC.md`);
  const cases = conformanceCases(new URL('./', import.meta.url));
  const failed = failedByMutant(cases);
  const baseline = failed.get('') ?? [];
  if (baseline.length > 0) problems.push(`the Python reference itself fails ${baseline.length} cases: ${baseline.slice(0, 3).join('; ')}`);

  const rules: SpecRule[] = numbered.map(({ id, text }) => {
    if (id in known) {
      const hit = [...(failed.get(id) ?? [])].sort();
      if (hit.length === 0) problems.push(`rule ${id}: the kit passes its mutant (${known[id]}); add a vector that fails it`);
      return { id, text, kind: 'kit', mutant: known[id], cases: hit } as SpecRule;
    }
    const tests = DEPLOYMENT[id];
    if (tests === undefined) {
      problems.push(`rule ${id} has neither a mutant in python/conformance.py nor tests in DEPLOYMENT`);
      return { id, text, kind: 'deployment', cases: [], checkedBy: [] };
    }
    for (const t of tests) {
      const [path, words] = t.split(': ', 2) as [string, string];
      const file = join(root, path);
      if (!existsSync(file) || !readFileSync(file, 'utf8').includes(words)) problems.push(`rule ${id}: no test "${words}" in ${path}`);
    }
    return { id, text, kind: 'deployment', cases: [], checkedBy: tests };
  });

  const kit = rules.filter((r) => r.kind === 'kit').length;
  const doc = {
    specVersion: SPEC_VERSION,
    description:
      'Every numbered rule of SPEC.md: the conformance cases an implementation breaking it fails (found by its mutant in the Python reference), or the reference tests that check a client or verifier behaviour. Generated by vectors/rules.ts.',
    count: rules.length,
    rules,
  };
  const text = `${JSON.stringify(doc, null, 2)}\n`;
  const path = join(here, 'rules.json');
  if (check) {
    if (!existsSync(path) || readFileSync(path, 'utf8') !== text)
      problems.push('vectors/rules.json is out of date: run "pnpm --filter @moat/protocol rules"');
  } else writeFileSync(path, text);
  for (const p of problems) console.error(`rules: ${p}`);
  console.log(
    `rules: ${rules.length} numbered rules, ${kit} failed by the kit through their mutants, ${rules.length - kit} checked by tests`,
  );
  return problems.length === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 2;
  },
);
