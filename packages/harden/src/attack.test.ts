/**
 * The real attack, run unprivileged: root ignores PR_SET_DUMPABLE, so the protected process
 * and the attacker both run as nobody (setpriv), and the attacker uses gdb -p and reads
 * /proc/PID/environ and /proc/PID/mem. The unhardened control must be attackable, or these
 * tests prove nothing.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nobodyCopy } from '../test/nobody.ts';

const require = createRequire(import.meta.url);
const { 'victim.mjs': victim } = nobodyCopy(new URL('../test/victim.mjs', import.meta.url).pathname) as { 'victim.mjs': string };
const bun = join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe');
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];
const TOKEN = 'sk-ant-test-0123456789abcdef';
const running: ChildProcess[] = [];

afterEach(() => {
  for (const child of running.splice(0)) child.kill('SIGKILL');
});

interface VictimInfo {
  pid: number;
  report: { dumpable: boolean | null; applied: string[]; skipped: Array<{ step: string; reason: string }> } | null;
  childSees: string | null;
  warnings: string[];
  runtime: string;
}

async function startVictim(args: string[], runtime: 'node' | 'bun' = 'node', env: Record<string, string> = {}): Promise<VictimInfo> {
  const command = runtime === 'node' ? process.execPath : bun;
  const child = spawn('setpriv', [...NOBODY, command, victim, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp', SECRET_TOKEN: TOKEN, ...env },
    cwd: '/tmp',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout?.on('data', (d) => {
      out += d;
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve(JSON.parse(line) as VictimInfo);
    });
    child.stderr?.on('data', (d) => (err += d));
    child.on('exit', (code) => reject(new Error(`victim exited ${code}: ${err}`)));
  });
}

function asNobody(command: string, args: string[]): { status: number | null; output: string } {
  const r = spawnSync('setpriv', [...NOBODY, command, ...args], { encoding: 'utf8', timeout: 30_000, cwd: '/tmp' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

function gdbAttach(pid: number): string {
  return asNobody('gdb', ['-p', String(pid), '-batch', '-nx', '-ex', 'info proc']).output;
}

describe('token scraping by a same-user process', { timeout: 120_000 }, () => {
  it('control: without harden(), gdb attaches and /proc/PID/environ gives the token away', async () => {
    const v = await startVictim([]);
    expect(gdbAttach(v.pid)).toMatch(/process \d+/);
    expect(gdbAttach(v.pid)).not.toMatch(/Operation not permitted/);
    const environ = asNobody('cat', [`/proc/${v.pid}/environ`]);
    expect(environ.status).toBe(0);
    expect(environ.output).toContain(TOKEN);
  });

  for (const runtime of ['node', 'bun'] as const) {
    it(`${runtime}: with harden(), attach and /proc reads are denied`, async () => {
      const v = await startVictim(['--harden'], runtime);
      expect(v.runtime).toBe(runtime);
      expect(v.report).toMatchObject({ dumpable: false, applied: ['undumpable', 'tracer_check'], skipped: [] });
      expect(gdbAttach(v.pid)).toMatch(/ptrace: Operation not permitted/);
      for (const file of ['environ', 'mem', 'maps']) {
        const read = asNobody('cat', [`/proc/${v.pid}/${file}`]);
        expect(read.status, file).not.toBe(0);
        expect(read.output, file).toMatch(/Permission denied/);
        expect(read.output).not.toContain(TOKEN);
      }
    });
  }

  it('scrubbed: the token is gone from /proc/PID/environ (even for root) and from a child', async () => {
    const v = await startVictim(['--scrub']);
    expect(v.childSees).toBe('undefined');
    expect(v.warnings).toEqual([]);
    const environ = execFileSync('cat', [`/proc/${v.pid}/environ`]).toString('latin1');
    expect(environ).toContain('SECRET_TOKEN=');
    expect(environ).not.toContain(TOKEN);
  });

  it('fail-open: with the addon disabled, harden() reports why and the program runs on', async () => {
    const v = await startVictim(['--harden', '--scrub'], 'node', { MOAT_NATIVE_DISABLE: '1' });
    expect(v.report?.skipped).toEqual([{ step: 'undumpable', reason: 'addon_missing' }]);
    expect(v.report?.dumpable).toBeNull();
    expect(v.childSees).toBe('undefined');
    expect(v.warnings.join('\n')).toMatch(/process left dumpable: native addon unavailable/);
    expect(v.warnings.join('\n')).toMatch(/could not be wiped/);
    expect(gdbAttach(v.pid)).not.toMatch(/Operation not permitted/);
  });
});
