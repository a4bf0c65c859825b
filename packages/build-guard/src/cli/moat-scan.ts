#!/usr/bin/env node
import { errorMessage, errorStack } from '@moat/protocol/support';
import { BuildGuardError } from '../errors.js';
import { formatHuman, formatJson, formatSarif } from '../scan/report.js';
import { loadScanConfig, type ScanOptions, type ScanReport } from '../scan/scanner.js';

// Built-ins through getBuiltinModule, not ES imports: Node's ES module of `node:util` or
// `node:fs` reads every export, and so loads the modules behind their lazy ones (fs/promises,
// readline, the stream and diff modules). With the report written by writeSync, a cold scan
// loads none of them: about 10 ms less before the first file is read.
const { writeSync } = process.getBuiltinModule('node:fs');
const { parseArgs } = process.getBuiltinModule('node:util');

const USAGE = `usage: moat-scan [options] <path>...        scan files, directories, .tgz tarballs, executables
       moat-scan pack [options] <package-dir>  audit what npm pack would publish
       moat-scan standalone -o FILE            build this moat-scan as one executable (Bun)

options:
  -c, --codenames FILE   codename list: one per line, # comments
      --codename NAME    add a codename (repeatable)
  -i, --ignore-case      plain and UTF-16 forms match in any case; encoded forms of the
                         codename, its lowercase and uppercase are searched
  -w, --whole-word       plain matches need non-word characters around them
      --plain-only       plain text only (no encoded forms, no split literals)
      --engine NAME      auto (default: native where the addon loads: a cached set, libhs where
                         a compile pays, else a direct set), native (always libhs, cached)
                         or js; same findings
      --no-prefilter     read every file exactly (default: libhs clears files on native
                         threads first where it runs; same findings)
      --allowlist FILE   JSON [{ "codename", "path", "reason" }]
      --no-sourcemaps    skip the source-map audit
      --no-names         search file contents only, not file and folder names
      --json | --sarif   machine-readable output (default: human)
  -o, --output FILE      write the report to FILE instead of stdout
  -q, --quiet            no progress line
  -v, --verbose          every location of every finding (default: the first few per group)
pack options:
      --allow-src        allow files under src/
      --max-size BYTES   largest unpacked size (default 10000000)
      --allow GLOB       allow a path despite the policy (repeatable)

exit codes: 0 clean, 1 findings, 2 usage or I/O error`;

