import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';
import { VerifierConfigError } from './errors.js';
import { provision } from './provision.js';

const fresh = () => {
  const dir = mkdtempSync(join(tmpdir(), 'moat-provision-'));
  return { dir, configFile: join(dir, 'moat-verifier.config.json'), clientFile: join(dir, 'moat.client.json') };
};
const json = (file: string) => JSON.parse(readFileSync(file, 'utf8').replace(/^\s*\/\/.*$/gm, '')) as Record<string, unknown>;

describe('moat-verifier provision', () => {
  it('writes one salt, product and release key to both sides, mode 0600, ignored by git', () => {
    const { dir, configFile, clientFile } = fresh();
    const result = provision({ configFile, product: 'acme-chat' });
    const client = json(clientFile);
    expect(client).toMatchObject({ userAgentProduct: 'acme-chat', attestationKid: result.kid });
    expect(client.attestationKey).toMatch(/^[0-9a-f]{64}$/);
    const config = loadConfig({}, configFile, {
      MOAT_VERIFIER_ADMIN_TOKEN: 'x'.repeat(16),
      MOAT_VERIFIER_SERVER_SECRET: 'a'.repeat(64),
      MOAT_VERIFIER_SIGNING_SECRET: 'b'.repeat(64),
    });
    expect(config.fingerprintSalt).toBe(client.salt);
    expect(config.userAgentProduct).toBe('acme-chat');
    expect(config.attestationKeys).toEqual([{ kid: client.attestationKid, key: client.attestationKey }]);
    // Per-install keys: the verifier's enrollment key, on the verifier's side only, kept by a second run.
    expect(config.enrollmentKeys).toEqual([
      { kid: expect.stringMatching(/^e\d{8}[0-9a-f]{4}$/), key: expect.stringMatching(/^[0-9a-f]{64}$/) },
    ]);
    expect(JSON.stringify(client)).not.toContain(config.enrollmentKeys[0]?.key);
    provision({ configFile });
    expect(json(configFile).enrollmentKeys).toEqual(config.enrollmentKeys);
    for (const file of [configFile, clientFile]) expect(statSync(file).mode & 0o077).toBe(0);
    expect(readFileSync(join(dir, '.gitignore'), 'utf8').split('\n')).toEqual(
      expect.arrayContaining(['moat-verifier.config.json', 'moat.client.json', '.moat-verifier']),
    );
  });

  it('run again, keeps every value and adds no .gitignore line twice', () => {
    const { dir, configFile, clientFile } = fresh();
    provision({ configFile, product: 'acme-chat' });
    const before = [readFileSync(clientFile, 'utf8'), readFileSync(join(dir, '.gitignore'), 'utf8')];
    expect(provision({ configFile }).newKey).toBe(false);
    expect([readFileSync(clientFile, 'utf8'), readFileSync(join(dir, '.gitignore'), 'utf8')]).toEqual(before);
  });

  it('rotates: a new key for the client, the earlier one kept (and revoked when asked) by the verifier', () => {
    const { configFile, clientFile } = fresh();
    const first = provision({ configFile, product: 'acme-chat' });
    const salt = json(clientFile).salt;
    const second = provision({ configFile, rotate: true });
    expect(second.kid).not.toBe(first.kid);
    expect(json(clientFile)).toMatchObject({ attestationKid: second.kid, salt });
    expect((json(configFile).attestationKeys as Array<{ kid: string }>).map((k) => k.kid)).toEqual([first.kid, second.kid]);
    expect(json(configFile).revokedKids).toEqual([]);
    const third = provision({ configFile, rotate: true, revokePrevious: true });
    expect(json(configFile).revokedKids).toEqual([first.kid, second.kid]);
    expect(json(clientFile).attestationKid).toBe(third.kid);
  });

  it('names the setting at fault: no product, a config file that is not JSON', () => {
    const { configFile } = fresh();
    expect(() => provision({ configFile })).toThrow(VerifierConfigError);
    expect(() => provision({ configFile, product: 'bad name' })).toThrow(/--product: expected/);
  });
});
