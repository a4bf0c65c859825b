/**
 * The signal vocabulary of records and the admin API. Stable: values are added, never
 * renamed or removed.
 */
export const ATTESTATION_SIGNALS = ['valid', 'invalid', 'missing', 'replayed', 'stale', 'unknown_key', 'unavailable', 'revoked'] as const;
export type AttestationSignal = (typeof ATTESTATION_SIGNALS)[number];

/**
 * What a `valid` stamp is bound to: `request` (an `r1` envelope: body, method, authority,
 * path and credential, §5.3), `install` (an `i1` envelope: the same, under the key of one
 * enrolled install, §5.4), `body` (a `v1` envelope: the body only, protocol 1.0), or
 * `none` when the stamp is not valid. Only `request` and `install` tie the bytes to who sends them.
 */
export const BINDING_SIGNALS = ['request', 'body', 'none', 'install'] as const;
export type BindingSignal = (typeof BINDING_SIGNALS)[number];

/**
 * What a request says about the install that sent it (§13, protocol 1.2):
 * - `known`: a valid `i1` stamp from an install enrolled before the "new" window;
 * - `new`: a valid `i1` stamp from an install enrolled within that window;
 * - `revoked`: a correct MAC under a revoked install (attestation is `revoked` too);
 * - `over_limit`: a valid `i1` stamp from an install created past an enrollment limit under policy `flag`;
 * - `release_only`: a valid `r1`/`v1` stamp outside enrollment from a release known to speak
 *   `install_keys` — a release key alone only enrolls;
 * - `none`: no `i1` stamp (a 1.0 or 1.1 client, or no stamp at all).
 */
export const INSTALL_SIGNALS = ['known', 'new', 'revoked', 'over_limit', 'release_only', 'none'] as const;
export type InstallSignal = (typeof INSTALL_SIGNALS)[number];

export const FINGERPRINT_SIGNALS = ['match', 'mismatch', 'missing'] as const;
export type FingerprintSignal = (typeof FINGERPRINT_SIGNALS)[number];

export const THINKING_SIGNALS = ['valid', 'invalid', 'none'] as const;
export type ThinkingSignal = (typeof THINKING_SIGNALS)[number];

/** Whether a request carries a decoy tool's name or canary (replayed traffic, a distilled model). */
export const DECOY_SIGNALS = ['hit', 'none'] as const;
export type DecoySignal = (typeof DECOY_SIGNALS)[number];

export const VERDICTS = ['allow', 'flag', 'block'] as const;
export type Verdict = (typeof VERDICTS)[number];

/** Policy per signal: record only, flag the request, or block it. */
export const POLICY_ACTIONS = ['monitor', 'flag', 'block'] as const;
export type PolicyAction = (typeof POLICY_ACTIONS)[number];

/** The signals recorded for one request. `gateway` lists detected gateway rule ids. */
export interface RequestSignals {
  readonly attestation: AttestationSignal;
  readonly fingerprint: FingerprintSignal;
  readonly gateway: readonly string[];
  readonly thinking: ThinkingSignal;
  /** The install signal (protocol 1.2); absent where a verifier does not record it. */
  readonly install?: InstallSignal;
}
