import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FEATURES, type Feature, isKeyId } from '@moat/protocol';
import { closestName, errorCode, errorMessage } from '@moat/protocol/support';
import * as v from 'valibot';
import { VerifierConfigError } from './errors.js';
import { jsonKind } from './json-body.js';

/** One row of the release table: a release named by exactly one of `kid`, `cv`, `minCv`, and the features it speaks. */
export interface ReleaseFeatures {
  readonly kid?: string | undefined;
  readonly cv?: string | undefined;
  /** Every client version at or above this dotted version. */
  readonly minCv?: string | undefined;
  readonly features: readonly Feature[];
}

/** Everything the verifier runs with. */
export interface VerifierConfig {
  readonly host: string;
  readonly port: number;
  /** SQLite database file (`:memory:` for tests). */
  readonly database: string;
  /** PostgreSQL URL for records and statistics; with `redisUrl`, replaces SQLite (several replicas). */
  readonly postgresUrl?: string | undefined;
  /** Redis URL for the nonce replay cache shared by replicas. */
  readonly redisUrl?: string | undefined;
  /** `mock` for the embedded deterministic model, or an Anthropic-compatible base URL. */
  readonly upstream: string;
  /** The verifier's own key for a real upstream. */
  readonly upstreamKey?: string | undefined;
  /** GrowthBook feature definitions (policy and client flags); built-in defaults when unset. */
  readonly flagsFile?: string | undefined;
  /** Bearer token of the admin API and dashboard. */
  readonly adminToken: string;
  /** Fingerprint salt shared with the client builds. */
  readonly fingerprintSalt: string;
  /** Attestation keys: `{ kid, key (hex) }` list. */
  readonly attestationKeys: ReadonlyArray<{ readonly kid: string; readonly key: string }>;
  readonly revokedKids: readonly string[];
  /** What each client release speaks (SPEC features), by key id, exact version or lowest version. */
  readonly releases: readonly ReleaseFeatures[];
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
  /**
   * The local spool for records while the record store is down (a SQLite file, synced per
   * record). Default: next to the database (`<database>.spool`); in memory with the database
   * when that is `:memory:` — and then it must be set when the records go to PostgreSQL.
   */
  readonly spoolFile: string;
  readonly spoolMaxBytes: number;
  /**
   * Disk space held back beside the spool (`<spool>.reserve`) for the records of answers
   * already paid for, given up when the disk is full; 0 for none.
   */
  readonly spoolReserveBytes: number;
  /** How long SIGTERM waits for in-flight requests before it closes their connections. */
  readonly shutdownGraceMs: number;
  /** Deepest nesting of a request body's JSON (objects and arrays; the body itself is 1). */
  readonly maxJsonDepth: number;
  /** Bearer token that reads `/metrics` besides the admin token. */
  readonly metricsToken?: string | undefined;
  /** Upstream timeouts in milliseconds: connect, until the response headers, between body chunks. */
  readonly upstreamTimeouts: {
    readonly connectMs: number;
    readonly headersMs: number;
    readonly bodyIdleMs: number;
    /** Longest wait for one of the {@link upstreamConnections} before a `503`. */
    readonly queueMs: number;
    /** How long a call may send nothing while requests wait for its connection before it is ended. */
    readonly stallMs: number;
  };
  /** Upstream calls in flight at once, at most (one connection each). */
  readonly upstreamConnections: number;
  /** Worker threads that trace large requests for decoys, 0 to 64 (default: the cores but one, at least 1, at most 4; 0: none). */
  readonly traceWorkers?: number | undefined;
  /** GrowthBook client key the features endpoint answers to. */
  readonly clientKey: string;
  /** User-agent product of the genuine client, for the ua_mismatch signal. */
  readonly userAgentProduct: string;
  /**
   * The authorities clients send to (`api.example.com`, a partner gateway's host): `r1`
   * stamps are checked against these instead of the received `Host`, which a relay chooses.
   * Unset, the received `Host` is used (development, a single trusted front end).
   */
  readonly publicAuthorities?: readonly string[] | undefined;
  /**
   * The path a front end strips before it forwards to the verifier (`/anthropic` when
   * clients send to `https://gw.example/anthropic/v1/messages` and the front end forwards
   * `/v1/messages`): `r1` stamps bind the path the client sent, so it is checked as this
   * prefix and the path received. Unset, the path received is the path sent.
   */
  readonly publicPathPrefix?: string | undefined;
  /**
   * Enrollment key pairs (X25519) for per-install keys, newest first: the first active one is
   * advertised in discovery; retired ones still derive the keys of the installs they enrolled.
   * Empty: no enrollment (`install_keys` is not advertised).
   */
  readonly enrollmentKeys: ReadonlyArray<{
    readonly kid: string;
    readonly key: string;
    readonly retired?: boolean | undefined;
  }>;
  /** Lifetime of an enrollment challenge in seconds (≤ 300). */
  readonly enrollChallengeSec: number;
  /** How long an install is `new` after it enrolled, in hours. */
  readonly installNewHours: number;
  /** Install keys kept derived in memory at most (the rest are derived again on demand). */
  readonly installKeyCacheSize: number;
  /**
   * Upstream routes forwarded without Moat's checks (`METHOD /pattern`, `:name` for one
   * segment); every other route the verifier does not own is refused. Default
   * {@link DEFAULT_PASSTHROUGH_ROUTES}; the legacy `POST /v1/complete` only when named here.
   */
  readonly passthroughRoutes: ReadonlyArray<{ readonly method: string; readonly pattern: string }>;
}

