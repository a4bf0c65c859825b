import { readFileSync } from 'node:fs';
import { GrowthBook } from '@growthbook/growthbook';
import { CLIENT_FLAGS, POLICY_FLAG_PREFIX, POLICY_FLAGS, type PolicyAction } from '@moat/protocol';
import { closestName, errorMessage } from '@moat/protocol/support';
import { DEFAULT_ENROLLMENT_LIMITS, ENROLLMENT_POLICY } from './enrollment-policy.js';
import { VerifierConfigError } from './errors.js';
import { JsonBodyError, parseJsonBody } from './json-body.js';
import { defaultPolicies, policyValues } from './signals.js';

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

/** A feature name meant for Moat, in any case and with any joiner after `moat`. */
const MOAT_NAME = /^\s*moat[-_\s\u2010-\u2015\u2212]/i;

/** The members a GrowthBook feature rule may have. */
const RULE_MEMBERS: ReadonlySet<string> = new Set([
  'id',
  'condition',
  'parentConditions',
  'force',
  'variations',
  'weights',
  'key',
  'hashAttribute',
  'fallbackAttribute',
  'hashVersion',
  'disableStickyBucketing',
  'bucketVersion',
  'minBucketVersion',
  'range',
  'coverage',
  'namespace',
  'ranges',
  'meta',
  'filters',
  'seed',
  'name',
  'phase',
  'tracks',
]);

/** What the verifier tells GrowthBook about a request a policy decides ({@link PolicyAttributes}). */
const POLICY_ATTRIBUTES: readonly string[] = ['id', 'ep', 'cv', 'model', 'attestation', 'binding'];

/** GrowthBook's condition operators, and what each takes where it must be a list. */
const OPERATORS: ReadonlySet<string> = new Set([
  '$eq',
  '$ne',
  '$lt',
  '$lte',
  '$gt',
  '$gte',
  '$veq',
  '$vne',
  '$vgt',
  '$vgte',
  '$vlt',
  '$vlte',
  '$regex',
  '$regexi',
  '$in',
  '$nin',
  '$ini',
  '$nini',
  '$all',
  '$alli',
  '$elemMatch',
  '$size',
  '$exists',
  '$type',
  '$not',
  '$inGroup',
  '$notInGroup',
]);
const LIST_OPERATORS: ReadonlySet<string> = new Set(['$in', '$nin', '$ini', '$nini', '$all', '$alli']);

/**
 * Checks a rule's condition: logical operators over conditions, and per attribute a value or
 * an object of known operators (a list where one is due). `attributes`, when given, are the
 * only names a condition may test: a misspelt one would never match, and its rule would
 * silently never apply.
 *
 * @throws {VerifierConfigError} naming the place, what it expected and what came.
 */
