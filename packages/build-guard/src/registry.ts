import { describeValue, errorMessage } from '@moat/protocol/support';
import { BuildGuardError } from './errors.js';

/** A flag registry: the one source of every build flag and its value per variant. */
export interface FlagRegistry<V extends string = string> {
  /** Build variants, e.g. `['internal', 'external']`. */
  readonly variants: readonly V[];
  /** `feature("NAME")` flags: a boolean per variant. */
  readonly features: Readonly<Record<string, Readonly<Record<V, boolean>>>>;
  /**
   * Compile-time constants (esbuild/Bun `define`): an expression such as
   * `process.env.USER_TYPE` and its value per variant (strings become string literals).
   */
  readonly define?: Readonly<Record<string, Readonly<Record<V, string | number | boolean>>>>;
}

/** What one variant builds with. */
export interface VariantFlags {
  readonly variant: string;
  /** Every registered feature and its value in this variant. */
  readonly features: Readonly<Record<string, boolean>>;
  /** `define` entries as esbuild expects them (values are JavaScript source). */
  readonly define: Readonly<Record<string, string>>;
}

const FLAG_NAME = /^[A-Z][A-Z0-9_]{0,63}$/;
const DEFINE_KEY = /^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/;

/**
 * Declares a flag registry with its types checked: every flag must give a value for every
 * variant. Validation runs here too, so a malformed registry fails where it is written.
 *
 * @example
 * ```ts
 * export default defineFlags({
 *   variants: ['internal', 'external'],
 *   features: { DEBUG_COMMANDS: { internal: true, external: false } },
 *   define: { 'process.env.USER_TYPE': { internal: 'ant', external: 'external' } },
 * });
 * ```
 */
export function defineFlags<const V extends string>(registry: FlagRegistry<V>): FlagRegistry<V> {
  validateRegistry(registry);
  return registry;
}

/**
 * Checks an untrusted registry (for example one loaded by the CLI).
 *
 * @throws {BuildGuardError} `ERR_REGISTRY` naming the first problem.
 */
export function validateRegistry(input: unknown): FlagRegistry {
  try {
    return checkRegistry(input);
  } catch (error) {
    if (error instanceof BuildGuardError) throw error;
    // A proxy or getter that throws while being read: the registry cannot be trusted either.
    throw new BuildGuardError('ERR_REGISTRY', `expected a registry of plain values, got one that threw when read: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}

function checkRegistry(input: unknown): FlagRegistry {
  const fail = (message: string): never => {
    throw new BuildGuardError('ERR_REGISTRY', message);
  };
  if (typeof input !== 'object' || input === null) return fail(`expected a registry object, got ${describeValue(input)}`);
  const r = input as Record<string, unknown>;
  const variants = r.variants;
  if (!Array.isArray(variants) || variants.length === 0 || !variants.every((v) => typeof v === 'string' && /^[a-z][a-z0-9-]*$/.test(v))) {
    return fail(`expected "variants" as a non-empty array of lowercase names, got ${describeValue(variants)}`);
  }
  const check = (
    section: 'features' | 'define',
    value: unknown,
    keyOk: (k: string) => boolean,
    valueOk: (v: unknown) => boolean,
    kind: string,
  ) => {
    if (value === undefined && section === 'define') return;
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      return fail(`expected "${section}" as an object, got ${describeValue(value)}`);
    for (const [key, perVariant] of Object.entries(value)) {
      if (!keyOk(key)) fail(`expected ${section} key ${JSON.stringify(key)} to match ${section === 'features' ? FLAG_NAME : DEFINE_KEY}`);
      if (typeof perVariant !== 'object' || perVariant === null)
        return fail(`expected ${section}.${key} as an object of values per variant, got ${describeValue(perVariant)}`);
      for (const variant of variants as string[]) {
        if (!valueOk((perVariant as Record<string, unknown>)[variant])) {
          fail(`expected ${section}.${key}.${variant} as ${kind}, got ${describeValue((perVariant as Record<string, unknown>)[variant])}`);
        }
      }
      for (const variant of Object.keys(perVariant)) {
        if (!(variants as string[]).includes(variant))
          fail(`expected ${section}.${key} to name only the variants ${variants.join(', ')}, got "${variant}"`);
      }
    }
  };
  check(
    'features',
    r.features,
    (k) => FLAG_NAME.test(k),
    (v) => typeof v === 'boolean',
    'a boolean',
  );
  check(
    'define',
    r.define,
    (k) => DEFINE_KEY.test(k),
    (v) => ['string', 'number', 'boolean'].includes(typeof v),
    'a string, number or boolean',
  );
  return input as FlagRegistry;
}

/**
 * The flags of one variant.
 *
 * @throws {BuildGuardError} `ERR_VARIANT` for a variant the registry does not list.
 */
export function flagsFor(registry: FlagRegistry, variant: string): VariantFlags {
  validateRegistry(registry);
  if (!registry.variants.includes(variant)) {
    throw new BuildGuardError('ERR_VARIANT', `expected one of the variants ${registry.variants.join(', ')}, got "${variant}"`);
  }
  const features: Record<string, boolean> = {};
  for (const [name, values] of Object.entries(registry.features)) features[name] = values[variant] as boolean;
  const define: Record<string, string> = {};
  for (const [key, values] of Object.entries(registry.define ?? {})) define[key] = JSON.stringify(values[variant]);
  return { variant, features, define };
}