/**
 * Upstream routes that yield no model output and hold nothing of one key's: the models. The
 * Files routes are the verifier's own, scoped per key (`routes/files.ts`).
 */
export const DEFAULT_PASSTHROUGH_ROUTES: readonly string[] = ['GET /v1/models', 'GET /v1/models/:id'];

/** One pass-through route as written: a method, spaces, a pattern of exact and `:name` segments. */
const PASSTHROUGH_ENTRY = /^([A-Z]+) +(\/[A-Za-z0-9\-._~/:]*)$/;

const routeOf = (entry: string): { method: string; pattern: string } => {
  const [, method, pattern] = PASSTHROUGH_ENTRY.exec(entry) as unknown as [string, string, string];
  return { method, pattern };
};

/**
 * Whether a pass-through entry stays clear of the paths Moat always checks: Messages and
 * everything under it, the Files routes (scoped per key) and whatever an upstream may take
 * for one of them, and Moat's own `/v1/moat…`, at any depth and as a lenient upstream
 * would read them (any case, empty segments merged, any suffix after `messages`; dot
 * segments refused outright). A `:name` segment matches anything, so `/:a/messages` and
 * `/v1/:b` are refused too.
 */
export const outsideGuarded = (entry: string): boolean => {
  const segments = routeOf(entry)
    .pattern.split('/')
    .filter((s) => s !== '')
    .map((s) => s.toLowerCase());
  if (segments.some((s) => s === '.' || s === '..')) return false;
  const [first, second] = segments;
  if (first === undefined || second === undefined) return true;
  const any = (s: string) => s.startsWith(':');
  // `messages.json`, `messages~`, `Messages.`: a suffix an upstream may strip or ignore is still Messages.
  const guarded = (s: string) => s.startsWith('messages') || s.startsWith('files') || s.startsWith('moat');
  // `v1.json`, `v1~`: a suffix an upstream may strip is still `v1`.
  const v1 = first === 'v1' || /^v1[^a-z0-9]/.test(first);
  return !((any(first) || v1) && (any(second) || guarded(second)));
};

/** An authority as §5.3 of the SPEC writes it: lowercase host or bracketed IPv6, an optional port. */
const AUTHORITY_RE = /^(?:[a-z0-9._~%!$&'()*+,;=-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$/;

/** A non-empty string. */
const text = (expected = 'a non-empty string') => v.pipe(v.string(expected), v.minLength(1, expected));
/** An integer in `[min, max]`, from a number or a numeric string (the environment). */
const int = (min: number, max: number) => {
  const expected = `an integer in ${min}..${max}`;
  return v.pipe(
    // A string is a decimal integer and nothing else: Number() alone would take "", "0x1F", "1e3".
    v.union([v.number(), v.pipe(v.string(), v.regex(/^-?[0-9]+$/, expected))], expected),
    v.transform(Number),
    v.safeInteger(expected),
    v.minValue(min, expected),
    v.maxValue(max, expected),
  );
};
/** Hex of at least `minBytes` bytes, lowercased. */
const hex = (minBytes: number) => {
  const expected = `hex of at least ${minBytes} bytes`;
  return v.pipe(
    v.string(expected),
    v.regex(/^(?:[0-9a-fA-F]{2})+$/, expected),
    v.minLength(minBytes * 2, expected),
    v.transform((h) => h.toLowerCase()),
  );
};
/** A list: an array, or a comma-separated string (the environment); entries trimmed, empty ones dropped. */
const list = (expected: string, pattern = /^/) =>
  v.pipe(
    v.union([v.array(v.unknown()), v.string()], expected),
    v.transform((raw) =>
      (typeof raw === 'string' ? raw.split(',') : raw).map((e) => (typeof e === 'string' ? e.trim() : e)),
    ),
    v.transform((entries) => entries.filter((e) => e !== '')),
    v.array(v.pipe(v.string(expected), v.regex(pattern, expected))),
  );
const attestationKey = v.object({
  kid: v.pipe(
    v.string('a key id'),
    v.check((kid: string) => isKeyId(kid), 'a key id'),
  ),
  key: hex(32),
});

/** A fresh enrollment key list (one X25519 private key, hex) for a data directory's secrets. */
export function newEnrollmentKeys(now = new Date()): string {
  const kid = `e${now.toISOString().slice(0, 10).replaceAll('-', '')}${randomBytes(2).toString('hex')}`;
  return JSON.stringify([{ kid, key: randomBytes(32).toString('hex') }]);
}

/** A JSON array given as a string (an environment variable) is parsed first. */
const jsonArray = (expected: string) =>
  v.pipe(
    v.union([v.array(v.unknown()), v.string()], expected),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      if (typeof dataset.value !== 'string') return dataset.value;
      try {
        return JSON.parse(dataset.value) as unknown;
      } catch {
        addIssue({ message: expected });
        return NEVER;
      }
    }),
  );
