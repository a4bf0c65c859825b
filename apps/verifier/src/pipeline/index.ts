/**
 * The verifier's decision pipeline for every request that carries a Messages body
 * (`POST /v1/messages` and `/v1/messages/count_tokens`), one stage per module, in order:
 *
 * 1. authenticate — the API key's id ({@link authenticate}); a refusal is recorded too
 * 2. read — the body: size, strict JSON, the Messages shape ({@link readMessagesRequest})
 * 3. evidence — attestation, fingerprint, gateway traces, signed blocks ({@link gatherEvidence})
 * 4. policy — a pure decision from the signals ({@link decide})
 * 5. record — the request's one record, filled in as it goes ({@link RequestLedger})
 * 6. rewrite the request — Moat's members out, decoys in, upstream signatures back
 *    ({@link rewriteRequest})
 * 7. upstream — forward with the verifier's key ({@link Upstream})
 * 8. rewrite the response — sign, intercept decoy calls, JSON or SSE ({@link answerJson},
 *    {@link answerStream})
 * 9. finish the record — durable before the answer completes
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { verifyAttestation } from '@moat/attest/server';
import { invalidBlockError } from '@moat/distill-guard/server';
import { ENVELOPE_MEMBER } from '@moat/protocol';
import { errorMessage } from '@moat/protocol/support';
import { authenticate } from '../auth.js';
import { ApiError, unavailable } from '../errors.js';
import { assertOwnFiles, mayNameFiles } from '../file-owners.js';
import type { PolicyAttributes } from '../flags.js';
import { abortWhenClientGone, clientToBeTold, endedBy, readBody, sendError, sendJson, writeEvent } from '../http.js';
import { labelValue } from '../metrics.js';
import { recordedSignalsOf, SIGNALS } from '../signals.js';
import { StoreUnavailableError } from '../store-boundary.js';
import type { CanonicalTarget } from '../target.js';
import { type Evidence, gatherEvidence, receivedRequest } from './evidence.js';
import { type Decision, decide, flagPolicy, policyAttributes } from './policy.js';
import { parseMessagesBody, type ReadRequest } from './read.js';
import { newRequestId, RecordStoreError, RequestLedger } from './record.js';
import { decoysAllowed, rewriteRequest } from './rewrite-request.js';
import { answerJson, answerStream, countTokensAnswer, parseUpstreamAnswer, passError } from './rewrite-response.js';
import type { VerifierServices } from './services.js';
import { readAnswer } from './upstream.js';

export { authenticate } from '../auth.js';
export { type Decision, decide, type Signals } from './policy.js';
export { readMessagesRequest } from './read.js';
export { RequestLedger } from './record.js';
export { rewriteRequest } from './rewrite-request.js';
export type { VerifierServices } from './services.js';
export { Upstream } from './upstream.js';

/** Which endpoint a Messages body came to. */
export type MessagesEndpoint = 'messages' | 'count_tokens';

/** Status recorded for a request whose client went away before the answer ended (nginx's convention). */
export const CLIENT_CLOSED = 499;

/** One request in flight through the pipeline. */
interface InFlight {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly endpoint: MessagesEndpoint;
  readonly ledger: RequestLedger;
  /** The canonical target that was routed: exactly what is forwarded. */
  readonly target: CanonicalTarget;
  /** Aborted when the client goes away. */
  readonly signal: AbortSignal;
}

/**
 * Stage 2, with its fallback: a body that does not parse still says whether its stamp is
 * genuine (and spends its nonce); if the replay cache cannot say, the record keeps the parse
 * error, which is what the client gets.
 */
async function readRequest(flight: InFlight, raw: Buffer, services: VerifierServices): Promise<ReadRequest> {
  const { config } = services;
  try {
    return parseMessagesBody(raw, config.maxJsonDepth);
  } catch (error) {
    flight.ledger.set({ verdict: 'block' });
    // No JSON object, no stamp: the record keeps `missing` rather than scoring the bytes `invalid`.
    if (!startsAsObject(raw)) throw error;
    const attestation = await verifyAttestation(raw, {
      keyring: services.attestationKeyring,
      nonceStore: services.storage,
      windowSec: config.windowSec,
      request: receivedRequest(flight.req, config),
      installs: services.enrollment.resolver,
    }).catch(() => undefined);
    if (attestation !== undefined) flight.ledger.set({ attestation: attestation.signal });
    throw error;
  }
}

/** Whether the first byte after JSON white space opens an object (where a stamp can be). */
function startsAsObject(raw: Buffer): boolean {
  for (const byte of raw) if (byte !== 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) return byte === 0x7b;
  return false;
}

