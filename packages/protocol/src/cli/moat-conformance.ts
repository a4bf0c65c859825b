#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { conformanceCases, runConformance } from '../conformance.js';
import { tryParseDiscovery } from '../negotiation.js';

const USAGE = `usage: moat-conformance [--json] -- <command> [args...]
       moat-conformance --verifier URL --api-key KEY [--json]

The first form runs every protocol vector through an implementation of the stdio interface
(SPEC.md section 15) and compares its answers byte for byte. The second checks a running
verifier over HTTP: its discovery document and its telemetry parser against the vectors.

exit codes: 0 all cases pass, 1 a case failed, 2 usage`;

const vectors = new URL('../../vectors/', import.meta.url);

async function verifierCases(url: string, apiKey: string): Promise<Array<{ name: string; pass: boolean; detail?: string }>> {
  const { readFileSync } = await import('node:fs');
  const out: Array<{ name: string; pass: boolean; detail?: string }> = [];
  const discovery = await fetch(new URL('/v1/moat', url)).then(
    (r) => r.json(),
    () => undefined,
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
    const res = await fetch(new URL('/v1/telemetry', url), {
      method: 'POST',
      headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
      body: JSON.stringify(c.input),
    });
    await res.arrayBuffer();
    const pass = c.valid ? res.status >= 200 && res.status < 300 : res.status === 400;
    out.push({ name: `telemetry: ${c.name}`, pass, ...(pass ? {} : { detail: `expected ${c.valid ? '2xx' : '400'}, got ${res.status}` }) });
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
    process.stderr.write(`moat-conformance: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let results: Array<{ name: string; pass: boolean; detail?: string }>;
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
  const passed = results.filter((r) => r.pass).length;
  if (values.json) process.stdout.write(`${JSON.stringify({ passed, failed: results.length - passed, results }, null, 2)}\n`);
  else {
    for (const r of results) if (!r.pass) process.stdout.write(`FAIL ${r.name}: ${r.detail ?? ''}\n`);
    process.stdout.write(`conformance: ${passed} passed, ${results.length - passed} failed\n`);
  }
  return passed === results.length ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`moat-conformance: ${(error as Error).stack}\n`);
    process.exitCode = 2;
  },
);
