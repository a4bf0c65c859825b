import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
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