/** The reason a request that could not be traced for decoys carries (before the decoy index's first build). */
export const NOT_INDEXED = 'not traced for decoys: the decoy index is not built yet';

/** Stage 5's part for the decision: the signals, verdict and reasons into the record, the counters up. */
export function recordDecision(
  ledger: RequestLedger,
  evidence: Evidence,
  decision: Decision,
  metrics: VerifierServices['metrics'],
): void {
  const traced = evidence.decoy.tracedTo.map((t) => `decoy traced to ${t.apiKeyId} (${t.confidence.toFixed(2)})`);
  // A trace that found nothing in a request it did not read whole says so: a budget spent on
  // purpose, or an encrypted PDF, is visible in the record and the metrics.
  if (evidence.decoy.cuts.length > 0) traced.push(`decoy trace incomplete: ${evidence.decoy.cuts.join(', ')}`);
  for (const cut of evidence.decoy.cuts) metrics.traceCuts.inc({ cut });
  if (!evidence.decoy.indexed) {
    traced.push(NOT_INDEXED);
    metrics.traceCuts.inc({ cut: 'no_index' });
  }
  ledger.set({
    ...recordedSignalsOf(evidence.signals),
    gateway: evidence.gateway.gateways.map((g) => g.id),
    relay: evidence.gateway.signals.filter((s) => s !== 'gateway_headers'),
    installId: evidence.install?.iid ?? null,
    verdict: decision.verdict,
    reasons: [...decision.reasons, ...traced],
  });
  for (const { signal, value } of decision.actions)
    metrics.signals.inc({ layer: SIGNALS[signal].metric, value: labelValue(value) });
  metrics.requests.inc({ verdict: decision.verdict });
}

/** A blocked request's answer: Anthropic's own 400 for a signed block that fails, else 403 naming the reasons. */
async function refuse(flight: InFlight, evidence: Evidence, decision: Decision): Promise<void> {
  const failure = evidence.thinking.failures[0];
  if (
    evidence.thinking.signal === 'invalid' &&
    decision.reasons.includes('block:thinking=invalid') &&
    failure !== undefined
  ) {
    await flight.ledger.finish(400);
    return sendJson(flight.res, 400, invalidBlockError(failure));
  }
  const reasons = decision.reasons.filter((r) => r.startsWith('block')).join(', ');
  throw new ApiError(403, 'permission_error', `request blocked by policy (${reasons})`);
}

/** Stages 6 to 9 for an allowed request: rewrite, forward, rewrite the answer, finish the record. */
async function forward(
  flight: InFlight,
  read: ReadRequest,
  evidence: Evidence,
  attributes: PolicyAttributes,
  services: VerifierServices,
): Promise<void> {
  const { storage, metrics } = services;
  const { req, res, ledger, endpoint, signal } = flight;
  const keyId = attributes.id;
  // Nothing is forwarded that cannot be recorded: the record is reserved in the store first.
  services.guard.assertWritable();
  await ledger.reserve();
  const plan = await rewriteRequest(read, evidence, {
    keyId,
    injectDecoys: endpoint === 'messages' && decoysAllowed(read.body, evidence, attributes, services),
    secret: services.secret,
    storage,
  });
  ledger.set({ decoys: plan.decoys.length });
  const resend = (bytes: Buffer) => {
    services.onUpstreamRequest?.(bytes.toString('utf8'));
    const path = `${flight.target.path}${flight.target.query}`;
    return services.upstream.send({ method: 'POST', path, headers: req.headers, body: bytes, signal });
  };
  const first = await resend(plan.bytes);
  if (endpoint === 'count_tokens') {
    if (first.status >= 300) return await passError(res, ledger, first);
    const answer = await readAnswer(first.body);
    parseUpstreamAnswer(answer.toString('utf8'), countTokensAnswer, 'token count');
    await ledger.finishStored(first.status);
    res.writeHead(first.status, { ...first.headers, 'content-length': String(answer.length) });
    res.end(answer);
    return;
  }
  const input = {
    res,
    ledger,
    storage,
    plan,
    ctx: { apiKeyId: keyId, model: read.body.model },
    keyring: services.blockKeyring,
    secret: services.secret,
    resend,
    signal,
    onDecoyCalls: (n: number) => {
      if (n === 0) return;
      metrics.decoyCalls.inc(n);
      metrics.decoyCallCount += n;
    },
  };
  await (read.body.stream === true ? answerStream(input, first) : answerJson(input, first));
}