const OPTIONS = {
  codenames: { type: 'string', short: 'c' },
  codename: { type: 'string', multiple: true },
  'ignore-case': { type: 'boolean', short: 'i' },
  'whole-word': { type: 'boolean', short: 'w' },
  'plain-only': { type: 'boolean' },
  engine: { type: 'string' },
  allowlist: { type: 'string' },
  'no-sourcemaps': { type: 'boolean' },
  'no-names': { type: 'boolean' },
  'no-prefilter': { type: 'boolean' },
  json: { type: 'boolean' },
  sarif: { type: 'boolean' },
  output: { type: 'string', short: 'o' },
  quiet: { type: 'boolean', short: 'q' },
  verbose: { type: 'boolean', short: 'v' },
  'allow-src': { type: 'boolean' },
  'max-size': { type: 'string' },
  allow: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const;

/** `moat-scan standalone -o FILE`: the executable, built by Bun (loaded only here: it brings esbuild). */
async function standalone(extra: number, outfile: string | undefined): Promise<number> {
  if (extra !== 0 || outfile === undefined) {
    process.stderr.write(
      `moat-scan: expected \`standalone -o FILE\` and nothing else, got ${outfile === undefined ? 'no -o' : `${extra} more arguments`}\n`,
    );
    return 2;
  }
  let buildStandaloneScan: typeof import('../standalone.js').buildStandaloneScan;
  try {
    ({ buildStandaloneScan } = await import('../standalone.js'));
  } catch (error) {
    // The standalone executable itself carries no bundler.
    process.stderr.write(
      `moat-scan: expected esbuild and Bun from @moat/build-guard's npm installation to build with, got ${errorMessage(error)}\n`,
    );
    return 2;
  }
  process.stdout.write(`moat-scan: built ${await buildStandaloneScan({ outfile })}\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    process.stderr.write(`moat-scan: ${errorMessage(error)}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (positionals[0] === 'standalone') return await standalone(positionals.length - 1, values.output);
  const isPack = positionals[0] === 'pack';
  const inputs = isPack ? positionals.slice(1) : positionals;
  if (inputs.length === 0 || (isPack && inputs.length !== 1)) {
    process.stderr.write(`moat-scan: expected ${isPack ? 'one package directory' : 'at least one path'}, got ${inputs.length}\n${USAGE}\n`);
    return 2;
  }
  if (values.json && values.sarif) {
    process.stderr.write('moat-scan: expected one of --json and --sarif, got both\n');
    return 2;
  }
  if (values.engine !== undefined && !['auto', 'native', 'js'].includes(values.engine)) {
    process.stderr.write(`moat-scan: expected --engine auto, native or js, got ${JSON.stringify(values.engine)}\n`);
    return 2;
  }
  const packOnly = (['allow-src', 'max-size', 'allow'] as const).filter((name) => values[name] !== undefined);
  if (!isPack && packOnly.length > 0) {
    process.stderr.write(`moat-scan: expected --${packOnly[0]} with \`moat-scan pack\` only, got it for a path scan\n`);
    return 2;
  }
  const maxSize = values['max-size'] === undefined ? undefined : Number(values['max-size']);
  if (maxSize !== undefined && !(Number.isSafeInteger(maxSize) && maxSize > 0)) {
    process.stderr.write(`moat-scan: expected --max-size as a positive integer, got ${JSON.stringify(values['max-size'])}\n`);
    return 2;
  }

  const config = await loadScanConfig(values.codenames, values.allowlist);
  const given = (values.codename ?? []).map((name) => name.trim());
  if (given.some((name) => name === '')) {
    process.stderr.write('moat-scan: expected --codename NAME with a name, got an empty one\n');
    return 2;
  }
  const codenames = [...config.codenames, ...given];
  // A scan for nothing passes whatever the build holds: a CI job whose list was never filled in must not go green.
  if (codenames.length === 0) {
    process.stderr.write(
      `moat-scan: expected codenames to scan for (-c FILE or --codename NAME), got ${values.codenames === undefined ? 'none' : `none in ${values.codenames}`}\n`,
    );
    return 2;
  }
  const showProgress = !values.quiet && process.stderr.isTTY === true;
  let lastDraw = 0;
  const options: ScanOptions = {
    codenames,
    allowlist: config.allowlist,
    ignoreCase: values['ignore-case'] === true,
    wholeWord: values['whole-word'] === true,
    plainOnly: values['plain-only'] === true,
    sourceMaps: values['no-sourcemaps'] !== true,
    names: values['no-names'] !== true,
    prefilter: values['no-prefilter'] !== true,
    engine: (values.engine ?? 'auto') as 'auto' | 'native' | 'js',
    onWarning: (message: string) => process.stderr.write(`moat-scan: ${message}\n`),
    ...(showProgress
      ? {
          onProgress: ({ path, bytes, total }) => {
            const now = Date.now();
            if (total < 4_000_000 || now - lastDraw < 100) return;
            lastDraw = now;
            process.stderr.write(`\r\x1b[2Kmoat-scan: ${path} ${Math.floor((100 * bytes) / total)}% of ${(total / 1e6).toFixed(0)} MB`);
          },
        }
      : {}),
  };
  const report: ScanReport = isPack
    ? await (await import('../scan/pack.js')).auditPack(
        inputs[0] as string,
        {
          allowSrc: values['allow-src'] === true,
          ...(maxSize === undefined ? {} : { maxUnpackedBytes: maxSize }),
          allow: values.allow ?? [],
        },
        options,
      )
    : await (await import('../scan/scanner.js')).scanPaths(inputs, options);
  if (showProgress) process.stderr.write('\r\x1b[2K');
  const text = values.sarif
    ? formatSarif(report)
    : values.json
      ? formatJson(report)
      : formatHuman(report, { verbose: values.verbose === true });
  if (values.output === undefined) writeStdout(text);
  else
    try {
      await process.getBuiltinModule('node:fs/promises').writeFile(values.output, text);
    } catch (error) {
      process.stderr.write(`moat-scan: expected to write the report to ${values.output}, got ${errorMessage(error)}\n`);
      return 2;
    }
  if (report.errors.length > 0) {
    for (const e of report.errors) process.stderr.write(`moat-scan: cannot read ${e.path}: ${e.message}\n`);
    return 2;
  }
  // An empty build proves nothing: no file read is no pass.
  if (report.files === 0) {
    process.stderr.write(`moat-scan: expected files to scan in ${inputs.join(', ')}, got none\n`);
    return 2;
  }
  return report.findings.some((f) => f.severity !== 'note') ? 1 : 0;
}

/** False once part of the report went through process.stdout's queue: the process then exits when it drains. */
let written = true;

/**
 * Writes the report to stdout with writeSync: `process.stdout` would load the stream modules for
 * one write. A stdout that cannot take more now (`EAGAIN`: a non-blocking pipe) gets the rest
 * through `process.stdout`, which waits for its reader; a reader that has gone (`EPIPE`, as
 * `moat-scan … | head` does) ends the writing, and the exit code stays the scan's.
 */
function writeStdout(text: string): void {
  const bytes = Buffer.from(text);
  let at = 0;
  try {
    while (at < bytes.length) at += writeSync(1, bytes, at);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EPIPE') return;
    if (code !== 'EAGAIN') throw error;
    written = false;
    process.stdout.write(bytes.subarray(at));
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Out as soon as the report is: waiting for the event loop to wind down costs a cold run
    // a few ms (the thread pool, the addon's cleanup), and nothing is left to do.
    if (written) process.exit(code);
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`moat-scan: ${error instanceof BuildGuardError ? error.message : errorStack(error)}\n`);
    process.exitCode = 2;
  },
);
