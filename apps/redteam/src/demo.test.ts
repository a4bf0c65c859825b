import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createVerifier, devEnvironment, loadConfig, SqliteStorage, type Verifier } from '@moat/verifier';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedteamContext, SCENARIOS } from './scenarios.js';

const require = createRequire(import.meta.url);
const cli = join(dirname(require.resolve('@moat/cli/package.json')), 'dist/moat-chat');
const nativeDir = dirname(require.resolve('@moat/native/package.json'));
let verifier: Verifier;
let replica: Verifier;
let ctx: RedteamContext;
/** The release table of the verifiers here: the genuine client (1.4.2) binds requests. */
const RELEASES = { MOAT_VERIFIER_RELEASES: JSON.stringify([{ minCv: '1.4.2', features: ['request_binding'] }]) };

beforeAll(async () => {
  // Two replicas on one SQLite file: they share the replay cache, as replicas must.
  const database = join(mkdtempSync(join(tmpdir(), 'moat-redteam-')), 'verifier.db');
  const env: Record<string, string> = {
    ...devEnvironment({ attestationKeyFile: join(nativeDir, '.moat-dev-key.json'), database }),
    ...RELEASES,
  };
  const adminToken = env.MOAT_VERIFIER_ADMIN_TOKEN as string;
  const serverSecret = env.MOAT_VERIFIER_SERVER_SECRET as string;
  const config = loadConfig(env);
  // A first database (nothing served before it): its replay cache vouches for the whole window,
  // as the scenario of a client whose clock is nearly a window behind needs.
  const storageOf = () =>
    new SqliteStorage(database, Buffer.from(config.serverSecret, 'hex'), { windowSec: config.windowSec, replayCacheSince: 0 });
  verifier = await createVerifier(config, { logLevel: 'silent', storage: storageOf() });
  replica = await createVerifier(config, { logLevel: 'silent', storage: storageOf() });
  ctx = {
    baseUrl: await verifier.listen(),
    replicaUrl: await replica.listen(),
    windowSec: config.windowSec,
    adminToken,
    salt: 'moat-dev-salt',
    cli,
    serverSecret,
    log: () => {},
  };
});
afterAll(async () => {
  await replica.close();
  await verifier.close();
});

// Each scenario is a test of its own: one failing does not hide the others.
describe('red-team scenarios against a local verifier', () => {
  for (const scenario of SCENARIOS) {
    it(`${scenario.id}: ${scenario.title} → ${scenario.expected}`, { timeout: 60_000 }, async () => {
      const result = await scenario.run(ctx);
      expect(result.skipped, 'every prerequisite is present here').toBeUndefined();
      expect(result.pass, result.observed).toBe(true);
    });
  }
});

describe('moat demo and moat redteam as commands', () => {
  const moat = new URL('../dist/cli.js', import.meta.url).pathname;
  const run = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [moat, ...args], {
        env: { ...process.env, ...env },
        cwd: mkdtempSync(join(tmpdir(), 'moat-demo-')),
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });

  it('moat demo prints a fully green trust report and exits 0', { timeout: 120_000 }, async () => {
    const r = await run(['demo']);
    expect(r.stdout).toContain(`${SCENARIOS.length} of ${SCENARIOS.length} scenarios as expected`);
    expect(r.stderr).toMatch(/HTML report: moat-trust-report\.html/);
    expect(r.status).toBe(0);
  });

  it('moat redteam works against a separately started verifier', { timeout: 120_000 }, async () => {
    const verifierCli = join(dirname(require.resolve('@moat/verifier/package.json')), 'dist/cli.js');
    const env: Record<string, string> = { ...devEnvironment({ attestationKeyFile: join(nativeDir, '.moat-dev-key.json') }), ...RELEASES };
    const adminToken = env.MOAT_VERIFIER_ADMIN_TOKEN as string;
    const server = spawn(process.execPath, [verifierCli], {
      env: { ...process.env, ...env, MOAT_VERIFIER_LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const url = await new Promise<string>((resolve) => {
        server.stdout.on('data', (d: Buffer) => {
          const m = /listening on (http:\/\/\S+)/.exec(d.toString());
          if (m) resolve(m[1] as string);
        });
      });
      const r = await run(['redteam', '--target', url, '--admin-token', adminToken, '--cli', cli, '--json']);
      const report = JSON.parse(r.stdout) as { results: Array<{ id: string; pass: boolean; skipped?: string }> };
      expect(report.results).toHaveLength(SCENARIOS.length);
      expect(report.results.filter((x) => !x.pass)).toEqual([]);
      // Without the verifier's secret, tracing is the operator's job: skipped, with the reason.
      expect(report.results.find((x) => x.id === 'distiller')?.skipped).toMatch(/verifier secret/);
      expect(r.status).toBe(0);
    } finally {
      server.kill();
    }
  });
});
