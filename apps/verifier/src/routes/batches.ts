/**
 * The Message Batches routes besides create (`pipeline/batch.ts`): list, retrieve, cancel,
 * delete and results. A client sees only the batches its own key created (others are 404,
 * as if they did not exist); `results_url` always points back at this verifier; results are
 * re-signed and their decoy calls withheld. Every request leaves one record, linked to the
 * batch's create record.
 */
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { type Decoy, interceptDecoyCalls, signResponse } from '@moat/distill-guard/server';
import { blockSignatureOf } from '@moat/protocol';
import { authenticate } from '../auth.js';
import { ApiError } from '../errors.js';
import { abortWhenClientGone, sendJson } from '../http.js';
import { throughVerifier } from '../pipeline/batch.js';
import { fail } from '../pipeline/index.js';
import { newRequestId, RequestLedger } from '../pipeline/record.js';
import { isSuccess, passError, rememberUpstreamSignatures } from '../pipeline/rewrite-response.js';
import type { VerifierServices } from '../pipeline/services.js';
import { readAnswerJson, type UpstreamResponse } from '../pipeline/upstream.js';
import type { RouteContext, RouteHandler } from '../router.js';
import type { BatchRow } from '../storage.js';

/** The longest line of batch results the verifier reads (one item's whole message). */
export const MAX_RESULT_LINE_BYTES = 64 * 1024 * 1024;

/** What a batch route does once the client and (for one batch) its ownership are checked. */
type BatchAction = (ctx: RouteContext, call: BatchCall) => Promise<void>;

/** One authenticated batch request: its key, its record, the batch it names (if any), and the upstream call. */
interface BatchCall {
  readonly keyId: string;
  readonly ledger: RequestLedger;
  readonly batch: BatchRow | undefined;
  readonly send: () => Promise<UpstreamResponse>;
}

/** Runs a batch route: one record, the client authenticated, a named batch only for its owner. */
function batchRoute(what: string, action: BatchAction): RouteHandler {
  return async (ctx) => {
    const { req, res, services, target, params } = ctx;
    const ledger = new RequestLedger(services.guard, newRequestId());
    res.setHeader('moat-request-id', ledger.id);
    ledger.reason(`batch ${what}`);
    const abort = abortWhenClientGone(res);
    try {
      const keyId = await authenticate(req.headers, services.keyCache, services.storage);
      ledger.set({ keyId });
      let batch: BatchRow | undefined;
      if (params.id !== undefined) {
        batch = await services.storage.batchOf(params.id);
        // Another key's batch is answered as no batch at all.
        if (batch === undefined || batch.keyId !== keyId)
          throw new ApiError(404, 'not_found_error', `message batch ${params.id.slice(0, 100)} not found`);
        ledger.set({ batch: batch.recordId });
      }
      services.guard.assertWritable();
      const send = () =>
        services.upstream.send({
          method: req.method ?? 'GET',
          path: `${target.path}${target.query}`,
          headers: req.headers,
          signal: abort.signal,
        });
      await action(ctx, { keyId, ledger, batch, send });
    } catch (error) {
      if (res.headersSent) {
        // Part of a JSONL answer went out: cut it short, so the client cannot take it for the whole.
        await ledger.finish(error instanceof ApiError ? error.status : 502).catch(() => {});
        res.destroy();
        return;
      }
      await fail(error, res, ledger, abort.signal, services);
    }
  };
}

/** A JSON answer of the upstream, passed on after its record is durable (an error as it came). */
async function answerJson(res: ServerResponse, call: BatchCall, edit: (body: unknown) => unknown): Promise<void> {
  const upstream = await call.send();
  if (!isSuccess(upstream.status)) return passError(res, call.ledger, upstream);
  const body = await readAnswerJson(upstream.body).catch((error: unknown) => {
    if (error instanceof ApiError) throw error;
    throw new ApiError(502, 'api_error', 'upstream answered an unreadable batch', { cause: error });
  });
  // Edited first: an answer the edit refuses is the 502 the record keeps, not a 200.
  const answer = edit(body);
  await call.ledger.finishStored(upstream.status);
  sendJson(res, upstream.status, answer, upstream.headers as Record<string, string>);
}

/** `GET /v1/messages/batches/:id`, `POST …/cancel`, `DELETE …`: the batch, `results_url` through the verifier. */
export const batchObject = (what: string): RouteHandler =>
  batchRoute(what, ({ res }, call) => answerJson(res, call, throughVerifier));

/** `GET /v1/messages/batches`: the upstream's list, narrowed to the caller's own batches. */
export const listBatches: RouteHandler = batchRoute('list', async ({ res, services }, call) => {
  const own = new Set(await services.storage.batchIds(call.keyId));
  await answerJson(res, call, (body) => {
    const list = (typeof body === 'object' && body !== null ? body : {}) as { data?: unknown };
    if (!Array.isArray(list.data)) throw new ApiError(502, 'api_error', 'upstream answered a batch list without data');
    // An entry that is not an object is nobody's batch (a null entry would otherwise throw a TypeError here).
    const data = list.data
      .filter((b) => typeof b === 'object' && b !== null && own.has((b as { id?: unknown }).id as string))
      .map(throughVerifier);
    return { ...list, data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
  });
});

/** Splits a stream of bytes into lines, each at most {@link MAX_RESULT_LINE_BYTES}. */
async function* lines(body: AsyncIterable<Buffer>): AsyncGenerator<string> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let rest = '';
  for await (const chunk of body) {
    rest += decoder.decode(chunk, { stream: true });
    let end = rest.indexOf('\n');
    while (end !== -1) {
      yield rest.slice(0, end);
      rest = rest.slice(end + 1);
      end = rest.indexOf('\n');
    }
    if (rest.length > MAX_RESULT_LINE_BYTES)
      throw new ApiError(502, 'api_error', 'upstream batch results: a line over the limit');
  }
  rest += decoder.decode();
  if (rest.trim() !== '') yield rest;
}

