/** The stamp's binding is recorded: `/admin/records` returns and filters it, the dashboard has its column and filter. */
import { createAttestedFetch } from '@moat/attest/client';
import { devKeyFile } from '@moat/native/dev-key';
import { describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { DASHBOARD_HTML } from './dashboard.js';
import { createVerifier } from './server.js';

const ADMIN = 'binding-admin-token-0123456789';

describe('binding in the records', () => {
  it('an attested request is binding=request, a plain one binding=none; both filterable', async () => {
    const verifier = await createVerifier(loadConfig(devEnvironment({ adminToken: ADMIN, attestationKeyFile: devKeyFile })), {
      logLevel: 'silent',
    });
    try {
      const base = await verifier.listen();
      const { key } = await verifier.storage.createApiKey('binding');
      const body = JSON.stringify({ model: 'claude-mock', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
      const init = { method: 'POST', headers: { 'x-api-key': key }, body };
      await (await createAttestedFetch()(`${base}/v1/messages`, init)).arrayBuffer();
      await (await fetch(`${base}/v1/messages`, init)).arrayBuffer();
      const query = async (q: string) => {
        const res = await fetch(`${base}/admin/records${q}`, { headers: { authorization: `Bearer ${ADMIN}` } });
        return ((await res.json()) as { records: Array<{ binding?: string; attestation: string }> }).records;
      };
      expect((await query('')).map((r) => [r.attestation, r.binding])).toEqual([
        ['missing', 'none'],
        ['valid', 'request'],
      ]);
      expect((await query('?binding=request')).map((r) => r.attestation)).toEqual(['valid']);
      expect(DASHBOARD_HTML).toContain('<th>binding</th>');
    } finally {
      await verifier.close();
    }
  });
});
