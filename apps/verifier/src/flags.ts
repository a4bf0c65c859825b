import { readFileSync } from 'node:fs';
import { GrowthBook } from '@growthbook/growthbook';
import { CLIENT_FLAGS, POLICY_FLAG_PREFIX, POLICY_FLAGS, type PolicyAction } from '@moat/protocol';
import { errorMessage } from '@moat/protocol/support';
import { DEFAULT_ENROLLMENT_LIMITS, ENROLLMENT_POLICY } from './enrollment-policy.js';
import { VerifierConfigError } from './errors.js';
import { defaultPolicies } from './signals.js';

/** A GrowthBook feature definition (the subset the verifier reads and serves). */
export interface FeatureDefinition {
  readonly defaultValue: unknown;
  readonly rules?: readonly unknown[];
}

/** What GrowthBook targeting rules of a policy see about a request. */
export interface PolicyAttributes {
  /** The API key's id. */
  readonly id: string;
  /** Entry point from the attribution block (`cli`, `sdk`, …), when the block was readable. */
  readonly ep?: string | undefined;
  /** Client version from the attribution block. */
  readonly cv?: string | undefined;
  readonly model?: string;
  /** The attestation signal. */
  readonly attestation?: string;
  /** What a valid stamp covers: `request` (r1), `body` (v1, protocol 1.0 clients) or `none`. */
  readonly binding?: string;
}

/** Prefix of server-side policy features; they are never served to clients. */
export const POLICY_PREFIX = POLICY_FLAG_PREFIX;

/**
 * The default feature definitions: policy per signal (`monitor | flag | block`) and the
 * client-side flags (anti-distillation, attribution, envelope and a kill switch per layer).
 */
export const DEFAULT_FEATURES: Readonly<Record<string, FeatureDefinition>> = {
  // Policy per signal, from the signal registry.
  ...defaultPolicies(),
  // Injecting decoys (on/off); what a request that brings one back earns is `moat-policy-decoy`.
  [POLICY_FLAGS.decoys]: { defaultValue: true },
  // Enrollment limits per API key (per-install keys); rules set them per key.
  [ENROLLMENT_POLICY]: { defaultValue: { ...DEFAULT_ENROLLMENT_LIMITS } },
  [CLIENT_FLAGS.antiDistillation]: { defaultValue: true },
  [CLIENT_FLAGS.attribution]: { defaultValue: true },
  [CLIENT_FLAGS.envelope]: { defaultValue: true },
  [CLIENT_FLAGS.killAttestation]: { defaultValue: false },
  [CLIENT_FLAGS.killFingerprint]: { defaultValue: false },
  [CLIENT_FLAGS.killGatewayDetect]: { defaultValue: false },
  [CLIENT_FLAGS.killHarden]: { defaultValue: false },
  [CLIENT_FLAGS.killAntiDistillation]: { defaultValue: false },
};

/** Reads a features file in GrowthBook's format `{ "features": { key: { defaultValue, rules } } }`, over the defaults. */
export function loadFeatures(file?: string): Record<string, FeatureDefinition> {
  if (file === undefined) return { ...DEFAULT_FEATURES };
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new VerifierConfigError('flagsFile', `a JSON features file at ${file}`, errorMessage(error));
  }
  const features = (doc as { features?: unknown })?.features;
  if (typeof features !== 'object' || features === null || Array.isArray(features)) {
    throw new VerifierConfigError('flagsFile', 'an object with a "features" object', typeof features);
  }
  const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  const shown = (x: unknown) => JSON.stringify(x)?.slice(0, 80) ?? String(x);
  for (const [key, def] of Object.entries(features)) {
    if (!isObject(def) || !('defaultValue' in def))
      throw new VerifierConfigError(`flagsFile: ${key}`, 'a feature with a defaultValue', shown(def));
    // Checked here, once: a malformed rule would otherwise throw on every request its policy decides.
    if (def.rules === undefined) continue;
    if (!Array.isArray(def.rules)) throw new VerifierConfigError(`flagsFile: ${key}.rules`, 'an array of rules', shown(def.rules));
    for (const [i, rule] of def.rules.entries()) {
      const at = `flagsFile: ${key}.rules.${i}`;
      if (!isObject(rule)) throw new VerifierConfigError(at, 'a rule object', shown(rule));
      if ('condition' in rule && !isObject(rule.condition))
        throw new VerifierConfigError(`${at}.condition`, 'a condition object', shown(rule.condition));
      if ('parentConditions' in rule && !Array.isArray(rule.parentConditions))
        throw new VerifierConfigError(`${at}.parentConditions`, 'an array', shown(rule.parentConditions));
    }
  }
  return { ...DEFAULT_FEATURES, ...(features as Record<string, FeatureDefinition>) };
}

/**
 * Evaluates features with the GrowthBook SDK (so targeting rules work as in GrowthBook) and
 * serves the client-side ones in GrowthBook's features-endpoint format.
 */
export class Flags {
  readonly #gb: GrowthBook;
  /**
   * The value of each feature without targeting rules (`null` for no default): the same for
   * every request, so it is read here instead of being evaluated by GrowthBook per request.
   */
  readonly #fixed = new Map<string, unknown>();
  readonly features: Readonly<Record<string, FeatureDefinition>>;

  constructor(features: Record<string, FeatureDefinition>) {
    this.features = features;
    this.#gb = new GrowthBook({ features: features as never });
    for (const [key, def] of Object.entries(features))
      if (def.rules === undefined || def.rules.length === 0) this.#fixed.set(key, def.defaultValue ?? null);
  }

  /**
   * A feature's value for a request: `attributes` are what targeting rules see (`id` the API
   * key id, `ep`, `cv`, `model`, `attestation`); a string is taken as the key id alone.
   */
  value<T>(key: string, fallback: T, attributes?: PolicyAttributes | string): T {
    const fixed = this.#fixed.get(key);
    // GrowthBook's answer for a feature without rules: its default value, the fallback for none.
    if (fixed !== undefined) return (fixed === null ? fallback : fixed) as T;
    this.#gb.setAttributes(attributes === undefined ? {} : typeof attributes === 'string' ? { id: attributes } : { ...attributes });
    return this.#gb.getFeatureValue(key, fallback as never) as T;
  }

  /** The policy action for a signal value: `monitor`, `flag` or `block`. */
  action(signal: string, value: string, attributes?: PolicyAttributes | string): PolicyAction {
    const table = this.value<Record<string, unknown>>(`${POLICY_PREFIX}${signal}`, {}, attributes);
    const action = table?.[value];
    return action === 'flag' || action === 'block' ? action : 'monitor';
  }

  /**
   * The payload of `GET /api/features/<clientKey>`: client flags only, and `moat-revoked-kids`
   * (the attestation key ids revoked so far, so a client of a revoked release can say so).
   */
  clientPayload(revokedKids: readonly string[] = []): { status: 200; features: Record<string, FeatureDefinition>; dateUpdated: string } {
    const features: Record<string, FeatureDefinition> = { [CLIENT_FLAGS.revokedKids]: { defaultValue: [...revokedKids] } };
    for (const [key, def] of Object.entries(this.features)) if (!key.startsWith(POLICY_PREFIX)) features[key] = def;
    return { status: 200, features, dateUpdated: new Date().toISOString() };
  }
}
