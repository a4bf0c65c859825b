import { type ParseResult, ProtocolError, toResult } from './errors.js';
import { describeValue } from './internal/describe.js';
import { parseHttpUrl } from './internal/http-url.js';
import { isSpaceOrTab, trimWhere } from './internal/trim.js';
import { asciiLower, utf8Length } from './text.js';

/** One known AI gateway: header-name prefixes it adds and hosts it is served from. */
export interface GatewayRule {
  /** Stable lowercase id, used in signals: `litellm`, `helicone`, … */
  readonly id: string;
  /** Display name. */
  readonly name: string;
  /** Lowercase header-name prefixes (or whole names) the gateway adds to responses or forwarded requests. */
  readonly headerPrefixes: readonly string[];
  /** Lowercase host suffixes: `.example.com` matches subdomains and `example.com`; a name without a leading dot matches only itself. */
  readonly hostSuffixes: readonly string[];
}

/** A versioned gateway rule table. Clients may receive newer revisions from the verifier. */
export interface GatewayRuleTable {
  /** Table format version, 1. */
  readonly version: 1;
  /** Monotonic revision, `YYYY.MM.DD` or `YYYY.MM.DD.N`; newer replaces older. */
  readonly revision: string;
  readonly rules: readonly GatewayRule[];
}

/** Bounds a rule table must respect, so a hostile update cannot exhaust a client. */
export const GATEWAY_RULE_LIMITS = {
  rules: 256,
  patternsPerRule: 32,
  patternLength: 128,
  nameLength: 64,
  serializedBytes: 65_536,
} as const;

/**
 * The built-in rule table. Header prefixes come from each gateway's public documentation of
 * the headers it adds; host suffixes from the hosts its SaaS endpoints are served on.
 */
export const GATEWAY_RULES: GatewayRuleTable = {
  version: 1,
  revision: '2026.11.25',
  rules: [
    // LiteLLM proxy: its own x-litellm-* headers, and upstream headers re-sent as llm_provider-*.
    { id: 'litellm', name: 'LiteLLM', headerPrefixes: ['x-litellm-', 'llm_provider-'], hostSuffixes: [] },
    { id: 'helicone', name: 'Helicone', headerPrefixes: ['helicone-'], hostSuffixes: ['.helicone.ai'] },
    { id: 'portkey', name: 'Portkey', headerPrefixes: ['x-portkey-'], hostSuffixes: ['.portkey.ai'] },
    {
      id: 'cloudflare-ai-gateway',
      name: 'Cloudflare AI Gateway',
      headerPrefixes: ['cf-aig-'],
      hostSuffixes: ['gateway.ai.cloudflare.com'],
    },
    { id: 'kong', name: 'Kong AI Gateway', headerPrefixes: ['x-kong-'], hostSuffixes: [] },
    { id: 'braintrust', name: 'Braintrust AI Proxy', headerPrefixes: ['x-bt-'], hostSuffixes: ['.braintrust.dev'] },
    // Amazon API Gateway sets x-amz-apigw-id on every response it fronts.
    { id: 'aws-api-gateway', name: 'Amazon API Gateway', headerPrefixes: ['x-amz-apigw-'], hostSuffixes: [] },
    {
      id: 'databricks',
      name: 'Databricks AI Gateway',
      headerPrefixes: [],
      hostSuffixes: ['.cloud.databricks.com', '.azuredatabricks.net', '.gcp.databricks.com'],
    },
    { id: 'snowflake-cortex', name: 'Snowflake Cortex', headerPrefixes: [], hostSuffixes: ['.snowflakecomputing.com'] },
    { id: 'openrouter', name: 'OpenRouter', headerPrefixes: [], hostSuffixes: ['openrouter.ai'] },
    { id: 'vercel-ai-gateway', name: 'Vercel AI Gateway', headerPrefixes: [], hostSuffixes: ['ai-gateway.vercel.sh'] },
  ],
};

const ID_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;
const HEADER_PREFIX_RE = /^[a-z0-9][a-z0-9._-]{0,127}$/;
const HOST_SUFFIX_RE = /^\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/;
const REVISION_RE = /^[0-9]{4}\.[0-9]{2}\.[0-9]{2}(\.[0-9]{1,4})?$/;
const RULE_MEMBERS = new Set(['id', 'name', 'headerPrefixes', 'hostSuffixes']);
const TABLE_MEMBERS = new Set(['version', 'revision', 'rules']);

