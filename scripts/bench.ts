/**
 * `pnpm bench`: runs every package benchmark one after another (so they do not compete for
 * the two cores) and regenerates BENCHMARKS.md from what they print — each figure next to its
 * baseline from the same run, the machine and the date.
 *
 *   node scripts/bench.ts [--only name,name]
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

interface Bench {
  readonly dir: string;
  readonly title: string;
  /** What the figures are compared against, said once above the table. */
  readonly baseline: string;
  /** How to read the ratio column. */
  readonly ratio: string;
  /** A package script other than `bench` (a second benchmark of the same package). */
  readonly script?: string;
}

const BENCHES: readonly Bench[] = [
  {
    dir: 'apps/verifier',
    title: 'Verifier overhead',
    baseline: 'the upstream itself (direct) and a bare node:http + undici pass-through proxy in front of it, measured in the same run',
    ratio: 'added latency over direct in µs (lower is better); throughput ÷ the bare proxy (higher is better)',
  },
  {
    dir: 'apps/verifier',
    title: 'Verifier memory per install',
    script: 'bench:installs',
    baseline:
      'none: absolute figures, per install and scaled to 10⁶ installs; the cache and the fan-in state are bounded by their settings',
    ratio: 'bytes per install (lower is better)',
  },
  {
    dir: 'packages/attest',
    title: 'Attested send',
    baseline:
      "`undici.request` and the global `fetch` to the same local server, same bodies; the addon's `request` alone (no envelope, no stamp, no JavaScript layer) as the transport's own cost; CPU time per request of the client and the server; verification against a bare `node:crypto` HMAC keyed with a `KeyObject`",
    ratio: 'attested time ÷ baseline time (lower is better), median and range over five rounds',
  },
  {
    dir: 'packages/build-guard',
    title: 'Leak scanner',
    baseline:
      '`rg -F -f` and `rg -F -i -f` (ripgrep, fixed strings) over the same corpus, and over it as one file, in the same rounds; moat-scan cold (no compiled-database cache, as on a fresh CI runner) and warm, with and without the prefilter',
    ratio: 'moat-scan time ÷ rg time in the same round (lower is better), median and range over the rounds',
  },
  {
    dir: 'packages/fingerprint',
    title: 'Fingerprint throughput',
    baseline: '`node:crypto` SHA-256 of the same text',
    ratio: 'ops/s ÷ baseline ops/s (higher is better)',
  },
  {
    dir: 'packages/distill-guard',
    title: 'Block signatures',
    baseline: 'bare `node:crypto` and `@noble` primitives on the same signing input',
    ratio: 'ops/s ÷ baseline ops/s (higher is better)',
  },
  {
    dir: 'packages/protocol',
    title: 'Protocol primitives',
    baseline: 'the named baseline in each row',
    ratio: 'ops/s ÷ baseline ops/s (higher is better)',
  },
  {
    dir: 'packages/gateway-detect',
    title: 'Gateway detection',
    baseline: 'the named baseline in each row',
    ratio: 'ops/s ÷ baseline ops/s (higher is better)',
  },
  {
    dir: 'apps/cli',
    title: 'CLI cold start',
    baseline: 'a hello-world executable compiled by the same `bun build --compile`',
    ratio: 'moat-chat time ÷ baseline time (lower is better)',
  },
];

const root = new URL('../', import.meta.url).pathname;
const only = process.argv.includes('--only') ? new Set(process.argv[process.argv.indexOf('--only') + 1]?.split(',')) : undefined;

function run(dir: string, name = 'bench'): Promise<{ code: number; stdout: string; ms: number }> {
  const started = performance.now();
  const scripts = (JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const script = scripts[name] as string;
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', script], { cwd: join(root, dir), stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk;
      process.stdout.write(chunk);
    });
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, ms: performance.now() - started }));
  });
}

/** Markdown needs a blank line around a table; the benches print tables straight after a title line. */
function asMarkdown(output: string): string {
  const out: string[] = [];
  let inTable = false;
  for (const line of output.trimEnd().split('\n')) {
    const row = line.startsWith('|');
    if (row !== inTable && out.length > 0 && out.at(-1) !== '') out.push('');
    if (line.trim() === '' && out.at(-1) === '') continue;
    out.push(line);
    inTable = row;
  }
  return out.join('\n');
}

const sections: string[] = [];
let failed = 0;
for (const bench of BENCHES) {
  const name = bench.dir.split('/')[1] as string;
  if (only !== undefined && !only.has(name)) continue;
  process.stdout.write(`\n== ${bench.dir}\n`);
  const result = await run(bench.dir, bench.script);
  if (result.code !== 0) failed++;
  sections.push(
    [
      `## ${bench.title} — \`${bench.dir}\``,
      '',
      `Baseline: ${bench.baseline}. Ratio: ${bench.ratio}. Source: [\`${bench.dir}/bench/\`](${bench.dir}/bench/); ran ${(result.ms / 1000).toFixed(0)} s.`,
      '',
      result.code === 0 ? asMarkdown(result.stdout) : `**The benchmark failed (exit ${result.code}).**\n\n${asMarkdown(result.stdout)}`,
    ].join('\n'),
  );
}

const cpu = cpus();
const machine = [
  `- Date: ${new Date().toISOString().slice(0, 10)}`,
  `- CPU: ${cpu[0]?.model.trim() ?? 'unknown'}, ${cpu.length} logical cores`,
  `- Memory: ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
  `- Node ${process.version}, ${process.platform} ${process.arch}`,
];
const doc = [
  '# Benchmarks',
  '',
  'Generated by `pnpm bench` (scripts/bench.ts) — do not edit by hand. Every figure is measured',
  'in the same run as its baseline, on the machine below; each section says how to read its',
  'ratio. Tests never assert timings; targets each package set itself are in its README.',
  '',
  ...machine,
  '',
  ...sections.flatMap((s) => [s, '']),
].join('\n');

if (only === undefined) {
  writeFileSync(join(root, 'BENCHMARKS.md'), doc);
  process.stdout.write(`\nwrote BENCHMARKS.md (${sections.length} benchmarks, ${failed} failed)\n`);
} else process.stdout.write(`\n(--only: BENCHMARKS.md left as it was)\n`);
process.exitCode = failed === 0 ? 0 : 1;
