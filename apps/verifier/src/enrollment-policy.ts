import { POLICY_FLAG_PREFIX } from '@moat/protocol';
import type { Flags } from './flags.js';

/**
 * The GrowthBook feature of the enrollment limits (server side only, like every
 * `moat-policy-*` feature): rules target API keys by `id`, as the signal policies do.
 */
export const ENROLLMENT_POLICY = `${POLICY_FLAG_PREFIX}enrollment`;

/** How many installs an API key may enroll, and how fast; what happens past that. */
export interface EnrollmentLimits {
  /** Live (unrevoked) installs per API key. */
  readonly installsPerKey: number;
  /** Installs an API key may create per window. */
  readonly perWindow: number;
  readonly windowSec: number;
  /** `block`: refused (429, `retry-after`); `flag`: created, marked `over_limit`. */
  readonly action: 'block' | 'flag';
}

/**
 * The built-in limits: a person's machines and a team's CI fit under them; a tool minting
 * installs from an extracted release key does not.
 */
export const DEFAULT_ENROLLMENT_LIMITS: EnrollmentLimits = {
  installsPerKey: 100,
  perWindow: 20,
  windowSec: 3_600,
  action: 'block',
};

const count = (value: unknown, fallback: number, max: number): number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= max ? value : fallback;

/**
 * The limits for one API key, from the feature's value for it; a member missing or out of
 * range keeps its default (a typo in a rule never lifts a limit to infinity).
 */
export function enrollmentLimits(flags: Pick<Flags, 'value'>, keyId: string): EnrollmentLimits {
  const raw = flags.value<Record<string, unknown> | null>(ENROLLMENT_POLICY, null, { id: keyId }) ?? {};
  const d = DEFAULT_ENROLLMENT_LIMITS;
  return {
    installsPerKey: count(raw.installsPerKey, d.installsPerKey, 1e9),
    perWindow: count(raw.perWindow, d.perWindow, 1e9),
    windowSec: Math.max(1, count(raw.windowSec, d.windowSec, 366 * 86_400)),
    action: raw.action === 'flag' ? 'flag' : 'block',
  };
}

/** What the limits say of one more install: within them, or past one and when to try again. */
export function checkLimits(
  limits: EnrollmentLimits,
  installs: number,
  window: { readonly count: number; readonly oldest: number | null },
  now: number,
): { readonly over: false } | { readonly over: true; readonly which: string; readonly retryAfterSec: number } {
  if (installs >= limits.installsPerKey)
    return { over: true, which: `${limits.installsPerKey} installs per key`, retryAfterSec: limits.windowSec };
  if (window.count >= limits.perWindow) {
    // The window frees a place when its oldest enrollment leaves it.
    const frees = (window.oldest ?? now) + limits.windowSec * 1000 - now;
    const retryAfterSec = Math.max(1, Math.ceil(frees / 1000));
    return { over: true, which: `${limits.perWindow} enrollments per ${limits.windowSec} s`, retryAfterSec };
  }
  return { over: false };
}