/** Runs the pipeline for one request; always answers, always leaves exactly one record. */
export async function handleMessagesRequest(
  req: IncomingMessage,
  res: ServerResponse,
  endpoint: MessagesEndpoint,
  services: VerifierServices,
  target: CanonicalTarget,
): Promise<void> {
  const { config, metrics, log } = services;
  const ledger = new RequestLedger(services.guard, newRequestId());
  res.setHeader('moat-request-id', ledger.id);
  const abort = abortWhenClientGone(res);
  const flight: InFlight = { req, res, endpoint, ledger, target, signal: abort.signal };
  try {
    const keyId = await authenticate(req.headers, services.keyCache, services.storage);
    ledger.set({ keyId });
    const raw = await readBody(req, config.maxBodyBytes);
    const read = await readRequest(flight, raw, services);
    ledger.set({ model: read.body.model });
    // A stamp's nonce is spent in this turn's group commit: the record is reserved in the same
    // one (one commit fewer per request); a request that is then refused finishes that record.
    if (ENVELOPE_MEMBER in read.body && services.guard.down === undefined) ledger.reserve().catch(() => undefined);
    const input = {
      raw,
      body: read.body,
      layout: read.layout,
      headers: req.headers,
      request: receivedRequest(req, config),
      keyId,
    };
    const evidence = await gatherEvidence({ ...input, remoteAddress: req.socket.remoteAddress }, services).catch(
      (error: unknown) => {
        ledger.set({ verdict: 'block' });
        throw error;
      },
    );
    const attributes = policyAttributes(keyId, read.body.model, evidence);
    const decision = decide(evidence.signals, flagPolicy(services.flags, attributes));
    recordDecision(ledger, evidence, decision, metrics);
    if (decision.verdict === 'block') return await refuse(flight, evidence, decision);
    // Files live in the one upstream account: a request may name only its own key's.
    if (mayNameFiles(raw)) await assertOwnFiles(read.body, keyId, services.storage);
    await forward(flight, read, evidence, attributes, services);
  } catch (error) {
    await fail(error, res, ledger, abort.signal, services);
  } finally {
    metrics.duration.observe((ledger.record.latencyMs ?? 0) / 1000);
    if (!ledger.finished) {
      log.error({ id: ledger.id }, 'request left the pipeline without a record');
      await ledger.finish(res.statusCode).catch(() => {});
    }
    log.info(
      { id: ledger.id, keyId: ledger.record.keyId, verdict: ledger.record.verdict, status: ledger.record.status },
      endpoint,
    );
  }
}

/** Answers a failed request (an API error, the client gone, a fault of ours) and records it. */
export async function fail(
  error: unknown,
  res: ServerResponse,
  ledger: RequestLedger,
  signal: AbortSignal,
  services: VerifierServices,
): Promise<void> {
  let apiError: ApiError;
  if (signal.aborted) {
    const ended = endedBy(signal);
    ledger.reason(ended.reason);
    apiError = new ApiError(ended.status, ended.type, ended.detail, {
      ...(ended.type === 'overloaded_error' ? { retryAfterSec: 1 } : {}),
    });
  } else if (error instanceof ApiError) apiError = error;
  else if (error instanceof RecordStoreError || error instanceof StoreUnavailableError) {
    services.log.error({ err: error.message, id: ledger.id }, 'record not written');
    apiError = unavailable('the record store');
  } else {
    services.log.error({ err: error, id: ledger.id }, 'unexpected error');
    apiError = new ApiError(500, 'api_error', 'internal error');
  }
  if (!ledger.finished) {
    // Refused here, before the upstream: the request was blocked, whatever the signals said.
    if (apiError.status >= 400 && apiError.status < 500 && apiError.status !== CLIENT_CLOSED)
      ledger.set({ verdict: 'block' });
    ledger.reason(`${apiError.status}: ${apiError.detail}`);
    try {
      await ledger.finish(apiError.status);
    } catch (storageError) {
      services.log.error({ err: errorMessage(storageError), id: ledger.id }, 'record not written');
      apiError = unavailable('the record store');
    }
  }
  // A client gone hears nothing; one whose answer the shutdown cut is told, while its connection is open.
  if (res.destroyed || (signal.aborted && !clientToBeTold(signal))) return;
  if (!res.headersSent) sendError(res, apiError);
  else if (!res.writableEnded) {
    writeEvent(res, {
      event: 'error',
      data: { type: 'error', error: { type: apiError.type, message: apiError.detail } },
    });
    res.end();
  }
}
