import { createHmac, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import { detectGateways, GATEWAY_RULES, type GatewayDetection, type GatewayRuleTable, type HeaderInput } from '@moat/protocol';
import { describeValue, LruMap } from '@moat/protocol/support';
import { GatewayStatsError } from './errors.js';

export { type GatewayDetectErrorCode, GatewayStatsError } from './errors.js';

/**
 * Request-side relay evidence, each a named signal; none blocks by itself.
 *
 * - `gateway_headers`: header names a known gateway adds when it forwards;
 * - `forwarded_chain`: `Via`, `Forwarded` or `X-Forwarded-For` show intermediaries;
 * - `ua_mismatch`: the user agent disagrees with the client the attribution block claims;
 * - `address_fan_in`: one key arrives from more distinct addresses than a person uses.
 */
export const RELAY_SIGNALS = ['gateway_headers', 'forwarded_chain', 'ua_mismatch', 'address_fan_in'] as const;
export type RelaySignal = (typeof RELAY_SIGNALS)[number];

/** What {@link inspectRequest} needs to know about one incoming request. */
export interface RequestContext {
  /** The request's headers; a header whose value is not a string (or strings) is skipped. */
  readonly headers: HeaderInput;
  /** The attested or claimed client version (`cv` of the attribution block), when known. */
  readonly clientVersion?: string;
  /**
   * The user-agent product of the genuine client (e.g. `moat-chat`); with `clientVersion`
   * the user agent is expected to contain `<product>/<clientVersion>`.
   */
  readonly userAgentProduct?: string;
}

/** Evidence found on one request. */
export interface RequestEvidence {
  readonly gateways: GatewayDetection[];
  /** Intermediaries named by `Via`, `Forwarded` and `X-Forwarded-For`, in order. */
  readonly hops: readonly string[];
  readonly userAgent: string | undefined;
  readonly signals: readonly RelaySignal[];
}

type HeaderPairs = ReadonlyArray<readonly [string, string]>;

/**
 * The `[name, value]` pairs of headers given as a `Headers` object, an iterable of pairs or a
 * record (values a string or an array of strings), keeping only string names and values.
 * Headers reach here from servers and parsed JSON alike, so anything else (a number, `null`,
 * no headers at all, even an iterator that throws) reads as headers absent, never as an error.
 */
function headerPairs(headers: unknown): HeaderPairs {
  const out: Array<readonly [string, string]> = [];
  if (typeof headers !== 'object' || headers === null) return out;
  try {
    if (Symbol.iterator in headers) {
      for (const pair of headers as Iterable<unknown>) {
        if (!Array.isArray(pair)) continue;
        const [k, v] = pair as unknown[];
        if (typeof k === 'string' && typeof v === 'string') out.push([k, v]);
      }
      return out;
    }
    for (const [k, v] of Object.entries(headers)) {
      if (typeof v === 'string') out.push([k, v]);
      else if (Array.isArray(v)) for (const item of v as unknown[]) if (typeof item === 'string') out.push([k, item]);
    }
  } catch {
    return [];
  }
  return out;
}

function headerValues(pairs: HeaderPairs, name: string): string[] {
  const out: string[] = [];
  for (const [k, v] of pairs) if (k.toLowerCase() === name) out.push(v);
  return out;
}

/** Splits a comma-separated header list, ignoring commas inside quoted strings. */
function splitList(value: string): string[] {
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  for (const ch of value) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      parts.push(current.trim());
      current = '';
    } else current += ch;
  }
  parts.push(current.trim());
  return parts.filter((p) => p !== '');
}

/**
 * Hops named by Via (RFC 9110 §7.6.3), Forwarded (RFC 7239) and X-Forwarded-For, bounded to 32.
 * Header values that are not strings are skipped.
 */
export function forwardingHops(headers: HeaderInput): string[] {
  return hopsOf(headerPairs(headers));
}

function hopsOf(headers: HeaderPairs): string[] {
  const hops: string[] = [];
  for (const via of headerValues(headers, 'via')) for (const hop of splitList(via)) hops.push(`via:${hop.slice(0, 128)}`);
  for (const fwd of headerValues(headers, 'forwarded')) {
    for (const element of splitList(fwd)) {
      const forPart = element.split(';').find((p) => p.trim().toLowerCase().startsWith('for='));
      hops.push(`forwarded:${(forPart?.trim().slice(4) ?? element).replace(/^"|"$/g, '').slice(0, 128)}`);
    }
  }
  for (const xff of headerValues(headers, 'x-forwarded-for')) for (const hop of splitList(xff)) hops.push(`xff:${hop.slice(0, 128)}`);
  return hops.slice(0, 32);
}

