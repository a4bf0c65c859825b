import type { FingerprintSignal } from '@moat/protocol';
import { LruMap } from '@moat/protocol/support';
import { FingerprintStatsError } from './errors.js';

/** How a key's traffic looks: honest, more mismatches than noise explains, or decided tampering. */
export type KeyClassification = 'clean' | 'suspicious' | 'tampering';

/** Parameters of the per-key test. */
export interface FingerprintStatsOptions {
  /** Mismatch rate of honest traffic (stale clients, salt rotation): H0 of the SPRT. */
  readonly p0: number;
  /** Mismatch rate the test must detect: H1 of the SPRT. */
  readonly p1: number;
  /** Probability of calling an honest key tampering, per test. */
  readonly alpha: number;
  /** Probability of calling a key at rate `p1` clean, per test. */
  readonly beta: number;
}

/**
 * Defaults chosen by the simulation in `stats.test.ts`: 0 false positives over 10,000
 * honest keys at a 0.05% noise rate, and decisions on keys whose proxy makes ≥ 1% of their
 * fingerprints mismatch.
 */
export const DEFAULT_STATS_OPTIONS: FingerprintStatsOptions = { p0: 0.0005, p1: 0.01, alpha: 1e-6, beta: 1e-3 };

/** z for a two-sided 95% interval. */
const Z95 = 1.959963984540054;

/**
 * Everything kept per key: integers only, so states serialize exactly and merge by addition.
 * Memory per key is constant whatever the traffic.
 */
export interface KeyState {
  /** Requests with a fingerprint verdict (match or mismatch). */
  n: number;
  mismatches: number;
  /** Requests without a usable fingerprint. */
  missing: number;
  /** Observations in the running SPRT (it restarts after each "clean" decision). */
  testN: number;
  testMismatches: number;
  /** How many times the SPRT accepted H0 (clean) and restarted. */
  cleanDecisions: number;
  /** `n` when the SPRT decided tampering; sticky until {@link FingerprintStats.reset}. */
  tamperingAt: number | null;
  /** Unix milliseconds of the last observation. */
  lastSeen: number;
}

/** A key's statistics as reported to operators. */
export interface KeyReport {
  readonly key: string;
  readonly classification: KeyClassification;
  readonly n: number;
  readonly mismatches: number;
  readonly missing: number;
  /** Mismatch rate over all observations. */
  readonly rate: number;
  /** Wilson 95% score interval of the mismatch rate. */
  readonly wilson: { readonly low: number; readonly high: number };
  /** Log-likelihood ratio of the running test, ln(L(p1)/L(p0)). */
  readonly llr: number;
  /** The bounds the LLR is compared with: ln(β/(1−α)) and ln((1−β)/α). */
  readonly bounds: { readonly clean: number; readonly tampering: number };
  readonly cleanDecisions: number;
  /** Requests it took to decide tampering, if decided. */
  readonly tamperingAt: number | null;
  readonly lastSeen: number;
}

/**
 * Wilson score interval for `k` successes out of `n` trials.
 *
 * @example
 * ```ts
 * wilson(3, 100); // { low: 0.0103, high: 0.0845 } (rounded)
 * ```
 */
export function wilson(k: number, n: number, z = Z95): { low: number; high: number } {
  if (n === 0) return { low: 0, high: 1 };
  const p = k / n;
  const z2 = z * z;
  const centre = p + z2 / (2 * n);
  const margin = z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  const denom = 1 + z2 / n;
  return { low: Math.max(0, (centre - margin) / denom), high: Math.min(1, (centre + margin) / denom) };
}

function validate(options: FingerprintStatsOptions): FingerprintStatsOptions {
  const { p0, p1, alpha, beta } = options;
  const ok = (x: number) => Number.isFinite(x) && x > 0 && x < 1;
  if (!ok(p0) || !ok(p1) || !(p0 < p1)) {
    throw new FingerprintStatsError('ERR_STATS_OPTIONS', '0 < p0 < p1 < 1', `p0=${p0}, p1=${p1}`);
  }
  if (!ok(alpha) || !ok(beta) || alpha >= 0.5 || beta >= 0.5) {
    throw new FingerprintStatsError('ERR_STATS_OPTIONS', '0 < alpha, beta < 0.5', `alpha=${alpha}, beta=${beta}`);
  }
  return { p0, p1, alpha, beta };
}

/** Serialized form of {@link FingerprintStats}, for persistence and cross-replica merging. */
export interface SerializedFingerprintStats {
  readonly format: 'moat-fingerprint-stats/1';
  readonly options: FingerprintStatsOptions;
  readonly keys: Readonly<Record<string, KeyState>>;
}

/** Options of the {@link FingerprintStats} constructor. */
export interface FingerprintStatsConfig extends Partial<FingerprintStatsOptions> {
  /** Keys kept in memory; the least recently seen is evicted beyond this (default 100,000). */
  readonly maxKeys?: number;
}

