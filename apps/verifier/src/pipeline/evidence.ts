import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { UNATTESTED_HEADER } from '@moat/attest/client';
import { type AttestationResult, verifyAttestation } from '@moat/attest/server';
import { type CanaryIndex, type RequestBlocksCheck, TRACE_INFLATE_BYTES, verifyRequestBlocks } from '@moat/distill-guard/server';
import { checkFingerprint, type FingerprintCheck, type KeyClassification } from '@moat/fingerprint/server';
import { inspectRequest, type RelaySignal, type RequestEvidence } from '@moat/gateway-detect/server';
import {
  type DecoySignal,
  INSTALL_ID_PATTERN,
  type InstallSignal,
  installSignal,
  type RequestComponents,
  receivedRequestComponents,
} from '@moat/protocol';
import type { MessagesRequest } from '@moat/protocol/messages';
import type { VerifierConfig } from '../config.js';
import { unavailable } from '../errors.js';
import { mayNameFiles, namedFiles } from '../file-owners.js';
import type { InstallRow } from '../installs.js';
import type { BodyLayout } from '../json-body.js';
import type { TraceCut } from '../metrics.js';
import { releaseMayHave, requireRequestBinding } from '../releases.js';
import type { Signals } from '../signals.js';
import { underPrefix } from '../target.js';
import type { RequestTrace, TraceAgainst } from '../trace-pool.js';
import type { VerifierServices } from './services.js';

/** Everything the layers found about one request. */
export interface Evidence {
  /** One value per signal of the registry: what policy decides on and the record keeps. */
  readonly signals: Signals;
  readonly attestation: AttestationResult;
  readonly fingerprint: FingerprintCheck;
  /** The key's standing in the fingerprint statistics after this request. */
  readonly keyClass: KeyClassification;
  readonly gateway: RequestEvidence;
  readonly thinking: RequestBlocksCheck;
  /** What the attribution block says of the client (unverified claims, for policy targeting). */
  readonly client: { readonly ep?: string | undefined; readonly cv?: string | undefined };
  /** The client's own word that it could not attest (telemetry only: it never changes a verdict). */
  readonly clientUnavailable: boolean;
  /** The install that stamped this request (`i1`), when one did and it is enrolled. */
  readonly install?: InstallRow | undefined;
  /** Decoys of any key that come back in this request, and the keys they were served to. */
  readonly decoy: {
    readonly signal: DecoySignal;
    readonly tracedTo: ReadonlyArray<{ readonly apiKeyId: string; readonly confidence: number }>;
    /** Where the trace did not read the request whole (empty when it did). */
    readonly cuts: readonly TraceCut[];
    /** Whether the decoy index was there to trace against (not before its first build). */
    readonly indexed: boolean;
  };
}

/** Confidence at which a decoy token in a request counts as a hit: one decoy name (0.75) or canary (0.95); a respelled name alone (0.6) is not. */
export const DECOY_HIT_CONFIDENCE = 0.7;

/**
 * The keys whose decoys the request brings back. Against any key, its own included: a decoy
 * tool call in any turn (a `tool_use`, `server_tool_use`, `mcp_tool_use` or other tool call
 * block naming a decoy or carrying its canary) —
 * the verifier answers a key's decoy calls itself and never lets one reach its client, so a
 * conversation that holds one was made up: replayed traffic or a distilled model's. Against
 * other keys only: everything else — a user's text, tool results, documents, the system
 * prompt, metadata, stop sequences, tool definitions and the model's own words — since the
 * model may show a key's decoys to that key's own user (it lists its tools, it goes on after
 * a decoy call), who may then ask about one, paste it or name a real tool alike. Decoy calls
 * are traced first, within a budget of their own, so no padding elsewhere hides them.
 */
async function traceDecoys(
  index: CanaryIndex | undefined,
  trace: (against: TraceAgainst) => Promise<RequestTrace>,
  keyId: string,
): Promise<Array<{ apiKeyId: string; confidence: number }>> {
  if (index === undefined) return [];
  // All of the request is read, however long (the body's size limit bounds it): a large one in
  // a trace worker, a small one in place in slices with the event loop given turns between
  // them, so padding cannot push a decoy past what is read and no request holds the others up.
  const { calls: traced, all } = await trace({ index, threshold: DECOY_HIT_CONFIDENCE });
  const others = all.filter((t) => t.apiKeyId !== keyId);
  const keys = new Set(traced.map((t) => t.apiKeyId));
  return [...traced, ...others.filter((t) => !keys.has(t.apiKeyId))];
}

/**
 * The keys whose decoys the files a request names held when they were uploaded (traced then,
 * kept with each file): against other keys only, as a document's text would be. A file that
 * is not the caller's adds nothing (the request is refused 404 for it).
 */
async function tracedFiles(
  body: MessagesRequest,
  keyId: string,
  storage: Pick<VerifierServices['storage'], 'fileOf'>,
): Promise<Array<{ apiKeyId: string; confidence: number }>> {
  const out: Array<{ apiKeyId: string; confidence: number }> = [];
  for (const file of (await namedFiles(body, storage)).rows.values())
    if (file?.keyId === keyId) for (const t of file.tracedTo ?? []) if (t.apiKeyId !== keyId) out.push(t);
  return out;
}

