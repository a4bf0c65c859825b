import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decoyPeriod, decoyTools } from './decoys.js';

const cli = new URL('../dist/cli/moat-distill.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'moat-distill-'));
const secretHex = 'ab'.repeat(32);
const secret = new Uint8Array(Buffer.from(secretHex, 'hex'));
const keys = Array.from({ length: 1_000 }, (_, i) => `key_${i}`);
writeFileSync(join(dir, 'secret'), `${secretHex}\n`);
writeFileSync(join(dir, 'keys.txt'), `# verifier key identities\n${keys.join('\n')}\n`);
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('moat-distill trace', { timeout: 60_000 }, () => {
  it('names the leaking key from recorded data (exit 1) and nothing in clean data (exit 0)', () => {
    // A decoy served two periods ago still traces.
    const [decoy] = decoyTools({ secret, apiKeyId: 'key_777', period: decoyPeriod() - 2 });
    writeFileSync(
      join(dir, 'dataset.jsonl'),
      `{"prompt":"sync books","completion":"I will call ${decoy?.tool.name} now."}\n{"prompt":"hi","completion":"hello"}\n`,
    );
    writeFileSync(join(dir, 'clean.jsonl'), '{"prompt":"hi","completion":"hello"}\n');
    const found = run(
      'trace',
      '--secret-file',
      join(dir, 'secret'),
      '--keys',
      join(dir, 'keys.txt'),
      join(dir, 'dataset.jsonl'),
      join(dir, 'clean.jsonl'),
    );
    expect(found.status).toBe(1);
    expect(found.stdout).toMatch(/dataset\.jsonl: key_777 {2}confidence 0\.750 {2}\(name [a-z_]+\)/);
    expect(found.stdout).toMatch(/clean\.jsonl: no decoys of the 1000 keys found/);
    const json = run('trace', '--json', '--secret-file', join(dir, 'secret'), '--keys', join(dir, 'keys.txt'), join(dir, 'dataset.jsonl'));
    expect(JSON.parse(json.stdout)[0].attributions[0].apiKeyId).toBe('key_777');
    expect(run('trace', '--secret-file', join(dir, 'secret'), '--keys', join(dir, 'keys.txt'), join(dir, 'clean.jsonl')).status).toBe(0);
  });

  it('with --verifier: takes the key identities from it and reports the decoy hits it recorded', async () => {
    const token = 'admin-token-for-the-test';
    writeFileSync(join(dir, 'admin-token'), `${token}\n`);
    const server = createServer((req, res) => {
      if (req.headers.authorization !== `Bearer ${token}`) return res.writeHead(401).end('{}');
      if (req.url !== '/admin/keys') return res.writeHead(404).end('{}');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          keys: [
            { id: 'key_777', label: 'leaker', decoyHits: 0 },
            { id: 'key_9', label: 'distiller', decoyHits: 3 },
          ],
        }),
      );
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // The server answers in this process: the CLI runs asynchronously.
    const runAsync = (...args: string[]) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [cli, ...args]);
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('close', (status) => resolve({ status, stdout, stderr }));
      });
    /** `moat-distill trace` against the verifier, with the admin token in `tokenFile`. */
    const traceVerifier = (tokenFile: string, ...rest: string[]) =>
      runAsync('trace', '--secret-file', join(dir, 'secret'), '--verifier', url, '--admin-token-file', join(dir, tokenFile), ...rest);
    try {
      const traced = await traceVerifier('admin-token', join(dir, 'dataset.jsonl'));
      expect(traced.stderr).toBe('');
      expect(traced.status).toBe(1);
      expect(traced.stdout).toMatch(/dataset\.jsonl: key_777 {2}confidence 0\.750/);
      expect(traced.stdout).toMatch(/verifier: key_9 \(distiller\) {2}3 requests brought decoys back/);
      const json = await traceVerifier('admin-token', '--json');
      expect(JSON.parse(json.stdout)).toEqual({ files: [], decoyHits: [{ id: 'key_9', label: 'distiller', decoyHits: 3 }] });
      writeFileSync(join(dir, 'wrong-token'), 'nope');
      const refused = await traceVerifier('wrong-token');
      expect(refused.status).toBe(2);
      expect(refused.stderr).toMatch(/GET \/admin\/keys answered 401/);
    } finally {
      server.close();
    }
    const down = await runAsync(
      'trace',
      '--secret-file',
      join(dir, 'secret'),
      '--verifier',
      'http://127.0.0.1:9',
      '--admin-token-file',
      join(dir, 'admin-token'),
    );
    expect(down.status).toBe(2);
    expect(down.stderr).toMatch(/unreachable/);
  });

  it('prints key ids, labels and file names escaped: a label cannot forge lines or send terminal codes', async () => {
    const forged = 'ceo)\r\nverifier: key_1 (intern)  99 requests brought decoys back\u001b[2J\u0007\u009b31m\u202e';
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [{ id: 'key_7\u001b]0;x\u0007', label: forged, decoyHits: 2 }] }));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    writeFileSync(join(dir, 'admin-token-2'), 'token\n');
    const out = await new Promise<string>((resolve) => {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const child = spawn(process.execPath, [
        cli,
        'trace',
        '--secret-file',
        join(dir, 'secret'),
        '--verifier',
        url,
        '--admin-token-file',
        join(dir, 'admin-token-2'),
      ]);
      let stdout = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.on('close', () => resolve(stdout));
    });
    server.close();
    expect(out.split('\n').filter((l) => l !== '')).toEqual([
      'verifier: key_7\\u001b]0;x\\u0007 (ceo)\\u000d\\u000averifier: key_1 (intern)  99 requests brought decoys back' +
        '\\u001b[2J\\u0007\\u009b31m\\u202e)  2 requests brought decoys back',
    ]);
  });

  it('exits 2 with a reason on bad usage', () => {
    expect(run('frobnicate').stderr).toMatch(/expected the command "trace"/);
    expect(run('trace', join(dir, 'clean.jsonl')).status).toBe(2);
    writeFileSync(join(dir, 'short'), 'abcd');
    const short = run('trace', '--secret-file', join(dir, 'short'), '--keys', join(dir, 'keys.txt'), join(dir, 'clean.jsonl'));
    expect(short.status).toBe(2);
    expect(short.stderr).toMatch(/at least 32 bytes, got 4/);
    expect(run('trace', '--secret-file', join(dir, 'secret'), '--keys', join(dir, 'keys.txt'), '--periods', '0', 'x').stderr).toMatch(
      /--periods/,
    );
    expect(run('trace', '--secret-file', join(dir, 'secret'), '--keys', join(dir, 'keys.txt'), join(dir, 'missing')).stderr).toMatch(
      /cannot read/,
    );
  });
});
