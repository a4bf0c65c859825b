import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createVerifier, devEnvironment, loadConfig, SqliteStorage, type Verifier } from '@moat/verifier';
import { formatHtml, formatTable } from './report.js';
import { type RedteamContext, runScenarios, type ScenarioResult } from './scenarios.js';

const require = createRequire(import.meta.url);

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Keep the verifier running afterwards and print the dashboard URL and admin token. */
  readonly keep?: boolean;
  /** Where to write the HTML report (default moat-trust-report.html in the working directory). */
  readonly htmlReport?: string;
  readonly log?: (message: string) => void;
  /** Run only these scenario ids. */
  readonly only?: readonly string[];
}

/**
 * `moat demo`: starts a verifier on a free loopback port (SQLite, the mock upstream, keys and
 * secrets generated now), runs every scenario against it with the genuine external CLI, and
 * prints the trust report. Returns the results and the running verifier when `keep` is set.
 */
export async function runDemo(options: DemoOptions = {}): Promise<{ results: ScenarioResult[]; verifier?: Verifier; adminToken: string }> {
  const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const salt = process.env.MOAT_FINGERPRINT_SALT ?? 'moat-dev-salt';
  const nativeDir = dirname(require.resolve('@moat/native/package.json'));
  const cli = join(dirname(require.resolve('@moat/cli/package.json')), 'dist/moat-chat');
  log('starting two moat-verifier replicas (one SQLite file, mock upstream, keys generated for this run)');
  const database = join(mkdtempSync(join(tmpdir(), 'moat-demo-')), 'verifier.db');
  const env: Record<string, string> = {
    ...devEnvironment({ salt, attestationKeyFile: join(nativeDir, '.moat-dev-key.json'), database }),
    // The release table: the clients of this demo (1.4.2) speak protocol 1.1, so they bind requests.
    MOAT_VERIFIER_RELEASES: JSON.stringify([{ minCv: '1.4.2', features: ['request_binding'] }]),
  };
  const adminToken = env.MOAT_VERIFIER_ADMIN_TOKEN as string;
  const serverSecret = env.MOAT_VERIFIER_SERVER_SECRET as string;
  const config = loadConfig(env);
  // Both replicas on the one database this run makes. It is a first database (no request was
  // served before it), so its replay cache vouches for stamps of the whole window: the
  // scenario of a client whose clock is behind by nearly the window runs at once.
  const storageOf = () =>
    new SqliteStorage(database, Buffer.from(config.serverSecret, 'hex'), { windowSec: config.windowSec, replayCacheSince: 0 });
  const verifier = await createVerifier(config, { logLevel: 'silent', storage: storageOf() });
  const replica = await createVerifier(config, { logLevel: 'silent', storage: storageOf() });
  const baseUrl = await verifier.listen();
  const replicaUrl = await replica.listen();
  log(`verifier at ${baseUrl}, a second replica at ${replicaUrl}`);
  const ctx: RedteamContext = { baseUrl, adminToken, salt, cli, serverSecret, replicaUrl, windowSec: config.windowSec, log };
  const results = await runScenarios(ctx, options.only);
  await replica.close();
  process.stdout.write(`\n${formatTable(results)}\n`);
  const summary = (await (
    await fetch(`${baseUrl}/admin/summary`, { headers: { authorization: `Bearer ${adminToken}` } })
  ).json()) as Parameters<typeof formatHtml>[1];
  const html = options.htmlReport ?? 'moat-trust-report.html';
  writeFileSync(html, formatHtml(results, summary, options.keep ? `${baseUrl}/dashboard` : undefined));
  log(`HTML report: ${html}`);
  if (options.keep) {
    log(`dashboard: ${baseUrl}/dashboard   admin token: ${adminToken}   (Ctrl-C to stop)`);
    return { results, verifier, adminToken };
  }
  await verifier.close();
  return { results, adminToken };
}