/**
 * Inspects an incoming request for relay evidence: gateway header prefixes from the rule
 * table, forwarding chains, and a user agent that disagrees with the claimed client.
 * Address fan-in needs history: {@link GatewayStats.record} adds it. Never throws: a header
 * whose value is not a string (or strings) is skipped, missing headers are none, and a
 * `clientVersion` or `userAgentProduct` that is not a string is not known.
 *
 * @example
 * ```ts
 * inspectRequest({ headers: { 'x-forwarded-for': '10.0.0.1', 'user-agent': 'python-httpx/0.27' }, clientVersion: '1.4.2', userAgentProduct: 'moat-chat' }).signals;
 * // ['forwarded_chain', 'ua_mismatch']
 * ```
 */
export function inspectRequest(context: RequestContext, rules: GatewayRuleTable = GATEWAY_RULES): RequestEvidence {
  const { headers, clientVersion, userAgentProduct }: Partial<Record<keyof RequestContext, unknown>> = context ?? {};
  const pairs = headerPairs(headers);
  const gateways = detectGateways({ headers: pairs }, rules);
  const hops = hopsOf(pairs);
  const userAgent = headerValues(pairs, 'user-agent')[0];
  const signals: RelaySignal[] = [];
  if (gateways.length > 0) signals.push('gateway_headers');
  if (hops.length > 0) signals.push('forwarded_chain');
  if (typeof userAgentProduct === 'string' && typeof clientVersion === 'string') {
    const expected = `${userAgentProduct}/${clientVersion}`.toLowerCase();
    const tokens = (userAgent ?? '').toLowerCase().split(/\s+/);
    if (!tokens.includes(expected)) signals.push('ua_mismatch');
  }
  return { gateways, hops, userAgent, signals };
}

/** Options of {@link GatewayStats}. */
export interface GatewayStatsOptions {
  /** Distinct source addresses within a window that make `address_fan_in` (default 8). */
  readonly fanInThreshold?: number;
  /** Length of the address window in milliseconds (default one hour). */
  readonly windowMs?: number;
  /** Addresses remembered per key and window; the count saturates here (default 64). */
  readonly maxAddresses?: number;
  /** Keys held; the least recently seen is evicted beyond this (default 100,000). */
  readonly maxKeys?: number;
  /**
   * Distinct gateway ids counted per key (default 32); later ones, and ids outside
   * {@link GATEWAY_ID_PATTERN}, count as `other`, so a client's telemetry cannot grow the
   * statistics, the admin summary or metric labels without bound.
   */
  readonly maxGatewaysPerKey?: number;
  /**
   * Secret that keys the address hashes, so no raw address is stored. Share it between
   * replicas that merge their statistics; a random one is drawn otherwise.
   */
  readonly addressSecret?: Uint8Array;
}

/** Per-key gateway statistics. */
export interface GatewayKeyReport {
  readonly key: string;
  readonly requests: number;
  /** Requests (and client telemetry reports) per gateway id. */
  readonly gateways: Readonly<Record<string, number>>;
  /** Requests per relay signal. */
  readonly signals: Readonly<Record<RelaySignal, number>>;
  /** Distinct source addresses in the current window (saturates at `maxAddresses`). */
  readonly distinctAddresses: number;
  readonly lastSeen: number;
}

/** A gateway id the statistics keep by name: lowercase letters, digits, `.`, `_`, `-`, at most 64. */
export const GATEWAY_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Where ids beyond a key's bound, or outside {@link GATEWAY_ID_PATTERN}, are counted. */
export const OTHER_GATEWAY = 'other';

interface KeyGatewayState {
  requests: number;
  /** A `Map`, never a plain object: ids such as `constructor` or `__proto__` are data, not prototype lookups. */
  gateways: Map<string, number>;
  signals: Record<RelaySignal, number>;
  windowStart: number;
  addresses: Set<string>;
  lastSeen: number;
}

/** Serialized {@link GatewayStats}. */
export interface SerializedGatewayStats {
  readonly format: 'moat-gateway-stats/1';
  readonly keys: Readonly<
    Record<
      string,
      {
        requests: number;
        gateways: Record<string, number>;
        signals: Record<RelaySignal, number>;
        windowStart: number;
        addresses: string[];
        lastSeen: number;
      }
    >
  >;
}

const emptySignals = (): Record<RelaySignal, number> => ({ gateway_headers: 0, forwarded_chain: 0, ua_mismatch: 0, address_fan_in: 0 });

/**
 * Aggregates gateway detections and relay signals per API key, with bounded memory: a
 * counter per gateway id and signal, and at most `maxAddresses` keyed address hashes per
 * window for the fan-in signal.
 *
 * @example
 * ```ts
 * const stats = new GatewayStats();
 * const evidence = inspectRequest({ headers: request.headers });
 * stats.record('key_7f3a', evidence, '203.0.113.7').signals; // adds 'address_fan_in' when due
 * ```
 */
