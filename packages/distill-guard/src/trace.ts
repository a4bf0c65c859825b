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

/** Length bounds of a traced token: a run of word characters (`[A-Za-z0-9_]`) of 6 to 80. */
const TOKEN_MIN = 6;
const TOKEN_MAX = 80;

/** Whether UTF-16 code unit `c` is one of `[A-Za-z0-9_]`. */
function isWordUnit(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f;
}

/**
 * Calls `found` with every token of `text` whose length `lengths` flags: the matches of
 * `/[A-Za-z0-9_]{6,80}/g`, found by one pass over the code units instead of a regular
 * expression, and sliced only when a token of that length exists (a long conversation holds
 * tens of thousands of words, and almost none can be a decoy).
 */
function scanTokens(text: string, lengths: Uint8Array, found: (token: string) => void): void {
  const n = text.length;
  let i = 0;
  while (i < n) {
    if (!isWordUnit(text.charCodeAt(i))) {
      i++;
      continue;
    }
    let end = i + 1;
    while (end < n && isWordUnit(text.charCodeAt(end))) end++;
    // The regular expression's greedy pieces of a run: 80 characters each, the rest if it is long enough.
    for (let at = i; end - at >= TOKEN_MIN; at += TOKEN_MAX) {
      const to = Math.min(at + TOKEN_MAX, end);
      if (lengths[to - at] === 1) found(text.slice(at, to));
    }
    i = end;
  }
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
  /** Whether a token of each length (0..{@link TOKEN_MAX}) is indexed: other runs are not even sliced. */
  readonly #lengths = new Uint8Array(TOKEN_MAX + 1);
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
    if (token.length <= TOKEN_MAX) this.#lengths[token.length] = 1;
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
   * Names the keys whose decoys appear in `text` (or in any of several texts), most
   * confident first, keeping those at or above `threshold` (default 0.5). A token is a run of
   * 6 to 80 characters of `[A-Za-z0-9_]` (a longer run is read in 80-character pieces); texts
   * given apart are read as if joined by a line break.
   */
  trace(text: string | readonly string[], threshold = 0.5): Attribution[] {
    const seen = new Set<string>();
    const perKey = new Map<string, TraceEvidence[]>();
    const found = (token: string) => {
      const entries = this.#tokens.get(token);
      if (entries === undefined || seen.has(token)) return;
      seen.add(token);
      const hits = typeof entries === 'number' ? [entries] : entries;
      for (const entry of hits) {
        const apiKeyId = this.#keys[Math.floor(entry / 131_072)] as string;
        const list = perKey.get(apiKeyId) ?? [];
        list.push({ kind: entry % 2 === 1 ? 'canary' : 'name', token, period: Math.floor(entry / 2) % 65_536, sharedBy: hits.length });
        perKey.set(apiKeyId, list);
      }
    };
    for (const one of typeof text === 'string' ? [text] : text) scanTokens(one, this.#lengths, found);
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
 * The texts of a request's conversation where a decoy can surface — tool names and inputs,
 * tool results, any text — bounded to {@link DECOY_TRACE_LIMIT} characters in all, for
 * {@link CanaryIndex.trace}, which reads them apart (no joined copy of a long conversation is
 * made). Tools the request defines are left out: the decoys a verifier injects are its own,
 * not evidence.
 *
 * @example
 * ```ts
 * const hits = index.trace(decoyTraceTexts(request), 0.7); // keys whose decoys the request replays
 * ```
 */
export function decoyTraceTexts(request: unknown): string[] {
  const messages = typeof request === 'object' && request !== null ? (request as { messages?: unknown }).messages : undefined;
  const out: string[] = [];
  textsOf(messages, out, { left: DECOY_TRACE_LIMIT });
  return out;
}

/**
 * {@link decoyTraceTexts} joined by line breaks, as one text.
 *
 * @example
 * ```ts
 * const hits = index.trace(decoyTraceText(request), 0.7);
 * ```
 */
export function decoyTraceText(request: unknown): string {
  return decoyTraceTexts(request).join('\n');
}
