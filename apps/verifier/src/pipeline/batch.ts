/**
 * `POST /v1/messages/batches` through the pipeline. The create is read, authenticated and
 * attested as a whole (one stamp over its body, `r1` like Messages); each item's `params`
 * gets the evidence and policy of a Messages request (fingerprint, signed blocks, decoys
 * traced and injected by the same gates, Moat's members stripped) and a record of its own,
 * linked to the batch's record. One blocked item blocks the batch, and the error names it.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { TRACE_INFLATE_BYTES } from '@moat/distill-guard/server';
import { authenticate } from '../auth.js';
import { ApiError } from '../errors.js';
import { assertOwnFiles, mayNameFiles } from '../file-owners.js';
import { abortWhenClientGone, readBody, sendJson } from '../http.js';
import { JsonBodyError, parseJsonBody } from '../json-body.js';
import type { BatchRow } from '../storage.js';
import type { CanonicalTarget } from '../target.js';
import { checkStamp, type Evidence, gatherEvidence, receivedRequest, saysUnattested } from './evidence.js';
import { fail, recordDecision } from './index.js';
import { type Decision, decide, flagPolicy, policyAttributes } from './policy.js';
import { CHECKED_MEMBER_NAMES, parseMessagesBody, type ReadRequest } from './read.js';
import { newRequestId, RECORD_LIMITS, RequestLedger } from './record.js';
import { decoysAllowed, MOAT_MEMBERS, rewriteRequest } from './rewrite-request.js';
import { isSuccess, passError } from './rewrite-response.js';
import type { VerifierServices } from './services.js';
import { readAnswerJson } from './upstream.js';

/** One item of a batch create as read. */
interface BatchItem {
  readonly customId: string;
  readonly read: ReadRequest;
}

/** A batch create as read: its items and its other top-level members (Moat's taken out). */
interface ReadBatch {
  readonly items: readonly BatchItem[];
  readonly others: ReadonlyArray<readonly [string, unknown]>;
}

const invalid = (message: string, cause?: unknown) =>
  new ApiError(400, 'invalid_request_error', message, cause === undefined ? undefined : { cause });

/**
 * Reads a batch create: strict JSON, `requests` a non-empty array of `{ custom_id, params }`,
 * each `params` a Messages request (errors name the path, `requests.2.params.messages.0`).
 *
 * @throws {ApiError} 400 naming the path.
 */
