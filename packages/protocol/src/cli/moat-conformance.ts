#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type ConformanceCase, compareAnswer, conformanceCases, loadVectors, runConformance } from '../conformance.js';
import { tryParseDiscovery } from '../negotiation.js';
import { errorMessage, errorStack } from '../support/index.js';

const USAGE = `usage: moat-conformance [--json] -- <command> [args...]
       moat-conformance --verifier URL --api-key KEY [--json]

The first form runs every protocol vector through an implementation of the stdio interface
(SPEC.md section 15) and compares its answers byte for byte; a failing case names the
numbered SPEC.md rules an implementation that fails it breaks. The second checks a running
verifier over HTTP: its discovery document, its telemetry parser, and the same cases sent
to POST /v1/moat/conformance.

exit codes: 0 all cases pass, 1 a case failed, 2 usage`;

const vectors = new URL('../../vectors/', import.meta.url);

type Result = { name: string; pass: boolean; detail?: string; vector?: string; rules?: readonly string[] };

/** How many of the vectors ran (every one must: a case that vanishes fails the count). */
function vectorCount(cases: readonly ConformanceCase[]): { run: number; total: number } {
  return { run: new Set(cases.flatMap((c) => (c.vector === undefined ? [] : [c.vector]))).size, total: loadVectors(vectors).length };
}

/** Sends `body` and reads the answer; a network failure comes back as status 0 with its message. */
async function post(url: URL, apiKey: string, body: string): Promise<{ status: number; json: unknown; error?: string }> {
  try {
    const res = await fetch(url, { method: 'POST', headers: { 'x-api-key': apiKey, 'content-type': 'application/json' }, body });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json };
  } catch (error) {
    return { status: 0, json: undefined, error: errorMessage(error) };
  }
}

async function verifierCases(url: string, apiKey: string): Promise<Result[]> {
  const out: Result[] = [];
  const discovery = await fetch(new URL('/v1/moat', url)).then(
    (r) => r.json(),
    (error: Error) => ({ unreachable: error.message }),
  );
  const parsed = tryParseDiscovery(discovery);
  out.push({ name: 'discovery document', pass: parsed.ok, ...(parsed.ok ? {} : { detail: parsed.error.message }) });

  const telemetry = (
    JSON.parse(readFileSync(new URL('telemetry.json', vectors), 'utf8')) as {
      cases: Array<{ name: string; input: unknown; valid: boolean; byteLength?: number }>;
    }
  ).cases;
  for (const c of telemetry) {
    if (c.byteLength !== undefined) continue; // a declared size, not a body the verifier can be sent
    const res = await post(new URL('/v1/telemetry', url), apiKey, JSON.stringify(c.input));
    const pass = c.valid ? res.status >= 200 && res.status < 300 : res.status === 400;
    out.push({
      name: `telemetry: ${c.name}`,
      pass,
      ...(pass ? {} : { detail: `expected ${c.valid ? '2xx' : '400'}, got ${res.status || res.error}` }),
    });
  }

  // The same cases as the stdio form, answered by the verifier's own implementation.
  const cases = conformanceCases(vectors);
  for (let i = 0; i < cases.length; i += 500) {
    const chunk = cases.slice(i, i + 500);
    const res = await post(new URL('/v1/moat/conformance', url), apiKey, JSON.stringify({ requests: chunk.map((c) => c.request) }));
    const answers = (res.json as { answers?: unknown } | undefined)?.answers;
    const missing = `no answer from POST /v1/moat/conformance (${res.status || res.error})`;
    chunk.forEach((c, j) => {
      out.push({
        ...compareAnswer(c, Array.isArray(answers) ? (answers[j] as Record<string, unknown> | undefined) : undefined, missing),
        ...(c.vector === undefined ? {} : { vector: c.vector }),
      });
    });
  }
  return out;
}

async function main(argv: string[]): Promise<number> {
  const split = argv.indexOf('--');
  const own = split === -1 ? argv : argv.slice(0, split);
  const command = split === -1 ? [] : argv.slice(split + 1);
  let values: { json?: boolean; verifier?: string; 'api-key'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: own,
      options: {
        json: { type: 'boolean' },
        verifier: { type: 'string' },
        'api-key': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`moat-conformance: ${errorMessage(error)}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let results: Result[];
  if (values.verifier !== undefined) {
    if (values['api-key'] === undefined) {
      process.stderr.write('moat-conformance: expected --api-key with --verifier\n');
      return 2;
    }
    results = await verifierCases(values.verifier, values['api-key']);
  } else {
    if (command.length === 0) {
      process.stderr.write(`moat-conformance: expected a command after --\n${USAGE}\n`);
      return 2;
    }
    results = await runConformance(command, conformanceCases(vectors));
  }
  const count = vectorCount(conformanceCases(vectors));
  const passed = results.filter((r) => r.pass).length;
  const complete = count.run === count.total;
  if (values.json)
    process.stdout.write(`${JSON.stringify({ passed, failed: results.length - passed, vectors: count, results }, null, 2)}\n`);
  else {
    // A failing case names the SPEC.md rules an implementation that fails it breaks (vectors/rules.json).
    for (const r of results) {
      if (r.pass) continue;
      const rules = r.rules === undefined || r.rules.length === 0 ? '' : `[rule ${r.rules.join(', ')}] `;
      process.stdout.write(`FAIL ${rules}${r.name}: ${r.detail ?? ''}\n`);
    }
    process.stdout.write(`conformance: ${passed} passed, ${results.length - passed} failed; ${count.run} of ${count.total} vectors\n`);
  }
  return passed === results.length && complete ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`moat-conformance: ${errorStack(error)}\n`);
    process.exitCode = 2;
  },
);
