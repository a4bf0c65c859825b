import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isKeyId } from '@moat/protocol';
import { errorCode, errorMessage } from '@moat/protocol/support';
import { VerifierConfigError } from './errors.js';

/** Everything the verifier runs with. */
export interface VerifierConfig {
  readonly host: string;
  readonly port: number;
  /** SQLite database file (`:memory:` for tests). */
  readonly database: string;
  /** PostgreSQL URL for records and statistics; with `redisUrl`, replaces SQLite (several replicas). */
  readonly postgresUrl?: string;
  /** Redis URL for the nonce replay cache shared by replicas. */
  readonly redisUrl?: string;
  /** `mock` for the embedded deterministic model, or an Anthropic-compatible base URL. */
  readonly upstream: string;
  /** The verifier's own key for a real upstream. */
  readonly upstreamKey?: string;
  /** GrowthBook feature definitions (policy and client flags); built-in defaults when unset. */
  readonly flagsFile?: string;
  /** Bearer token of the admin API and dashboard. */
  readonly adminToken: string;
  /** Fingerprint salt shared with the client builds. */
  readonly fingerprintSalt: string;
  /** Attestation keys: `{ kid, key (hex) }` list. */
  readonly attestationKeys: ReadonlyArray<{ readonly kid: string; readonly key: string }>;
  readonly revokedKids: readonly string[];
  /** Server secret for decoys and API-key identities (hex, ≥ 32 bytes). */
  readonly serverSecret: string;
  /** Block-signing HMAC secret (hex, ≥ 32 bytes) and its key id. */
  readonly signingSecret: string;
  readonly signingKid: string;
  readonly windowSec: number;
  readonly maxBodyBytes: number;
  /** Entry points (`ep` of the attribution block) whose requests may get decoys (default `cli`). */
  readonly decoyEntrypoints: readonly string[];
  /** How far back, in days, decoys that come back in requests are traced to the key they were served to. */
  readonly decoyRetentionDays: number;
  /** The local spool for records while the record store is down (JSON lines, fsync'ed). */
  readonly spoolFile: string;
  readonly spoolMaxBytes: number;
  /** How long SIGTERM waits for in-flight requests before it closes their connections. */
  readonly shutdownGraceMs: number;
  /** Deepest nesting of a request body's JSON (objects and arrays; the body itself is 1). */
  readonly maxJsonDepth: number;
  /** Bearer token that reads `/metrics` besides the admin token. */
  readonly metricsToken?: string;
  /** Upstream timeouts in milliseconds: connect, until the response headers, between body chunks. */
  readonly upstreamTimeouts: { readonly connectMs: number; readonly headersMs: number; readonly bodyIdleMs: number };
  /** GrowthBook client key the features endpoint answers to. */
  readonly clientKey: string;
  /** User-agent product of the genuine client, for the ua_mismatch signal. */
  readonly userAgentProduct: string;
  /**
   * The authorities clients send to (`api.example.com`, a partner gateway's host): `r1`
   * stamps are checked against these instead of the received `Host`, which a relay chooses.
   * Unset, the received `Host` is used (development, a single trusted front end).
   */
  readonly publicAuthorities?: readonly string[];
}

