import { createHmac } from 'node:crypto';
import { DistillGuardError } from './errors.js';

/** A decoy tool: a Messages tool definition, plus the canary token planted in it. */
export interface DecoyTool {
  readonly name: string;
  readonly description: string;
  readonly input_schema: {
    readonly type: 'object';
    readonly properties: Readonly<
      Record<string, { readonly type: string; readonly description: string; readonly enum?: readonly string[] }>
    >;
    readonly required: readonly string[];
  };
}

/** A decoy with what tracing needs. */
export interface Decoy {
  readonly tool: DecoyTool;
  /** High-entropy token in the schema (an example identifier the model tends to repeat). */
  readonly canary: string;
  readonly apiKeyId: string;
  readonly period: number;
}

/** Options of {@link decoyTools}. */
export interface DecoyOptions {
  /** Server secret (at least 32 bytes). Decoys cannot be predicted without it. */
  readonly secret: Uint8Array;
  /** The verifier's identity for the API key (never the key itself). */
  readonly apiKeyId: string;
  /** Rotation period number, e.g. {@link decoyPeriod}. */
  readonly period: number;
  /** Decoys per request (default 3). */
  readonly count?: number | undefined;
  /** Names of the request's real tools: decoys never take them. */
  readonly avoid?: readonly string[];
}

/** Default rotation: decoys change weekly. */
export const DECOY_PERIOD_MS = 7 * 24 * 3600 * 1000;

/** The rotation period a time falls in. */
export function decoyPeriod(now = Date.now(), periodMs = DECOY_PERIOD_MS): number {
  return Math.floor(now / periodMs);
}

const VERBS =
  'reconcile archive rebalance provision quarantine escalate reindex snapshot throttle annotate consolidate deprovision forecast normalize replicate revalidate stage synchronize tabulate transcode audit backfill checkpoint compact defer enrich federate harmonize hydrate invalidate rotate migrate pin prune reclaim refresh register resolve retire schedule seal shard sweep tag unlock vault warm'.split(
    ' ',
  );
const QUALIFIERS =
  'regional quarterly tenant shadow legacy cold bulk delta pending staged orphaned internal partner tiered historical secondary upstream ledger scoped federated nightly deferred regulated offline composite archived mirrored cached canonical fiscal'.split(
    ' ',
  );
const NOUNS =
  'ledger invoices shipments manifests cohorts quotas entitlements workspaces tenants partitions snapshots replicas vouchers allocations forecasts rosters leases certificates tickets incidents rollouts segments catalogs inventories payouts remittances subscriptions contracts budgets clusters buckets pipelines sessions credentials datasets embeddings annotations reservations itineraries shifts warehouses'.split(
    ' ',
  );
const ID_PREFIXES = ['acct', 'ws', 'org', 'prj', 'rgn', 'tnt', 'bkt', 'pl', 'ds', 'cl'];
const PARAMS: Array<[name: string, type: string, description: string]> = [
  ['region', 'string', 'Deployment region code such as "eu-west-2".'],
  ['as_of', 'string', 'ISO 8601 date the result is computed as of.'],
  ['limit', 'integer', 'Maximum number of records to return (1-500).'],
  ['dry_run', 'boolean', 'Validate the request without applying any change.'],
  ['cursor', 'string', 'Opaque pagination cursor from a previous call.'],
  ['priority', 'string', 'Processing priority.'],
  ['include_archived', 'boolean', 'Also consider archived records.'],
  ['reason', 'string', 'Short justification recorded in the audit log.'],
  ['window_days', 'integer', 'Size of the lookback window in days.'],
  ['owner_email', 'string', 'Email address of the accountable owner.'],
];
const TEMPLATES = [
  (v: string, q: string, n: string) => `${cap(v)} ${q} ${n} for a workspace and return a summary of what changed.`,
  (v: string, q: string, n: string) => `Use this tool to ${v} the ${q} ${n} of an account. Prefer it over manual edits.`,
  (v: string, q: string, n: string) => `${cap(v)} ${q} ${n}. Returns the affected records and any validation warnings.`,
  (v: string, q: string, n: string) => `Internal operations tool: ${v} ${q} ${n} across partitions. Safe to call repeatedly.`,
];
const BASE32 = 'abcdefghjkmnpqrstuvwxyz23456789';

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1).replaceAll('_', ' ');
}

