import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { decoyPeriod, decoyResult, decoyTools, findDecoyCall } from './decoys.js';
import { CanaryIndex } from './trace.js';

const secret = new Uint8Array(32).fill(0x5a);
const period = 2925;
// The shape the Messages API accepts for a custom tool.
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

describe('decoy tools', () => {
  it('are valid Messages tool definitions with valid JSON-Schema inputs', () => {
    const ajv = new Ajv({ strict: true });
    for (let k = 0; k < 200; k++) {
      for (const { tool, canary } of decoyTools({ secret, apiKeyId: `key_${k}`, period })) {
        expect(tool.name).toMatch(TOOL_NAME);
        expect(tool.description.length).toBeGreaterThan(20);
        expect(tool.input_schema.type).toBe('object');
        for (const r of tool.input_schema.required) expect(tool.input_schema.properties).toHaveProperty(r);
        expect(() => ajv.compile(tool.input_schema)).not.toThrow();
        expect(JSON.stringify(tool)).toContain(canary);
      }
    }
  });

  it('are deterministic per key and period, and rotate with the period', () => {
    const a = decoyTools({ secret, apiKeyId: 'key_1', period });
    expect(decoyTools({ secret, apiKeyId: 'key_1', period })).toEqual(a);
    expect(decoyTools({ secret, apiKeyId: 'key_1', period: period + 1 }).map((d) => d.tool.name)).not.toEqual(a.map((d) => d.tool.name));
    expect(decoyTools({ secret: new Uint8Array(32).fill(1), apiKeyId: 'key_1', period }).map((d) => d.tool.name)).not.toEqual(
      a.map((d) => d.tool.name),
    );
    expect(decoyPeriod(0)).toBe(0);
    expect(decoyPeriod(7 * 24 * 3600 * 1000 * 10 + 5)).toBe(10);
  });

  it('are distinct across 10,000 keys', { timeout: 60_000 }, () => {
    const sets = new Set<string>();
    const canaries = new Set<string>();
    for (let k = 0; k < 10_000; k++) {
      const decoys = decoyTools({ secret, apiKeyId: `key_${k}`, period });
      sets.add(decoys.map((d) => d.tool.name).join(','));
      for (const d of decoys) canaries.add(d.canary);
    }
    expect(sets.size).toBe(10_000);
    expect(canaries.size).toBe(30_000);
  });

  it('never take the name of a real tool of the request', () => {
    const first = decoyTools({ secret, apiKeyId: 'key_9', period });
    const avoid = first.map((d) => d.tool.name);
    const again = decoyTools({ secret, apiKeyId: 'key_9', period, avoid });
    for (const d of again) expect(avoid).not.toContain(d.tool.name);
  });

  it('answer a decoy call plausibly and deterministically', () => {
    const [decoy] = decoyTools({ secret, apiKeyId: 'key_2', period });
    const call = { id: 'toolu_1', name: decoy?.tool.name as string, input: { account_id: decoy?.canary } };
    expect(findDecoyCall(call, decoyTools({ secret, apiKeyId: 'key_2', period }))).toEqual(decoy);
    expect(findDecoyCall({ name: 'get_weather' }, [decoy as never])).toBeUndefined();
    const result = decoyResult(call, secret);
    expect(result).toEqual(decoyResult(call, secret));
    expect(result.tool_use_id).toBe('toolu_1');
    expect(JSON.parse(result.content)).toMatchObject({ status: 'ok' });
  });

  it('refuse a short secret', () => {
    expect(() => decoyTools({ secret: new Uint8Array(16), apiKeyId: 'k', period })).toThrow(/at least 32 bytes/);
  });
});

describe('canary tracing', () => {
  const keys = Array.from({ length: 1_000 }, (_, i) => `key_${i.toString(36).padStart(4, '0')}`);
  const index = new CanaryIndex({ secret, keys, periods: [period - 1, period] });

  it('names the right key among 1,000 from a transcript with one decoy call', () => {
    for (const target of [keys[17], keys[503], keys[998]] as string[]) {
      const [decoy] = decoyTools({ secret, apiKeyId: target, period });
      const transcript = `User: reconcile my books\nAssistant: [tool_use name=${decoy?.tool.name} input={"region":"eu-west-2"}]\nTool: {"status":"ok"}`;
      const found = index.trace(transcript);
      expect(found[0]?.apiKeyId).toBe(target);
      expect(found.filter((f) => f.apiKeyId !== target).every((f) => f.confidence < (found[0]?.confidence ?? 1))).toBe(true);
    }
  });

  it('is more confident with the canary identifier as well', () => {
    const [decoy] = decoyTools({ secret, apiKeyId: keys[42] as string, period: period - 1 });
    const found = index.trace(`called ${decoy?.tool.name} with {"account_id":"${decoy?.canary}"}`);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ apiKeyId: keys[42] });
    expect(found[0]?.confidence).toBeGreaterThan(0.98);
  });

  it('names no one in clean corpora', () => {
    const require = createRequire(import.meta.url);
    const ts = dirname(require.resolve('typescript/package.json', { paths: [join(process.cwd(), '../..')] }));
    const texts = [
      ...readdirSync(join(ts, 'lib'))
        .filter((f) => f.endsWith('.d.ts'))
        .slice(0, 40)
        .map((f) => readFileSync(join(ts, 'lib', f), 'utf8')),
      readFileSync(new URL('../../protocol/SPEC.md', import.meta.url), 'utf8'),
      randomBytes(200_000).toString('base64'),
    ];
    let bytes = 0;
    for (const text of texts) {
      bytes += text.length;
      expect(index.trace(text)).toEqual([]);
    }
    expect(bytes).toBeGreaterThan(1_000_000);
  });
});
