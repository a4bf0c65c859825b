/**
 * The GrowthBook feature names Moat's client and verifier share. The verifier serves the
 * client flags from its features endpoint and evaluates the policy flags itself; a client
 * reads the client flags with the stock GrowthBook SDK. One table, so a renamed flag is a
 * compile error on both sides instead of a silent default.
 */

/** Flags a client reads: what to send, and a kill switch per layer. */
export const CLIENT_FLAGS = {
  /** Gate 3 of anti-distillation: ask for decoys (default on). */
  antiDistillation: 'moat-anti-distillation',
  /** Send the attribution block with the fingerprint (default on). */
  attribution: 'moat-attribution',
  /** Append the attestation envelope (default on). */
  envelope: 'moat-envelope',
  killAttestation: 'moat-kill-attestation',
  killFingerprint: 'moat-kill-fingerprint',
  killGatewayDetect: 'moat-kill-gateway-detect',
  killHarden: 'moat-kill-harden',
  killAntiDistillation: 'moat-kill-anti-distillation',
  /** The attestation key ids revoked so far (a list), so a client of a revoked release can say so. */
  revokedKids: 'moat-revoked-kids',
} as const;

/** A client flag's name. */
export type ClientFlag = (typeof CLIENT_FLAGS)[keyof typeof CLIENT_FLAGS];

/** Prefix of the server-side policy flags; the verifier never serves them to clients. */
export const POLICY_FLAG_PREFIX = 'moat-policy-';

/** Policy flags the verifier evaluates: an action table per signal, and decoy injection on/off. */
export const POLICY_FLAGS = {
  attestation: 'moat-policy-attestation',
  binding: 'moat-policy-binding',
  fingerprint: 'moat-policy-fingerprint',
  thinking: 'moat-policy-thinking',
  gateway: 'moat-policy-gateway',
  decoy: 'moat-policy-decoy',
  /** Inject decoy tools (on/off), not an action table. */
  decoys: 'moat-policy-decoys',
} as const satisfies Record<string, `${typeof POLICY_FLAG_PREFIX}${string}`>;

/** A policy flag's name. */
export type PolicyFlag = (typeof POLICY_FLAGS)[keyof typeof POLICY_FLAGS];
