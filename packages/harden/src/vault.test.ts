import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTelemetryBatch } from '@moat/protocol';
import { describe, expect, it, onTestFinished } from 'vitest';
import { nobodyCopy } from '../test/nobody.ts';
import { HardenError, harden, hardenStatusEvent, openTokenFile, tracerPid } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'moat-vault-'));
chmodSync(dir, 0o755);
const tokenFile = (name: string, content: string, mode = 0o600) => {
  const path = join(dir, name);
  writeFileSync(path, content, { mode });
  chmodSync(path, mode);
  return path;
};

describe('read-once token vault', () => {
  it('keeps the file until commit(), deletes it after, and hands the token out by callback', async () => {
    const path = tokenFile('token', 'sk-ant-abc123\n');
    const warnings: string[] = [];
    const vault = await openTokenFile(path, { onWarning: (m) => warnings.push(m) });
    expect(existsSync(path)).toBe(true);
    expect(vault.use((t) => t.toString())).toBe('sk-ant-abc123');
    expect(vault.protection).toEqual({ locked: true, dontdump: true });
    expect(await vault.commit()).toEqual({ deleted: true });
    expect(existsSync(path)).toBe(false);
    expect(await vault.commit()).toEqual({ deleted: false, reason: 'no file' });
    vault.dispose();
    expect(() => vault.use((t) => t)).toThrow(HardenError);
    expect(warnings).toEqual([]);
  });

  it('a failed start (no commit) leaves the file for the retry', async () => {
    const path = tokenFile('retry', 'sk-ant-retry');
    const first = await openTokenFile(path);
    first.dispose(); // the relay did not come up: no commit
    expect(existsSync(path)).toBe(true);
    const second = await openTokenFile(path);
    expect(second.use((t) => t.toString())).toBe('sk-ant-retry');
    await second.commit();
    expect(existsSync(path)).toBe(false);
  });

  it('wipes the token on dispose', async () => {
    const vault = await openTokenFile(tokenFile('wipe', 'sk-ant-wipe'));
    let view: Buffer | undefined;
    vault.use((t) => {
      view = t;
    });
    vault.dispose();
    expect(view?.every((b) => b === 0)).toBe(true);
  });

  it('warns about group- or world-readable files, and refuses empty, oversized or missing ones', async () => {
    const warnings: string[] = [];
    await openTokenFile(tokenFile('loose', 'sk-ant-loose', 0o644), { onWarning: (m) => warnings.push(m) });
    expect(warnings[0]).toMatch(/readable by group or others \(mode 644\); use 0600/);
    await expect(openTokenFile(tokenFile('empty', ' \n'))).rejects.toThrow(/ERR_TOKEN_FILE: expected a non-empty token/);
    await expect(openTokenFile(tokenFile('big', 'x'.repeat(100)), { maxBytes: 64 })).rejects.toThrow(/at most 64 bytes, got 100 bytes/);
    await expect(openTokenFile(join(dir, 'missing'))).rejects.toThrow(/expected a readable token file .* got ENOENT/);
    const error = await openTokenFile(tokenFile('empty2', '')).catch((e) => e);
    expect(error).toBeInstanceOf(HardenError);
    expect(error.message).not.toContain('sk-ant');
  });

  it('refuses a named pipe without waiting for a writer, and other special files, as not regular', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    // Should an open ever block on the pipe again, opening its other end releases it, so the
    // failure is reported and the run does not hang.
    onTestFinished(() => closeSync(openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK)));
    await expect(openTokenFile(fifo)).rejects.toThrow(/ERR_TOKEN_FILE: expected a regular file at .*fifo, got a named pipe/);
    await expect(openTokenFile(dir)).rejects.toThrow(/ERR_TOKEN_FILE: expected a regular file at .*, got a directory/);
    await expect(openTokenFile('/dev/zero')).rejects.toThrow(
      /ERR_TOKEN_FILE: expected a regular file at \/dev\/zero, got a character device/,
    );
    const socket = join(dir, 'socket');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const error = await openTokenFile(socket).catch((e) => e);
    expect(error).toBeInstanceOf(HardenError);
    expect(error.code).toBe('ERR_TOKEN_FILE');
  });

  it('an undeletable file gives a warning and the program continues', () => {
    // As nobody, in a root-owned directory: unlink fails with EACCES.
    const locked = join(dir, 'locked');
    mkdirSync(locked, { mode: 0o755 });
    chmodSync(locked, 0o755);
    const path = join(locked, 'token');
    writeFileSync(path, 'sk-ant-locked');
    chmodSync(path, 0o644);
    const script = nobodyCopy(new URL('../test/undeletable.mjs', import.meta.url).pathname)['undeletable.mjs'] as string;
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, script, path], {
      encoding: 'utf8',
      cwd: '/tmp',
    });
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { length: number; result: { deleted: boolean; reason: string }; warnings: string[] };
    expect(out.length).toBe('sk-ant-locked'.length);
    expect(out.result).toEqual({ deleted: false, reason: 'EACCES' });
    expect(out.warnings.some((w) => /could not be deleted \(EACCES\); it stays on disk/.test(w))).toBe(true);
    expect(existsSync(path)).toBe(true);
  });

  it('without the addon, tokens live in ordinary memory, with a warning', async () => {
    const warnings: string[] = [];
    const vault = await openTokenFile(tokenFile('plain', 'sk-ant-plain'), { native: null, onWarning: (m) => warnings.push(m) });
    expect(vault.protection).toEqual({ locked: false, dontdump: false });
    expect(vault.use((t) => t.toString())).toBe('sk-ant-plain');
    expect(warnings[0]).toMatch(/token kept in ordinary memory/);
  });
});

describe('report and telemetry', () => {
  it('reports the tracer state and gives a valid harden_status event', async () => {
    expect(await tracerPid()).toBe(0);
    // In this (root) test process: the call succeeds; root can still attach, which is why
    // the attack tests run unprivileged.
    const report = await harden({
      native: {
        setUndumpable: () => 0,
        getDumpable: () => 0,
        secureBuffer: () => ({ buffer: Buffer.alloc(1), locked: true, dontdump: true }),
        scrubEnvBlock: () => 0,
      },
    });
    expect(report).toMatchObject({ dumpable: false, tracerPid: 0, applied: ['undumpable', 'tracer_check'], skipped: [] });
    const failing = await harden({
      native: {
        setUndumpable: () => 1,
        getDumpable: () => 1,
        secureBuffer: () => ({ buffer: Buffer.alloc(1), locked: true, dontdump: true }),
        scrubEnvBlock: () => 0,
      },
      onWarning: () => {},
    });
    expect(failing.skipped).toEqual([{ step: 'undumpable', reason: 'errno_1' }]);
    const event = hardenStatusEvent(failing, 1_764_000_000_000);
    const batch = parseTelemetryBatch({ v: 1, client: { cv: '1.4.2', ep: 'cli' }, events: [event] });
    expect(batch.events[0]).toEqual({
      type: 'harden_status',
      ts: 1_764_000_000,
      dumpable: true,
      tracer: 0,
      platform: 'linux',
      skipped: ['undumpable:errno_1'],
    });
  });
});