const VERSION_RE = /^\d{1,9}(?:\.\d{1,9}){0,3}$/;
const release = v.pipe(
  v.strictObject(
    {
      kid: v.optional(
        v.pipe(
          v.string('a key id'),
          v.check((kid: string) => isKeyId(kid), 'a key id'),
        ),
      ),
      cv: v.optional(text('a client version')),
      minCv: v.optional(v.pipe(v.string('a dotted version'), v.regex(VERSION_RE, 'a dotted version such as 1.5.0'))),
      features: v.array(v.picklist(FEATURES, `one of ${FEATURES.join(', ')}`), 'a list of protocol features'),
    },
    'a release { kid | cv | minCv, features }',
  ),
  v.check((r) => [r.kid, r.cv, r.minCv].filter((x) => x !== undefined).length === 1, 'exactly one of kid, cv, minCv'),
);

/** One setting: its schema (from a JSON value or an environment string), default and `init` line. */
interface Setting {
  readonly schema: v.GenericSchema;
  /** Its environment variable, when not `MOAT_VERIFIER_` + the name in SNAKE_CASE. */
  readonly env?: string;
  /** The value when it is not set; a function of the settings read so far. */
  readonly default?: unknown;
  /** Secrets: an error gives their length, never their value. */
  readonly secret?: true;
  /** A data directory generates and keeps it (`secrets.json`). */
  readonly generate?: () => string;
  /** The `init` template: its comment, and an example written commented out when it has no default. */
  readonly doc?: string;
  readonly example?: string;
}

/**
 * Every setting of the verifier, in the order `init` writes them. `MOAT_VERIFIER_<NAME>`
 * (SNAKE_CASE) overrides the config file, which overrides the data directory's defaults and
 * then the defaults here.
 */