export class GatewayStats {
  readonly #keys: LruMap<string, KeyGatewayState>;
  readonly #fanIn: number;
  readonly #windowMs: number;
  readonly #maxAddresses: number;
  readonly #maxGateways: number;
  readonly #secret: KeyObject;

  constructor(options: GatewayStatsOptions = {}) {
    this.#fanIn = options.fanInThreshold ?? 8;
    this.#windowMs = options.windowMs ?? 3_600_000;
    this.#maxAddresses = options.maxAddresses ?? 64;
    this.#maxGateways = options.maxGatewaysPerKey ?? 32;
    this.#keys = new LruMap({ maxSize: options.maxKeys ?? 100_000 });
    this.#secret = createSecretKey(options.addressSecret ?? randomBytes(32));
  }

  /** Keys evicted because `maxKeys` was reached. */
  get evicted(): number {
    return this.#keys.evicted;
  }

  #state(key: string, now: number): KeyGatewayState {
    let s = this.#keys.get(key);
    if (s === undefined) {
      s = { requests: 0, gateways: new Map(), signals: emptySignals(), windowStart: now, addresses: new Set(), lastSeen: now };
      this.#keys.set(key, s);
    }
    if (now - s.windowStart >= this.#windowMs) {
      s.windowStart = now;
      s.addresses.clear();
    }
    s.lastSeen = Math.max(s.lastSeen, now);
    return s;
  }

  /**
   * Records one request's evidence for `key` and its source address; returns the evidence
   * with `address_fan_in` added when the key has reached the threshold in this window.
   */
  record(key: string, evidence: RequestEvidence, remoteAddress?: string, now = Date.now()): RequestEvidence {
    const s = this.#state(key, now);
    s.requests++;
    for (const d of evidence.gateways) this.#count(s, d.id, 1);
    const signals = [...evidence.signals];
    if (remoteAddress !== undefined && remoteAddress !== '' && s.addresses.size < this.#maxAddresses) {
      s.addresses.add(createHmac('sha256', this.#secret).update(remoteAddress).digest('base64url').slice(0, 16));
    }
    if (s.addresses.size >= this.#fanIn && !signals.includes('address_fan_in')) signals.push('address_fan_in');
    for (const signal of signals) s.signals[signal]++;
    return { ...evidence, signals };
  }

  /** Adds gateway ids a client reported through telemetry (`gateway_detected`): untrusted, so bounded. */
  recordTelemetry(key: string, gateways: readonly string[], now = Date.now()): void {
    const s = this.#state(key, now);
    for (const id of new Set(gateways)) this.#count(s, id, 1);
  }

  #count(s: KeyGatewayState, id: string, n: number): void {
    const name = this.#gatewayName(s.gateways, id);
    s.gateways.set(name, (s.gateways.get(name) ?? 0) + n);
  }

  /** The name `id` is counted under in `gateways`: itself while within bounds, else {@link OTHER_GATEWAY}. */
  #gatewayName(gateways: ReadonlyMap<string, number>, id: string): string {
    return gateways.has(id) || (GATEWAY_ID_PATTERN.test(id) && gateways.size < this.#maxGateways) ? id : OTHER_GATEWAY;
  }

  /** The key's report, or `undefined` for a key never seen. */
  report(key: string): GatewayKeyReport | undefined {
    const s = this.#keys.peek(key);
    if (s === undefined) return undefined;
    return {
      key,
      requests: s.requests,
      gateways: Object.fromEntries(s.gateways),
      signals: { ...s.signals },
      distinctAddresses: s.addresses.size,
      lastSeen: s.lastSeen,
    };
  }

  /** Reports of every key. */
  reports(): GatewayKeyReport[] {
    return [...this.#keys.keys()].map((k) => this.report(k) as GatewayKeyReport);
  }

  /** Totals per gateway id over all keys. */
  totals(): Record<string, number> {
    const out = new Map<string, number>();
    for (const s of this.#keys.values()) for (const [id, n] of s.gateways) out.set(id, (out.get(id) ?? 0) + n);
    return Object.fromEntries(out);
  }

  /** A JSON-safe snapshot (address hashes only, never addresses). */
  toJSON(): SerializedGatewayStats {
    const keys: SerializedGatewayStats['keys'] = {};
    for (const [key, s] of this.#keys) {
      (keys as Record<string, unknown>)[key] = {
        ...s,
        gateways: Object.fromEntries(s.gateways),
        signals: { ...s.signals },
        addresses: [...s.addresses],
      };
    }
    return { format: 'moat-gateway-stats/1', keys };
  }

  /**
   * Adds another replica's snapshot: counters add, address sets unite (bounded). Replicas
   * must share `addressSecret` for the union to count distinct addresses correctly.
   *
   * A merge that would take any counter past `Number.MAX_SAFE_INTEGER` is refused, not
   * clamped: past it, counts stop being exact and further additions are lost silently.
   *
   * @throws {GatewayStatsError} `ERR_GATEWAY_STATS_FORMAT` for a malformed snapshot,
   *   `ERR_GATEWAY_STATS_OVERFLOW` for one whose counts would pass `Number.MAX_SAFE_INTEGER`;
   *   nothing is merged then.
   */
  merge(other: GatewayStats | unknown): this {
    const doc = other instanceof GatewayStats ? other.toJSON() : checkSnapshot(other);
    this.#refuseOverflow(doc);
    for (const [key, theirs] of Object.entries(doc.keys)) {
      const s = this.#state(key, theirs.lastSeen);
      s.requests += theirs.requests;
      for (const [id, n] of Object.entries(theirs.gateways)) this.#count(s, id, n);
      for (const signal of RELAY_SIGNALS) s.signals[signal] += signalCount(theirs.signals, signal);
      if (theirs.windowStart >= s.windowStart)
        for (const a of theirs.addresses) if (s.addresses.size < this.#maxAddresses) s.addresses.add(a);
    }
    return this;
  }

  /** Runs the additions {@link merge} would make, on copies, and throws before any would pass `Number.MAX_SAFE_INTEGER`. */
  #refuseOverflow(doc: SerializedGatewayStats): void {
    for (const [key, theirs] of Object.entries(doc.keys)) {
      const s = this.#keys.peek(key);
      const where = `keys[${describeValue(key)}]`;
      addCounts(`${where}.requests`, s?.requests ?? 0, theirs.requests);
      for (const signal of RELAY_SIGNALS) {
        addCounts(`${where}.signals.${signal}`, s?.signals[signal] ?? 0, signalCount(theirs.signals, signal));
      }
      const gateways = new Map(s?.gateways);
      for (const [id, n] of Object.entries(theirs.gateways)) {
        const name = this.#gatewayName(gateways, id);
        gateways.set(name, addCounts(`${where}.gateways.${name}`, gateways.get(name) ?? 0, n));
      }
    }
  }
}

/** `ours + theirs`, or a {@link GatewayStatsError} naming `where` when the sum would not be a safe integer. */
function addCounts(where: string, ours: number, theirs: number): number {
  if (theirs > Number.MAX_SAFE_INTEGER - ours) {
    throw new GatewayStatsError(
      `${where} at most Number.MAX_SAFE_INTEGER after the merge`,
      `${ours} + ${theirs}`,
      'ERR_GATEWAY_STATS_OVERFLOW',
    );
  }
  return ours + theirs;
}

/** A snapshot's count of `signal`; own members only, so a missing signal is 0 whatever the prototype holds. */
function signalCount(signals: Readonly<Record<string, number>>, signal: RelaySignal): number {
  return Object.hasOwn(signals, signal) ? (signals[signal] as number) : 0;
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function isHashList(value: unknown): boolean {
  if (!Array.isArray(value)) return false;
  // An index loop, not `every`: `every` skips the holes of a sparse array, which would merge as `undefined`.
  for (let i = 0; i < value.length; i++) {
    const a: unknown = value[i];
    if (typeof a !== 'string' || a.length > 64) return false;
  }
  return true;
}

function checkSnapshot(input: unknown): SerializedGatewayStats {
  if (typeof input !== 'object' || input === null) throw new GatewayStatsError('an object', describeValue(input));
  const doc = input as Record<string, unknown>;
  if (doc.format !== 'moat-gateway-stats/1') throw new GatewayStatsError('format "moat-gateway-stats/1"', describeValue(doc.format));
  const keys = doc.keys;
  if (typeof keys !== 'object' || keys === null || Array.isArray(keys)) throw new GatewayStatsError('a keys object', describeValue(keys));
  for (const [key, raw] of Object.entries(keys)) {
    const where = `keys[${describeValue(key)}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw new GatewayStatsError(`${where} as an object`, describeValue(raw));
    const s = raw as Record<string, unknown>;
    for (const f of ['requests', 'windowStart', 'lastSeen'])
      if (!isCount(s[f])) throw new GatewayStatsError(`${where}.${f} as a count`, describeValue(s[f]));
    for (const f of ['gateways', 'signals']) {
      const m = s[f];
      if (typeof m !== 'object' || m === null || Array.isArray(m) || !Object.values(m).every(isCount))
        throw new GatewayStatsError(`${where}.${f} as counts`, describeValue(m));
    }
    if (!isHashList(s.addresses)) throw new GatewayStatsError(`${where}.addresses as hash strings`, describeValue(s.addresses));
  }
  return doc as unknown as SerializedGatewayStats;
}
