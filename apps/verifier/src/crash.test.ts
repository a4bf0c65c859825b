/**
 * kill -9 under load: the verifier makes each record durable before the answer completes —
 * before the JSON answer is sent, before `message_stop` of a stream — so after a crash every
 * answered request is in the database and the database is consistent.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { devEnvironment } from './config.js';
import { addKey, spawnVerifier } from './spawned.test-util.js';

describe('kill -9 under load', () => {
  it.each([
    ['JSON', false],
    ['SSE', true],
  ])('leaves a consistent database holding every answered request (%s)', { timeout: 120_000 }, async (_kind, stream) => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-crash-'));
    const env = {
      ...process.env,
      ...devEnvironment({ database: join(dir, 'verifier.db'), salt: 'crash-salt' }),
      MOAT_VERIFIER_LOG_LEVEL: 'silent',
    };
    const { key } = addKey(env, 'crash');
    const { child, url } = await spawnVerifier(env);
    const answered: string[] = [];
    let stop = false;
    const worker = async () => {
      while (!stop) {
        try {
          const res = await fetch(`${url}/v1/messages`, {
            method: 'POST',
            headers: { 'x-api-key': key, 'content-type': 'application/json' },
            body: JSON.stringify({
              model: 'claude-mock',
              max_tokens: 16,
              stream,
              messages: [{ role: 'user', content: `load ${answered.length}` }],
            }),
          });
          const text = await res.text();
          // A streamed answer counts once the client saw message_stop (it may send its next turn then).
          if (res.status === 200 && (!stream || text.includes('event: message_stop')))
            answered.push(res.headers.get('moat-request-id') as string);
        } catch {
          return; // the server is gone
        }
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    await new Promise((r) => setTimeout(r, 2_500));
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    stop = true;
    await exited;
    await Promise.all(workers);
    expect(answered.length).toBeGreaterThan(50);

    const db = new Database(join(dir, 'verifier.db'), { readonly: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      const ids = new Set((db.prepare('SELECT id FROM records').all() as Array<{ id: string }>).map((r) => r.id));
      const lost = answered.filter((id) => !ids.has(id));
      expect(lost).toEqual([]);
      expect(ids.size).toBeGreaterThanOrEqual(answered.length);
    } finally {
      db.close();
    }
  });
});
