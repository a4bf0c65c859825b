import type { PolicyAction, Verdict } from '@moat/protocol';
import { type Flags, POLICY_PREFIX, type PolicyAttributes } from '../flags.js';
import { SIGNAL_ROWS, type SignalName, type Signals } from '../signals.js';
import type { Evidence } from './evidence.js';

export type { Signals } from '../signals.js';

/** The action a policy takes on one signal value of one layer. */
export type ActionOf = (layer: string, value: string) => PolicyAction;

/** One signal's part in a decision. */
export interface SignalAction {
  /** The signal's row in the registry. */
  readonly signal: SignalName;
  /** The policy that judged it (`moat-policy-<layer>`). */
  readonly layer: string;
  readonly value: string;
  readonly action: PolicyAction;
}

/** What the policy decided, and why. */
export interface Decision {
  readonly verdict: Verdict;
  /** `action:layer=value` for every signal whose action is not `monitor`, in layer order. */
  readonly reasons: readonly string[];
  readonly actions: readonly SignalAction[];
}

/**
 * Stage 4: the decision, a pure function of the signals and the policy. The verdict is the
 * strongest action any signal gets (`block` over `flag` over `monitor`). Every signal of the
 * registry ({@link SIGNAL_ROWS}) is judged, in its order, under its policy's entry for the
 * value (`judgedAs` maps a value to another entry, or to none).
 *
 * @example
 * ```ts
 * decide(signals, (layer, value) => (layer === 'attestation' && value === 'missing' ? 'flag' : 'monitor'));
 * // { verdict: 'flag', reasons: ['flag:attestation=missing'], … }
 * ```
 */
export function decide(signals: Signals, actionOf: ActionOf): Decision {
  const actions: SignalAction[] = [];
  for (const row of SIGNAL_ROWS) {
    const given: string | readonly string[] = signals[row.name];
    for (const value of typeof given === 'string' ? [given] : given) {
      const judged = row.judgedAs === undefined ? value : row.judgedAs(value);
      const action = judged === undefined ? 'monitor' : actionOf(row.policy, judged);
      actions.push({ signal: row.name, layer: row.policy, value, action });
    }
  }
  const reasons = actions.filter((a) => a.action !== 'monitor').map((a) => `${a.action}:${a.layer}=${a.value}`);
  const verdict: Verdict = actions.some((a) => a.action === 'block')
    ? 'block'
    : actions.some((a) => a.action === 'flag')
      ? 'flag'
      : 'allow';
  return { verdict, reasons, actions };
}

/** The attributes policy rules may target, from the evidence. */
export function policyAttributes(keyId: string, model: string, evidence: Evidence): PolicyAttributes {
  return { id: keyId, model, attestation: evidence.attestation.signal, binding: evidence.attestation.binding, ...evidence.client };
}

/** The policy the flags define, for one request's attributes (each layer's table evaluated once). */
export function flagPolicy(flags: Flags, attributes: PolicyAttributes): ActionOf {
  const tables = new Map<string, Record<string, unknown>>();
  return (layer, value) => {
    let table = tables.get(layer);
    if (table === undefined) {
      table = flags.value<Record<string, unknown>>(`${POLICY_PREFIX}${layer}`, {}, attributes) ?? {};
      tables.set(layer, table);
    }
    const action = table[value];
    return action === 'flag' || action === 'block' ? action : 'monitor';
  };
}
