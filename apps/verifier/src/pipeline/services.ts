import type { AttestationKeyring } from '@moat/attest/server';
import type { BlockKeyring } from '@moat/distill-guard/server';
import type { FingerprintStats } from '@moat/fingerprint/server';
import type { GatewayStats } from '@moat/gateway-detect/server';
import type { Logger } from 'pino';
import type { VerifierConfig } from '../config.js';
import type { DecoyIndexCache } from '../decoy-index.js';
import type { Flags } from '../flags.js';
import type { Enrollment } from '../install-keys.js';
import type { ApiKeyCache } from '../key-cache.js';
import type { VerifierMetrics } from '../metrics.js';
import type { Storage } from '../storage.js';
import type { StoreGuard } from '../store-guard.js';
import type { Supervisor } from '../supervise.js';
import type { DecoyTracePool } from '../trace-pool.js';
import type { UpstreamClient } from './upstream.js';

/** What the stages of the pipeline work with: created once by `createVerifier`. */
export interface VerifierServices {
  readonly config: VerifierConfig;
  readonly storage: Storage;
  /** Every record goes through it: the store, or the spool while the store is down. */
  readonly guard: StoreGuard;
  /** Runs background work (timers, refreshes) so that none of it can end the process. */
  readonly supervisor: Supervisor;
  readonly flags: Flags;
  readonly log: Logger;
  readonly metrics: VerifierMetrics;
  readonly attestationKeyring: AttestationKeyring;
  readonly blockKeyring: BlockKeyring;
  readonly fingerprintStats: FingerprintStats;
  readonly gatewayStats: GatewayStats;
  readonly keyCache: ApiKeyCache;
  /** Per-install keys (protocol 1.2): enrollment keys, derived install keys, fan-in per install. */
  readonly enrollment: Enrollment;
  /** Every key's decoys, for tracing decoys that come back in a request. */
  readonly decoyIndex: DecoyIndexCache;
  /** Traces requests for decoys, a large one off the event loop. */
  readonly decoyTracer: DecoyTracePool;
  /** The server secret: decoys and their canaries, gateway address hashes. */
  readonly secret: Buffer;
  /** Stage 7: the upstream over HTTP, or the embedding server's own model call. */
  readonly upstream: UpstreamClient;
  /** Sees every body the upstream receives (tests: proves no tag reaches it). */
  readonly onUpstreamRequest?: ((body: string) => void) | undefined;
}