/** An authority as §5.3 of the SPEC writes it: lowercase host or bracketed IPv6, an optional port. */
const AUTHORITY_RE = /^(?:[a-z0-9._~%!$&'()*+,;=-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$/;

const hex = (name: string, value: unknown, minBytes: number): string => {
  if (typeof value !== 'string' || !/^[0-9a-fA-F]+$/.test(value) || value.length % 2 !== 0 || value.length / 2 < minBytes) {
    throw new VerifierConfigError(
      name,
      `hex of at least ${minBytes} bytes`,
      typeof value === 'string' ? `${value.length} characters` : String(value),
    );
  }
  return value.toLowerCase();
};

/**
 * Builds the configuration from a JSON file (optional; whole-line `//` comments allowed)
 * overlaid by environment variables (`MOAT_VERIFIER_*`), over `defaults` (the data
 * directory's, see {@link dataDirDefaults}), and validates every setting with a clear error.
 *
 * @throws {VerifierConfigError} naming the first bad setting.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  file?: string,
  defaults: Readonly<Record<string, string>> = {},
): VerifierConfig {
  let fromFile: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new VerifierConfigError('config file', `a readable file at ${file}`, errorCode(error) ?? 'an error');
    }
    try {
      // Whole-line `//` comments are allowed (`moat-verifier init` writes them).
      fromFile = JSON.parse(text.replace(/^\s*\/\/.*$/gm, '')) as Record<string, unknown>;
    } catch (error) {
      throw new VerifierConfigError('config file', 'JSON', `a syntax error: ${errorMessage(error)}`);
    }
    if (typeof fromFile !== 'object' || fromFile === null || Array.isArray(fromFile))
      throw new VerifierConfigError('config file', 'a JSON object', typeof fromFile);
  }
  // Environment over the config file over the data directory's defaults.
  const pick = (key: string, envName: string): unknown => env[envName] ?? fromFile[key] ?? defaults[envName];
  const int = (key: string, envName: string, fallback: number, min: number, max: number): number => {
    const raw = pick(key, envName);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min || n > max)
      throw new VerifierConfigError(key, `an integer in ${min}..${max}`, JSON.stringify(raw));
    return n;
  };
  const str = (key: string, envName: string, fallback?: string): string => {
    const raw = pick(key, envName) ?? fallback;
    if (typeof raw !== 'string' || raw === '') throw new VerifierConfigError(key, 'a non-empty string', JSON.stringify(raw));
    return raw;
  };
  let attestationKeys: Array<{ kid: string; key: string }> = [];
  const keysRaw = pick('attestationKeys', 'MOAT_VERIFIER_ATTESTATION_KEYS');
  if (keysRaw !== undefined) {
    let list: unknown = keysRaw;
    if (typeof keysRaw === 'string') {
      try {
        list = JSON.parse(keysRaw);
      } catch (error) {
        throw new VerifierConfigError('attestationKeys', 'a JSON array of { kid, key }', errorMessage(error));
      }
    }
    if (!Array.isArray(list)) throw new VerifierConfigError('attestationKeys', 'an array of { kid, key }', typeof list);
    attestationKeys = list.map((k, i) => {
      const entry = k as { kid?: unknown; key?: unknown };
      if (!isKeyId(entry.kid)) throw new VerifierConfigError(`attestationKeys[${i}].kid`, 'a key id', JSON.stringify(entry.kid));
      return { kid: entry.kid, key: hex(`attestationKeys[${i}].key`, entry.key, 32) };
    });
  }
  const keyFile = pick('attestationKeyFile', 'MOAT_VERIFIER_ATTESTATION_KEY_FILE');
  if (typeof keyFile === 'string') {
    try {
      const dev = JSON.parse(readFileSync(keyFile, 'utf8')) as { kid: string; key: string };
      attestationKeys.push({ kid: dev.kid, key: hex('attestationKeyFile', dev.key, 32) });
    } catch (error) {
      if (error instanceof VerifierConfigError) throw error;
      throw new VerifierConfigError('attestationKeyFile', `a readable { kid, key } JSON file at ${keyFile}`, errorMessage(error));
    }
  }
  const revoked = pick('revokedKids', 'MOAT_VERIFIER_REVOKED_KIDS');
  const upstream = str('upstream', 'MOAT_VERIFIER_UPSTREAM', 'mock');
  const database = str('database', 'MOAT_VERIFIER_DATABASE', 'moat-verifier.db');
  if (upstream !== 'mock' && !/^https?:\/\//.test(upstream))
    throw new VerifierConfigError('upstream', '"mock" or an http(s) URL', JSON.stringify(upstream));
  const upstreamKey = pick('upstreamKey', 'MOAT_VERIFIER_UPSTREAM_KEY');
  const metricsToken = pick('metricsToken', 'MOAT_VERIFIER_METRICS_TOKEN');
  if (metricsToken !== undefined && (typeof metricsToken !== 'string' || metricsToken.length < 16))
    throw new VerifierConfigError(
      'metricsToken',
      'a string of at least 16 characters',
      typeof metricsToken === 'string' ? `${metricsToken.length} characters` : typeof metricsToken,
    );
  const authoritiesRaw = pick('publicAuthorities', 'MOAT_VERIFIER_PUBLIC_AUTHORITIES');
  const publicAuthorities =
    authoritiesRaw === undefined
      ? undefined
      : (typeof authoritiesRaw === 'string'
          ? authoritiesRaw.split(',')
          : Array.isArray(authoritiesRaw)
            ? authoritiesRaw
            : [authoritiesRaw]
        ).map((a: unknown, i) => {
          const text = typeof a === 'string' ? a.trim() : a;
          if (typeof text !== 'string' || !AUTHORITY_RE.test(text))
            throw new VerifierConfigError(
              `publicAuthorities[${i}]`,
              "a lowercase host[:port] without the scheme's default port, e.g. api.example.com",
              JSON.stringify(a),
            );
          return text;
        });
  const flagsFile = pick('flagsFile', 'MOAT_VERIFIER_FLAGS_FILE');
  const postgresUrl = pick('postgresUrl', 'MOAT_VERIFIER_POSTGRES_URL');
  const redisUrl = pick('redisUrl', 'MOAT_VERIFIER_REDIS_URL');
  if ((postgresUrl === undefined) !== (redisUrl === undefined)) {
    throw new VerifierConfigError(
      'postgresUrl/redisUrl',
      'both or neither',
      postgresUrl === undefined ? 'only redisUrl' : 'only postgresUrl',
    );
  }
  return {
    host: str('host', 'MOAT_VERIFIER_HOST', '127.0.0.1'),
    port: int('port', 'MOAT_VERIFIER_PORT', 8787, 0, 65535),
    database,
    upstream,
    ...(typeof upstreamKey === 'string' ? { upstreamKey } : {}),
    ...(typeof flagsFile === 'string' ? { flagsFile } : {}),
    ...(typeof postgresUrl === 'string' ? { postgresUrl } : {}),
    ...(typeof redisUrl === 'string' ? { redisUrl } : {}),
    adminToken: (() => {
      const t = str('adminToken', 'MOAT_VERIFIER_ADMIN_TOKEN');
      if (t.length < 16) throw new VerifierConfigError('adminToken', 'at least 16 characters', `${t.length} characters`);
      return t;
    })(),
    fingerprintSalt: str('fingerprintSalt', 'MOAT_VERIFIER_FINGERPRINT_SALT'),
    attestationKeys,
    revokedKids: typeof revoked === 'string' ? revoked.split(',').filter(Boolean) : Array.isArray(revoked) ? (revoked as string[]) : [],
    serverSecret: hex('serverSecret', pick('serverSecret', 'MOAT_VERIFIER_SERVER_SECRET'), 32),
    signingSecret: hex('signingSecret', pick('signingSecret', 'MOAT_VERIFIER_SIGNING_SECRET'), 32),
    signingKid: str('signingKid', 'MOAT_VERIFIER_SIGNING_KID', 's1'),
    windowSec: int('windowSec', 'MOAT_VERIFIER_WINDOW_SEC', 300, 1, 86_400),
    maxBodyBytes: int('maxBodyBytes', 'MOAT_VERIFIER_MAX_BODY_BYTES', 10 * 1024 * 1024, 1024, 100 * 1024 * 1024),
    decoyEntrypoints: str('decoyEntrypoints', 'MOAT_VERIFIER_DECOY_ENTRYPOINTS', 'cli')
      .split(',')
      .map((e) => e.trim())
      .filter((e) => e !== ''),
    decoyRetentionDays: int('decoyRetentionDays', 'MOAT_VERIFIER_DECOY_RETENTION_DAYS', 90, 1, 3650),
    spoolFile: str(
      'spoolFile',
      'MOAT_VERIFIER_SPOOL_FILE',
      database === ':memory:'
        ? join(tmpdir(), `moat-verifier-${process.pid}-${randomBytes(4).toString('hex')}.spool`)
        : `${database}.spool`,
    ),
    spoolMaxBytes: int('spoolMaxBytes', 'MOAT_VERIFIER_SPOOL_MAX_BYTES', 64 * 1024 * 1024, 4096, 1024 * 1024 * 1024),
    shutdownGraceMs: int('shutdownGraceMs', 'MOAT_VERIFIER_SHUTDOWN_GRACE_MS', 10_000, 0, 600_000),
    maxJsonDepth: int('maxJsonDepth', 'MOAT_VERIFIER_MAX_JSON_DEPTH', 128, 8, 10_000),
    ...(typeof metricsToken === 'string' ? { metricsToken } : {}),
    upstreamTimeouts: {
      connectMs: int('upstreamConnectTimeoutMs', 'MOAT_VERIFIER_UPSTREAM_CONNECT_TIMEOUT_MS', 10_000, 100, 600_000),
      headersMs: int('upstreamHeadersTimeoutMs', 'MOAT_VERIFIER_UPSTREAM_HEADERS_TIMEOUT_MS', 600_000, 100, 3_600_000),
      bodyIdleMs: int('upstreamIdleTimeoutMs', 'MOAT_VERIFIER_UPSTREAM_IDLE_TIMEOUT_MS', 300_000, 100, 3_600_000),
    },
    clientKey: str('clientKey', 'MOAT_VERIFIER_CLIENT_KEY', 'moat'),
    userAgentProduct: str('userAgentProduct', 'MOAT_VERIFIER_UA_PRODUCT', 'moat-chat'),
    ...(publicAuthorities === undefined ? {} : { publicAuthorities }),
  };
}

/** What {@link devEnvironment} takes; everything else is generated or defaulted. */
export interface DevEnvironmentOptions {
  /** Default `moat-dev-salt`, the salt of the development client builds. */
  readonly salt?: string;
  /** Default: 32 random hex digits. */
  readonly adminToken?: string;
  /** The attestation key file (`native/.moat-dev-key.json` for development builds). */
  readonly attestationKeyFile?: string;
  /** Default `:memory:`. */
  readonly database?: string;
}

/**
 * The `MOAT_VERIFIER_*` environment of a throwaway verifier — demo, tests, benchmarks: a free
 * loopback port, SQLite in memory, and a server secret and a signing secret generated now,
 * never written anywhere. Pass it to {@link loadConfig}, or to a child process.
 */
export function devEnvironment(options: DevEnvironmentOptions = {}): Record<string, string> {
  return {
    MOAT_VERIFIER_PORT: '0',
    MOAT_VERIFIER_DATABASE: options.database ?? ':memory:',
    MOAT_VERIFIER_ADMIN_TOKEN: options.adminToken ?? randomBytes(16).toString('hex'),
    MOAT_VERIFIER_FINGERPRINT_SALT: options.salt ?? 'moat-dev-salt',
    ...(options.attestationKeyFile === undefined ? {} : { MOAT_VERIFIER_ATTESTATION_KEY_FILE: options.attestationKeyFile }),
    MOAT_VERIFIER_SERVER_SECRET: randomBytes(32).toString('hex'),
    MOAT_VERIFIER_SIGNING_SECRET: randomBytes(32).toString('hex'),
  };
}

/** The secrets a data directory keeps for a zero-config verifier. */
interface DataDirSecrets {
  readonly adminToken: string;
  readonly fingerprintSalt: string;
  readonly serverSecret: string;
  readonly signingSecret: string;
}

/**
 * The settings of a verifier started with none: a data directory (created, mode 0700) that
 * holds generated secrets (`secrets.json`, mode 0600, made once and reused by every later
 * start), the SQLite database and the record spool; and, when a development build of
 * `@moat/native` made a key, that key for attestation. Environment and config file still
 * override every one of them.
 */
export function dataDirDefaults(dir: string, devKeyFile?: string): { env: Record<string, string>; secretsFile: string; created: boolean } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretsFile = join(dir, 'secrets.json');
  let secrets: DataDirSecrets;
  let created = false;
  if (existsSync(secretsFile)) {
    try {
      secrets = JSON.parse(readFileSync(secretsFile, 'utf8')) as DataDirSecrets;
    } catch (error) {
      throw new VerifierConfigError('dataDir', `readable secrets at ${secretsFile}`, errorMessage(error));
    }
  } else {
    secrets = {
      adminToken: randomBytes(24).toString('base64url'),
      fingerprintSalt: randomBytes(12).toString('base64url'),
      serverSecret: randomBytes(32).toString('hex'),
      signingSecret: randomBytes(32).toString('hex'),
    };
    writeFileSync(secretsFile, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    created = true;
  }
  return {
    secretsFile,
    created,
    env: {
      MOAT_VERIFIER_ADMIN_TOKEN: secrets.adminToken,
      MOAT_VERIFIER_FINGERPRINT_SALT: secrets.fingerprintSalt,
      MOAT_VERIFIER_SERVER_SECRET: secrets.serverSecret,
      MOAT_VERIFIER_SIGNING_SECRET: secrets.signingSecret,
      MOAT_VERIFIER_DATABASE: join(dir, 'verifier.db'),
      MOAT_VERIFIER_SPOOL_FILE: join(dir, 'records.spool'),
      ...(devKeyFile !== undefined && existsSync(devKeyFile) ? { MOAT_VERIFIER_ATTESTATION_KEY_FILE: devKeyFile } : {}),
    },
  };
}

/** A commented config file with every setting, for `moat-verifier init`. */
export function configTemplate(): string {
  return `{
  // moat-verifier settings. MOAT_VERIFIER_<NAME> environment variables override each one
  // (camelCase names become SNAKE_CASE). Secrets left out here come from the data directory.
  "host": "127.0.0.1",
  "port": 8787,
  // "mock" (the embedded model) or an Anthropic-compatible base URL, called with upstreamKey.
  "upstream": "mock",
  // "upstreamKey": "sk-…",
  // SQLite file; with postgresUrl and redisUrl set, PostgreSQL + Redis instead (several replicas).
  // "database": ".moat-verifier/verifier.db",
  // "postgresUrl": "postgres://…", "redisUrl": "redis://…",
  // Attestation keys: [{ "kid": "k1_4_2", "key": "<64+ hex>" }], or a { kid, key } file.
  // "attestationKeys": [],
  // "attestationKeyFile": "native/.moat-dev-key.json",
  // Policy and client flags (GrowthBook features JSON), over the built-in defaults.
  // "flagsFile": "moat-policy.json",
  "windowSec": 300,
  "maxBodyBytes": 10485760,
  "maxJsonDepth": 128,
  // Entry points whose requests may get decoys (comma-separated).
  "decoyEntrypoints": "cli",
  // How far back decoys that come back are traced to the key they were served to, in days.
  "decoyRetentionDays": 90,
  "upstreamConnectTimeoutMs": 10000,
  "upstreamHeadersTimeoutMs": 600000,
  "upstreamIdleTimeoutMs": 300000,
  "shutdownGraceMs": 10000
}
`;
}