/**
 * Streaming per-API-key fingerprint statistics: counts, mismatch rate, Wilson 95% interval
 * and a sequential probability ratio test (Wald) of H0 "mismatch rate ≤ p0" against
 * H1 "mismatch rate ≥ p1". The SPRT restarts after each clean decision, so a key that starts
 * being tampered with later is still caught; a tampering decision is sticky.
 *
 * A key is `tampering` once the SPRT decided so, `suspicious` while the Wilson lower bound
 * exceeds `p0` or the LLR is past half-way to the tampering bound, `clean` otherwise.
 *
 * @example
 * ```ts
 * const stats = new FingerprintStats();
 * stats.record('key_1', 'mismatch'); // 'suspicious'
 * stats.report('key_1')?.wilson; // { low: 0.2065, high: 1 }
 * ```
 */
export class FingerprintStats {
  readonly options: FingerprintStatsOptions;
  readonly maxKeys: number;
  readonly #keys: LruMap<string, KeyState>;
  readonly #mismatchStep: number;
  readonly #matchStep: number;
  readonly #upper: number;
  readonly #lower: number;

  constructor(config: FingerprintStatsConfig = {}) {
    this.options = validate({
      p0: config.p0 ?? DEFAULT_STATS_OPTIONS.p0,
      p1: config.p1 ?? DEFAULT_STATS_OPTIONS.p1,
      alpha: config.alpha ?? DEFAULT_STATS_OPTIONS.alpha,
      beta: config.beta ?? DEFAULT_STATS_OPTIONS.beta,
    });
    this.maxKeys = config.maxKeys ?? 100_000;
    this.#keys = new LruMap({ maxSize: this.maxKeys });
    const { p0, p1, alpha, beta } = this.options;
    this.#mismatchStep = Math.log(p1 / p0);
    this.#matchStep = Math.log((1 - p1) / (1 - p0));
    this.#upper = Math.log((1 - beta) / alpha);
    this.#lower = Math.log(beta / (1 - alpha));
  }

  /** Keys evicted because `maxKeys` was reached. */
  get evicted(): number {
    return this.#keys.evicted;
  }

  /** Number of keys held. */
  get size(): number {
    return this.#keys.size;
  }

  /** Keys held, least recently seen first. */
  keys(): IterableIterator<string> {
    return this.#keys.keys();
  }