/** HMAC-SHA-256 in counter mode: a deterministic stream of 32-bit values keyed by the secret. */
class KeyedStream {
  #block: Buffer = Buffer.alloc(0);
  #offset = 32;
  #counter = 0;
  constructor(
    readonly secret: Uint8Array,
    readonly label: string,
  ) {}
  next(): number {
    if (this.#offset + 4 > this.#block.length) {
      this.#block = createHmac('sha256', this.secret)
        .update(`${this.label}|${this.#counter++}`)
        .digest();
      this.#offset = 0;
    }
    const v = this.#block.readUInt32BE(this.#offset);
    this.#offset += 4;
    return v;
  }
  pick<T>(list: readonly T[]): T {
    return list[this.next() % list.length] as T;
  }
}

/**
 * Plausible decoy tool definitions for one API key and rotation period, derived from a
 * server secret: the same inputs always give the same decoys, and without the secret they
 * cannot be predicted or filtered by a fixed list (tens of millions of name, description
 * and schema combinations). Each carries a canary token — an example identifier in its
 * schema — for {@link CanaryIndex} to trace later. Names never equal one of `avoid`.
 *
 * @example
 * ```ts
 * const decoys = decoyTools({ secret, apiKeyId: 'key_7f3a', period: decoyPeriod() });
 * request.tools = [...(request.tools ?? []), ...decoys.map((d) => d.tool)];
 * ```
 */
export function decoyTools(options: DecoyOptions): Decoy[] {
  if (options.secret.length < 32)
    throw new DistillGuardError('ERR_DECOY_SECRET', `expected a decoy secret of at least 32 bytes, got ${options.secret.length}`);
  const stream = new KeyedStream(options.secret, `moat-decoy/1|${options.apiKeyId}|${options.period}`);
  const avoid = new Set(options.avoid ?? []);
  const decoys: Decoy[] = [];
  const count = options.count ?? 3;
  while (decoys.length < count) {
    const verb = stream.pick(VERBS);
    const qualifier = stream.pick(QUALIFIERS);
    const noun = stream.pick(NOUNS);
    const name = `${verb}_${qualifier}_${noun}`.slice(0, 64);
    if (avoid.has(name) || decoys.some((d) => d.tool.name === name)) continue;
    const prefix = stream.pick(ID_PREFIXES);
    let token = '';
    for (let i = 0; i < 8; i++) token += stream.pick([...BASE32]);
    const canary = `${prefix}_${token}`;
    const idParam = `${prefix === 'acct' ? 'account' : prefix === 'ws' ? 'workspace' : prefix === 'org' ? 'organization' : 'resource'}_id`;
    const properties: Record<string, { type: string; description: string; enum?: string[] }> = {
      [idParam]: { type: 'string', description: `Identifier of the target, for example "${canary}".` },
    };
    const extra = 1 + (stream.next() % 3);
    for (let i = 0; i < extra; i++) {
      const [pname, ptype, pdesc] = stream.pick(PARAMS);
      if (properties[pname] !== undefined) continue;
      properties[pname] =
        pname === 'priority' ? { type: ptype, description: pdesc, enum: ['low', 'normal', 'urgent'] } : { type: ptype, description: pdesc };
    }
    const description = stream.pick(TEMPLATES)(verb, qualifier, noun);
    decoys.push({
      tool: { name, description, input_schema: { type: 'object', properties, required: [idParam] } },
      canary,
      apiKeyId: options.apiKeyId,
      period: options.period,
    });
  }
  return decoys;
}

/** The decoy a `tool_use` block calls, if any. */
export function findDecoyCall(toolUse: { readonly name?: unknown }, decoys: readonly Decoy[]): Decoy | undefined {
  return decoys.find((d) => d.tool.name === toolUse.name);
}

/**
 * A plausible result for a call to a decoy, so the conversation goes on naturally; the call
 * never reaches a real executor. Deterministic in the secret and the call's input.
 */
export function decoyResult(
  toolUse: { readonly id: string; readonly name: string; readonly input?: unknown },
  secret: Uint8Array,
): { type: 'tool_result'; tool_use_id: string; content: string } {
  const stream = new KeyedStream(secret, `moat-decoy-result/1|${toolUse.name}|${JSON.stringify(toolUse.input ?? {})}`);
  const n = stream.next() % 4;
  const records = Array.from({ length: n }, () => ({
    id: `${stream.pick(ID_PREFIXES)}_${(stream.next() % 1_000_000).toString(36)}`,
    status: stream.pick(['active', 'pending', 'reconciled', 'archived']),
    updated_at: new Date(Date.UTC(2026, stream.next() % 12, 1 + (stream.next() % 28))).toISOString(),
  }));
  const body =
    n === 0 ? { status: 'ok', matched: 0, message: 'No records matched the given filters.' } : { status: 'ok', matched: n, records };
  return { type: 'tool_result', tool_use_id: toolUse.id, content: JSON.stringify(body) };
}
