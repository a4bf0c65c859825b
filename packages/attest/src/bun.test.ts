import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { readDevKey } from '@moat/native/dev-key';
import { type RequestComponents, receivedRequestComponents } from '@moat/protocol';
import { describe, expect, it } from 'vitest';
import { AttestationKeyring, MemoryNonceStore, verifyAttestation } from './server.js';

const require = createRequire(import.meta.url);
const bun = join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe');
const dev = readDevKey() as {
  kid: string;
  key: string;
};
const client = new URL('../dist/client.js', import.meta.url).pathname;

const script = `
const { createAttestedFetch } = await import(process.argv[2]);
const f = createAttestedFetch({ onWarning: (m) => console.log('WARN ' + m) });
const res = await f(process.argv[3], { method: 'POST', body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'from bun' }] }) });
const reader = res.body.getReader();
let text = '';
for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
console.log(res.status + ' ' + text.split('\\n').filter(Boolean).length + ' ' + (typeof Bun !== 'undefined' ? 'bun' : 'node'));
`;

describe('under Bun', () => {
  it('loads the same addon, stamps below JavaScript and streams the response', { timeout: 60_000 }, async () => {
    const bodies: Buffer[] = [];
    const requests: RequestComponents[] = [];
    const server = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      bodies.push(Buffer.concat(chunks));
      requests.push(receivedRequestComponents({ method: req.method ?? '', target: req.url ?? '', headers: req.headers }));
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"n":0}\n\n');
      setTimeout(() => res.end('data: {"n":1}\n\n'), 20);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/messages`;
      const run = await new Promise<{ stdout: string; stderr: string; status: number | null }>((resolve) => {
        // spawn asynchronously: the server answering the request lives in this process.
        const { spawn } = require('node:child_process') as typeof import('node:child_process');
        const file = join(mkdtempSync(join(tmpdir(), 'moat-bun-')), 'client.mjs');
        writeFileSync(file, script);
        const child = spawn(bun, ['run', file, client, url], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('close', (status) => resolve({ stdout, stderr, status }));
      });
      expect(run.stderr).toBe('');
      expect(run.stdout.trim()).toBe('200 2 bun');
      const keyring = new AttestationKeyring([{ kid: dev.kid, key: new Uint8Array(Buffer.from(dev.key, 'hex')) }]);
      const request = requests[0] as RequestComponents;
      expect(await verifyAttestation(bodies[0] as Buffer, { keyring, nonceStore: new MemoryNonceStore(), request })).toMatchObject({
        signal: 'valid',
        binding: 'request',
      });
      expect(spawnSync(bun, ['--version'], { encoding: 'utf8' }).stdout.trim()).toMatch(/^1\./);
    } finally {
      server.close();
    }
  });
});
