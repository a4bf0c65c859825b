import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';

const client = new URL('../dist/client.js', import.meta.url).href;

describe('without the addon', () => {
  it('a process whose addon will not load still gets its answer, tagged unattested, with one warning', { timeout: 30_000 }, async () => {
    const seen: IncomingHttpHeaders[] = [];
    const server = createServer((req, res) => {
      seen.push(req.headers);
      req.resume();
      req.on('end', () => res.end('{"ok":true}'));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/messages`;
    const code = `
      const { createAttestedFetch } = await import(${JSON.stringify(client)});
      const f = createAttestedFetch({ onWarning: (m) => console.error(m) });
      for (let i = 0; i < 2; i++) console.log(await (await f(${JSON.stringify(url)}, { method: 'POST', body: '{"model":"m"}' })).text());
    `;
    try {
      const child = spawn(process.execPath, ['--input-type=module', '-e', code], { env: { ...process.env, MOAT_NATIVE_DISABLE: '1' } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const [status] = (await once(child, 'close')) as [number];
      expect(status).toBe(0);
      expect(stdout.trim().split('\n')).toEqual(['{"ok":true}', '{"ok":true}']);
      expect(stderr.trim().split('\n')).toHaveLength(1);
      expect(stderr).toMatch(/native addon unavailable \(the native addon is disabled/);
      expect(seen.map((h) => h['moat-attestation'])).toEqual(['unavailable; reason=addon_missing', 'unavailable; reason=addon_missing']);
    } finally {
      server.close();
    }
  });
});
