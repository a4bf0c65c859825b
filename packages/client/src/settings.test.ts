import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MoatClientError, readClientSettings } from './index.js';

const file = (content: string) => {
  const path = join(mkdtempSync(join(tmpdir(), 'moat-settings-')), 'moat.client.json');
  writeFileSync(path, content);
  return path;
};

describe('readClientSettings', () => {
  it('returns the provisioned salt and product, never the attestation key', () => {
    const path = file(
      JSON.stringify({ userAgentProduct: 'acme-chat', salt: 'pepper', attestationKid: 'k1', attestationKey: 'ab'.repeat(32) }),
    );
    expect(readClientSettings(path)).toEqual({ salt: 'pepper', userAgentProduct: 'acme-chat' });
  });

  it('a missing or incomplete file is ERR_SETTINGS naming the file', () => {
    const missing = join(tmpdir(), 'no-such-dir-moat', 'moat.client.json');
    expect(() => readClientSettings(missing)).toThrow(MoatClientError);
    expect(() => readClientSettings(missing)).toThrow(/moat-verifier provision/);
    const partial = file(JSON.stringify({ salt: 'pepper' }));
    expect(() => readClientSettings(partial)).toThrow(/expected salt and userAgentProduct strings in .*, got string and undefined/);
  });
});
