import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';

// libcrypto is resolved on first use: a process that loads the addon and never hashes, stamps
// or opens an install (moat-scan, hardening alone) loads no OpenSSL library for it. Under Node
// the addon shares the OpenSSL Node exports; under Bun, which exports none, it opens
// libcrypto.so.3 at the first call that needs it.
const require = createRequire(import.meta.url);
const bun = join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe');
const index = new URL('../index.js', import.meta.url).pathname;

/** A script that reports whether libcrypto.so.3 is mapped after each step, as JSON lines. */
const script = `
const { native, loadError } = await import(${JSON.stringify(index)});
if (native === undefined) throw loadError;
const { readFileSync } = await import('node:fs');
const mapped = () => readFileSync('/proc/self/maps', 'utf8').includes('/libcrypto.so.3');
const steps = [['loaded', mapped()]];
// Each step's result first, then whether the library is mapped after it.
const step = (name, result) => steps.push([name, mapped(), result]);
const handle = native.literalsCompilePacked(Buffer.from('Nubdalmu'), new Uint32Array([8]), new Uint8Array(1), undefined, true);
step('scanned', Array.from(native.literalsScan(handle, Buffer.from('a Nubdalmu'))).join(','));
step('hardened', typeof native.setUndumpable());
step('hashed', native.sha256(Buffer.from('moat')).toString('hex'));
step('keyed', typeof native.stampKey(new Uint8Array(32).fill(7)));
console.log(JSON.stringify(steps));
`;

function run(command: string, args: string[]): Array<[string, boolean, string?]> {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) as string);
}

describe('libcrypto on first use', () => {
  const digest = createHash('sha256').update('moat').digest('hex');

  it("under Node: no libcrypto.so.3 loaded at all; hashing and keys use Node's OpenSSL and give the same digest", () => {
    const steps = run(process.execPath, ['--input-type=module', '-e', script]);
    expect(steps.map((s) => s[0])).toEqual(['loaded', 'scanned', 'hardened', 'hashed', 'keyed']);
    expect(steps.map((s) => s[1])).toEqual([false, false, false, false, false]);
    expect(steps[1]?.[2]).toBe('0,2');
    expect(steps[3]?.[2]).toBe(digest);
    expect(steps[2]?.[2]).toBe('number');
    expect(steps[4]?.[2]).toBe('object');
  });

  it('under Bun: libcrypto.so.3 opened by the first call that needs it, not by loading or scanning', { timeout: 60_000 }, () => {
    const steps = run(bun, ['-e', script]);
    expect(steps.map((s) => s[0])).toEqual(['loaded', 'scanned', 'hardened', 'hashed', 'keyed']);
    expect(steps.map((s) => s[1])).toEqual([false, false, false, true, true]);
    expect(steps[1]?.[2]).toBe('0,2');
    expect(steps[3]?.[2]).toBe(digest);
    expect(steps[4]?.[2]).toBe('object');
  });
});
