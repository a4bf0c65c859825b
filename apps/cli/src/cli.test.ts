import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { devKeyFile } from '@moat/native/dev-key';
import { createVerifier, devEnvironment, loadConfig, type Verifier } from '@moat/verifier';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const dist = new URL('../dist/', import.meta.url).pathname;
const internal = join(dist, 'internal/moat-chat.js');
const external = join(dist, 'external/moat-chat.js');
const executable = join(dist, 'moat-chat');
const dir = mkdtempSync(join(tmpdir(), 'moat-chat-'));
let verifier: Verifier;
let base = '';
let apiKey = '';

async function start(flagsFile?: string, env: Record<string, string> = {}): Promise<{ verifier: Verifier; base: string; apiKey: string }> {
  const v = await createVerifier(
    loadConfig({
      ...devEnvironment({ attestationKeyFile: devKeyFile }),
      ...(flagsFile === undefined ? {} : { MOAT_VERIFIER_FLAGS_FILE: flagsFile }),
      ...env,
    }),
    { logLevel: 'silent' },
  );
  const url = await v.listen();
  return { verifier: v, base: url, apiKey: (await v.storage.createApiKey('cli')).key };
}

beforeAll(async () => {
  ({ verifier, base, apiKey } = await start());
});
afterAll(() => verifier.close());

