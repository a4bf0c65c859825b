#!/usr/bin/env node
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { errorMessage, errorStack } from '@moat/protocol/support';
import { runDemo } from './demo.js';
import { formatTable } from './report.js';
import { runScenarios, SCENARIOS } from './scenarios.js';

const USAGE = `usage: moat demo [--keep] [--report FILE] [--only ID,...]
       moat redteam --target URL --admin-token T [--salt S] [--cli PATH] [--secret-file F]
                    [--replica URL] [--window-sec N] [--json] [--only ID,...]

scenarios: ${SCENARIOS.map((s) => s.id).join(', ')}
exit codes: 0 every scenario as expected, 1 otherwise, 2 usage`;

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        keep: { type: 'boolean' },
        report: { type: 'string' },
        only: { type: 'string' },
        target: { type: 'string' },
        'admin-token': { type: 'string' },
        salt: { type: 'string' },
        cli: { type: 'string' },
        'secret-file': { type: 'string' },
        replica: { type: 'string' },
        'window-sec': { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`moat: ${errorMessage(error)}\n${USAGE}\n`);
    return 2;
  }
  const only = typeof values.only === 'string' ? values.only.split(',') : undefined;
  if (values.help || positionals.length === 0) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  if (positionals[0] === 'demo') {
    const { results, verifier } = await runDemo({
      keep: values.keep === true,
      ...(typeof values.report === 'string' ? { htmlReport: values.report } : {}),
      ...(only ? { only } : {}),
    });
    const ok = results.every((r) => r.pass);
    if (verifier !== undefined) {
      process.on('SIGINT', () => void verifier.close().then(() => process.exit(ok ? 0 : 1)));
      return new Promise(() => {});
    }
    return ok ? 0 : 1;
  }
  if (positionals[0] === 'redteam') {
    if (typeof values.target !== 'string' || typeof values['admin-token'] !== 'string') {
      process.stderr.write(
        `moat redteam: expected --target URL and --admin-token, got ${values.target === undefined ? 'no target' : 'no admin token'}\n${USAGE}\n`,
      );
      return 2;
    }
    const { readFileSync } = await import('node:fs');
    const windowSec = values['window-sec'] === undefined ? undefined : Number(values['window-sec']);
    if (windowSec !== undefined && (!Number.isSafeInteger(windowSec) || windowSec < 2 || windowSec > 86_400)) {
      process.stderr.write(`moat redteam: expected --window-sec as an integer 2..86400, got ${values['window-sec']}\n`);
      return 2;
    }
    const results = await runScenarios(
      {
        baseUrl: values.target,
        adminToken: values['admin-token'],
        salt: typeof values.salt === 'string' ? values.salt : 'moat-dev-salt',
        ...(typeof values.cli === 'string' ? { cli: values.cli } : {}),
        ...(typeof values['secret-file'] === 'string' ? { serverSecret: readFileSync(values['secret-file'], 'utf8').trim() } : {}),
        ...(typeof values.replica === 'string' ? { replicaUrl: values.replica } : {}),
        ...(windowSec === undefined ? {} : { windowSec }),
        log: (m) => {
          if (!values.json) process.stderr.write(`${m}\n`);
        },
      },
      only,
    );
    if (values.json) process.stdout.write(`${JSON.stringify({ target: values.target, results }, null, 2)}\n`);
    else process.stdout.write(`${formatTable(results)}\n`);
    if (typeof values.report === 'string') writeFileSync(values.report, JSON.stringify(results, null, 2));
    return results.every((r) => r.pass) ? 0 : 1;
  }
  process.stderr.write(`moat: unknown command ${positionals[0]}\n${USAGE}\n`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`moat: ${errorStack(error)}\n`);
    process.exitCode = 2;
  },
);
