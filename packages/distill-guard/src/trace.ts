import { decoyTools } from './decoys.js';
import { DistillGuardError } from './errors.js';

/** Evidence that ties a text to a key. */
export interface TraceEvidence {
  readonly kind: 'canary' | 'name';
  readonly token: string;
  readonly period: number;
  /** How many keys share this token (a name can collide; canaries practically never do). */
  readonly sharedBy: number;
}

/** A key named by {@link CanaryIndex.trace}. */
export interface Attribution {
  readonly apiKeyId: string;
  /** 0..1: 1 − Π(1 − wᵢ) over distinct tokens, each weight divided by the keys sharing it. */
  readonly confidence: number;
  readonly evidence: readonly TraceEvidence[];
}

/** Options of {@link CanaryIndex}. */
export interface CanaryIndexOptions {
  readonly secret: Uint8Array;
  /** The API-key identities to consider. */
  readonly keys: Iterable<string>;
  /** Rotation periods to consider (decoys of each key in each period are indexed). */
  readonly periods: readonly number[];
  /** Decoys per key and period, as served (default 3). */
  readonly count?: number;
}

/** Weight of one canary token (30 random bits) and of one decoy name. */
const CANARY_WEIGHT = 0.95;
const NAME_WEIGHT = 0.75;

/** A decoy token's owner, packed in one number: ((key index × 2¹⁶ + period) × 2 + canary bit). */
type PackedEntry = number;

const pack = (keyIndex: number, period: number, canary: boolean): PackedEntry => (keyIndex * 65_536 + period) * 2 + (canary ? 1 : 0);

/**
 * Canary tracing: indexes the decoys every key was served and names the keys whose decoys
 * appear in a suspect text — a dataset, a model's output, a transcript. A decoy name alone
 * gives 0.75, its canary identifier 0.95, several independent tokens more; a token shared by
 * several keys counts for each in proportion. Text that contains no decoy token names no one.
 * The index keeps tokens and packed owners only (no tool definitions); {@link add} indexes
 * only (key, period) pairs it has not seen and {@link retain} drops old periods, so a long
 * retention window is paid for once.
 *
 * @example
 * ```ts
 * const index = new CanaryIndex({ secret, keys: ['key_1', 'key_2'], periods: [decoyPeriod()] });
 * index.trace(transcript); // [{ apiKeyId: 'key_2', confidence: 0.75, evidence: [...] }]
 * ```
 */
export class CanaryIndex {
  readonly #tokens = new Map<string, PackedEntry | PackedEntry[]>();
  readonly #secret: Uint8Array;
  readonly #count: number | undefined;
  readonly #keys: string[] = [];
  readonly #keyIndex = new Map<string, number>();
  /** Per period, the keys whose decoys are indexed. */
  readonly #indexed = new Map<number, Set<number>>();

  constructor(options: CanaryIndexOptions) {
    this.#secret = options.secret;
    this.#count = options.count;
    this.add(options.keys, options.periods);
  }

  /** Keys indexed. */
  get size(): number {
    return this.#keys.length;
  }

