/**
 * The signal registry: one row per signal the verifier decides on. Policy defaults
 * (`flags.ts`), the decision (`pipeline/policy.ts`), the record schema of both SQL backends and
 * its migration (`record-schema.ts`), the admin filters and `/admin/activity`
 * (`routes/admin.ts`), the dashboard and `/metrics` are derived from it.
 *
 * A row says:
 * - `values` — the closed vocabulary (a union type: {@link SignalValue}); `many` when a
 *   request carries a list of them;
 * - `initial` — the value before the evidence is read, and what an older record gets when a
 *   migration adds the column;
 * - `policy` — the GrowthBook feature `moat-policy-<policy>` that judges it, `defaults` its
 *   built-in actions, `judgedAs` the entry a value is judged under (`undefined`: never judged);
 * - `column` — the record column (absent: not recorded); `filter` — the `/admin/records`
 *   query parameter; `label` — the dashboard's name for it; `metric` — its `layer` label in
 *   `moat_signals_total`; `activity` — per-key counts in `/admin/activity` (field → value).
 *
 * Adding a signal: its row here, its evidence function (`pipeline/evidence.ts`), its tests.
 */
import { RELAY_SIGNALS } from '@moat/gateway-detect/server';
import {
  ATTESTATION_SIGNALS,
  BINDING_SIGNALS,
  DECOY_SIGNALS,
  FINGERPRINT_SIGNALS,
  INSTALL_SIGNALS,
  POLICY_FLAG_PREFIX,
  type PolicyAction,
  THINKING_SIGNALS,
} from '@moat/protocol';

/** What every row provides (see the module comment). */
export interface SignalSpec {
  readonly values: readonly string[];
  readonly many?: true;
  readonly initial: string;
  readonly policy: string;
  readonly defaults: Readonly<Record<string, PolicyAction>>;
  readonly judgedAs?: (value: string) => string | undefined;
  readonly column?: string;
  readonly filter?: string;
  readonly label: string;
  readonly metric: string;
  readonly activity?: Readonly<Record<string, string>>;
}

/** The registry, in decision order (reasons list signals in this order). */
export const SIGNALS = {
  attestation: {
    values: ATTESTATION_SIGNALS,
    initial: 'missing',
    policy: 'attestation',
    defaults: {
      valid: 'monitor',
      missing: 'flag',
      unavailable: 'flag',
      invalid: 'block',
      replayed: 'block',
      stale: 'block',
      unknown_key: 'block',
      // A revoked release keeps working, flagged, while its users move to the new one.
      revoked: 'flag',
    },
    column: 'attestation',
    filter: 'attestation',
    label: 'attestation',
    metric: 'attestation',
  },
  binding: {
    values: BINDING_SIGNALS,
    initial: 'none',
    policy: 'binding',
    // A valid v1 stamp covers the body only: a relay can re-send it under its own key. Flagged
    // (not blocked) so 1.0 clients keep working; body: monitor trusts them, block retires them.
    defaults: { request: 'monitor', body: 'flag', none: 'monitor', install: 'monitor' },
    column: 'binding',
    filter: 'binding',
    label: 'binding',
    metric: 'binding',
  },
  fingerprint: {
    values: FINGERPRINT_SIGNALS,
    initial: 'missing',
    policy: 'fingerprint',
    defaults: { match: 'monitor', missing: 'monitor', mismatch: 'flag' },
    column: 'fingerprint',
    filter: 'fingerprint',
    label: 'fingerprint',
    metric: 'fingerprint',
    activity: { match: 'match', mismatch: 'mismatch' },
  },
  fingerprintClass: {
    values: ['clean', 'suspicious', 'tampering'],
    initial: 'clean',
    // A key the statistics call `tampering` is judged under the fingerprint policy's entry.
    policy: 'fingerprint',
    defaults: { tampering: 'flag' },
    judgedAs: (value) => (value === 'tampering' ? value : undefined),
    label: 'key fingerprint class',
    metric: 'fingerprint',
  },
  thinking: {
    values: THINKING_SIGNALS,
    initial: 'none',
    policy: 'thinking',
    defaults: { valid: 'monitor', none: 'monitor', invalid: 'block' },
    column: 'thinking',
    filter: 'thinking',
    label: 'thinking',
    metric: 'thinking',
  },
  gateway: {
    values: RELAY_SIGNALS,
    many: true,
    initial: 'gateway_headers',
    policy: 'gateway',
    defaults: { detected: 'monitor', forwarded_chain: 'monitor', ua_mismatch: 'flag', address_fan_in: 'flag' },
    // Known gateway headers are judged under `detected`; the rule ids are recorded in `gateway`.
    judgedAs: (value) => (value === 'gateway_headers' ? 'detected' : value),
    label: 'gateway',
    metric: 'gateway',
  },
  decoy: {
    values: DECOY_SIGNALS,
    initial: 'none',
    policy: 'decoy',
    defaults: { hit: 'flag', none: 'monitor' },
    column: 'decoy',
    filter: 'decoy',
    label: 'decoy',
    metric: 'decoy',
    activity: { decoyHits: 'hit' },
  },
  install: {
    values: INSTALL_SIGNALS,
    initial: 'none',
    policy: 'install',
    // A revoked install is flagged like a revoked release (block retires it at once); a release
    // key that stamps requests itself, when its release enrolls, is the extracted-key pattern.
    defaults: {
      known: 'monitor',
      new: 'monitor',
      revoked: 'flag',
      over_limit: 'flag',
      release_only: 'flag',
      none: 'monitor',
    },
    column: 'install',
    filter: 'install',
    label: 'install',
    metric: 'install',
  },
} as const satisfies Readonly<Record<string, SignalSpec>>;