export function parseBatchBody(raw: Buffer, maxJsonDepth: number): ReadBatch {
  let value: unknown;
  try {
    value = parseJsonBody(raw, maxJsonDepth, { readNames: CHECKED_MEMBER_NAMES }).value;
  } catch (error) {
    if (error instanceof JsonBodyError)
      throw invalid(`${error.path === '' ? 'body' : error.path}: ${error.message.slice(error.code.length + 2)}`, error);
    throw error;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid('body: expected a JSON object');
  const { requests, ...rest } = value as Record<string, unknown>;
  if (!Array.isArray(requests) || requests.length === 0)
    throw invalid(
      `requests: expected a non-empty array, got ${Array.isArray(requests) ? 'an empty one' : typeof requests}`,
    );
  // Results come back by custom_id: two items with one id could not be told apart (whose decoys to withhold).
  const seen = new Map<string, number>();
  const items = requests.map((entry, i): BatchItem => {
    const item = entry as { custom_id?: unknown; params?: unknown } | null;
    if (typeof item !== 'object' || item === null || Array.isArray(item))
      throw invalid(`requests.${i}: expected an object`);
    if (typeof item.custom_id !== 'string')
      throw invalid(`requests.${i}.custom_id: expected a string, got ${typeof item.custom_id}`);
    const first = seen.get(item.custom_id);
    if (first !== undefined)
      throw invalid(
        `requests.${i}.custom_id: expected an id unique in the batch, got ${JSON.stringify(item.custom_id.slice(0, 64))} again (first at requests.${first})`,
      );
    seen.set(item.custom_id, i);
    try {
      return {
        customId: item.custom_id,
        read: parseMessagesBody(Buffer.from(JSON.stringify(item.params ?? null)), maxJsonDepth),
      };
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const message = error.detail.startsWith('body') ? error.detail.slice(4) : `.${error.detail}`;
      throw invalid(`requests.${i}.params${message}`, error);
    }
  });
  return { items, others: Object.entries(rest).filter(([name]) => !MOAT_MEMBERS.has(name)) };
}

/** One item with its evidence, decision and record. */
interface CheckedItem {
  readonly item: BatchItem;
  readonly evidence: Evidence;
  readonly decision: Decision;
  readonly ledger: RequestLedger;
  readonly attributes: ReturnType<typeof policyAttributes>;
}

/** The strongest verdict of the items. */
/** Items checked or rewritten per turn of the event loop. */
const ITEMS_PER_TURN = 256;
/** Blocked items the batch's record names one by one (its size, its count of the rest), within the reasons a record keeps. */
const NAMED_BLOCKED_ITEMS = RECORD_LIMITS.reasons - 2;

function batchVerdict(checked: readonly CheckedItem[]): 'allow' | 'flag' | 'block' {
  if (checked.some((c) => c.decision.verdict === 'block')) return 'block';
  return checked.some((c) => c.decision.verdict === 'flag') ? 'flag' : 'allow';
}

/** Evidence, policy and a record (linked to the batch) for each item, under the batch's one stamp. */
async function checkItems(
  req: IncomingMessage,
  batch: ReadBatch,
  raw: Buffer,
  keyId: string,
  batchLedger: RequestLedger,
  services: VerifierServices,
  ledgers: RequestLedger[],
): Promise<CheckedItem[]> {
  const request = receivedRequest(req, services.config);
  const attestation = await checkStamp(raw, request, saysUnattested(req.headers), services);
  batchLedger.set({ attestation: attestation.signal });
  const checked: CheckedItem[] = [];
  // One body, one decode budget: a batch of many small PDF bombs inflates what one request may.
  const inflate = { inflateLeft: TRACE_INFLATE_BYTES };
  for (const [i, item] of batch.items.entries()) {
    // A large batch is many requests' work: other requests get their turns between its parts.
    if (i > 0 && i % ITEMS_PER_TURN === 0) await nextTurn();
    const { body } = item.read;
    const ledger = new RequestLedger(services.guard, newRequestId());
    ledgers.push(ledger);
    ledger.set({ keyId, model: body.model, batch: batchLedger.id, attestation: attestation.signal });
    const evidence = await gatherEvidence(
      {
        raw: item.read.raw,
        body,
        layout: item.read.layout,
        headers: req.headers,
        request,
        keyId,
        remoteAddress: req.socket.remoteAddress,
        attestation,
        inflate,
      },
      services,
    );
    const attributes = policyAttributes(keyId, body.model, evidence);
    const decision = decide(evidence.signals, flagPolicy(services.flags, attributes));
    recordDecision(ledger, evidence, decision, services.metrics);
    ledger.set({ reasons: [`batch item ${item.customId}`, ...ledger.record.reasons] });
    checked.push({ item, evidence, decision, ledger, attributes });
  }
  return checked;
}

/** The body the upstream gets: each item's params as the pipeline rewrites a Messages body, Moat's members out. */
async function forwardedBody(
  batch: ReadBatch,
  checked: readonly CheckedItem[],
  keyId: string,
  services: VerifierServices,
): Promise<{ bytes: Buffer; items: Record<string, BatchRow['items'][string]> }> {
  const parts: string[] = batch.others.map(([name, value]) => `${JSON.stringify(name)}:${JSON.stringify(value)}`);
  const requests: string[] = [];
  // Entries, not assignments: a custom_id such as "__proto__" must stay a key of its own.
  const items: Array<[string, BatchRow['items'][string]]> = [];
  for (const [i, c] of checked.entries()) {
    if (i > 0 && i % ITEMS_PER_TURN === 0) await nextTurn();
    const injectDecoys = decoysAllowed(c.item.read.body, c.evidence, c.attributes, services);
    const plan = await rewriteRequest(c.item.read, c.evidence, {
      keyId,
      injectDecoys,
      secret: services.secret,
      storage: services.storage,
    });
    c.ledger.set({ decoys: plan.decoys.length });
    requests.push(`{"custom_id":${JSON.stringify(c.item.customId)},"params":${plan.bytes.toString('utf8')}}`);
    items.push([c.item.customId, { model: c.item.read.body.model, decoys: plan.decoys.map((d) => d.tool.name) }]);
  }
  parts.push(`"requests":[${requests.join(',')}]`);
  return { bytes: Buffer.from(`{${parts.join(',')}}`), items: Object.fromEntries(items) };
}

/** A batch object with its `results_url` pointing at this verifier, so results are fetched through it. */
export function throughVerifier<T>(batch: T): T {
  const b = batch as { id?: unknown; results_url?: unknown };
  if (typeof b !== 'object' || b === null || typeof b.id !== 'string' || typeof b.results_url !== 'string')
    return batch;
  return { ...batch, results_url: `/v1/messages/batches/${encodeURIComponent(b.id)}/results` };
}

/** Runs a batch create through the pipeline; always answers, and leaves the batch's record and one per item read. */
export async function handleBatchCreate(
  req: IncomingMessage,
  res: ServerResponse,
  services: VerifierServices,
  target: CanonicalTarget,
): Promise<void> {
  const ledger = new RequestLedger(services.guard, newRequestId());
  ledger.set({ batch: ledger.id });
  res.setHeader('moat-request-id', ledger.id);
  const abort = abortWhenClientGone(res);
  const items: RequestLedger[] = [];
  try {
    const keyId = await authenticate(req.headers, services.keyCache, services.storage);
    ledger.set({ keyId });
    const raw = await readBody(req, services.config.maxBodyBytes);
    let batch: ReadBatch;
    try {
      batch = parseBatchBody(raw, services.config.maxJsonDepth);
    } catch (error) {
      // A body that does not parse still spends its nonce and says whether its stamp is genuine.
      ledger.set({ verdict: 'block' });
      const stamp = await checkStamp(raw, receivedRequest(req, services.config), false, services).catch(
        () => undefined,
      );
      if (stamp !== undefined) ledger.set({ attestation: stamp.signal });
      throw error;
    }
    ledger.reason(`batch of ${batch.items.length}`);
    // Files live in the one upstream account: a batch may name only its own key's.
    if (mayNameFiles(raw))
      await assertOwnFiles(
        batch.items.map((item) => item.read.body),
        keyId,
        services.storage,
      );
    const checked = await checkItems(req, batch, raw, keyId, ledger, services, items);
    // The batch's one stamp, as its items' evidence judged it (an install's, under this key or not).
    const stamped = checked[0]?.evidence;
    if (stamped !== undefined)
      ledger.set({
        attestation: stamped.signals.attestation,
        binding: stamped.signals.binding,
        install: stamped.signals.install,
        installId: stamped.install?.iid ?? null,
      });
    ledger.set({ verdict: batchVerdict(checked) });
    const blocked = checked.filter((c) => c.decision.verdict === 'block');
    for (const c of blocked.slice(0, NAMED_BLOCKED_ITEMS)) ledger.reason(`block:item ${c.item.customId}`);
    if (blocked.length > NAMED_BLOCKED_ITEMS) ledger.reason(`block:items ${blocked.length - NAMED_BLOCKED_ITEMS} more`);
    if (blocked.length > 0) {
      const named = blocked
        .slice(0, 5)
        .map((c) => `${c.item.customId} (${c.decision.reasons.filter((r) => r.startsWith('block')).join(', ')})`);
      throw new ApiError(
        403,
        'permission_error',
        `batch blocked by policy: ${blocked.length} of ${checked.length} requests blocked: ${named.join('; ')}`,
      );
    }
    // Nothing is forwarded that cannot be recorded: every record is reserved in the store first.
    services.guard.assertWritable();
    await ledger.reserve();
    // Together: a batch's records share a few commits, not one turn of the loop each.
    await Promise.all(items.map((item) => item.reserve()));
    const forwarded = await forwardedBody(batch, checked, keyId, services);
    services.onUpstreamRequest?.(forwarded.bytes.toString('utf8'));
    const upstream = await services.upstream.send({
      method: 'POST',
      path: `${target.path}${target.query}`,
      headers: req.headers,
      body: forwarded.bytes,
      signal: abort.signal,
    });
    if (!isSuccess(upstream.status)) {
      await Promise.all(items.map((item) => item.finish(upstream.status)));
      return await passError(res, ledger, upstream);
    }
    const created = (await readAnswerJson(upstream.body).catch(() => undefined)) as { id?: unknown } | null | undefined;
    if (typeof created?.id !== 'string')
      throw new ApiError(502, 'api_error', 'upstream answered a batch create without a batch id');
    await services.storage.saveBatch({
      id: created.id,
      keyId,
      recordId: ledger.id,
      created: Date.now(),
      items: forwarded.items,
    });
    ledger.reason(`batch ${created.id.slice(0, 100)}`);
    await Promise.all(items.map((item) => item.finish(upstream.status)));
    await ledger.finishStored(upstream.status);
    sendJson(res, upstream.status, throughVerifier(created), upstream.headers as Record<string, string>);
  } catch (error) {
    const status = error instanceof ApiError ? error.status : 500;
    // Together: the store commits them in a few transactions, not one turn each.
    await Promise.all(
      items
        .filter((item) => !item.finished)
        .map((item) => {
          item.reason(`batch refused: ${status}`);
          return item.finish(status).catch(() => {});
        }),
    );
    await fail(error, res, ledger, abort.signal, services);
  }
}
