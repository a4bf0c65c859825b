/**
 * Claude Code itself (`@anthropic-ai/claude-code` from npm, its native binary) against a
 * verifier started with the default settings and the embedded mock: `claude -p` completes a
 * prompt as text and as `stream-json`, and its requests are recorded.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claudeBinary } from './claude-code.test-util.js';
import { devEnvironment, loadConfig } from './config.js';
import { createVerifier, type Verifier } from './server.js';

const run = promisify(execFile);

const claude = claudeBinary();
let verifier: Verifier;
let base = '';
let apiKey = '';

beforeAll(async () => {
  verifier = await createVerifier(loadConfig(devEnvironment()), { logLevel: 'silent' });
  base = await verifier.listen();
  apiKey = (await verifier.storage.createApiKey('claude-code')).key;
});
afterAll(() => verifier.close());

function env(): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '',
    HOME: mkdtempSync(join(tmpdir(), 'moat-claude-home-')),
    ANTHROPIC_BASE_URL: base,
    ANTHROPIC_API_KEY: apiKey,
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_ERROR_REPORTING: '1',
  };
}

describe.skipIf(claude === undefined)('Claude Code against the verifier', { timeout: 120_000 }, () => {
  it('completes `claude -p` as text, and the request is recorded', async () => {
    const before = (await verifier.storage.summary()).total;
    const { stdout } = await run(claude as string, ['-p', 'Say hello to the verifier'], { env: env(), timeout: 90_000 });
    expect(stdout).toContain('Echo: ');
    const records = await verifier.storage.queryRecords({ limit: 10 });
    expect((await verifier.storage.summary()).total).toBeGreaterThan(before);
    expect(records.every((r) => r.status === 200)).toBe(true);
    // Claude Code sends no Moat evidence: recorded as such, flagged by the default policy, still served.
    expect(records[0]).toMatchObject({ attestation: 'missing', fingerprint: 'missing', verdict: 'flag' });
  });

  it('reads a file through the verifier: the mock calls Read with the path the prompt names', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-claude-read-'));
    const file = join(dir, 'notes.txt');
    writeFileSync(file, 'the secret word is pelican-42\n');
    const { stdout } = await run(claude as string, ['-p', `Read ${file}`, '--allowedTools', 'Read'], {
      env: env(),
      cwd: dir,
      timeout: 90_000,
    });
    // The answer quotes the tool's result: Claude Code ran Read with the mock's input and sent the file back.
    expect(stdout).toContain('pelican-42');
    const [last] = await verifier.storage.queryRecords({ limit: 1 });
    expect(last).toMatchObject({ status: 200 });
  });

  it('completes `claude -p --output-format stream-json --verbose`', async () => {
    const { stdout } = await run(claude as string, ['-p', 'Say hello again', '--output-format', 'stream-json', '--verbose'], {
      env: env(),
      timeout: 90_000,
    });
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; subtype?: string; is_error?: boolean; result?: string });
    const result = lines.find((l) => l.type === 'result');
    expect(result).toMatchObject({ subtype: 'success', is_error: false });
    expect(result?.result).toContain('Echo: ');
  });
});
