import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { configTemplate, dataDirDefaults, envName, loadConfig, SETTINGS, type SettingName } from './config.js';

const BASE = {
  MOAT_VERIFIER_ADMIN_TOKEN: 'admin-token-0123456789',
  MOAT_VERIFIER_FINGERPRINT_SALT: 'salt',
  MOAT_VERIFIER_SERVER_SECRET: 'ab'.repeat(32),
  MOAT_VERIFIER_SIGNING_SECRET: 'cd'.repeat(32),
};
const KEY = 'ef'.repeat(32);

describe('settings from one schema', () => {
  it('reads every environment variable the verifier has always read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-config-'));
    const keyFile = join(dir, 'key.json');
    writeFileSync(keyFile, JSON.stringify({ kid: 'kdev', key: KEY }));
    const env: Record<string, string> = {
      ...BASE,
      MOAT_VERIFIER_HOST: '0.0.0.0',
      MOAT_VERIFIER_PORT: '9000',
      MOAT_VERIFIER_DATABASE: join(dir, 'v.db'),
      MOAT_VERIFIER_UPSTREAM: 'https://api.example.com',
      MOAT_VERIFIER_UPSTREAM_KEY: 'sk-up',
      MOAT_VERIFIER_FLAGS_FILE: 'flags.json',
      MOAT_VERIFIER_POSTGRES_URL: 'postgres://x',
      MOAT_VERIFIER_REDIS_URL: 'redis://x',
      MOAT_VERIFIER_ATTESTATION_KEYS: JSON.stringify([{ kid: 'k1', key: KEY.toUpperCase() }]),
      MOAT_VERIFIER_ATTESTATION_KEY_FILE: keyFile,
      MOAT_VERIFIER_REVOKED_KIDS: 'k0,k00',
      MOAT_VERIFIER_RELEASES: '[{"kid":"k2","features":["request_binding"]}]',
      MOAT_VERIFIER_SIGNING_KID: 's2',
      MOAT_VERIFIER_WINDOW_SEC: '60',
      MOAT_VERIFIER_MAX_BODY_BYTES: '2048',
      MOAT_VERIFIER_DECOY_ENTRYPOINTS: 'cli, ide',
      MOAT_VERIFIER_DECOY_RETENTION_DAYS: '30',
      MOAT_VERIFIER_SPOOL_FILE: join(dir, 's.spool'),
      MOAT_VERIFIER_SPOOL_MAX_BYTES: '8192',
      MOAT_VERIFIER_SPOOL_RESERVE_BYTES: '0',
      MOAT_VERIFIER_UPSTREAM_CONNECTIONS: '16',
      MOAT_VERIFIER_TRACE_WORKERS: '2',
      MOAT_VERIFIER_UPSTREAM_QUEUE_TIMEOUT_MS: '104',
      MOAT_VERIFIER_UPSTREAM_STALL_MS: '105',
      MOAT_VERIFIER_SHUTDOWN_GRACE_MS: '5',
      MOAT_VERIFIER_MAX_JSON_DEPTH: '16',
      MOAT_VERIFIER_METRICS_TOKEN: 'metrics-token-0123456',
      MOAT_VERIFIER_UPSTREAM_CONNECT_TIMEOUT_MS: '101',
      MOAT_VERIFIER_UPSTREAM_HEADERS_TIMEOUT_MS: '102',
      MOAT_VERIFIER_UPSTREAM_IDLE_TIMEOUT_MS: '103',
      MOAT_VERIFIER_CLIENT_KEY: 'ck',
      MOAT_VERIFIER_UA_PRODUCT: 'my-cli',
      MOAT_VERIFIER_PUBLIC_AUTHORITIES: 'api.example.com, gw.example.com:8443',
      MOAT_VERIFIER_PUBLIC_PATH_PREFIX: '/anthropic/v2',
      MOAT_VERIFIER_PASSTHROUGH_ROUTES: 'GET /v1/models, POST /v1/complete',
      MOAT_VERIFIER_ENROLLMENT_KEYS: JSON.stringify([
        { kid: 'e2', key: KEY },
        { kid: 'e1', key: KEY, retired: true },
      ]),
      MOAT_VERIFIER_ENROLL_CHALLENGE_SEC: '30',
      MOAT_VERIFIER_INSTALL_NEW_HOURS: '12',
      MOAT_VERIFIER_INSTALL_KEY_CACHE_SIZE: '500',
    };
    expect(loadConfig(env)).toEqual({
      host: '0.0.0.0',
      port: 9000,
      database: join(dir, 'v.db'),
      upstream: 'https://api.example.com',
      upstreamKey: 'sk-up',
      flagsFile: 'flags.json',
      postgresUrl: 'postgres://x',
      redisUrl: 'redis://x',
      adminToken: BASE.MOAT_VERIFIER_ADMIN_TOKEN,
      fingerprintSalt: 'salt',
      attestationKeys: [
        { kid: 'k1', key: KEY },
        { kid: 'kdev', key: KEY },
      ],
      revokedKids: ['k0', 'k00'],
      releases: [{ kid: 'k2', features: ['request_binding'] }],
      serverSecret: 'ab'.repeat(32),
      signingSecret: 'cd'.repeat(32),
      signingKid: 's2',
      windowSec: 60,
      maxBodyBytes: 2048,
      decoyEntrypoints: ['cli', 'ide'],
      decoyRetentionDays: 30,
      spoolFile: join(dir, 's.spool'),
      spoolMaxBytes: 8192,
      spoolReserveBytes: 0,
      upstreamConnections: 16,
      shutdownGraceMs: 5,
      maxJsonDepth: 16,
      metricsToken: 'metrics-token-0123456',
      traceWorkers: 2,
      upstreamTimeouts: { connectMs: 101, headersMs: 102, bodyIdleMs: 103, queueMs: 104, stallMs: 105 },
      clientKey: 'ck',
      userAgentProduct: 'my-cli',
      publicAuthorities: ['api.example.com', 'gw.example.com:8443'],
      publicPathPrefix: '/anthropic/v2',
      passthroughRoutes: [
        { method: 'GET', pattern: '/v1/models' },
        { method: 'POST', pattern: '/v1/complete' },
      ],
      enrollmentKeys: [
        { kid: 'e2', key: KEY },
        { kid: 'e1', key: KEY, retired: true },
      ],
      enrollChallengeSec: 30,
      installNewHours: 12,
      installKeyCacheSize: 500,
    });
    for (const name of Object.keys(SETTINGS) as SettingName[]) expect(Object.keys(env)).toContain(envName(name));
  });

  it('takes the environment over the file over the data directory over the built-in defaults', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, '// a comment\n{ "port": 1234, "windowSec": 61, "revokedKids": ["a", "b"] }\n');
    const config = loadConfig({ ...BASE, MOAT_VERIFIER_PORT: '4321' }, file, {
      MOAT_VERIFIER_WINDOW_SEC: '62',
      MOAT_VERIFIER_CLIENT_KEY: 'dd',
    });
    expect(config).toMatchObject({
      port: 4321,
      windowSec: 61,
      clientKey: 'dd',
      revokedKids: ['a', 'b'],
      signingKid: 's1',
    });
  });

  it('refuses a MOAT_VERIFIER_ variable that is no setting, naming the one a typo likely meant', () => {
    expect(() => loadConfig({ ...BASE, MOAT_VERIFIER_FLAG_FILE: 'policy.json' })).toThrow(
      'ERR_VERIFIER_CONFIG: MOAT_VERIFIER_FLAG_FILE: expected the variable of a setting, got an unknown name (did you mean "MOAT_VERIFIER_FLAGS_FILE"?)',
    );
    // The command line's own variables are known.
    expect(() =>
      loadConfig({ ...BASE, MOAT_VERIFIER_LOG_LEVEL: 'silent', MOAT_VERIFIER_DATA_DIR: '/tmp' }),
    ).not.toThrow();
  });

  it('refuses a name in the config file that is no setting, naming the one a typo likely meant', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, '{ "$schema": "./schema.json", "maxBodyByts": 1024 }');
    expect(() => loadConfig(BASE, file)).toThrow(
      expect.objectContaining({
        name: 'VerifierConfigError',
        setting: 'maxBodyByts',
        message: `ERR_VERIFIER_CONFIG: maxBodyByts: expected the name of a setting in ${file}, got an unknown name (did you mean "maxBodyBytes"?)`,
      }),
    );
    writeFileSync(file, '{ "listenAddress": "0.0.0.0" }');
    expect(() => loadConfig(BASE, file)).toThrow(
      /listenAddress: expected the name of a setting in .*c\.json, got an unknown name$/,
    );
  });

  it('names the setting, what it expected and what came — never a secret', () => {
    const bad: Array<[Record<string, string>, RegExp]> = [
      [
        { MOAT_VERIFIER_PORT: 'eighty' },
        /^ERR_VERIFIER_CONFIG: port: expected an integer in 0\.\.65535, got "eighty"$/,
      ],
      [
        { MOAT_VERIFIER_ATTESTATION_KEYS: '[{"kid":"ok","key":"00"}]' },
        /attestationKeys\[0\]\.key: expected hex of at least 32 bytes, got 2 characters/,
      ],
      [
        { MOAT_VERIFIER_ATTESTATION_KEYS: `[{"kid":"a b","key":"${KEY}"}]` },
        /attestationKeys\[0\]\.kid: expected a key id/,
      ],
      [{ MOAT_VERIFIER_ATTESTATION_KEYS: '[{' }, /attestationKeys: expected a JSON array of \{ kid, key \}/],
      [
        { MOAT_VERIFIER_PUBLIC_AUTHORITIES: 'ok.example, https://x' },
        /publicAuthorities\[1\]: expected a lowercase host/,
      ],
      ...['anthropic', '/anthropic/', '/a/../b', '/./a', '/a b', '/', '/a?b', '//a', '/a;b', '/%2e%2e'].map(
        (prefix): [Record<string, string>, RegExp] => [
          { MOAT_VERIFIER_PUBLIC_PATH_PREFIX: prefix },
          /publicPathPrefix: expected a path prefix/,
        ],
      ),
      [
        { MOAT_VERIFIER_METRICS_TOKEN: 'short-secret' },
        /metricsToken: expected a string of at least 16 characters, got 12 characters/,
      ],
      [
        { MOAT_VERIFIER_POSTGRES_URL: 'postgres://x' },
        /postgresUrl\/redisUrl: expected both or neither, got only postgresUrl/,
      ],
      [{ MOAT_VERIFIER_ADMIN_TOKEN: '' }, /adminToken: expected at least 16 characters, got 0 characters/],
      [
        { MOAT_VERIFIER_SIGNING_SECRET: 'zz'.repeat(32) },
        /signingSecret: expected hex of at least 32 bytes, got 64 characters/,
      ],
    ];
    for (const [env, message] of bad) {
      expect(() => loadConfig({ ...BASE, ...env }), JSON.stringify(env)).toThrow(message);
      try {
        loadConfig({ ...BASE, ...env });
      } catch (error) {
        expect((error as { code: string }).code).toBe('ERR_VERIFIER_CONFIG');
        expect((error as Error).message).not.toContain('zz'.repeat(32));
      }
    }
    expect(() => loadConfig({})).toThrow(/adminToken: expected a value, got none/);
  });

  it('takes any integer in range for an integer setting, from the environment or the file, and refuses the rest', () => {
    fc.assert(
      fc.property(fc.integer({ min: -100, max: 70_000 }), fc.boolean(), (n, asNumber) => {
        const file = join(mkdtempSync(join(tmpdir(), 'moat-config-')), 'c.json');
        writeFileSync(file, JSON.stringify({ port: asNumber ? n : String(n) }));
        if (n >= 0 && n <= 65535) expect(loadConfig(BASE, file).port).toBe(n);
        else expect(() => loadConfig(BASE, file)).toThrow(/port: expected an integer in 0\.\.65535/);
      }),
      { numRuns: 40 },
    );
  });

  it('writes an init template of the settings with defaults, which reads back as those defaults', () => {
    const template = configTemplate();
    const written = JSON.parse(template.replace(/^\s*\/\/.*$/gm, '')) as Record<string, unknown>;
    for (const [name, value] of Object.entries(written))
      expect(SETTINGS[name as SettingName]).toMatchObject({ default: value });
    expect(Object.keys(written)).toEqual(
      expect.arrayContaining(['host', 'port', 'upstream', 'windowSec', 'decoyEntrypoints']),
    );
    expect(template).toContain('// "upstreamKey": "sk-…",');
    expect(template).not.toMatch(/"(adminToken|serverSecret|signingSecret|fingerprintSalt)"/);
  });

  it('gives a data directory made before enrollment keys existed its enrollment key, once, keeping the rest', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-data-'));
    const older = {
      adminToken: 'a'.repeat(24),
      fingerprintSalt: 'salt',
      serverSecret: 'ab'.repeat(32),
      signingSecret: 'cd'.repeat(32),
    };
    writeFileSync(join(dir, 'secrets.json'), JSON.stringify(older), { mode: 0o600 });
    const first = dataDirDefaults(dir);
    const secrets = JSON.parse(readFileSync(first.secretsFile, 'utf8')) as Record<string, string>;
    expect(secrets).toMatchObject(older);
    expect(loadConfig({}, undefined, first.env).enrollmentKeys).toHaveLength(1);
    expect(dataDirDefaults(dir).env).toEqual(first.env);
    expect(statSync(first.secretsFile).mode & 0o077).toBe(0);
  });

  it('keeps the data directory’s generated secrets under the settings’ own names and variables', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-data-'));
    const first = dataDirDefaults(dir);
    const secrets = JSON.parse(readFileSync(first.secretsFile, 'utf8')) as Record<string, string>;
    expect(Object.keys(secrets).sort()).toEqual([
      'adminToken',
      'enrollmentKeys',
      'fingerprintSalt',
      'serverSecret',
      'signingSecret',
    ]);
    expect(first.env[envName('adminToken')]).toBe(secrets.adminToken);
    expect(dataDirDefaults(dir).env).toEqual(first.env);
    const config = loadConfig({}, undefined, first.env);
    expect(config).toMatchObject({
      adminToken: secrets.adminToken,
      database: join(dir, 'verifier.db'),
      spoolFile: join(dir, 'records.spool'),
    });
  });

  it('refuses a secrets file that is not an object of strings, naming the data directory, and leaves it as it was', () => {
    for (const [content, setting, got] of [
      ['null', 'dataDir', 'got null'],
      ['"x"', 'dataDir', 'got string'],
      ['5', 'dataDir', 'got number'],
      ['[]', 'dataDir', 'got an array'],
      ['{"fingerprintSalt":5}', 'dataDir: fingerprintSalt', 'got number'],
      ['{"adminToken":null}', 'dataDir: adminToken', 'got object'],
    ] as const) {
      const dir = mkdtempSync(join(tmpdir(), 'moat-data-'));
      writeFileSync(join(dir, 'secrets.json'), content);
      expect(() => dataDirDefaults(dir), content).toThrow(
        expect.objectContaining({ name: 'VerifierConfigError', setting, message: expect.stringContaining(got) }),
      );
      expect(readFileSync(join(dir, 'secrets.json'), 'utf8')).toBe(content);
    }
  });
});

describe('numbers and comments', () => {
  it('takes an integer setting only as a decimal integer', () => {
    for (const port of ['', ' ', '\n', '0x1F90', '1e3', '0b1', '+80', '80.0', '8 0', '٨٠'])
      expect(() => loadConfig({ ...BASE, MOAT_VERIFIER_PORT: port }), JSON.stringify(port)).toThrow(
        expect.objectContaining({ name: 'VerifierConfigError', setting: 'port' }),
      );
    expect(loadConfig({ ...BASE, MOAT_VERIFIER_PORT: '8080' }).port).toBe(8080);
    expect(() => loadConfig({ ...BASE, MOAT_VERIFIER_MAX_JSON_DEPTH: '0x80' })).toThrow(/maxJsonDepth/);
  });

  it('strips comment lines in time linear in the file (a megabyte of blank lines)', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'moat-config-')), 'c.json');
    writeFileSync(file, `{\n  // the port\n  "port": 1234${'\n'.repeat(1_000_000)}}\n`);
    expect(loadConfig(BASE, file).port).toBe(1234);
  });
});
