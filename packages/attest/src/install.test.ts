/**
 * A consumer with neither a prebuild nor a compiled addon: @moat/attest installed alone from
 * its packed tarball with optional dependencies omitted still sends every request, marked
 * unattested, and the server sees exactly that.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packedConsumer } from '@moat/test-kit/packed-consumer';
import { describe, expect, it } from 'vitest';

const CONSUMER = `
import { createServer } from 'node:http';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createAttestedFetch } from '@moat/attest/client';
import { AttestationKeyring, MemoryNonceStore, verifyAttestation } from '@moat/attest/server';

const keyring = new AttestationKeyring([{ kid: 'k1', key: randomBytes(32) }]);
const server = createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const verdict = await verifyAttestation(Buffer.concat(chunks), {
    keyring,
    nonceStore: new MemoryNonceStore(),
    clientUnavailable: req.headers['moat-attestation']?.startsWith('unavailable') ?? false,
  });
  res.end(verdict.signal);
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const reasons = [];
const attestedFetch = createAttestedFetch({ onWarning: () => {}, onUnattested: (r) => reasons.push(r) });
const res = await attestedFetch('http://127.0.0.1:' + server.address().port + '/v1/messages', {
  method: 'POST',
  body: JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'Hello' }] }),
});
console.log(res.status, await res.text(), JSON.stringify(reasons));
server.close();
`;

describe('install without the native addon', () => {
  it('@moat/attest alone from its tarball fails open: the request goes through, unattested', { timeout: 180_000 }, () => {
    const consumer = packedConsumer(['protocol', 'attest'], { omitOptional: true });
    expect(existsSync(join(consumer.dir, 'node_modules/@moat/native'))).toBe(false);
    const [status, signal, reasons] = consumer.run(CONSUMER).trim().split(' ');
    expect(status).toBe('200');
    expect(signal).toBe('unavailable');
    expect(JSON.parse(reasons as string)).toHaveLength(1);
  });
});