/** Runs a moat-chat build asynchronously (the verifier answering it lives in this process). */
function chat(
  program: string,
  args: string[],
  env: Record<string, string> = {},
  input?: string,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const command = program.endsWith('.js') ? process.execPath : program;
    const child = spawn(command, program.endsWith('.js') ? [program, ...args] : args, {
      env: { PATH: process.env.PATH ?? '', HOME: dir, MOAT_CONFIG_DIR: join(dir, 'config'), ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.stdin.end(input ?? '');
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const last = async (v = verifier) => (await v.storage.queryRecords({ limit: 1 }))[0];

describe('moat-chat', { timeout: 60_000 }, () => {
  it('the external bundle has none of the internal code; the internal one has it', async () => {
    expect(readFileSync(internal, 'utf8')).toContain('Quokkaplex');
    expect(readFileSync(external, 'utf8')).not.toContain('Quokkaplex');
    expect(readFileSync(external, 'utf8')).not.toContain('debugReport');
    const inside = await chat(internal, ['-p', '/debug', '--base-url', base], { MOAT_API_KEY: apiKey });
    expect(inside.stdout).toContain('Quokkaplex diagnostics (internal build)');
    expect(inside.stdout).toContain('user type: ant');
    const outside = await chat(external, ['-p', '/debug', '--base-url', base], { MOAT_API_KEY: apiKey });
    expect(outside.status).toBe(1);
    expect(outside.stdout).toContain('unknown command /debug');
    expect((await chat(external, ['--version'])).stdout).toBe('moat-chat 1.4.2 (external)\n');
  });

  it('the build scan passes the real external output and catches a planted codename', () => {
    const scan = new URL('../node_modules/@moat/build-guard/dist/cli/moat-scan.js', import.meta.url).pathname;
    const codenames = new URL('../codenames.txt', import.meta.url).pathname;
    const run = (...args: string[]) => spawnSync(process.execPath, [scan, '-q', '-c', codenames, ...args], { encoding: 'utf8' });
    expect(run(external).status).toBe(0);
    const planted = join(dir, 'planted.js');
    writeFileSync(
      planted,
      `${readFileSync(external, 'utf8')}\nconst x = atob("${Buffer.from('the Quokkaplex flag').toString('base64')}");\n`,
    );
    const found = run(planted);
    expect(found.status).toBe(1);
    expect(found.stdout).toMatch(/internal codename "Quokkaplex" encoded as base64/);
  });

  it('a genuine answer through the verifier: allowed, attested, fingerprinted; startup prints nothing', async () => {
    const r = await chat(external, ['-p', 'Hello from the reference client', '--base-url', base], { MOAT_API_KEY: apiKey });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('Echo: Hello from the reference client\n');
    expect(await last()).toMatchObject({ attestation: 'valid', fingerprint: 'match', verdict: 'allow', decoys: 3 });
    const verbose = await chat(external, ['-p', 'again', '--verbose', '--base-url', base], { MOAT_API_KEY: apiKey });
    for (const layer of ['harden', 'attest', 'anti-distillation', 'gateway-detect', 'fingerprint'])
      expect(verbose.stderr).toMatch(new RegExp(`^${layer} +on`, 'm'));
  });

  it('enrolls its install where the verifier advertises install_keys and stamps i1 after, the keys kept in --install-dir', async () => {
    const key = (await verifier.storage.createApiKey('cli-installs')).key;
    // Each run with --verbose: what a run said is in the message of an assertion that fails.
    const run = (prompt: string, args: string[], env: Record<string, string> = {}) =>
      chat(external, ['-p', prompt, '--verbose', '--base-url', base, ...args], { MOAT_API_KEY: key, ...env });
    const said = (r: { stdout: string; stderr: string }) => `stdout: ${r.stdout}\nstderr: ${r.stderr}`;
    const installs = join(dir, 'installs-flag');
    const first = await run('first', ['--install-dir', installs]);
    expect(first.stdout, said(first)).toBe('Echo: first\n');
    const enrolled = await last();
    expect(enrolled, said(first)).toMatchObject({ attestation: 'valid', install: 'new', verdict: 'allow' });
    expect(enrolled?.installId).toMatch(/^i[0-9a-f]{24}$/);
    expect(statSync(installs).mode & 0o777).toBe(0o700);
    expect(readdirSync(installs)).toHaveLength(1);
    // The next run stamps with the same install: it was kept, not enrolled again.
    const again = await run('second', ['--install-dir', installs]);
    expect(again.stdout, said(again)).toBe('Echo: second\n');
    expect(await last(), said(again)).toMatchObject({ attestation: 'valid', installId: enrolled?.installId, verdict: 'allow' });
    // MOAT_INSTALL_DIR names the directory too.
    const viaEnv = join(dir, 'installs-env');
    const third = await run('third', [], { MOAT_INSTALL_DIR: viaEnv });
    expect(existsSync(viaEnv) && readdirSync(viaEnv).length, said(third)).toBe(1);
    // The standalone binary (Bun, the addon embedded) enrolls the same way.
    const standalone = join(dir, 'installs-standalone');
    const bun = await chat(executable, ['-p', 'fifth', '--verbose', '--base-url', base, '--install-dir', standalone], {
      MOAT_API_KEY: key,
    });
    expect(bun.stdout, said(bun)).toBe('Echo: fifth\n');
    expect(await last(), said(bun)).toMatchObject({ attestation: 'valid', install: 'new', verdict: 'allow' });
    expect(readdirSync(standalone)).toHaveLength(1);
  });

  it('stamps r1 with the release key against a verifier without install_keys (1.1), and keeps no install state', async () => {
    const { verifier: old, base: oldBase, apiKey: oldKey } = await start(undefined, { MOAT_VERIFIER_ENROLLMENT_KEYS: '[]' });
    try {
      const installs = join(dir, 'installs-none');
      const r = await chat(external, ['-p', 'no installs', '--base-url', oldBase, '--install-dir', installs], { MOAT_API_KEY: oldKey });
      expect(r.stdout).toBe('Echo: no installs\n');
      expect(await last(old)).toMatchObject({ attestation: 'valid', install: 'none', verdict: 'allow', installId: null });
      expect(existsSync(installs)).toBe(false);
    } finally {
      await old.close();
    }
  });

  it('reads the verifier once at start: one discovery, one flag fetch for every layer', async () => {
    const seen: string[] = [];
    const target = new URL(base);
    // Forwards byte for byte with the Host it got, so the stamp's binding still holds.
    const relay = createServer((req, res) => {
      seen.push(new URL(req.url ?? '/', 'http://x').pathname);
      const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
      const r = await chat(external, ['-p', 'counted', '--verbose', '--base-url', url], { MOAT_API_KEY: apiKey });
      expect(r.stdout).toBe('Echo: counted\n');
      expect(await last()).toMatchObject({ attestation: 'valid', fingerprint: 'match', verdict: 'allow', decoys: 3 });
      expect(seen.filter((p) => p === '/v1/moat')).toHaveLength(1);
      expect(seen.filter((p) => p.startsWith('/api/features/'))).toHaveLength(1);
      expect(seen.filter((p) => p === '/v1/messages')).toHaveLength(1);
    } finally {
      relay.closeAllConnections();
      relay.close();
    }
  });

  it('the standalone executable (bun build --compile, addon embedded) attests', async () => {
    expect(statSync(executable).size).toBeGreaterThan(10_000_000);
    const r = await chat(executable, ['-p', 'From the standalone binary', '--base-url', base, '--json'], { MOAT_API_KEY: apiKey });
    expect(JSON.parse(r.stdout)).toMatchObject({ text: 'Echo: From the standalone binary', fellBack: false });
    expect(await last()).toMatchObject({ attestation: 'valid', fingerprint: 'match', verdict: 'allow' });
  });

  it('falls back on an overloaded model, reads stdin, and uses a read-once token file', async () => {
    const r = await chat(
      external,
      ['-p', '-', '--json', '--model', 'claude-mock-overloaded', '--fallback-model', 'claude-mock', '--base-url', base],
      { MOAT_API_KEY: apiKey },
      'prompt from stdin',
    );
    expect(JSON.parse(r.stdout)).toMatchObject({ text: 'Echo: prompt from stdin', model: 'claude-mock', fellBack: true });
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${apiKey}\n`, { mode: 0o600 });
    const t = await chat(external, ['-p', 'with a token file', '--token-file', tokenFile, '--base-url', base]);
    expect(t.stdout).toBe('Echo: with a token file\n');
    expect(existsSync(tokenFile)).toBe(false);
  });

  it('without a key, or with an unreadable token file, says so and exits 2, one-shot or interactive', async () => {
    for (const args of [['-p', 'hi'], []]) {
      const none = await chat(external, [...args, '--base-url', base]);
      expect(none.status).toBe(2);
      expect(none.stderr).toMatch(/^moat-chat: no API key: run `moat-chat login`/);
      const missing = await chat(external, [...args, '--token-file', join(dir, 'no-such-token'), '--base-url', base]);
      expect(missing.status).toBe(2);
      expect(missing.stderr).toMatch(/no-such-token/);
    }
  });

  it('login stores the key with mode 0600 and later runs use it', async () => {
    const r = await chat(external, ['login'], {}, apiKey);
    expect(r.status).toBe(0);
    const file = join(dir, 'config', 'credentials');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect((await chat(external, ['-p', 'logged in', '--base-url', base])).stdout).toBe('Echo: logged in\n');
    expect((await chat(external, ['login'], {}, 'x')).status).toBe(2);
  });

  it('fails open when a layer breaks: no addon, kill switches, no flag server', async () => {
    const noAddon = await chat(external, ['-p', 'no addon here', '--base-url', base], { MOAT_API_KEY: apiKey, MOAT_NATIVE_DISABLE: '1' });
    expect(noAddon.stdout).toBe('Echo: no addon here\n');
    expect(await last()).toMatchObject({ attestation: 'unavailable', fingerprint: 'match' });

    const flags = join(dir, 'flags.json');
    writeFileSync(
      flags,
      JSON.stringify({
        features: {
          'moat-kill-attestation': { defaultValue: true },
          'moat-kill-harden': { defaultValue: true },
          'moat-kill-anti-distillation': { defaultValue: true },
          'moat-attribution': { defaultValue: false },
        },
      }),
    );
    const killed = await start(flags);
    try {
      const r = await chat(external, ['-p', 'everything switched off', '--verbose', '--base-url', killed.base], {
        MOAT_API_KEY: killed.apiKey,
      });
      expect(r.stdout).toBe('Echo: everything switched off\n');
      expect(r.stderr).toMatch(/^attest +off +kill switch|^attest +off/m);
      expect(r.stderr).toMatch(/^harden +off +kill switch/m);
      expect(await last(killed.verifier)).toMatchObject({ attestation: 'missing', fingerprint: 'missing', decoys: 0 });
    } finally {
      await killed.verifier.close();
    }

    // A base URL that is not a Moat verifier at all: no discovery, no flags, no tags; the
    // request still goes out (and fails only because nothing answers Messages there).
    const plain = await chat(external, ['-p', 'hello', '--base-url', 'http://127.0.0.1:9'], { MOAT_API_KEY: apiKey });
    expect(plain.status).toBe(1);
    expect(plain.stderr).toMatch(/moat-chat: ERR_NETWORK: cannot reach http:\/\/127\.0\.0\.1:9: /);
  });
});

describe('moat-chat when the network fails it, and with piped input', { timeout: 60_000 }, () => {
  it('a server that accepts and never answers: a clear time-out, exit 1', async () => {
    const silent = createServer(() => {
      // accepts, never answers
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
      for (const program of [internal, executable]) {
        if (!existsSync(program)) continue;
        const r = await chat(program, ['-p', 'anyone there?', '--timeout', '1', '--base-url', url], { MOAT_API_KEY: apiKey });
        expect(r.status, program).toBe(1);
        expect(r.stderr, program).toMatch(new RegExp(`no answer from ${url} within 1 s`));
      }
    } finally {
      silent.closeAllConnections();
      silent.close();
    }
  });

  it('a verifier that is down: the cause is named, in the Node and the Bun build', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    for (const program of [internal, executable]) {
      if (!existsSync(program)) continue;
      const r = await chat(program, ['-p', 'hello', '--base-url', `http://127.0.0.1:${port}`], { MOAT_API_KEY: apiKey });
      expect(r.status, program).toBe(1);
      expect(r.stderr, program).toMatch(
        new RegExp(`cannot reach http://127.0.0.1:${port}: .*(ECONNREFUSED|ConnectionRefused|refused)`, 'i'),
      );
      expect(r.stderr, program).not.toMatch(/: fetch failed\n/);
    }
  });

  it('piped stdin in interactive mode: one question per line, every answer, then exit 0', async () => {
    const r = await chat(external, ['--base-url', base], { MOAT_API_KEY: apiKey }, 'first question\n\nsecond question\n');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Echo: first question');
    expect(r.stdout).toContain('Echo: second question');
    expect(r.stdout + r.stderr).not.toContain('readline was closed');
  });
});

describe('moat-chat interactive, through a terminal', () => {
  it('streams an answer, switches model, cancels with Ctrl-C and quits', { timeout: 60_000 }, async () => {
    const session = `moat-${randomBytes(4).toString('hex')}`;
    const tmux = (...args: string[]) => execFileSync('tmux', args, { encoding: 'utf8' });
    const screen = () => tmux('capture-pane', '-p', '-t', session);
    const until = async (check: (s: string) => boolean, what: string) => {
      const end = Date.now() + 20_000;
      while (!check(screen())) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; screen:\n${screen()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    tmux(
      'new-session',
      '-d',
      '-s',
      session,
      '-x',
      '120',
      '-y',
      '30',
      `env MOAT_API_KEY=${apiKey} HOME=${dir} ${process.execPath} ${external} --base-url ${base}`,
    );
    try {
      await until((s) => /^>/m.test(s), 'the prompt'); // capture-pane trims the space after '>'
      tmux('send-keys', '-t', session, 'Hello through a real terminal', 'Enter');
      await until((s) => s.includes('Echo: Hello through a real terminal'), 'the answer');
      tmux('send-keys', '-t', session, '/model claude-mock-2', 'Enter');
      await until((s) => s.includes('model: claude-mock-2'), 'the model switch');
      tmux('send-keys', '-t', session, 'After the switch', 'Enter');
      await until((s) => s.includes('Echo: After the switch'), 'the answer after the switch');
      expect((await last())?.model).toBe('claude-mock-2');
      // A slow answer, cancelled half-way with Ctrl-C: the prompt comes back, the session goes on.
      tmux('send-keys', '-t', session, '/model claude-mock-slow', 'Enter');
      await until((s) => s.includes('model: claude-mock-slow'), 'the slow model');
      tmux('send-keys', '-t', session, 'Please write a long answer about cancellation', 'Enter');
      await until((s) => s.includes('Echo: Please'), 'the first streamed words');
      tmux('send-keys', '-t', session, 'C-c', '');
      await until((s) => s.includes('[cancelled]'), 'the cancellation');
      expect(screen()).not.toContain('about cancellation\n>');
      tmux('send-keys', '-t', session, '/model claude-mock', 'Enter');
      tmux('send-keys', '-t', session, 'Still here?', 'Enter');
      await until((s) => s.includes('Echo: Still here?'), 'an answer after the cancel');
      tmux('send-keys', '-t', session, '/quit', 'Enter');
      const end = Date.now() + 10_000;
      while (Date.now() < end) {
        try {
          tmux('has-session', '-t', session);
        } catch {
          return; // the program quit and tmux closed the session
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`moat-chat did not quit; screen:\n${screen()}`);
    } finally {
      try {
        tmux('kill-session', '-t', session);
      } catch {
        // already gone
      }
    }
  });
});
