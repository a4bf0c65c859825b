#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { errorMessage, errorStack } from '@moat/protocol/support';
import { DECOY_PERIOD_MS, decoyPeriod } from '../decoys.js';
import { CanaryIndex } from '../trace.js';

const USAGE = `usage: moat-distill trace --secret-file FILE --keys FILE [options] <file>...

Names the API keys whose decoy tools appear in suspect text (a dataset, a model's output,
a transcript). The secret and key identities are the verifier's.

options:
  --secret-file FILE   decoy secret: hex (64+ digits) or raw bytes (32+)
  --keys FILE          API-key identities, one per line
  --periods N          rotation periods to search back from now (default 8)
  --period-days N      rotation period length (default 7)
  --threshold X        smallest confidence reported, 0..1 (default 0.5)
  --json               machine-readable output

exit codes: 0 nothing traced, 1 keys named, 2 usage or I/O error`;

function fail(message: string): number {
  process.stderr.write(`moat-distill: ${message}\n`);
  return 2;
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] !== 'trace') return fail(`expected the command "trace", got ${JSON.stringify(argv[0] ?? '')}\n${USAGE}`);
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: argv.slice(1),
      options: {
        'secret-file': { type: 'string' },
        keys: { type: 'string' },
        periods: { type: 'string' },
        'period-days': { type: 'string' },
        threshold: { type: 'string' },
        json: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    }) as typeof parsed;
  } catch (error) {
    return fail(`${errorMessage(error)}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (typeof values['secret-file'] !== 'string' || typeof values.keys !== 'string')
    return fail(`expected --secret-file and --keys\n${USAGE}`);
  if (positionals.length === 0) return fail(`expected at least one file to trace\n${USAGE}`);
  const periods = Number(values.periods ?? 8);
  const periodDays = Number(values['period-days'] ?? 7);
  const threshold = Number(values.threshold ?? 0.5);
  if (!Number.isSafeInteger(periods) || periods < 1 || periods > 520)
    return fail(`expected --periods as an integer 1..520, got ${values.periods}`);
  if (!(periodDays > 0)) return fail(`expected --period-days as a positive number, got ${values['period-days']}`);
  if (!(threshold >= 0 && threshold <= 1)) return fail(`expected --threshold in 0..1, got ${values.threshold}`);

  let secret: Uint8Array;
  let keys: string[];
  try {
    const raw = await readFile(values['secret-file'] as string);
    const text = raw.toString('utf8').trim();
    secret = /^[0-9a-fA-F]{64,}$/.test(text) && text.length % 2 === 0 ? new Uint8Array(Buffer.from(text, 'hex')) : new Uint8Array(raw);
    keys = (await readFile(values.keys as string, 'utf8'))
      .split(/\r?\n/)
      .map((k) => k.trim())
      .filter((k) => k !== '' && !k.startsWith('#'));
  } catch (error) {
    return fail(errorMessage(error));
  }
  if (secret.length < 32) return fail(`expected a secret of at least 32 bytes, got ${secret.length}`);
  if (keys.length === 0) return fail('expected at least one API-key identity in --keys, got none');

  const now = decoyPeriod(Date.now(), periodDays * 24 * 3600 * 1000 || DECOY_PERIOD_MS);
  const index = new CanaryIndex({ secret, keys, periods: Array.from({ length: periods }, (_, i) => now - i) });
  const results: Array<{ file: string; attributions: ReturnType<CanaryIndex['trace']> }> = [];
  for (const file of positionals) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      return fail(`cannot read ${file}: ${errorMessage(error)}`);
    }
    results.push({ file, attributions: index.trace(text, threshold) });
  }
  if (values.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  else {
    for (const { file, attributions } of results) {
      if (attributions.length === 0) process.stdout.write(`${file}: no decoys of the ${keys.length} keys found\n`);
      for (const a of attributions) {
        const tokens = a.evidence.map((e) => `${e.kind} ${e.token}`).join(', ');
        process.stdout.write(`${file}: ${a.apiKeyId}  confidence ${a.confidence.toFixed(3)}  (${tokens})\n`);
      }
    }
  }
  return results.some((r) => r.attributions.length > 0) ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`moat-distill: ${errorStack(error)}\n`);
    process.exitCode = 2;
  },
);