export const SETTINGS = {
  host: { schema: text(), default: '127.0.0.1', doc: 'Address and port to listen on.' },
  port: { schema: int(0, 65535), default: 8787 },
  upstream: {
    schema: v.union(
      [v.literal('mock'), v.pipe(v.string(), v.regex(/^https?:\/\//, '"mock" or an http(s) URL'))],
      '"mock" or an http(s) URL',
    ),
    default: 'mock',
    doc: '"mock" (the embedded model) or an Anthropic-compatible base URL, called with upstreamKey.',
  },
  upstreamKey: { schema: text(), secret: true, example: '"sk-…"' },
  database: {
    schema: text(),
    default: 'moat-verifier.db',
    doc: 'SQLite file; with postgresUrl and redisUrl set, PostgreSQL + Redis instead (several replicas).',
    example: '".moat-verifier/verifier.db"',
  },
  postgresUrl: { schema: text(), secret: true, example: '"postgres://…"' },
  redisUrl: { schema: text(), secret: true, example: '"redis://…"' },
  attestationKeys: {
    schema: v.pipe(
      v.union([v.array(v.unknown()), v.string()], 'a JSON array of { kid, key }'),
      v.rawTransform(({ dataset, addIssue, NEVER }) => {
        if (typeof dataset.value !== 'string') return dataset.value;
        try {
          return JSON.parse(dataset.value) as unknown;
        } catch {
          addIssue({ message: 'a JSON array of { kid, key }' });
          return NEVER;
        }
      }),
      v.array(attestationKey, 'an array of { kid, key }'),
    ),
    default: [],
    secret: true,
    doc: 'Attestation keys: [{ "kid": "k1_4_2", "key": "<64+ hex>" }], or a { kid, key } file.',
    example: '[]',
  },
  releases: {
    schema: v.pipe(jsonArray('a JSON array of releases'), v.array(release, 'an array of releases')),
    default: [],
    doc: 'What each client release speaks, by key id, version or lowest version: a v1 stamp from a release with request_binding is invalid.',
    example: '[{ "minCv": "1.5.0", "features": ["request_binding"] }]',
  },
  attestationKeyFile: { schema: text(), example: '"native/.moat-dev-key.json"' },
  enrollmentKeys: {
    schema: v.pipe(
      jsonArray('a JSON array of { kid, key, retired? }'),
      v.array(
        v.strictObject(
          {
            kid: attestationKey.entries.kid,
            key: v.pipe(hex(32), v.length(64, 'hex of exactly 32 bytes')),
            retired: v.optional(v.boolean('true or false')),
          },
          'an enrollment key { kid, key (64 hex), retired? }',
        ),
        'an array of { kid, key, retired? }',
      ),
      v.check((keys) => new Set(keys.map((k) => k.kid)).size === keys.length, 'distinct kids'),
    ),
    default: [],
    secret: true,
    generate: () => newEnrollmentKeys(),
    doc: 'Enrollment keys (X25519 private keys, hex), newest first; "retired": true stops new enrollments under one.',
  },
  enrollChallengeSec: { schema: int(5, 300), default: 60, doc: 'Lifetime of an enrollment challenge, seconds.' },
  installNewHours: { schema: int(0, 8760), default: 24, doc: 'How long an install is "new" after it enrolled, hours.' },
  installKeyCacheSize: { schema: int(1, 100_000_000), default: 100_000 },
  revokedKids: { schema: list('a list of key ids'), default: [] },
  flagsFile: {
    schema: text(),
    doc: 'Policy and client flags (GrowthBook features JSON), over the built-in defaults.',
    example: '"moat-policy.json"',
  },
  adminToken: {
    schema: v.pipe(v.string('at least 16 characters'), v.minLength(16, 'at least 16 characters')),
    secret: true,
    generate: () => randomBytes(24).toString('base64url'),
  },
  metricsToken: {
    schema: v.pipe(
      v.string('a string of at least 16 characters'),
      v.minLength(16, 'a string of at least 16 characters'),
    ),
    secret: true,
  },
  fingerprintSalt: { schema: text(), secret: true, generate: () => randomBytes(12).toString('base64url') },
  serverSecret: { schema: hex(32), secret: true, generate: () => randomBytes(32).toString('hex') },
  signingSecret: { schema: hex(32), secret: true, generate: () => randomBytes(32).toString('hex') },
  signingKid: { schema: text(), default: 's1' },
  windowSec: { schema: int(1, 86_400), default: 300 },
  maxBodyBytes: { schema: int(1024, 100 * 1024 * 1024), default: 10 * 1024 * 1024 },
  maxJsonDepth: { schema: int(8, 10_000), default: 128 },
  decoyEntrypoints: {
    schema: list('a list of entry points'),
    default: ['cli'],
    doc: 'Entry points whose requests may get decoys (comma-separated).',
  },
  decoyRetentionDays: {
    schema: int(1, 3650),
    default: 90,
    doc: 'How far back decoys that come back are traced to the key they were served to, in days.',
  },
  spoolFile: { schema: text() },
  spoolMaxBytes: { schema: int(4096, 1024 * 1024 * 1024), default: 64 * 1024 * 1024 },
  spoolReserveBytes: {
    schema: int(0, 1024 * 1024 * 1024),
    default: 16 * 1024 * 1024,
    doc: 'Disk space kept beside the spool for the records of answers in flight when the disk fills (0: none).',
  },
  upstreamConnections: {
    schema: int(1, 65_536),
    default: 4096,
    doc: 'Upstream calls in flight at once, at most; more wait up to upstreamQueueTimeoutMs.',
  },
  traceWorkers: {
    schema: int(0, 64),
    doc: 'Worker threads that trace large requests (PDFs, much text) for decoys off the event loop, 0 to 64 (default: the cores but one, at least 1, at most 4; 0: on the event loop).',
  },
  upstreamQueueTimeoutMs: {
    schema: int(0, 600_000),
    default: 10_000,
    doc: 'How long a request waits for a free upstream connection before a 503.',
  },
  upstreamStallMs: {
    schema: int(100, 3_600_000),
    default: 120_000,
    doc: 'While requests wait for a connection, a call whose upstream sent nothing for this long is ended (504).',
  },
  upstreamConnectTimeoutMs: { schema: int(100, 600_000), default: 10_000 },
  upstreamHeadersTimeoutMs: { schema: int(100, 3_600_000), default: 600_000 },
  upstreamIdleTimeoutMs: { schema: int(100, 3_600_000), default: 300_000 },
  shutdownGraceMs: { schema: int(0, 600_000), default: 10_000 },
  clientKey: { schema: text(), default: 'moat' },
  userAgentProduct: { schema: text(), env: 'MOAT_VERIFIER_UA_PRODUCT', default: 'moat-chat' },
  publicAuthorities: {
    schema: list("a lowercase host[:port] without the scheme's default port, e.g. api.example.com", AUTHORITY_RE),
  },
  publicPathPrefix: {
    schema: v.pipe(
      v.string(),
      v.regex(
        /^(?:\/(?!\.{1,2}(?:\/|$))[A-Za-z0-9._~-]+)+$/,
        'a path prefix: "/" and segments, no trailing "/", no dot segments, e.g. /anthropic',
      ),
    ),
    doc: 'The path a front end strips before the verifier, e.g. /anthropic: r1 stamps are checked against it and the path received.',
  },
  passthroughRoutes: {
    schema: v.pipe(
      list('"METHOD /pattern", e.g. "GET /v1/models/:id"', PASSTHROUGH_ENTRY),
      v.array(
        v.pipe(
          v.string(),
          v.check(
            outsideGuarded,
            'a route outside /v1/messages…, /v1/files… and /v1/moat… in any case, with no dot segments (always checked)',
          ),
        ),
      ),
    ),
    default: DEFAULT_PASSTHROUGH_ROUTES,
    doc:
      "Upstream routes forwarded without Moat's checks; any other route is refused (404, recorded). " +
      'Add "POST /v1/complete" to serve legacy completions (unchecked).',
  },
} as const satisfies Readonly<Record<string, Setting>>;

/** A setting's name. */
export type SettingName = keyof typeof SETTINGS;
type Values = { -readonly [K in SettingName]?: v.InferOutput<(typeof SETTINGS)[K]['schema']> };

/** A setting's environment variable: `MOAT_VERIFIER_` and its name in SNAKE_CASE, unless the setting names another. */
export function envName(name: SettingName): string {
  const setting: Setting = SETTINGS[name];
  return setting.env ?? `MOAT_VERIFIER_${name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** What an error says came: a secret's length, anything else as JSON (cut to 80 characters). */
function describe(value: unknown, secret: boolean): string {
  if (secret && typeof value === 'string') return `${value.length} characters`;
  return (JSON.stringify(value) ?? String(value)).slice(0, 80);
}

/** One setting's value, checked, or the error that names it (with the entry of a list or object). */
function parseSetting(name: SettingName, raw: unknown): unknown {
  const setting: Setting = SETTINGS[name];
  const result = v.safeParse(setting.schema, raw);
  if (result.success) return result.output;
  const [issue] = result.issues;
  const where = (issue.path ?? [])
    .map((p) => (typeof p.key === 'number' ? `[${p.key}]` : `.${String(p.key)}`))
    .join('')
    .replace(/^\.(\d+)/, '[$1]');
  // What came: the entry at fault inside a list or object, else the setting as given (before any conversion).
  const got = issue.path === undefined ? raw : issue.input;
  throw new VerifierConfigError(`${name}${where}`, issue.message, describe(got, setting.secret === true));
}

/** Reads the config file: JSON with whole-line `//` comments, an object. */
function readConfigFile(file: string): Record<string, unknown> {
  let content: string;
  try {
    content = readFileSync(file, 'utf8');
  } catch (error) {
    throw new VerifierConfigError('config file', `a readable file at ${file}`, errorCode(error) ?? 'an error');
  }
  let parsed: unknown;
  try {
    // Whole-line `//` comments are allowed (`moat-verifier init` writes them).
    // [ \t]*, not \s*: a run of blank lines must not be rescanned from every line (quadratic).
    parsed = JSON.parse(content.replace(/^[ \t]*\/\/.*$/gm, ''));
  } catch (error) {
    throw new VerifierConfigError('config file', 'JSON', `a syntax error: ${errorMessage(error)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new VerifierConfigError('config file', 'a JSON object', Array.isArray(parsed) ? 'an array' : typeof parsed);
  // `$schema` is for editors.
  for (const name of Object.keys(parsed)) if (name !== '$schema') assertSettingName(name, file);
  return parsed as Record<string, unknown>;
}

/**
 * @throws {VerifierConfigError} for a name that is no setting: a typo is refused, not ignored
 * with the setting left at its default, and the error names the setting it likely meant.
 */
function assertSettingName(name: string, file?: string): void {
  if (Object.hasOwn(SETTINGS, name)) return;
  const hint = closestName(name, Object.keys(SETTINGS));
  throw new VerifierConfigError(
    name,
    file === undefined ? 'the name of a setting' : `the name of a setting in ${file}`,
    `an unknown name${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
  );
}

/** The key of a `{ kid, key }` file (a development build of `@moat/native` writes one). */
function readKeyFile(file: string): { kid: string; key: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new VerifierConfigError(
      'attestationKeyFile',
      `a readable { kid, key } JSON file at ${file}`,
      errorMessage(error),
    );
  }
  const result = v.safeParse(attestationKey, raw);
  if (!result.success) {
    const [issue] = result.issues;
    throw new VerifierConfigError(`attestationKeyFile (${file})`, issue.message, describe(issue.input, true));
  }
  return result.output;
}

/** Every setting from the environment over the file over the data directory's defaults over the built-in ones. */
function readSettings(
  env: NodeJS.ProcessEnv,
  fromFile: Record<string, unknown>,
  defaults: Readonly<Record<string, string>>,
): Values {
  const values: Record<string, unknown> = {};
  for (const name of Object.keys(SETTINGS) as SettingName[]) {
    const variable = envName(name);
    const raw = env[variable] ?? fromFile[name] ?? defaults[variable];
    const setting: Setting = SETTINGS[name];
    if (raw !== undefined) values[name] = parseSetting(name, raw);
    else if (setting.default !== undefined) values[name] = setting.default;
  }
  return values as Values;
}

/** A required setting, or the error that says it is missing. */
function required<T>(name: SettingName, value: T | undefined): T {
  if (value === undefined) throw new VerifierConfigError(name, 'a value', 'none');
  return value;
}

/**
 * Builds the configuration from a JSON file (optional; whole-line `//` comments allowed)
 * overlaid by environment variables (`MOAT_VERIFIER_*`), over `defaults` (the data
 * directory's, see {@link dataDirDefaults}), each setting checked by its schema in
 * {@link SETTINGS}.
 *
 * @throws {VerifierConfigError} naming the first bad setting, what it expected and what came.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  file?: string,
  defaults: Readonly<Record<string, string>> = {},
): VerifierConfig {
  assertSettingVariables(env);
  return configOf(readSettings(env, file === undefined ? {} : readConfigFile(file), defaults));
}

/** `MOAT_VERIFIER_*` variables the command line reads besides the settings'. */
const CLI_VARIABLES: readonly string[] = ['MOAT_VERIFIER_LOG_LEVEL', 'MOAT_VERIFIER_DATA_DIR'];

/**
 * @throws {VerifierConfigError} for a `MOAT_VERIFIER_*` variable that is no setting's
 * (`MOAT_VERIFIER_FLAG_FILE`): a typo there would leave the setting at its default unseen.
 */
function assertSettingVariables(env: NodeJS.ProcessEnv): void {
  const known = [...(Object.keys(SETTINGS) as SettingName[]).map(envName), ...CLI_VARIABLES];
  for (const name of Object.keys(env))
    if (name.startsWith('MOAT_VERIFIER_') && !known.includes(name)) {
      const hint = closestName(name, known);
      throw new VerifierConfigError(
        name,
        'the variable of a setting',
        `an unknown name${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
      );
    }
}

/**
 * Builds the configuration from settings given as values (the JSON a config file holds, by
 * the names of {@link SETTINGS}), each checked by its schema, defaults for the rest; no
 * environment variable is read.
 *
 * @throws {VerifierConfigError} naming an unknown setting, or the first bad one with what it
 * expected and what came.
 */
export function configFromSettings(values: Readonly<Record<string, unknown>>): VerifierConfig {
  for (const name of Object.keys(values)) assertSettingName(name);
  return configOf(readSettings({}, values, {}));
}

/** The configuration from checked settings: the required ones present, the derived ones derived. */
function configOf(s: Values): VerifierConfig {
  if ((s.postgresUrl === undefined) !== (s.redisUrl === undefined))
    throw new VerifierConfigError(
      'postgresUrl/redisUrl',
      'both or neither',
      s.postgresUrl === undefined ? 'only redisUrl' : 'only postgresUrl',
    );
  const database = required('database', s.database);
  const attestationKeys = [...required('attestationKeys', s.attestationKeys)];
  if (s.attestationKeyFile !== undefined) attestationKeys.push(readKeyFile(s.attestationKeyFile));
  return {
    host: required('host', s.host),
    port: required('port', s.port),
    database,
    postgresUrl: s.postgresUrl,
    redisUrl: s.redisUrl,
    upstream: required('upstream', s.upstream),
    upstreamKey: s.upstreamKey,
    flagsFile: s.flagsFile,
    adminToken: required('adminToken', s.adminToken),
    fingerprintSalt: required('fingerprintSalt', s.fingerprintSalt),
    attestationKeys,
    revokedKids: required('revokedKids', s.revokedKids),
    releases: required('releases', s.releases),
    serverSecret: required('serverSecret', s.serverSecret),
    signingSecret: required('signingSecret', s.signingSecret),
    signingKid: required('signingKid', s.signingKid),
    windowSec: required('windowSec', s.windowSec),
    maxBodyBytes: required('maxBodyBytes', s.maxBodyBytes),
    decoyEntrypoints: required('decoyEntrypoints', s.decoyEntrypoints),
    decoyRetentionDays: required('decoyRetentionDays', s.decoyRetentionDays),
    spoolFile: spoolFileOf(s.spoolFile ?? '', database, s.postgresUrl !== undefined),
    spoolMaxBytes: required('spoolMaxBytes', s.spoolMaxBytes),
    spoolReserveBytes: required('spoolReserveBytes', s.spoolReserveBytes),
    upstreamConnections: required('upstreamConnections', s.upstreamConnections),
    shutdownGraceMs: required('shutdownGraceMs', s.shutdownGraceMs),
    maxJsonDepth: required('maxJsonDepth', s.maxJsonDepth),
    metricsToken: s.metricsToken,
    traceWorkers: s.traceWorkers,
    upstreamTimeouts: {
      connectMs: required('upstreamConnectTimeoutMs', s.upstreamConnectTimeoutMs),
      headersMs: required('upstreamHeadersTimeoutMs', s.upstreamHeadersTimeoutMs),
      bodyIdleMs: required('upstreamIdleTimeoutMs', s.upstreamIdleTimeoutMs),
      queueMs: required('upstreamQueueTimeoutMs', s.upstreamQueueTimeoutMs),
      stallMs: required('upstreamStallMs', s.upstreamStallMs),
    },
    clientKey: required('clientKey', s.clientKey),
    userAgentProduct: required('userAgentProduct', s.userAgentProduct),
    publicAuthorities: s.publicAuthorities,
    publicPathPrefix: s.publicPathPrefix,
    passthroughRoutes: required('passthroughRoutes', s.passthroughRoutes).map(routeOf),
    enrollmentKeys: required('enrollmentKeys', s.enrollmentKeys),
    enrollChallengeSec: required('enrollChallengeSec', s.enrollChallengeSec),
    installNewHours: required('installNewHours', s.installNewHours),
    installKeyCacheSize: required('installKeyCacheSize', s.installKeyCacheSize),
  };
}

/**
 * Parses a `passthroughRoutes` value (a list, or a comma-separated string, of
 * `METHOD /pattern` with exact and `:name` segments only — nothing that matches a path under
 * `/v1/messages` or `/v1/moat`, which are always Moat-checked) into routes.
 *
 * @throws {VerifierConfigError} naming the entry.
 */
export function parsePassthroughRoutes(raw: unknown): Array<{ method: string; pattern: string }> {
  return (parseSetting('passthroughRoutes', raw) as string[]).map(routeOf);
}

/**
 * The spool's file: the setting, else one derived from the database's, so it is the same
 * file after every restart. Records kept in PostgreSQL outlive the process, so their spool
 * must too: with `database: ':memory:'` the setting is then required.
 *
 * @throws {VerifierConfigError} `spoolFile` when it is needed and not set.
 */
export function spoolFileOf(setting: string, database: string, postgres: boolean): string {
  if (setting !== '') return setting;
  if (database !== ':memory:') return `${database}.spool`;
  if (postgres)
    throw new VerifierConfigError(
      'spoolFile',
      'a file for the records spooled while PostgreSQL is down (database is :memory:, so none can be derived)',
      'nothing',
    );
  return ':memory:';
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
  const env: Record<string, string> = {
    MOAT_VERIFIER_PORT: '0',
    MOAT_VERIFIER_DATABASE: options.database ?? ':memory:',
    MOAT_VERIFIER_ADMIN_TOKEN: options.adminToken ?? randomBytes(16).toString('hex'),
    MOAT_VERIFIER_FINGERPRINT_SALT: options.salt ?? 'moat-dev-salt',
    MOAT_VERIFIER_SERVER_SECRET: randomBytes(32).toString('hex'),
    MOAT_VERIFIER_SIGNING_SECRET: randomBytes(32).toString('hex'),
    MOAT_VERIFIER_ENROLLMENT_KEYS: newEnrollmentKeys(),
  };
  if (options.attestationKeyFile !== undefined) env.MOAT_VERIFIER_ATTESTATION_KEY_FILE = options.attestationKeyFile;
  return env;
}

/** The settings a data directory generates once and keeps (`secrets.json`). */
const GENERATED = (Object.keys(SETTINGS) as SettingName[]).filter(
  (name) => (SETTINGS[name] as Setting).generate !== undefined,
);

/**
 * The settings of a verifier started with none: a data directory (created, mode 0700) that
 * holds generated secrets (`secrets.json`, mode 0600, made once and reused by every later
 * start: every setting of {@link SETTINGS} with a generator), the SQLite database and the
 * record spool; and, when a development build of `@moat/native` made a key, that key for
 * attestation. Environment and config file still override every one of them.
 */
export function dataDirDefaults(
  dir: string,
  devKeyFile?: string,
): { env: Record<string, string>; secretsFile: string; created: boolean } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretsFile = join(dir, 'secrets.json');
  let secrets: Record<string, unknown>;
  let created = false;
  if (existsSync(secretsFile)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(secretsFile, 'utf8'));
    } catch (error) {
      throw new VerifierConfigError('dataDir', `readable secrets at ${secretsFile}`, errorMessage(error));
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new VerifierConfigError('dataDir', `a JSON object of secrets at ${secretsFile}`, jsonKind(parsed));
    secrets = parsed as Record<string, unknown>;
    for (const name of GENERATED) {
      const value = secrets[name];
      if (value !== undefined && typeof value !== 'string')
        throw new VerifierConfigError(`dataDir: ${name}`, `a string in ${secretsFile}`, typeof value);
    }
    // A directory made before a generated setting existed (enrollment keys) gains it, once.
    const missing = GENERATED.filter((name) => secrets[name] === undefined);
    if (missing.length > 0) {
      for (const name of missing) secrets[name] = (SETTINGS[name] as Setting).generate?.();
      writeFileSync(secretsFile, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
    }
  } else {
    secrets = Object.fromEntries(GENERATED.map((name) => [name, (SETTINGS[name] as Setting).generate?.()]));
    writeFileSync(secretsFile, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    created = true;
  }
  const env: Record<string, string> = {};
  for (const name of GENERATED) {
    const value = secrets[name];
    if (typeof value === 'string') env[envName(name)] = value;
  }
  env[envName('database')] = join(dir, 'verifier.db');
  env[envName('spoolFile')] = join(dir, 'records.spool');
  if (devKeyFile !== undefined && existsSync(devKeyFile)) env[envName('attestationKeyFile')] = devKeyFile;
  return { secretsFile, created, env };
}

/**
 * A commented config file for `moat-verifier init`, from {@link SETTINGS}: every setting
 * with a default or an example, generated secrets left to the data directory.
 */
export function configTemplate(): string {
  const lines = [
    '{',
    '  // moat-verifier settings. MOAT_VERIFIER_<NAME> environment variables override each one',
    '  // (camelCase names become SNAKE_CASE). Secrets left out here come from the data directory.',
  ];
  const entries = Object.entries(SETTINGS) as Array<[SettingName, Setting]>;
  const written = entries.filter(
    ([, s]) => s.example === undefined && s.default !== undefined && s.generate === undefined,
  );
  const last = written.at(-1)?.[0];
  for (const [name, setting] of entries) {
    if (setting.generate !== undefined || (setting.default === undefined && setting.example === undefined)) continue;
    if (setting.doc !== undefined) lines.push(`  // ${setting.doc}`);
    if (setting.example !== undefined) lines.push(`  // "${name}": ${setting.example},`);
    else lines.push(`  "${name}": ${JSON.stringify(setting.default)}${name === last ? '' : ','}`);
  }
  lines.push('}', '');
  return lines.join('\n');
}
