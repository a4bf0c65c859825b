/**
 * Runs a command with the services the storage tests use: when MOAT_TEST_POSTGRES_URL and
 * MOAT_TEST_REDIS_URL are not set already, `scripts/services.sh` starts PostgreSQL and Redis
 * (where installed and where this user may start them) and its exports are passed on. When
 * they cannot be started the command runs anyway and those suites report themselves
 * skipped, with the reason.
 *
 *   node scripts/with-services.ts COMMAND [ARGS…]
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const [command, ...args] = process.argv.slice(2);
if (command === undefined) {
  process.stderr.write('usage: node scripts/with-services.ts COMMAND [ARGS…]\n');
  process.exit(2);
}
const env = { ...process.env };
if (env.MOAT_TEST_POSTGRES_URL === undefined || env.MOAT_TEST_REDIS_URL === undefined) {
  const started = spawnSync('bash', [join(import.meta.dirname, 'services.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  for (const line of (started.stdout ?? '').split('\n')) {
    const m = /^export (MOAT_TEST_[A-Z_]+)=(\S+)$/.exec(line.trim());
    if (m !== null) env[m[1] as string] = m[2];
  }
  if (started.status !== 0)
    process.stderr.write('[services] could not start every service; their storage tests will report themselves skipped\n');
}
const result = spawnSync(command, args, { stdio: 'inherit', env });
process.exit(result.status ?? 1);