function fail(expected: string, received: string): never {
  throw new ProtocolError('ERR_GATEWAY_RULES', expected, received);
}

function patterns(value: unknown, where: string, re: RegExp): string[] {
  if (!Array.isArray(value)) fail(`${where} as an array`, describeValue(value));
  if (value.length > GATEWAY_RULE_LIMITS.patternsPerRule) {
    fail(`at most ${GATEWAY_RULE_LIMITS.patternsPerRule} entries in ${where}`, `${value.length}`);
  }
  return value.map((p, i) => {
    if (typeof p !== 'string' || p.length > GATEWAY_RULE_LIMITS.patternLength || !re.test(p)) {
      fail(`${where}[${i}] as a lowercase literal (no wildcards or regular expressions)`, describeValue(p));
    }
    return p;
  });
}

/**
 * Validates an untrusted rule table (e.g. a remote update): known members only, literal
 * lowercase prefixes and host suffixes (no regular expressions), unique ids, bounded sizes.
 *
 * @throws {ProtocolError} `ERR_GATEWAY_RULES` naming the first problem.
 */
export function parseGatewayRuleTable(input: unknown): GatewayRuleTable {
  let size: number;
  try {
    size = new TextEncoder().encode(JSON.stringify(input) ?? '').length;
  } catch {
    fail('a JSON-serializable table', 'a value JSON cannot encode');
  }
  if (size > GATEWAY_RULE_LIMITS.serializedBytes) fail(`at most ${GATEWAY_RULE_LIMITS.serializedBytes} bytes`, `${size} bytes`);
  if (typeof input !== 'object' || input === null || Array.isArray(input)) fail('an object', describeValue(input));
  const table = input as Record<string, unknown>;
  for (const key of Object.keys(table)) if (!TABLE_MEMBERS.has(key)) fail('members version, revision, rules', describeValue(key));
  if (table.version !== 1) fail('version 1', describeValue(table.version));
  if (typeof table.revision !== 'string' || !REVISION_RE.test(table.revision)) {
    fail('revision as YYYY.MM.DD[.N]', describeValue(table.revision));
  }
  if (!Array.isArray(table.rules)) fail('rules as an array', describeValue(table.rules));
  if (table.rules.length > GATEWAY_RULE_LIMITS.rules) fail(`at most ${GATEWAY_RULE_LIMITS.rules} rules`, `${table.rules.length}`);
  const ids = new Set<string>();
  const rules = table.rules.map((raw, i): GatewayRule => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(`rules[${i}] as an object`, describeValue(raw));
    const rule = raw as Record<string, unknown>;
    for (const key of Object.keys(rule)) {
      if (!RULE_MEMBERS.has(key)) fail(`rules[${i}] members id, name, headerPrefixes, hostSuffixes`, describeValue(key));
    }
    if (typeof rule.id !== 'string' || !ID_RE.test(rule.id)) fail(`rules[${i}].id matching [a-z0-9-]{1,32}`, describeValue(rule.id));
    if (ids.has(rule.id)) fail(`unique rule ids`, `"${rule.id}" twice`);
    ids.add(rule.id);
    if (typeof rule.name !== 'string' || rule.name.length === 0 || utf8Length(rule.name) > GATEWAY_RULE_LIMITS.nameLength) {
      fail(`rules[${i}].name of 1-${GATEWAY_RULE_LIMITS.nameLength} UTF-8 bytes`, describeValue(rule.name));
    }
    const headerPrefixes = patterns(rule.headerPrefixes, `rules[${i}].headerPrefixes`, HEADER_PREFIX_RE);
    const hostSuffixes = patterns(rule.hostSuffixes, `rules[${i}].hostSuffixes`, HOST_SUFFIX_RE);
    if (headerPrefixes.length + hostSuffixes.length === 0) fail(`rules[${i}] with at least one pattern`, 'none');
    return { id: rule.id, name: rule.name, headerPrefixes, hostSuffixes };
  });
  return { version: 1, revision: table.revision, rules };
}