/** Traces from several places, one per key at its highest confidence, in the order first seen. */
function mergeTraces(
  ...lists: ReadonlyArray<ReadonlyArray<{ apiKeyId: string; confidence: number }>>
): Array<{ apiKeyId: string; confidence: number }> {
  const byKey = new Map<string, { apiKeyId: string; confidence: number }>();
  for (const list of lists)
    for (const t of list) {
      const seen = byKey.get(t.apiKeyId);
      if (seen === undefined || seen.confidence < t.confidence) byKey.set(t.apiKeyId, { apiKeyId: t.apiKeyId, confidence: t.confidence });
    }
  return [...byKey.values()];
}

/** What {@link gatherEvidence} looks at. */
export interface EvidenceInput {
  readonly raw: Buffer;
  readonly body: MessagesRequest;
  readonly headers: IncomingHttpHeaders;
  /** Method, authority, path and credential as received (one per public authority): what an `r1` stamp must cover. */
  readonly request: readonly RequestComponents[];
  readonly keyId: string;
  readonly remoteAddress: string | undefined;
  /** The stamp's result when it was checked already (a Message Batch: one stamp over the whole body, many items). */
  readonly attestation?: AttestationResult;
  /** The bytes its documents may inflate, shared with the other items of its Message Batch (one body, one budget). */
  readonly inflate?: { inflateLeft: number };
  /** Where its members lie in `raw`: the trace of the members a client repeats (system prompt, tools) is kept by their bytes. */
  readonly layout?: BodyLayout;
}

/**
 * The request as this verifier received it — method, path and credential — for `r1`
 * stamps, once per public authority it answers for (the received `Host` when none are
 * configured: a relay picks its own `Host`, so production lists them), and with a
 * `publicPathPrefix`, for a target outside it, once as received and once under the prefix.
 */
export function receivedRequest(
  req: IncomingMessage,
  config: Pick<VerifierConfig, 'publicAuthorities' | 'publicPathPrefix'>,
): RequestComponents[] {
  const target = req.url ?? '';
  const prefix = config.publicPathPrefix;
  // A request that reached the verifier under its prefix was sent (and stamped) with it; one
  // without it was sent either to the verifier itself or through a front end that stripped
  // the prefix: both paths name the same route, so either is the path sent.
  const targets =
    prefix !== undefined && target.startsWith('/') && !underPrefix(target.split('?', 1)[0] as string, prefix)
      ? [target, `${prefix}${target}`]
      : [target];
  return targets.flatMap((sent) => componentsOf({ method: req.method ?? '', target: sent, headers: req.headers }, config));
}

/** The components of one received request, once per public authority. */
function componentsOf(
  received: { readonly method: string; readonly target: string; readonly headers: IncomingMessage['headers'] },
  config: Pick<VerifierConfig, 'publicAuthorities'>,
): RequestComponents[] {
  if (config.publicAuthorities === undefined) return [receivedRequestComponents(received)];
  return config.publicAuthorities.map((authority) => receivedRequestComponents({ ...received, authority }));
}

/**
 * The attestation stamp over a whole body, its nonce spent in the replay cache.
 *
 * @throws {ApiError} 503 when the replay cache cannot be used: no stamp is vouched for without it.
 */
export async function checkStamp(
  raw: Buffer,
  request: readonly RequestComponents[],
  clientUnavailable: boolean,
  services: Pick<VerifierServices, 'config' | 'storage' | 'attestationKeyring' | 'enrollment'>,
): Promise<AttestationResult> {
  try {
    return await verifyAttestation(raw, {
      keyring: services.attestationKeyring,
      nonceStore: services.storage,
      windowSec: services.config.windowSec,
      clientUnavailable,
      request,
      installs: services.enrollment.resolver,
    });
  } catch (error) {
    // Without the replay cache no stamp can be vouched for: refuse, retryably, never accept.
    throw unavailable('the replay cache', error);
  }
}

/** Whether the client says it could not attest (telemetry only: it never changes a verdict). */
export function saysUnattested(headers: IncomingHttpHeaders): boolean {
  return String(headers[UNATTESTED_HEADER] ?? '').startsWith('unavailable');
}

/**
 * Stage 3: every layer's evidence — the attestation stamp over the raw bytes (and its nonce
 * in the replay cache), the fingerprint and the key's statistics, gateway traces in the
 * headers and the address fan-in, and the signatures of signed blocks sent back.
 */