type Registry = typeof SIGNALS;
/** A signal's name. */
export type SignalName = keyof Registry;
/** A signal's values, as a union. */
export type SignalValue<N extends SignalName> = Registry[N]['values'][number];
/** One request's signals: one value per signal, a list for `many` ones. */
export type Signals = {
  readonly [N in SignalName]: Registry[N] extends { many: true } ? readonly SignalValue<N>[] : SignalValue<N>;
};
/** The signals with a record column. */
export type RecordedSignalName = { [N in SignalName]: Registry[N] extends { column: string } ? N : never }[SignalName];
/** The recorded signals of one record. */
export type RecordedSignals = { readonly [N in RecordedSignalName]: SignalValue<N> };
/** The per-key counts of `/admin/activity` the registry defines (`match`, `decoyHits`, …). */
export type ActivityField = {
  [N in SignalName]: Registry[N] extends { activity: infer A } ? keyof A & string : never;
}[SignalName];

/** The rows, in order, with their names. */
export const SIGNAL_ROWS: ReadonlyArray<SignalSpec & { readonly name: SignalName }> = Object.entries(SIGNALS).map(
  ([name, spec]) => ({
    ...(spec as SignalSpec),
    name: name as SignalName,
  }),
);

/** The recorded rows (those with a column), in order. */
export const RECORDED_SIGNALS: ReadonlyArray<
  SignalSpec & { readonly name: RecordedSignalName; readonly column: string }
> = SIGNAL_ROWS.filter(
  (row): row is SignalSpec & { name: RecordedSignalName; column: string } => row.column !== undefined,
);

/** Every signal's value before its evidence is read (an empty list for a `many` signal). */
export function initialSignals(): Signals {
  return Object.fromEntries(
    SIGNAL_ROWS.map((row) => [row.name, row.many === true ? [] : row.initial]),
  ) as unknown as Signals;
}

/** The value of every recorded signal before its evidence is read. */
export function initialRecordedSignals(): RecordedSignals {
  return Object.fromEntries(RECORDED_SIGNALS.map((row) => [row.name, row.initial])) as unknown as RecordedSignals;
}

/** The recorded part of a request's signals. */
export function recordedSignalsOf(signals: Signals): RecordedSignals {
  return Object.fromEntries(RECORDED_SIGNALS.map((row) => [row.name, signals[row.name]])) as unknown as RecordedSignals;
}

/** The built-in policy features, `moat-policy-<policy>`: every row's defaults, merged per policy. */
export function defaultPolicies(): Record<string, { defaultValue: Record<string, PolicyAction> }> {
  const out: Record<string, { defaultValue: Record<string, PolicyAction> }> = {};
  for (const row of SIGNAL_ROWS) {
    const feature = `${POLICY_FLAG_PREFIX}${row.policy}`;
    out[feature] = { defaultValue: { ...out[feature]?.defaultValue, ...row.defaults } };
  }
  return out;
}

/**
 * The values each policy feature's table may name, by feature (`moat-policy-attestation` →
 * `valid`, `missing`, …): every signal value judged under that policy, as it is judged.
 */
export function policyValues(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const row of SIGNAL_ROWS) {
    const feature = `${POLICY_FLAG_PREFIX}${row.policy}`;
    const values = out.get(feature) ?? [];
    for (const value of [...row.values, ...Object.keys(row.defaults)]) {
      const judged = row.judgedAs === undefined ? value : row.judgedAs(value);
      if (judged !== undefined && !values.includes(judged)) values.push(judged);
    }
    out.set(feature, values);
  }
  return out;
}

/** The filters the dashboard offers: label and values of every signal with a filter parameter. */
export function dashboardFilters(): Array<{ filter: string; label: string; values: readonly string[] }> {
  return SIGNAL_ROWS.flatMap((row) =>
    row.filter === undefined ? [] : [{ filter: row.filter, label: row.label, values: row.values }],
  );
}
