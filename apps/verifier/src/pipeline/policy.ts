import type { PolicyAction, Verdict } from '@moat/protocol';
import { type Flags, POLICY_PREFIX, type PolicyAttributes } from '../flags.js';
import type { Evidence } from './evidence.js';

/** The signals a decision is made from, one value per layer (gateway: the relay signals seen). */
export interface Signals {
  readonly attestation: string;
  /** What a valid stamp covers: `request`, `body` or `none`. */
  readonly binding: string;
  readonly fingerprint: string;
  /** The key's fingerprint classification: `clean`, `suspicious` or `tampering`. */
  readonly fingerprintClass: string;
  readonly thinking: string;
  readonly gateway: readonly string[];
  /** `hit` when the request carries a decoy's name or canary. */
  readonly decoy: string;
}

/** The action a policy takes on one signal value of one layer. */
export type ActionOf = (layer: string, value: string) => PolicyAction;

/** One signal's part in a decision. */
export interface SignalAction {
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

/** The signals of {@link Evidence}. */
export function signalsOf(evidence: Evidence): Signals {
  return {
    attestation: evidence.attestation.signal,
    binding: evidence.attestation.binding,
    fingerprint: evidence.fingerprint.signal,
    fingerprintClass: evidence.keyClass,
    thinking: evidence.thinking.signal,
    gateway: evidence.gateway.signals,
    decoy: evidence.decoy.signal,
  };
}

/**
 * Stage 4: the decision, a pure function of the signals and the policy. The verdict is the
 * strongest action any signal gets (`block` over `flag` over `monitor`). A key classified
 * `tampering` by the fingerprint statistics is judged under the fingerprint policy's
 * `tampering` entry; the gateway's `gateway_headers` signal under its `detected` entry.
 *
 * @example
 * ```ts
 * decide(signals, (layer, value) => (layer === 'attestation' && value === 'missing' ? 'flag' : 'monitor'));
 * // { verdict: 'flag', reasons: ['flag:attestation=missing'], … }
 * ```
 */
export function decide(signals: Signals, actionOf: ActionOf): Decision {
  const actions: SignalAction[] = [
    { layer: 'attestation', value: signals.attestation, action: actionOf('attestation', signals.attestation) },
    { layer: 'binding', value: signals.binding, action: actionOf('binding', signals.binding) },
    { layer: 'fingerprint', value: signals.fingerprint, action: actionOf('fingerprint', signals.fingerprint) },
    {
      layer: 'fingerprint',
      value: signals.fingerprintClass,
      action: signals.fingerprintClass === 'tampering' ? actionOf('fingerprint', 'tampering') : 'monitor',
    },
    { layer: 'thinking', value: signals.thinking, action: actionOf('thinking', signals.thinking) },
    ...signals.gateway.map((s) => ({ layer: 'gateway', value: s, action: actionOf('gateway', s === 'gateway_headers' ? 'detected' : s) })),
    { layer: 'decoy', value: signals.decoy, action: actionOf('decoy', signals.decoy) },
  ];
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