  #llr(s: KeyState): number {
    return s.testMismatches * this.#mismatchStep + (s.testN - s.testMismatches) * this.#matchStep;
  }

  #decide(s: KeyState): void {
    if (s.tamperingAt !== null) return;
    const llr = this.#llr(s);
    if (llr >= this.#upper) s.tamperingAt = s.n;
    else if (llr <= this.#lower) {
      s.cleanDecisions++;
      s.testN = 0;
      s.testMismatches = 0;
    }
  }

  #touch(key: string, now: number): KeyState {
    let s = this.#keys.get(key);
    if (s === undefined) {
      s = { n: 0, mismatches: 0, missing: 0, testN: 0, testMismatches: 0, cleanDecisions: 0, tamperingAt: null, lastSeen: now };
      this.#keys.set(key, s);
    }
    s.lastSeen = Math.max(s.lastSeen, now);
    return s;
  }

  /** Adds one request's fingerprint signal for `key` and returns the key's classification. */
  record(key: string, signal: FingerprintSignal, now = Date.now()): KeyClassification {
    const s = this.#touch(key, now);
    if (signal === 'missing') s.missing++;
    else {
      s.n++;
      s.testN++;
      if (signal === 'mismatch') {
        s.mismatches++;
        s.testMismatches++;
      }
      this.#decide(s);
    }
    return this.#classify(s, this.#llr(s));
  }

  #classify(s: KeyState, llr: number): KeyClassification {
    if (s.tamperingAt !== null) return 'tampering';
    if (llr >= this.#upper / 2) return 'suspicious';
    if (s.mismatches > 0 && wilson(s.mismatches, s.n).low > this.options.p0) return 'suspicious';
    return 'clean';
  }

  /** The key's report, or `undefined` for a key never seen (or evicted). */
  report(key: string): KeyReport | undefined {
    const s = this.#keys.peek(key);
    return s === undefined ? undefined : this.#report(key, s);
  }

  /** Reports of every key, least recently seen first. */
  reports(): KeyReport[] {
    return [...this.#keys].map(([key, s]) => this.#report(key, s));
  }

  /** Forgets a key's evidence (after an operator cleared it). */
  reset(key: string): void {
    this.#keys.delete(key);
  }

  #report(key: string, s: KeyState): KeyReport {
    const llr = this.#llr(s);
    return {
      key,
      classification: this.#classify(s, llr),
      n: s.n,
      mismatches: s.mismatches,
      missing: s.missing,
      rate: s.n === 0 ? 0 : s.mismatches / s.n,
      wilson: wilson(s.mismatches, s.n),
      llr,
      bounds: { clean: this.#lower, tampering: this.#upper },
      cleanDecisions: s.cleanDecisions,
      tamperingAt: s.tamperingAt,
      lastSeen: s.lastSeen,
    };
  }

  /** A JSON-safe snapshot of every key's state. */
  toJSON(): SerializedFingerprintStats {
    const keys: Record<string, KeyState> = {};
    for (const [key, s] of this.#keys) keys[key] = { ...s };
    return { format: 'moat-fingerprint-stats/1', options: this.options, keys };
  }

  /**
   * Restores a snapshot made by {@link toJSON}.
   *
   * @throws {FingerprintStatsError} `ERR_STATS_FORMAT` naming the first malformed part.
   */
  static fromJSON(input: unknown, config: Pick<FingerprintStatsConfig, 'maxKeys'> = {}): FingerprintStats {
    const doc = parseSerialized(input);
    const stats = new FingerprintStats({ ...doc.options, ...config });
    stats.merge(doc);
    return stats;
  }

  /**
   * Adds another replica's statistics into this one: counts add, the running tests combine
   * (their log-likelihood ratios add, since they cover disjoint requests) and are decided
   * again. Both sides must use the same test parameters.
   *
   * @throws {FingerprintStatsError} `ERR_STATS_OPTIONS` when the parameters differ, `ERR_STATS_FORMAT` for a malformed snapshot.
   */
  merge(other: FingerprintStats | SerializedFingerprintStats | unknown): this {
    const doc = other instanceof FingerprintStats ? other.toJSON() : parseSerialized(other);
    const a = this.options;
    const b = doc.options;
    if (a.p0 !== b.p0 || a.p1 !== b.p1 || a.alpha !== b.alpha || a.beta !== b.beta) {
      throw new FingerprintStatsError('ERR_STATS_OPTIONS', `the same test parameters ${JSON.stringify(a)}`, JSON.stringify(b));
    }
    for (const [key, theirs] of Object.entries(doc.keys)) {
      const mine = this.#touch(key, theirs.lastSeen);
      mine.n += theirs.n;
      mine.mismatches += theirs.mismatches;
      mine.missing += theirs.missing;
      mine.testN += theirs.testN;
      mine.testMismatches += theirs.testMismatches;
      mine.cleanDecisions += theirs.cleanDecisions;
      if (theirs.tamperingAt !== null)
        mine.tamperingAt = mine.tamperingAt === null ? theirs.tamperingAt : Math.min(mine.tamperingAt, theirs.tamperingAt);
      this.#decide(mine);
    }
    return this;
  }
}

const STATE_FIELDS = ['n', 'mismatches', 'missing', 'testN', 'testMismatches', 'cleanDecisions', 'lastSeen'] as const;

function parseSerialized(input: unknown): SerializedFingerprintStats {
  const fail = (expected: string, received: string): never => {
    throw new FingerprintStatsError('ERR_STATS_FORMAT', expected, received);
  };
  if (typeof input !== 'object' || input === null) return fail('an object', String(input));
  const doc = input as Record<string, unknown>;
  if (doc.format !== 'moat-fingerprint-stats/1') fail('format "moat-fingerprint-stats/1"', JSON.stringify(doc.format));
  const options = doc.options as Record<string, unknown> | undefined;
  if (typeof options !== 'object' || options === null) return fail('an options object', String(options));
  for (const name of ['p0', 'p1', 'alpha', 'beta']) {
    if (typeof options[name] !== 'number') fail(`options.${name} as a number`, JSON.stringify(options[name]));
  }
  const checked = validate(options as unknown as FingerprintStatsOptions);
  const keys = doc.keys;
  if (typeof keys !== 'object' || keys === null || Array.isArray(keys)) return fail('a keys object', String(keys));
  for (const [key, raw] of Object.entries(keys)) {
    const s = raw as Record<string, unknown>;
    if (typeof s !== 'object' || s === null) fail(`keys[${JSON.stringify(key)}] as an object`, String(s));
    for (const field of STATE_FIELDS) {
      if (!Number.isSafeInteger(s[field]) || (s[field] as number) < 0)
        fail(`keys[${JSON.stringify(key)}].${field} as a non-negative integer`, JSON.stringify(s[field]));
    }
    if (s.tamperingAt !== null && (!Number.isSafeInteger(s.tamperingAt) || (s.tamperingAt as number) < 0)) {
      fail(`keys[${JSON.stringify(key)}].tamperingAt as null or a non-negative integer`, JSON.stringify(s.tamperingAt));
    }
    if (
      (s.mismatches as number) > (s.n as number) ||
      (s.testMismatches as number) > (s.testN as number) ||
      (s.testN as number) > (s.n as number)
    ) {
      fail(`keys[${JSON.stringify(key)}] with mismatches ≤ n and testN ≤ n`, JSON.stringify(s));
    }
  }
  return { format: 'moat-fingerprint-stats/1', options: checked, keys: keys as Record<string, KeyState> };
}