/** One result line as the client gets it: decoy calls withheld, signed-type blocks re-signed for the batch's key. */
async function resultLine(
  line: string,
  call: BatchCall & { batch: BatchRow },
  services: VerifierServices,
): Promise<{ text: string; calls: number; outcome: string }> {
  let entry: { custom_id?: unknown; result?: { type?: unknown; message?: unknown; error?: unknown } };
  try {
    entry = JSON.parse(line) as typeof entry;
  } catch (error) {
    throw new ApiError(502, 'api_error', 'upstream batch results: a line that is not JSON', { cause: error });
  }
  const message = entry.result?.message;
  const outcome = outcomeOf(entry.result);
  if (entry.result?.type !== 'succeeded' || typeof message !== 'object' || message === null)
    return { text: line, calls: 0, outcome };
  const items = call.batch.items;
  const id = String(entry.custom_id);
  const item = Object.hasOwn(items, id) ? items[id] : undefined;
  // Only the names are needed to find a decoy's calls. A result under an id the batch did not
  // send is held to every decoy of the batch: no decoy call gets out for want of its item.
  const names = item?.decoys ?? [...new Set(Object.values(items).flatMap((i) => i.decoys))];
  const decoys = names.map((name) => ({ tool: { name } }) as unknown as Decoy);
  const intercepted = interceptDecoyCalls(message as { content?: unknown; stop_reason?: unknown }, decoys);
  const model = item?.model ?? String((message as { model?: unknown }).model ?? '');
  const { response, upstreamSignatures } = signResponse(
    intercepted.response,
    { apiKeyId: call.keyId, model },
    services.blockKeyring,
  );
  const content = (response as { content?: unknown[] }).content ?? [];
  await rememberUpstreamSignatures(
    services.storage,
    upstreamSignatures,
    (i) => blockSignatureOf(content[i]) as string | undefined,
  );
  return {
    text: JSON.stringify({ ...entry, result: { ...entry.result, message: response } }),
    calls: intercepted.turn.calls.length,
    outcome,
  };
}

/** A result's outcome for the record: `succeeded`, `errored (overloaded_error)`, `canceled`, `expired`. */
function outcomeOf(result: { type?: unknown; error?: unknown } | undefined): string {
  const type = typeof result?.type === 'string' ? result.type.slice(0, 40) : 'unreadable';
  if (type !== 'errored') return type;
  // The error's type sits in `error.error.type` (the API's error shape) or `error.type`.
  const error = result?.error as { type?: unknown; error?: { type?: unknown } } | undefined;
  const why = error?.error?.type ?? error?.type;
  return typeof why === 'string' ? `errored (${why.slice(0, 40)})` : 'errored';
}

/** At most this many distinct outcomes are named in a results record; the rest are counted as `other`. */
const MAX_OUTCOMES = 8;

/**
 * `GET /v1/messages/batches/:id/results`: the JSONL results, each line re-signed for the
 * batch's key and item model, decoy calls withheld (counted, and named in the record); the
 * record counts the results by outcome (`results: 98 succeeded, 2 errored (overloaded_error)`)
 * and is durable before the last line goes out.
 */
export const batchResults: RouteHandler = batchRoute('results', async ({ res, services }, call) => {
  const upstream = await call.send();
  if (!isSuccess(upstream.status)) return passError(res, call.ledger, upstream);
  const owned = call as BatchCall & { batch: BatchRow };
  let calls = 0;
  let held: string | undefined;
  const outcomes = new Map<string, number>();
  for await (const line of lines(upstream.body)) {
    if (line.trim() === '') continue;
    const out = await resultLine(line, owned, services);
    calls += out.calls;
    const outcome = outcomes.has(out.outcome) || outcomes.size < MAX_OUTCOMES ? out.outcome : 'other';
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    if (held === undefined && !res.headersSent)
      res.writeHead(upstream.status, {
        ...upstream.headers,
        'content-type': String(upstream.headers['content-type'] ?? 'application/x-jsonl'),
      });
    if (held !== undefined && !res.write(held)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
    held = `${out.text}\n`;
  }
  // What became of the items, for accounting: their own records say they were sent, not how they ended.
  if (outcomes.size > 0)
    call.ledger.reason(`results: ${[...outcomes].map(([outcome, n]) => `${n} ${outcome}`).join(', ')}`);
  if (calls > 0) {
    services.metrics.decoyCalls.inc(calls);
    services.metrics.decoyCallCount += calls;
    call.ledger.reason(`decoy calls withheld: ${calls}`);
  }
  await call.ledger.finishStored(upstream.status);
  if (!res.headersSent) res.writeHead(upstream.status, { ...upstream.headers, 'content-type': 'application/x-jsonl' });
  res.end(held ?? '');
});
