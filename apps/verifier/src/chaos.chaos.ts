/**
 * Chaos under load: three verifier replicas (real processes) on one PostgreSQL and one Redis
 * of this test's own, behind a real HAProxy, take a steady stream of attested requests while
 * PostgreSQL is stopped, its records table locked, PostgreSQL restarted, Redis restarted
 * (without persistence) and one replica killed with SIGKILL (then started again on its own
 * spool). At the end it prints an account — requests sent, answers received, records stored —
 * and checks it: every answer 200 or 503 with `retry-after`, every answer that names a
 * request id has exactly one record with the status the client got, no duplicates, and no
 * replica exited on its own. Run: `pnpm test:chaos` (needs root for the private PostgreSQL,
 * haproxy and redis-server; bounded to about two minutes).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAttestedFetch } from '@moat/attest/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { devKeyFile } from '@moat/native/dev-key';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { devEnvironment } from './config.js';
import { cleanups, freePort, hasPostgres, hasRedis, ownPostgres, ownRedis, until } from './services.test-util.js';
import { addKey, spawnVerifier } from './spawned.test-util.js';

const RATE_PER_SEC = 20;
const SALT = 'chaos-salt';
const hasHaproxy = spawnSync('haproxy', ['-v']).status === 0;

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** HAProxy in front of `ports`: health checks on /healthz, retries only where the request was not sent, its own errors a 503 with retry-after. */
async function haproxy(ports: number[]): Promise<{ url: string; log(): string }> {
  const dir = mkdtempSync(join(tmpdir(), 'moat-haproxy-'));
  const port = await freePort();
  const refusal = join(dir, '503.http');
  writeFileSync(
    refusal,
    [
      'HTTP/1.1 503 Service Unavailable',
      'retry-after: 1',
      'content-type: application/json',
      'x-answered-by: haproxy',
      'connection: close',
      '',
      '{"type":"error","error":{"type":"overloaded_error","message":"no replica answered; retry shortly"}}',
    ].join('\r\n'),
  );
  const config = join(dir, 'haproxy.cfg');
  writeFileSync(
    config,
    `global
  maxconn 2000
  log stderr format raw daemon
defaults
  mode http
  log global
  option httplog
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout check 2s
  retries 3
  option redispatch
  retry-on conn-failure
  # A server connection per request: a request that reached a replica is never sent again
  # (a retry would reuse its stamp's nonce), whatever happens to that replica.
  http-reuse never
  errorfile 502 ${refusal}
  errorfile 503 ${refusal}
  errorfile 504 ${refusal}
frontend moat
  bind 127.0.0.1:${port}
  default_backend verifiers
backend verifiers
  balance roundrobin
  option httpchk GET /healthz
  default-server inter 500ms fall 3 rise 2
${ports.map((p, i) => `  server r${i + 1} 127.0.0.1:${p} check`).join('\n')}
`,
  );
  const proc = spawn('haproxy', ['-db', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += d));
  cleanups.push(() => proc.kill('SIGKILL'));
  const url = `http://127.0.0.1:${port}`;
  await until(async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200, `haproxy: ${err}`);
  return { url, log: () => err };
}

interface Answer {
  readonly i: number;
  readonly status: number;
  readonly retryAfter: string | null;
  readonly id: string | null;
  readonly byHaproxy: boolean;
}