export async function gatherEvidence(input: EvidenceInput, services: VerifierServices): Promise<Evidence> {
  const { config, fingerprintStats, gatewayStats, blockKeyring } = services;
  const clientUnavailable = saysUnattested(input.headers);
  const stamp = input.attestation ?? (await checkStamp(input.raw, input.request, clientUnavailable, services));
  const fingerprint = checkFingerprint(input.body, { salt: config.fingerprintSalt });
  // A release that binds requests never sends a v1 stamp: one from it is a downgrade (discovery edited).
  const bound = requireRequestBinding(stamp, fingerprint.clientVersion, config.releases);
  const { attestation, install, signal: installed } = await installEvidence(bound, input.keyId, fingerprint, services);
  const keyClass = fingerprintStats.record(input.keyId, fingerprint.signal);
  const gateway = gatewayStats.record(
    input.keyId,
    inspectRequest({
      headers: input.headers as Record<string, string>,
      ...(fingerprint.clientVersion === undefined ? {} : { clientVersion: fingerprint.clientVersion }),
      userAgentProduct: config.userAgentProduct,
    }),
    input.remoteAddress,
  );
  if (install !== undefined) addInstallFanIn(gateway, install.iid, input.remoteAddress, services);
  const thinking = verifyRequestBlocks(input.body, input.keyId, blockKeyring);
  // The attribution block was parsed once, by the fingerprint check.
  const client = { cv: fingerprint.clientVersion, ep: fingerprint.entrypoint };
  const cuts = new Set<TraceCut>();
  const index = services.decoyIndex.current();
  const traced = mergeTraces(
    await traceDecoys(
      index,
      (against) =>
        services.decoyTracer.traceRequest(
          input.raw,
          input.body,
          // The decoy calls and the whole request are read with one budget: a request's documents inflate once.
          { cuts, inflate: input.inflate ?? { inflateLeft: TRACE_INFLATE_BYTES } },
          against,
          input.layout,
        ),
      input.keyId,
    ),
    mayNameFiles(input.raw) ? await tracedFiles(input.body, input.keyId, services.storage) : [],
  );
  const decoy = {
    signal: traced.length > 0 ? ('hit' as const) : ('none' as const),
    tracedTo: traced.map((t) => ({ apiKeyId: t.apiKeyId, confidence: t.confidence })),
    cuts: [...cuts],
    indexed: index !== undefined,
  };
  const signals: Signals = {
    attestation: attestation.signal,
    binding: attestation.binding,
    fingerprint: fingerprint.signal,
    fingerprintClass: keyClass,
    thinking: thinking.signal,
    gateway: gateway.signals,
    decoy: decoy.signal,
    install: installed,
  };
  return { signals, attestation, fingerprint, keyClass, gateway, thinking, client, clientUnavailable, decoy, install };
}

/**
 * The `install` signal (protocol 1.2) and the stamp as it stands for this key: a valid `i1`
 * stamp is `known`, `new` (enrolled within `installNewHours`) or `over_limit`; one under a
 * revoked install is `revoked`; a valid `r1`/`v1` stamp from a release the release table says
 * speaks `install_keys` is `release_only` (its release key should only enroll); anything else
 * `none`. An install stamps only for the API key that enrolled it: under another key its
 * stamp is `invalid`.
 */
export async function installEvidence(
  stamp: AttestationResult,
  keyId: string,
  fingerprint: Pick<FingerprintCheck, 'clientVersion'>,
  services: Pick<VerifierServices, 'config' | 'enrollment'>,
  now = Date.now(),
): Promise<{ attestation: AttestationResult; install: InstallRow | undefined; signal: InstallSignal }> {
  const fromInstall = stamp.kid !== undefined && INSTALL_ID_PATTERN.test(stamp.kid);
  if (!fromInstall || (stamp.signal !== 'valid' && stamp.signal !== 'revoked')) {
    // Only a valid stamp can be `release_only`, and a valid one's binding names its scheme.
    const scheme = fromInstall ? 'i1' : stamp.binding === 'request' ? 'r1' : stamp.binding === 'body' ? 'v1' : 'none';
    const releaseSpeaksInstallKeys =
      scheme !== 'i1' &&
      stamp.signal === 'valid' &&
      releaseMayHave(services.config.releases, { kid: stamp.kid, cv: fingerprint.clientVersion }, 'install_keys');
    const signal = installSignal({ scheme, attestation: stamp.signal, releaseSpeaksInstallKeys });
    return { attestation: stamp, install: undefined, signal };
  }
  const install = (await services.enrollment.keys.resolve(stamp.kid as string))?.row;
  if (install === undefined) return { attestation: stamp, install, signal: 'none' };
  if (install.keyId !== keyId) {
    const reason = 'install enrolled under another API key';
    return { attestation: { ...stamp, signal: 'invalid', binding: 'none', reason }, install: undefined, signal: 'none' };
  }
  const fresh = now - install.created < services.config.installNewHours * 3_600_000;
  const state = install.overLimit ? 'over_limit' : fresh ? 'new' : 'known';
  return { attestation: stamp, install, signal: installSignal({ scheme: 'i1', attestation: stamp.signal, install: state }) };
}

/** Address fan-in keyed by install: one install key used from many addresses is `address_fan_in`. */
function addInstallFanIn(
  gateway: RequestEvidence,
  iid: string,
  remoteAddress: string | undefined,
  services: Pick<VerifierServices, 'enrollment'>,
): void {
  const seen = services.enrollment.fanIn.record(iid, { gateways: [], hops: [], userAgent: undefined, signals: [] }, remoteAddress);
  const signals = gateway.signals as RelaySignal[];
  if (seen.signals.includes('address_fan_in') && !signals.includes('address_fan_in')) signals.push('address_fan_in');
}
