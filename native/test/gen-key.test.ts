/**
 * `scripts/gen-key.mjs` with the app's client settings (what `moat-verifier provision`
 * writes): the release key id is compiled in, no development key stays beside it, and a build
 * made under another key id is discarded so the next build compiles the new key.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('../', import.meta.url).pathname;

function genKey(dir: string, env: Record<string, string>): string {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !['INIT_CWD', 'MOAT_ATTEST_KEY', 'MOAT_CLIENT_SETTINGS', 'MOAT_DEV_KEY_FILE'].includes(k)),
  );
  return execFileSync(process.execPath, [join(dir, 'scripts', 'gen-key.mjs')], { env: { ...clean, ...env }, encoding: 'utf8' });
}
const kidOf = (dir: string) => /#define MOAT_KID "([^"]*)"/.exec(readFileSync(join(dir, 'src/generated/key.h'), 'utf8'))?.[1];

describe('gen-key with the app’s client settings', () => {
  it('compiles the release key from INIT_CWD/moat.client.json, removes the dev key and the stale build', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-gen-key-'));
    cpSync(join(root, 'scripts'), join(dir, 'scripts'), { recursive: true });
    genKey(dir, {});
    const dev = JSON.parse(readFileSync(join(dir, '.moat-dev-key.json'), 'utf8')) as { kid: string };
    expect(kidOf(dir)).toBe(dev.kid);
    mkdirSync(join(dir, 'build', 'Release'), { recursive: true });

    const app = mkdtempSync(join(tmpdir(), 'moat-gen-key-app-'));
    const settings = { userAgentProduct: 'acme', salt: 's', attestationKid: 'k20261206_abcdef', attestationKey: 'ab'.repeat(32) };
    writeFileSync(join(app, 'moat.client.json'), JSON.stringify(settings));
    expect(genKey(dir, { INIT_CWD: app })).toContain('release key k20261206_abcdef');
    expect(kidOf(dir)).toBe('k20261206_abcdef');
    expect(existsSync(join(dir, '.moat-dev-key.json'))).toBe(false);
    expect(existsSync(join(dir, 'build'))).toBe(false);
  });

  it("reads a relative MOAT_CLIENT_SETTINGS from the app's folder, not the package's", () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-gen-key-'));
    cpSync(join(root, 'scripts'), join(dir, 'scripts'), { recursive: true });
    const app = mkdtempSync(join(tmpdir(), 'moat-gen-key-app-'));
    mkdirSync(join(app, 'secrets'));
    const settings = { attestationKid: 'k_rel', attestationKey: 'cd'.repeat(32) };
    writeFileSync(join(app, 'secrets', 'client.json'), JSON.stringify(settings));
    genKey(dir, { INIT_CWD: app, MOAT_CLIENT_SETTINGS: 'secrets/client.json' });
    expect(kidOf(dir)).toBe('k_rel');
  });

  it('refuses a settings file without a usable key, naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-gen-key-'));
    cpSync(join(root, 'scripts'), join(dir, 'scripts'), { recursive: true });
    const file = join(dir, 'settings.json');
    writeFileSync(file, JSON.stringify({ attestationKid: 'k1', attestationKey: 'short' }));
    expect(() => genKey(dir, { MOAT_CLIENT_SETTINGS: file })).toThrow(/attestationKey in .*settings\.json as 64-128 hex digits/);
  });
});
