#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { errorMessage, errorStack } from '@moat/protocol/support';
import { DECOY_PERIOD_MS, decoyPeriod } from '../decoys.js';
import { CanaryIndex } from '../trace.js';

const USAGE = `usage: moat-distill trace --secret-file FILE (--keys FILE | --verifier URL) [options] [<file>...]

Names the API keys whose decoy tools appear in suspect text (a dataset, a model's output,
a transcript). The secret and key identities are the verifier's. With --verifier, the key
identities come from a running moat-verifier, and the decoy hits it recorded — requests
that brought a decoy back, by the key that sent them — are reported beside the trace.

options:
  --secret-file FILE   decoy secret: hex (64+ digits) or raw bytes (32+)
  --keys FILE          API-key identities, one per line
  --verifier URL       a moat-verifier's base URL (its admin API)
  --admin-token-file FILE
                       the verifier's admin token (default: $MOAT_VERIFIER_ADMIN_TOKEN)
  --periods N          rotation periods to search back from now (default 8)
  --period-days N      rotation period length (default 7)
  --threshold X        smallest confidence reported, 0..1 (default 0.5)
  --json               machine-readable output

exit codes: 0 nothing traced, 1 keys named (or decoy hits recorded), 2 usage or I/O error`;

/** One API key as the verifier's admin API lists it. */
interface VerifierKey {
  readonly id: string;
  readonly label?: string;
  readonly decoyHits: number;
}

/** The verifier's keys and the decoy hits it recorded for each (`GET /admin/keys`). */
async function verifierKeys(base: string, token: string): Promise<VerifierKey[]> {
  let url: URL;
  try {
    url = new URL('/admin/keys', base);
  } catch {
    throw new Error(`expected --verifier as an http(s) URL, got ${JSON.stringify(base)}`);
  }
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) }).catch(
    (error: unknown) => {
      throw new Error(`verifier at ${url.origin} unreachable: ${errorMessage(error)}`);
    },
  );
  if (!res.ok) throw new Error(`verifier at ${url.origin}: GET /admin/keys answered ${res.status}`);
  const body = (await res.json().catch(() => undefined)) as { keys?: unknown } | undefined;
  if (!Array.isArray(body?.keys)) throw new Error(`verifier at ${url.origin}: expected { keys: [...] } from /admin/keys`);
  return body.keys.flatMap((k: unknown) => {
    const key = k as { id?: unknown; label?: unknown; decoyHits?: unknown };
    if (typeof key.id !== 'string') return [];
    return [
      {
        id: key.id,
        ...(typeof key.label === 'string' ? { label: key.label } : {}),
        decoyHits: typeof key.decoyHits === 'number' && Number.isSafeInteger(key.decoyHits) ? key.decoyHits : 0,
      },
    ];
  });
}

function fail(message: string): number {
  process.stderr.write(`moat-distill: ${message}\n`);
  return 2;
}

type Traced = { file: string; attributions: ReturnType<CanaryIndex['trace']> };

