import { type Decoy, decoyTools } from './decoys.js';

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

/**
 * Canary tracing: indexes the decoys every key was served and names the keys whose decoys
 * appear in a suspect text — a dataset, a model's output, a transcript. A decoy name alone
 * gives 0.75, its canary identifier 0.95, several independent tokens more; a token shared by
 * several keys counts for each in proportion. Text that contains no decoy token names no one.
 *
 * @example
 * ```ts
 * const index = new CanaryIndex({ secret, keys: ['key_1', 'key_2'], periods: [decoyPeriod()] });
 * index.trace(transcript); // [{ apiKeyId: 'key_2', confidence: 0.75, evidence: [...] }]
 * ```
 */
export class CanaryIndex {
  readonly #tokens = new Map<string, Array<{ decoy: Decoy; kind: 'canary' | 'name' }>>();
  /** Keys indexed. */
  readonly size: number;

  constructor(options: CanaryIndexOptions) {
    let keys = 0;
    for (const apiKeyId of options.keys) {
      keys++;
      for (const period of options.periods) {
        for (const decoy of decoyTools({ secret: options.secret, apiKeyId, period, count: options.count })) {
          this.#add(decoy.tool.name, decoy, 'name');
          this.#add(decoy.canary, decoy, 'canary');
        }
      }
    }
    this.size = keys;
  }

  #add(token: string, decoy: Decoy, kind: 'canary' | 'name'): void {
    const list = this.#tokens.get(token);
    if (list === undefined) this.#tokens.set(token, [{ decoy, kind }]);
    else if (!list.some((e) => e.decoy.apiKeyId === decoy.apiKeyId)) list.push({ decoy, kind });
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
      const hits = this.#tokens.get(token);
      if (hits === undefined) continue;
      for (const { decoy, kind } of hits) {
        const list = perKey.get(decoy.apiKeyId) ?? [];
        list.push({ kind, token, period: decoy.period, sharedBy: hits.length });
        perKey.set(decoy.apiKeyId, list);
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