function checkCondition(at: string, condition: unknown, attributes: readonly string[] | undefined): void {
  if (!isObject(condition)) throw new VerifierConfigError(at, 'a condition object', shown(condition));
  for (const [name, value] of Object.entries(condition)) {
    const here = `${at}.${name}`;
    if (name === '$and' || name === '$or' || name === '$nor') {
      if (!Array.isArray(value)) throw new VerifierConfigError(here, 'an array of conditions', shown(value));
      for (const [i, c] of value.entries()) checkCondition(`${here}.${i}`, c, attributes);
    } else if (name === '$not') checkCondition(here, value, attributes);
    else if (name.startsWith('$')) throw new VerifierConfigError(here, 'an attribute, or $and, $or, $nor, $not', `"${name}"`);
    else {
      if (attributes !== undefined && !attributes.includes(name)) {
        const hint = closestName(name, attributes);
        throw new VerifierConfigError(
          here,
          `an attribute the verifier sets: ${attributes.join(', ')}`,
          `"${name}"${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
        );
      }
      if (isObject(value) && Object.keys(value).some((k) => k.startsWith('$'))) checkOperators(here, value);
    }
  }
}

/** Checks an attribute's operators (`{ "$in": [...] }`). */
function checkOperators(at: string, operators: Record<string, unknown>): void {
  for (const [op, operand] of Object.entries(operators)) {
    if (!OPERATORS.has(op)) {
      const hint = closestName(op, OPERATORS);
      throw new VerifierConfigError(
        `${at}.${op}`,
        'a GrowthBook operator',
        `"${op}"${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
      );
    }
    if (LIST_OPERATORS.has(op) && !Array.isArray(operand)) throw new VerifierConfigError(`${at}.${op}`, 'an array', shown(operand));
    if (op === '$not' && isObject(operand)) checkOperators(`${at}.${op}`, operand);
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const shown = (x: unknown) => JSON.stringify(x)?.slice(0, 80) ?? String(x);
const ACTIONS: ReadonlySet<string> = new Set(['monitor', 'flag', 'block']);

/** The Moat features a file may set, and what each value must be. */
type FeatureKind =
  | { readonly kind: 'policy'; readonly values: readonly string[] }
  | { readonly kind: 'boolean' }
  | { readonly kind: 'enrollment' };

function featureKinds(): ReadonlyMap<string, FeatureKind> {
  const kinds = new Map<string, FeatureKind>();
  for (const [feature, values] of policyValues()) kinds.set(feature, { kind: 'policy', values });
  kinds.set(POLICY_FLAGS.decoys, { kind: 'boolean' });
  kinds.set(ENROLLMENT_POLICY, { kind: 'enrollment' });
  for (const flag of Object.values(CLIENT_FLAGS)) if (flag !== CLIENT_FLAGS.revokedKids) kinds.set(flag, { kind: 'boolean' });
  return kinds;
}

/**
 * Checks one value a Moat feature can take (its default, a rule's `force`, an experiment's
 * variation) and returns it as the verifier reads it: a policy table over `base` (the values
 * it does not name keep their action there), the others as they are.
 *
 * @throws {VerifierConfigError} naming the place, what it expected and what came.
 */
function checkedValue(at: string, kind: FeatureKind, value: unknown, base: Readonly<Record<string, unknown>>): unknown {
  if (kind.kind === 'boolean') {
    if (typeof value !== 'boolean') throw new VerifierConfigError(at, 'true or false', shown(value));
    return value;
  }
  if (!isObject(value))
    throw new VerifierConfigError(
      at,
      kind.kind === 'policy' ? 'a table of signal values to monitor, flag or block' : 'an object',
      shown(value),
    );
  if (kind.kind === 'enrollment') {
    const known = Object.keys(DEFAULT_ENROLLMENT_LIMITS);
    for (const [name, member] of Object.entries(value)) {
      if (!known.includes(name)) {
        const hint = closestName(name, known);
        throw new VerifierConfigError(
          `${at}.${name}`,
          `one of ${known.join(', ')}`,
          `"${name}"${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
        );
      }
      const ok =
        name === 'action'
          ? member === 'block' || member === 'flag'
          : typeof member === 'number' && Number.isSafeInteger(member) && member >= 0;
      if (!ok)
        throw new VerifierConfigError(
          `${at}.${name}`,
          name === 'action' ? '"block" or "flag"' : 'a whole number, 0 or more',
          shown(member),
        );
    }
    return { ...base, ...value };
  }
  for (const [signalValue, action] of Object.entries(value)) {
    if (!kind.values.includes(signalValue)) {
      const hint = closestName(signalValue, kind.values);
      throw new VerifierConfigError(
        `${at}.${signalValue}`,
        `a value of the signal: ${kind.values.join(', ')}`,
        `"${signalValue}"${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
      );
    }
    if (typeof action !== 'string' || !ACTIONS.has(action)) {
      const hint = typeof action === 'string' ? closestName(action, [...ACTIONS]) : undefined;
      throw new VerifierConfigError(
        `${at}.${signalValue}`,
        '"monitor", "flag" or "block"',
        `${shown(action)}${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
      );
    }
  }
  return { ...base, ...value };
}

/**
 * Reads a features file in GrowthBook's format `{ "features": { key: { defaultValue, rules } } }`, over the defaults.
 *
 * Every Moat feature (`moat-*`) is checked where it is read, once: its name must be one
 * Moat knows, a policy table's keys values of its signal and its actions `monitor`, `flag`
 * or `block`, a switch `true` or `false`. A table need not name every value: those it leaves
 * out keep their built-in action (a rule's `force` and an experiment's variations, the
 * feature's own default), so `{ "missing": "block" }` changes that one action. Features not
 * named `moat-*` are the adopter's own client flags, served as they are.
 *
 * @throws {VerifierConfigError} naming the file, feature, rule or value that is wrong, with
 * what was expected and what came (and the name a typo likely meant).
 */
export function loadFeatures(file?: string): Record<string, FeatureDefinition> {
  if (file === undefined) return { ...DEFAULT_FEATURES };
  let doc: unknown;
  try {
    // Strict JSON, as a request body is read: a feature or a value given twice is refused, not the last one kept.
    doc = parseJsonBody(readFileSync(file), 64).value;
  } catch (error) {
    const why =
      error instanceof JsonBodyError
        ? `${error.path === '' ? '' : `${error.path}: `}${error.message.slice(error.code.length + 2)}`
        : errorMessage(error);
    throw new VerifierConfigError('flagsFile', `a JSON features file at ${file}`, why);
  }
  const features = (doc as { features?: unknown })?.features;
  if (typeof features !== 'object' || features === null || Array.isArray(features)) {
    throw new VerifierConfigError('flagsFile', 'an object with a "features" object', typeof features);
  }
  const kinds = featureKinds();
  const out: Record<string, FeatureDefinition> = { ...DEFAULT_FEATURES };
  for (const [key, def] of Object.entries(features)) {
    // `Moat-Policy-…`, `moat_policy_…`, ` moat-…`: meant for Moat, so checked as Moat's, never taken for the adopter's own.
    const moat = MOAT_NAME.test(key);
    if (!isObject(def) || !('defaultValue' in def))
      throw new VerifierConfigError(`flagsFile: ${key}`, 'a feature with a defaultValue', shown(def));
    // Checked here, once: a malformed rule would otherwise throw on every request its policy decides.
    if (def.rules !== undefined && !Array.isArray(def.rules))
      throw new VerifierConfigError(`flagsFile: ${key}.rules`, 'an array of rules', shown(def.rules));
    const rules = (def.rules ?? []) as unknown[];
    for (const [i, rule] of rules.entries()) {
      const at = `flagsFile: ${key}.rules.${i}`;
      if (!isObject(rule)) throw new VerifierConfigError(at, 'a rule object', shown(rule));
      if ('condition' in rule && !isObject(rule.condition))
        throw new VerifierConfigError(`${at}.condition`, 'a condition object', shown(rule.condition));
      if ('parentConditions' in rule && !Array.isArray(rule.parentConditions))
        throw new VerifierConfigError(`${at}.parentConditions`, 'an array', shown(rule.parentConditions));
      if ('variations' in rule && !Array.isArray(rule.variations))
        throw new VerifierConfigError(`${at}.variations`, 'an array', shown(rule.variations));
      for (const name of Object.keys(rule))
        if (!RULE_MEMBERS.has(name)) {
          const hint = closestName(name, RULE_MEMBERS);
          throw new VerifierConfigError(
            `${at}.${name}`,
            'a member of a GrowthBook rule',
            `an unknown name${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
          );
        }
      if (!('force' in rule) && !('variations' in rule))
        throw new VerifierConfigError(
          at,
          'a rule with "force" or "variations" (one without changes nothing)',
          Object.keys(rule).join(', ') || 'an empty rule',
        );
      // What a server-side rule can target is what the verifier tells GrowthBook about a request.
      const attributes = !moat
        ? undefined
        : key === ENROLLMENT_POLICY
          ? ['id']
          : key.startsWith(POLICY_PREFIX)
            ? POLICY_ATTRIBUTES
            : undefined;
      if ('condition' in rule) checkCondition(`${at}.condition`, rule.condition, attributes);
    }
    if (!moat) {
      out[key] = def as unknown as FeatureDefinition;
      continue;
    }
    const kind = kinds.get(key);
    if (kind === undefined) {
      const hint = closestName(key, kinds.keys());
      const why =
        key === CLIENT_FLAGS.revokedKids
          ? ' (the verifier serves it from revokedKids)'
          : hint === undefined
            ? ''
            : ` (did you mean "${hint}"?)`;
      throw new VerifierConfigError(`flagsFile: ${key}`, 'the name of a Moat feature', `an unknown name${why}`);
    }
    const builtIn = (DEFAULT_FEATURES[key]?.defaultValue ?? {}) as Record<string, unknown>;
    const defaultValue = checkedValue(`flagsFile: ${key}.defaultValue`, kind, def.defaultValue, builtIn);
    const base = isObject(defaultValue) ? defaultValue : {};
    const checkedRules = rules.map((raw, i) => {
      const rule = raw as Record<string, unknown>;
      const at = `flagsFile: ${key}.rules.${i}`;
      const next: Record<string, unknown> = { ...rule };
      if ('force' in rule) next.force = checkedValue(`${at}.force`, kind, rule.force, base);
      if (Array.isArray(rule.variations))
        next.variations = rule.variations.map((variation, j) => checkedValue(`${at}.variations.${j}`, kind, variation, base));
      return next;
    });
    out[key] = def.rules === undefined ? { ...def, defaultValue } : { ...def, defaultValue, rules: checkedRules };
  }
  return out;
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