  /** Periods indexed, oldest first. */
  get periods(): number[] {
    return [...this.#indexed.keys()].sort((a, b) => a - b);
  }

  /** Tokens indexed (two per decoy, fewer when names collide). */
  get tokens(): number {
    return this.#tokens.size;
  }

  /** Indexes the decoys of every key in `keys` for every period in `periods` not indexed yet. */
  add(keys: Iterable<string>, periods: readonly number[]): void {
    for (const apiKeyId of keys) {
      let k = this.#keyIndex.get(apiKeyId);
      if (k === undefined) {
        k = this.#keys.push(apiKeyId) - 1;
        this.#keyIndex.set(apiKeyId, k);
      }
      for (const period of periods) {
        if (!Number.isSafeInteger(period) || period < 0 || period >= 65_536)
          throw new DistillGuardError('ERR_DECOY_PERIOD', `expected a period in 0..65535, got ${period}`);
        let done = this.#indexed.get(period);
        if (done === undefined) {
          done = new Set();
          this.#indexed.set(period, done);
        }
        if (done.has(k)) continue;
        done.add(k);
        const count = this.#count === undefined ? {} : { count: this.#count };
        for (const decoy of decoyTools({ secret: this.#secret, apiKeyId, period, ...count })) {
          this.#add(decoy.tool.name, pack(k, period, false));
          this.#add(decoy.canary, pack(k, period, true));
        }
      }
    }
  }

  /** Forgets the decoys of periods before `fromPeriod` (the retention window's start). */
  retain(fromPeriod: number): void {
    if (!this.periods.some((p) => p < fromPeriod)) return;
    for (const p of this.#indexed.keys()) if (p < fromPeriod) this.#indexed.delete(p);
    const kept = (e: PackedEntry) => Math.floor(e / 2) % 65_536 >= fromPeriod;
    for (const [token, entry] of this.#tokens) {
      if (typeof entry === 'number') {
        if (!kept(entry)) this.#tokens.delete(token);
        continue;
      }
      const left = entry.filter(kept);
      if (left.length === 0) this.#tokens.delete(token);
      else this.#tokens.set(token, left.length === 1 ? (left[0] as number) : left);
    }
  }

  #add(token: string, entry: PackedEntry): void {
    const list = this.#tokens.get(token);
    if (list === undefined) this.#tokens.set(token, entry);
    else {
      const all = typeof list === 'number' ? [list] : list;
      // A token counts once per key (the same name in two periods of one key is one token).
      const key = Math.floor(entry / 131_072);
      if (all.some((e) => Math.floor(e / 131_072) === key)) return;
      all.push(entry);
      this.#tokens.set(token, all);
    }
  }

  /**
   * Names the keys whose decoys appear in `text`, most confident first, keeping those at
   * or above `threshold` (default 0.5).
   */
  trace(text: string, threshold = 0.5): Attribution[] {
    const seen = new Set<string>();
    const perKey = new Map<string, TraceEvidence[]>();
    for (const match of text.matchAll(/[A-Za-z0-9_]{6,80}/g)) {
      const token = match[0];
      if (seen.has(token)) continue;
      seen.add(token);
      const found = this.#tokens.get(token);
      if (found === undefined) continue;
      const hits = typeof found === 'number' ? [found] : found;
      for (const entry of hits) {
        const apiKeyId = this.#keys[Math.floor(entry / 131_072)] as string;
        const list = perKey.get(apiKeyId) ?? [];
        list.push({ kind: entry % 2 === 1 ? 'canary' : 'name', token, period: Math.floor(entry / 2) % 65_536, sharedBy: hits.length });
        perKey.set(apiKeyId, list);
      }
    }
    const out: Attribution[] = [];
    for (const [apiKeyId, evidence] of perKey) {
      let miss = 1;
      for (const e of evidence) miss *= 1 - (e.kind === 'canary' ? CANARY_WEIGHT : NAME_WEIGHT) / e.sharedBy;
      const confidence = 1 - miss;
      if (confidence >= threshold) out.push({ apiKeyId, confidence, evidence });
    }
    return out.sort((a, b) => b.confidence - a.confidence || (a.apiKeyId < b.apiKeyId ? -1 : 1));
  }
}

/** At most this many characters of a request are traced for decoys. */
export const DECOY_TRACE_LIMIT = 262_144;

function textsOf(value: unknown, out: string[], budget: { left: number }): void {
  if (budget.left <= 0) return;
  if (typeof value === 'string') {
    out.push(value.slice(0, budget.left));
    budget.left -= value.length;
  } else if (Array.isArray(value)) for (const item of value) textsOf(item, out, budget);
  else if (typeof value === 'object' && value !== null) for (const item of Object.values(value)) textsOf(item, out, budget);
}

/**
 * The text of a request's conversation where a decoy can surface — tool names and inputs,
 * tool results, any text — bounded to {@link DECOY_TRACE_LIMIT} characters, for
 * {@link CanaryIndex.trace}. Tools the request defines are left out: the decoys a verifier
 * injects are its own, not evidence.
 *
 * @example
 * ```ts
 * const hits = index.trace(decoyTraceText(request), 0.7); // keys whose decoys the request replays
 * ```
 */
export function decoyTraceText(request: unknown): string {
  const messages = typeof request === 'object' && request !== null ? (request as { messages?: unknown }).messages : undefined;
  const out: string[] = [];
  textsOf(messages, out, { left: DECOY_TRACE_LIMIT });
  return out.join('\n');
}