/** Prints what was traced (and the verifier's decoy hits), as text or as JSON. */
function report(results: readonly Traced[], recorded: VerifierKey[] | undefined, keyCount: number, json: boolean): void {
  const hitsOf = new Map((recorded ?? []).map((k) => [k.id, k.decoyHits]));
  if (json) {
    const out = results.map(({ file, attributions }) => ({
      file,
      attributions:
        recorded === undefined ? attributions : attributions.map((a) => ({ ...a, recordedDecoyHits: hitsOf.get(a.apiKeyId) ?? 0 })),
    }));
    process.stdout.write(
      `${JSON.stringify(recorded === undefined ? out : { files: out, decoyHits: recorded.filter((k) => k.decoyHits > 0) }, null, 2)}\n`,
    );
  } else {
    for (const { file, attributions } of results) {
      if (attributions.length === 0) process.stdout.write(`${file}: no decoys of the ${keyCount} keys found\n`);
      for (const a of attributions) {
        const tokens = a.evidence.map((e) => `${e.kind} ${e.token}`).join(', ');
        process.stdout.write(`${file}: ${a.apiKeyId}  confidence ${a.confidence.toFixed(3)}  (${tokens})\n`);
      }
    }
    if (recorded !== undefined) {
      const hit = recorded.filter((k) => k.decoyHits > 0).sort((a, b) => b.decoyHits - a.decoyHits);
      if (hit.length === 0) process.stdout.write(`verifier: no decoy hits recorded for the ${recorded.length} keys\n`);
      for (const k of hit)
        process.stdout.write(
          `verifier: ${k.id}${k.label === undefined ? '' : ` (${k.label})`}  ${k.decoyHits} request${k.decoyHits === 1 ? '' : 's'} brought decoys back\n`,
        );
    }
  }
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
        verifier: { type: 'string' },
        'admin-token-file': { type: 'string' },
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
  if (typeof values['secret-file'] !== 'string' || (typeof values.keys !== 'string' && typeof values.verifier !== 'string'))
    return fail(`expected --secret-file and --keys or --verifier\n${USAGE}`);
  if (positionals.length === 0 && typeof values.verifier !== 'string') return fail(`expected at least one file to trace\n${USAGE}`);
  const periods = Number(values.periods ?? 8);
  const periodDays = Number(values['period-days'] ?? 7);
  const threshold = Number(values.threshold ?? 0.5);
  if (!Number.isSafeInteger(periods) || periods < 1 || periods > 520)
    return fail(`expected --periods as an integer 1..520, got ${values.periods}`);
  if (!(periodDays > 0)) return fail(`expected --period-days as a positive number, got ${values['period-days']}`);
  if (!(threshold >= 0 && threshold <= 1)) return fail(`expected --threshold in 0..1, got ${values.threshold}`);

  let secret: Uint8Array;
  let keys: string[] = [];
  let recorded: VerifierKey[] | undefined;
  try {
    const raw = await readFile(values['secret-file'] as string);
    const text = raw.toString('utf8').trim();
    secret = /^[0-9a-fA-F]{64,}$/.test(text) && text.length % 2 === 0 ? new Uint8Array(Buffer.from(text, 'hex')) : new Uint8Array(raw);
    if (typeof values.keys === 'string')
      keys = (await readFile(values.keys, 'utf8'))
        .split(/\r?\n/)
        .map((k) => k.trim())
        .filter((k) => k !== '' && !k.startsWith('#'));
    if (typeof values.verifier === 'string') {
      const tokenFile = values['admin-token-file'];
      const token = typeof tokenFile === 'string' ? (await readFile(tokenFile, 'utf8')).trim() : process.env.MOAT_VERIFIER_ADMIN_TOKEN;
      if (token === undefined || token === '') return fail('expected --admin-token-file or $MOAT_VERIFIER_ADMIN_TOKEN with --verifier');
      recorded = await verifierKeys(values.verifier, token);
      if (keys.length === 0) keys = recorded.map((k) => k.id);
    }
  } catch (error) {
    return fail(errorMessage(error));
  }
  if (secret.length < 32) return fail(`expected a secret of at least 32 bytes, got ${secret.length}`);
  if (keys.length === 0) return fail('expected at least one API-key identity in --keys, got none');

  const now = decoyPeriod(Date.now(), periodDays * 24 * 3600 * 1000 || DECOY_PERIOD_MS);
  const index = new CanaryIndex({ secret, keys, periods: Array.from({ length: periods }, (_, i) => now - i) });
  const results: Traced[] = [];
  for (const file of positionals) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      return fail(`cannot read ${file}: ${errorMessage(error)}`);
    }
    results.push({ file, attributions: index.trace(text, threshold) });
  }
  report(results, recorded, keys.length, values.json === true);
  if (recorded?.some((k) => k.decoyHits > 0)) return 1;
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