/** Like {@link parseGatewayRuleTable}, but returns a {@link ParseResult} instead of throwing. */
export function tryParseGatewayRuleTable(input: unknown): ParseResult<GatewayRuleTable> {
  return toResult(() => parseGatewayRuleTable(input));
}

/** A gateway match: which rule and what evidence matched. */
export interface GatewayDetection {
  readonly id: string;
  readonly evidence: readonly string[];
}

/** Headers as a `Headers` object, an iterable of pairs, or a plain record. */
export type HeaderInput = Iterable<readonly [string, string]> | Readonly<Record<string, string | readonly string[] | undefined>>;

function headerNames(headers: HeaderInput): string[] {
  const names: string[] = [];
  if (Symbol.iterator in headers) for (const [name] of headers as Iterable<readonly [string, string]>) names.push(asciiLower(name));
  else for (const name of Object.keys(headers)) names.push(asciiLower(name));
  return names;
}

/** Orders strings by their UTF-8 bytes (the same as by code points), not by UTF-16 code units. */
function byUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function hostMatches(host: string, suffix: string): boolean {
  if (suffix.startsWith('.')) return host.endsWith(suffix) || host === suffix.slice(1);
  return host === suffix;
}

/**
 * The host of a base URL, or of a bare `host[:port]`, without port or one trailing dot
 * (§9): a value containing `://` is parsed by the WHATWG URL Standard (http and https
 * only; anything else has no host, `""`); any other value is trimmed of spaces and tabs,
 * lowercased (A-Z only) and loses a trailing `:digits`. A value that is not a string has no
 * host either.
 */
export function normalizeHost(hostOrUrl: string): string {
  if (typeof hostOrUrl !== 'string') return '';
  let host: string;
  if (hostOrUrl.includes('://')) {
    const url = parseHttpUrl(hostOrUrl);
    if (url === undefined) return '';
    host = url.hostname;
  } else {
    host = asciiLower(trimWhere(hostOrUrl, isSpaceOrTab)).replace(/:[0-9]+$/, '');
  }
  return host.replace(/\.$/, '');
}

/**
 * Matches header names (case-insensitively, by prefix) and a base URL's host (by suffix)
 * against a rule table. Returns one detection per matching rule, in table order, with the
 * header names (`header:<name>`) and host (`host:<host>`) that matched.
 *
 * @example
 * ```ts
 * detectGateways({ headers: { 'X-LiteLLM-Call-Id': 'abc' } }); // [{ id: 'litellm', evidence: ['header:x-litellm-call-id'] }]
 * ```
 */
export function detectGateways(
  input: { readonly headers?: HeaderInput; readonly baseUrl?: string },
  table: GatewayRuleTable = GATEWAY_RULES,
): GatewayDetection[] {
  const names = input.headers === undefined ? [] : headerNames(input.headers);
  const host = input.baseUrl === undefined ? '' : normalizeHost(input.baseUrl);
  const detections: GatewayDetection[] = [];
  // Plain loops: this runs for every request a verifier reads, rules × headers times, and a
  // closure per pair was most of what it allocated.
  for (const rule of table.rules) {
    let evidence: string[] | undefined;
    for (const name of names) {
      if (!startsWithAny(name, rule.headerPrefixes)) continue;
      const item = `header:${name}`;
      evidence ??= [];
      if (!evidence.includes(item)) evidence.push(item);
    }
    if (host !== '' && matchesAnyHost(host, rule.hostSuffixes)) {
      evidence ??= [];
      evidence.push(`host:${host}`);
    }
    // Sorted by the bytes of their UTF-8 form (§9), not by UTF-16 code units.
    if (evidence !== undefined) detections.push({ id: rule.id, evidence: evidence.sort(byUtf8) });
  }
  return detections;
}

function startsWithAny(name: string, prefixes: readonly string[]): boolean {
  for (let i = 0; i < prefixes.length; i++) if (name.startsWith(prefixes[i] as string)) return true;
  return false;
}

function matchesAnyHost(host: string, suffixes: readonly string[]): boolean {
  for (let i = 0; i < suffixes.length; i++) if (hostMatches(host, suffixes[i] as string)) return true;
  return false;
}
