/**
 * `pnpm bench`: runs every package benchmark one after another (so they do not compete for
 * the two cores) and regenerates BENCHMARKS.md from what they print — each figure next to its
 * baseline from the same run, the machine and the date.
 *
 *   node scripts/bench.ts [--only name,name]
 *
 * With `--only`, the named sections of BENCHMARKS.md are replaced and the others kept. Each
 * section says the machine's load average when its run started and ended: on a shared
 * machine the absolute figures move with it, the ratios within a run much less.
 *
 * `pnpm bench` runs it through `scripts/with-services.ts`, so the PostgreSQL + Redis figures
 * are measured where those services can be started; run alone without MOAT_TEST_POSTGRES_URL
 * and MOAT_TEST_REDIS_URL, that row says "not measured".
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';

interface Bench {
  readonly dir: string;
  readonly title: string;
  /** What the figures are compared against, said once above the table. */
  readonly baseline: string;
  /** How to read the ratio column. */
  readonly ratio: string;
  /** The package script that runs it (default `bench`). */
  readonly script?: string;
  /** Its name for `--only` (default: the package folder's). */
  readonly name?: string;
}

const BENCHES: readonly Bench[] = [
  {
    dir: 'apps/verifier',
    title: 'Verifier overhead',
    baseline:
      "the upstream itself (direct) and a bare node:http + undici pass-through proxy in front of it, and on the same stack the design's floor (the API key's keyed hash and a MAC over the body, the JSON read and written again, the record reserved before forwarding and finished before the answer ends in the verifier's SQLite store, no Moat check), measured in the same run with the verifier's plain request (no Moat tags) and the genuine requests moat-chat and `@moat/client` under the Anthropic SDK send (made fresh per request by their own code, stamped by the native addon), and with the same verifier holding its database in memory (`@memory`: every check, no durable commit); a third mode sends every target the request Claude Code itself sends (`claude -p`, captured once per run)",
    ratio:
      "added latency over direct in µs (lower is better); the verifier's added latency ÷ the proxy's and its throughput ÷ the proxy's, per round (the targets: ≤ 1.5× at p50, ≤ 2× at p99, ≥ 0.6× throughput for a genuine request and ≥ 0.8× for a plain one)",
  },
  {
    dir: 'apps/verifier',
    title: 'Verifier memory per install',
    script: 'bench:installs',
    name: 'verifier-installs',
    baseline:
      'none: absolute figures, per install and scaled to 10⁶ installs; the cache and the fan-in state are bounded by their settings',
    ratio: 'bytes per install (lower is better)',
  },
  {
    dir: 'apps/verifier',
    script: 'bench:embedded',
    name: 'verifier-embedded',
    title: 'Embedded handler (in process)',
    baseline:
      "the embedding server's own model call alone (the same function, `mockModel`), given the same request in the same run: called directly for `fetch`, behind a `node:http` server for `node`",
    ratio: 'added latency over the model call alone in µs (lower is better), median and range over rounds',
  },
  {
    dir: 'apps/verifier',
    script: 'bench:long-stream',
    name: 'verifier-long-stream',
    title: 'Long streamed answers',
    baseline:
      'the upstream itself (direct) and the bare node:http + undici pass-through proxy, in the same rounds, each answering the same long streamed answer (the mock model echoing a long text, one event per 12 characters)',
    ratio: "the verifier's added p50 ÷ the proxy's, per round (lower is better), and its added time per event",
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
      '`rg -F -f` and `rg -F -i -f` (ripgrep, fixed strings) over the same corpus, and over it as one file, in the same rounds; moat-scan cold (an empty cache directory, cleared before every run, as on a fresh CI runner) and warm, with and without the prefilter; the standalone executable (`moat-scan standalone`) cold; the start of Node itself (`node -e 0`)',
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

const headingOf = (bench: Bench) => `## ${bench.title} — \`${bench.dir}\``;
const sections: string[] = [];
let failed = 0;
for (const bench of BENCHES) {
  const name = bench.name ?? (bench.dir.split('/')[1] as string);
  if (only !== undefined && !only.has(name)) continue;
  process.stdout.write(`\n== ${bench.dir} (${bench.script ?? 'bench'})\n`);
  const loadBefore = loadavg()[0] ?? 0;
  const result = await run(bench.dir, bench.script);
  const load = `machine load average (1 min) ${loadBefore.toFixed(1)} at the start, ${(loadavg()[0] ?? 0).toFixed(1)} at the end, on ${cpus().length} cores`;
  if (result.code !== 0) failed++;
  sections.push(
    [
      headingOf(bench),
      '',
      `Baseline: ${bench.baseline}. Ratio: ${bench.ratio}. Source: [\`${bench.dir}/bench/\`](${bench.dir}/bench/); ran ${(result.ms / 1000).toFixed(0)} s on ${new Date().toISOString().slice(0, 10)}, ${load}.`,
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
} else {
  // Only the sections that ran are replaced (matched by their heading); the others stay as they were.
  const file = join(root, 'BENCHMARKS.md');
  let text = readFileSync(file, 'utf8');
  for (const section of sections) {
    const heading = section.slice(0, section.indexOf('\n'));
    const start = text.indexOf(`${heading}\n`);
    if (start < 0) {
      // A section new to the file goes before the first of the benchmarks after it (in BENCHES' order) the file has.
      const after = BENCHES.slice(BENCHES.findIndex((b) => headingOf(b) === heading) + 1)
        .map((b) => text.indexOf(`${headingOf(b)}\n`))
        .find((at) => at >= 0);
      text = after === undefined ? `${text.trimEnd()}\n\n${section}\n` : `${text.slice(0, after)}${section}\n\n${text.slice(after)}`;
      continue;
    }
    const next = text.indexOf('\n## ', start + heading.length);
    text = `${text.slice(0, start)}${section}\n${next < 0 ? '' : text.slice(next)}`;
  }
  writeFileSync(file, text.endsWith('\n') ? text : `${text}\n`);
  process.stdout.write(`\n(--only: the sections of ${[...only].join(', ')} replaced in BENCHMARKS.md, the others kept)\n`);
}
process.exitCode = failed === 0 ? 0 : 1;