describe.runIf(hasPostgres && hasRedis && hasHaproxy)('chaos under load', { timeout: 240_000 }, () => {
  it('three replicas behind HAProxy: PostgreSQL stopped, locked, restarted; Redis restarted; a replica killed', async () => {
    const postgres = await ownPostgres();
    const redis = await ownRedis();
    const dir = mkdtempSync(join(tmpdir(), 'moat-chaos-'));
    const base = {
      ...process.env,
      ...devEnvironment({ salt: SALT, attestationKeyFile: devKeyFile }),
      MOAT_VERIFIER_POSTGRES_URL: postgres.url,
      MOAT_VERIFIER_REDIS_URL: redis.url,
      MOAT_VERIFIER_LOG_LEVEL: 'warn',
    };
    const ports = [await freePort(), await freePort(), await freePort()];
    const envOf = (i: number) => ({
      ...base,
      MOAT_VERIFIER_PORT: String(ports[i]),
      MOAT_VERIFIER_SPOOL_FILE: join(dir, `r${i + 1}.spool`),
    });
    const { key } = addKey(envOf(0), 'chaos');
    const replicas: Array<{ child: ChildProcess; output(): string; killedByUs: boolean }> = [];
    for (let i = 0; i < 3; i++) {
      const spawned = await spawnVerifier(envOf(i));
      replicas.push({ ...spawned, killedByUs: false });
      cleanups.push(() => spawned.child.kill('SIGKILL'));
    }
    const balancer = await haproxy(ports);
    const lb = balancer.url;
    // Warm: every replica ready (its first connections to PostgreSQL open), HAProxy seeing all three.
    for (const port of ports)
      await until(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200, 'warm', 30_000);
    await sleep(1_500);

    // The steady load: request n leaves at start + n / rate, whatever the answers do.
    const attested = createAttestedFetch();
    const answers: Answer[] = [];
    const failures: string[] = [];
    const start = Date.now();
    const send = async (i: number) => {
      const body = JSON.stringify(
        tagFingerprint(
          { model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: `chaos request ${i}` }] },
          { salt: SALT, version: '1.4.2', entrypoint: 'cli' },
        ).request,
      );
      try {
        const res = await attested(`${lb}/v1/messages`, {
          method: 'POST',
          headers: { 'x-api-key': key, 'content-type': 'application/json' },
          body,
          signal: AbortSignal.timeout(30_000),
        });
        await res.arrayBuffer();
        answers.push({
          i,
          status: res.status,
          retryAfter: res.headers.get('retry-after'),
          id: res.headers.get('moat-request-id'),
          byHaproxy: res.headers.get('x-answered-by') === 'haproxy',
        });
      } catch (error) {
        failures.push(`request ${i}: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    const phases: Array<[number, string, () => Promise<void> | void]> = [];
    const at = (sec: number, what: string, run: () => Promise<void> | void) => phases.push([sec, what, run]);
    let locker: pg.Client | undefined;
    at(5, 'PostgreSQL stopped (15 s)', () => postgres.stop());
    at(20, 'PostgreSQL started', () => postgres.start());
    at(27, 'records table locked (6 s)', async () => {
      locker = new pg.Client({ connectionString: postgres.url });
      await locker.connect();
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE records IN ACCESS EXCLUSIVE MODE');
    });
    at(33, 'records table unlocked', async () => {
      await locker?.query('COMMIT');
      await locker?.end();
    });
    at(38, 'PostgreSQL restarted', () => {
      postgres.stop();
      postgres.start();
    });
    at(45, 'Redis restarted without persistence', async () => {
      await redis.stop();
      await redis.start();
    });
    at(52, 'replica 3 killed (SIGKILL)', () => {
      const victim = replicas[2] as (typeof replicas)[number];
      victim.killedByUs = true;
      victim.child.kill('SIGKILL');
    });
    const durationSec = 62;
    const total = durationSec * RATE_PER_SEC;
    const inflight: Array<Promise<void>> = [];
    const timeline: string[] = [];
    const chaos = (async () => {
      for (const [sec, what, run] of phases) {
        await sleep(Math.max(0, start + sec * 1000 - Date.now()));
        timeline.push(`${((Date.now() - start) / 1000).toFixed(1)} s  ${what}`);
        await run();
      }
    })();
    for (let i = 0; i < total; i++) {
      await sleep(Math.max(0, start + (i * 1000) / RATE_PER_SEC - Date.now()));
      inflight.push(send(i));
    }
    await Promise.all(inflight);
    await chaos;

    // The killed replica comes back on its own spool; every replica drains and is ready.
    const revived = await spawnVerifier(envOf(2));
    cleanups.push(() => revived.child.kill('SIGKILL'));
    const notReady: string[] = [];
    for (const port of ports) {
      let last = '';
      await until(
        async () => {
          const res = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
          last = res === undefined ? 'no answer' : await res.text();
          return res?.status === 200;
        },
        'ready',
        45_000,
      ).catch(() => notReady.push(`replica on ${port}: ${last}`));
    }

    const db = new pg.Client({ connectionString: postgres.url });
    await db.connect();
    const rows = (await db.query<{ id: string; status: number | null; key_id: string | null }>('SELECT id, status, key_id FROM records'))
      .rows;
    const dupes = (await db.query('SELECT id FROM records GROUP BY id HAVING COUNT(*) > 1')).rowCount;
    await db.end();
    const byId = new Map(rows.map((r) => [r.id, r]));
    const named = answers.filter((a) => a.id !== null);
    const mismatched = named.filter((a) => byId.get(a.id as string)?.status !== a.status);
    const answeredIds = new Set(named.map((a) => a.id));
    const orphans = rows.filter((r) => !answeredIds.has(r.id));
    const byStatus = new Map<string, number>();
    for (const a of answers) {
      const k = `${a.status}${a.byHaproxy ? ' (HAProxy)' : ''}${a.status !== 200 && a.retryAfter === null ? ' WITHOUT retry-after' : ''}`;
      byStatus.set(k, (byStatus.get(k) ?? 0) + 1);
    }
    const exited = replicas.filter((r) => !r.killedByUs && r.child.exitCode !== null);
    const crashes = replicas.flatMap((r) => r.output().split('\n')).filter((l) => /uncaught|unhandled/i.test(l));
    const account = [
      'chaos account',
      ...timeline.map((t) => `  ${t}`),
      `  requests sent            ${total} (${RATE_PER_SEC}/s for ${durationSec} s)`,
      `  answers received         ${answers.length} (no answer: ${failures.length})`,
      ...[...byStatus.entries()].sort().map(([k, n]) => `    ${k.padEnd(22)} ${n}`),
      `  answered by HAProxy      ${answers.filter((a) => a.byHaproxy).length} (a replica gone mid-request)`,
      `  records stored           ${rows.length} (answers naming a request id: ${named.length}; records of no answer: ${orphans.length})`,
      `  records ≠ answer status  ${mismatched.length}`,
      `  duplicate record ids     ${dupes}`,
      `  replicas exited unasked  ${exited.length}; uncaught errors logged: ${crashes.length}`,
      `  balance                  sent ${total} = answered ${answers.length} = recorded ${rows.length}: ${
        total === answers.length && answers.length === rows.length ? 'yes' : 'NO'
      }`,
      `  replicas not ready       ${notReady.length === 0 ? 'none' : notReady.join('; ')}`,
    ].join('\n');
    console.log(account);
    if (notReady.length > 0) console.log(replicas.map((r) => r.output()).join('\n---\n'));
    if (crashes.length > 0) console.log(crashes.join('\n'));
    if (process.env.MOAT_CHAOS_DEBUG !== undefined) {
      console.log(
        balancer
          .log()
          .split('\n')
          .filter((l) => !/ 200 /.test(l))
          .slice(0, 60)
          .join('\n'),
      );
      console.log(crashes.join('\n'));
      console.log(
        orphans,
        answers.filter((a) => a.status === 403),
      );
    }

    expect(failures).toEqual([]);
    expect(answers).toHaveLength(total);
    for (const a of answers)
      expect(a.status === 200 || (a.status === 503 && a.retryAfter !== null), `request ${a.i}: ${a.status}`).toBe(true);
    expect(mismatched).toEqual([]);
    expect(dupes).toBe(0);
    // HAProxy answers only for requests a replica took to its grave; each left at most a reserved record.
    const byLb = answers.filter((a) => a.byHaproxy).length;
    expect(orphans.length).toBeLessThanOrEqual(byLb);
    for (const o of orphans) expect(o.status).toBeNull();
    expect(rows.length).toBe(named.length + orphans.length);
    expect(exited).toEqual([]);
    expect(notReady).toEqual([]);
    expect(crashes).toEqual([]);
    expect(named.every((a) => byId.get(a.id as string)?.key_id?.startsWith('key_'))).toBe(true);
  });
});
