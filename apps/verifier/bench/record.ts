/** A genuine request's record as the pipeline writes it: reserved (`status` null) or finished. */
export const benchRecord = (id: string, status: number | null) =>
  ({
    id,
    ts: Date.now(),
    keyId: 'key_bench',
    model: 'claude-mock',
    attestation: 'valid',
    fingerprint: 'match',
    binding: 'request',
    fingerprintClass: 'clean',
    thinking: 'none',
    decoy: 'none',
    gateway: [],
    relay: [],
    verdict: 'allow',
    reasons: [],
    status,
    latencyMs: status === null ? null : 1,
    decoys: 3,
    batch: null,
  }) as never;
