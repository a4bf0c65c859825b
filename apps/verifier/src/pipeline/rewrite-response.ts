import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import {
  type BlockContext,
  type DecoyCall,
  DecoyStreamFilter,
  decoyResult,
  interceptDecoyCalls,
  StreamSigner,
  signResponse,
} from '@moat/distill-guard/server';
import { blockSignatureOf } from '@moat/protocol';
import {
  type ContentBlock,
  formatStreamEvent,
  type MessageParam,
  type MessagesResponse,
  parseMessagesResponse,
  readStreamEventBatches,
  type StreamEvent,
} from '@moat/protocol/messages';
import { errorMessage } from '@moat/protocol/support';
import { ApiError, type ApiErrorType, STATUS_OF_ERROR_TYPE } from '../errors.js';
import { sendJson } from '../http.js';
import type { Storage } from '../storage.js';
import { RecordStoreError, type RequestLedger } from './record.js';
import type { ForwardPlan } from './rewrite-request.js';
import { discardBody, readAnswer, readAnswerJson, type UpstreamResponse } from './upstream.js';

/** Decoy calls are answered by the verifier itself, for at most this many rounds per client request. */
export const DECOY_ROUNDS = 3;

/** What the response stage works with. */
export interface AnswerInput {
  readonly res: ServerResponse;
  readonly ledger: RequestLedger;
  readonly storage: Storage;
  readonly plan: ForwardPlan;
  readonly ctx: BlockContext;
  readonly keyring: ConstructorParameters<typeof StreamSigner>[1];
  readonly secret: Uint8Array;
  /** Sends the same request upstream with another body (a continuation round). */
  readonly resend: (body: Buffer) => Promise<UpstreamResponse>;
  /** Counts decoy calls kept from the client. */
  readonly onDecoyCalls: (n: number) => void;
  /** Aborted when the client went away. */
  readonly signal?: AbortSignal;
}

/** Headers of the upstream's answer as the client gets them. */
function passedHeaders(upstream: UpstreamResponse, overrides: Record<string, string> = {}): Record<string, string | string[]> {
  return { ...upstream.headers, ...overrides };
}

/** The upstream's error answer, passed on as it came (status, headers, body), after its record is durable. */
export async function passError(res: ServerResponse, ledger: RequestLedger, upstream: UpstreamResponse): Promise<void> {
  const body = await readAnswer(upstream.body);
  ledger.reason(`upstream:${upstream.status}`);
  await ledger.finish(upstream.status);
  res.writeHead(upstream.status, passedHeaders(upstream, { 'content-length': String(body.length) }));
  res.end(body);
}

/** Whether an upstream status is a success. */
export const isSuccess = (status: number) => status >= 200 && status < 300;

function outputTokensOf(response: MessagesResponse): number {
  return typeof response.usage?.output_tokens === 'number' ? response.usage.output_tokens : 0;
}

const continued = (
  messages: readonly MessageParam[],
  blocks: readonly unknown[],
  calls: readonly DecoyCall[],
  secret: Uint8Array,
): MessageParam[] => [
  ...messages,
  { role: 'assistant', content: blocks as ContentBlock[] },
  { role: 'user', content: calls.map((c) => decoyResult(c, secret) as ContentBlock) },
];

/** Stores the upstream's signature of each block Moat re-signed, so the block can go back upstream later. */
export async function rememberUpstreamSignatures(
  storage: Storage,
  theirs: Map<number, string>,
  ours: (index: number) => string | undefined,
): Promise<void> {
  // All at once: on SQLite they share one group commit, on PostgreSQL they run side by side.
  const pending = [...theirs].flatMap(([index, signature]) => {
    const replacement = ours(index);
    return replacement === undefined
      ? []
      : [{ index, written: Promise.resolve(storage.rememberUpstreamSignature(replacement, signature)) }];
  });
  const settled = await Promise.allSettled(pending.map((p) => p.written));
  // Each one written is not written again; the first failure is the answer's.
  for (const [i, outcome] of settled.entries()) if (outcome.status === 'fulfilled') theirs.delete((pending[i] as { index: number }).index);
  const failed = settled.find((outcome) => outcome.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}

/**
 * The upstream's success answer read as `parse` expects it; anything else (cut-short JSON,
 * an HTML page, an empty body, another shape) is a 502 the request's record keeps.
 */
export function parseUpstreamAnswer<T>(text: string, parse: (value: unknown) => T, what = 'message'): T {
  try {
    return parse(JSON.parse(text));
  } catch (error) {
    throw new ApiError(502, 'api_error', `upstream answered an unreadable ${what} (${errorMessage(error).slice(0, 120)})`, {
      cause: error,
    });
  }
}

const parseUpstreamMessage = (text: string): MessagesResponse => parseUpstreamAnswer(text, parseMessagesResponse);

/** A count_tokens answer: an object with a non-negative integer `input_tokens` (other members kept). */
export function countTokensAnswer(value: unknown): { input_tokens: number } {
  const tokens = (value as { input_tokens?: unknown } | null)?.input_tokens;
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !Number.isSafeInteger(tokens) || (tokens as number) < 0)
    throw new Error(`expected { input_tokens: integer }, got ${JSON.stringify(value)?.slice(0, 60)}`);
  return value as { input_tokens: number };
}

/**
 * Stage 8, JSON: answers decoy-only turns itself (up to {@link DECOY_ROUNDS} rounds, their
 * output tokens added to the usage the client sees), takes decoy calls out, signs
 * signed-type blocks, remembers the upstream's signatures, makes the record durable, then
 * answers with the upstream's headers. Every answer goes out as the message the verifier
 * read, serialized again: raw bytes could say something else to a client than to
 * `JSON.parse` (a duplicate member, an escaped type).
 */
export async function answerJson(input: AnswerInput, first: UpstreamResponse): Promise<void> {
  const { res, ledger, plan } = input;
  let upstream = first;
  let messages = plan.messages;
  let hiddenOutputTokens = 0;
  let answer: MessagesResponse;
  for (let round = 0; ; round++) {
    if (!isSuccess(upstream.status)) return passError(res, ledger, upstream);
    const bytes = await readAnswer(upstream.body);
    const intercepted = interceptDecoyCalls(parseUpstreamMessage(bytes.toString('utf8')), plan.decoys);
    const { continueWith, calls } = intercepted.turn;
    input.onDecoyCalls(calls.length);
    answer = intercepted.response;
    if (continueWith === undefined || round + 1 === DECOY_ROUNDS) break;
    hiddenOutputTokens += outputTokensOf(answer);
    messages = continued(messages, continueWith, calls, input.secret);
    upstream = await input.resend(plan.withMessages(messages));
  }
  if (hiddenOutputTokens > 0)
    answer = { ...answer, usage: { ...answer.usage, output_tokens: outputTokensOf(answer) + hiddenOutputTokens } };
  return answerParsedJson(input, upstream.status, upstream.headers, answer);
}

/** Signs the answer's signed-type blocks, remembers the upstream's signatures, records, answers. */
async function answerParsedJson(
  input: AnswerInput,
  status: number,
  headers: UpstreamResponse['headers'],
  answer: MessagesResponse,
): Promise<void> {
  const { response, upstreamSignatures } = signResponse(answer, input.ctx, input.keyring);
  await rememberUpstreamSignatures(input.storage, upstreamSignatures, (i) => blockSignatureOf(response.content[i]) as string | undefined);
  await input.ledger.finishStored(status);
  sendJson(input.res, status, response, headers as Record<string, string>);
}

/** Writes with backpressure: waits for `drain` when the socket's buffer is full. */
async function write(res: ServerResponse, text: string): Promise<void> {
  if (res.destroyed) return;
  if (!res.write(text)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
}

function statusOfErrorEvent(data: Record<string, unknown>): number {
  const type = (data.error as { type?: unknown } | undefined)?.type;
  return typeof type === 'string' && Object.hasOwn(STATUS_OF_ERROR_TYPE, type) ? STATUS_OF_ERROR_TYPE[type as ApiErrorType] : 502;
}

/**
 * What an upstream stream must keep before any of it is passed on, where the decoy filter and
 * the signer would otherwise see another stream than the client: an event's name is its
 * data's `type` (clients dispatch on either), `message_start` holds no content yet (the
 * filter and the signer read blocks from `content_block_*` events only), and every block is
 * stopped before `message_stop` (a block is signed at its stop). A breach breaks the stream
 * off: an SSE error to the client, recorded 502.
 */
class StreamGrammar {
  readonly #open = new Set<string>();

  /** @throws {Error} naming the breach. */
  check(ev: StreamEvent): void {
    const data = ev.data as { type?: unknown; index?: unknown; message?: { content?: unknown } } | null;
    if (typeof data !== 'object' || data === null) return;
    if (typeof data.type === 'string' && data.type !== ev.event)
      throw new Error(`an event named ${JSON.stringify(ev.event.slice(0, 40))} carrying ${JSON.stringify(data.type.slice(0, 40))}`);
    if (ev.event === 'message_start') {
      const content = data.message?.content;
      if (content !== undefined && !(Array.isArray(content) && content.length === 0)) throw new Error('message_start with content blocks');
    } else if (ev.event === 'content_block_start') this.#open.add(String(data.index));
    else if (ev.event === 'content_block_stop') this.#open.delete(String(data.index));
    else if (ev.event === 'message_stop' && this.#open.size > 0)
      throw new Error(`message_stop with block ${[...this.#open][0]?.slice(0, 20)} not stopped`);
  }
}

/**
 * Stage 8, SSE: passes the stream through as it arrives — decoy calls withheld and answered
 * upstream in further rounds stitched into one client message, signed-type blocks re-signed
 * — and makes the record (signals, verdict, upstream signatures) durable before
 * `message_stop` goes out. A stream that ends without `message_stop` is recorded as an
 * upstream error and the client gets an SSE `error` event.
 */
export async function answerStream(input: AnswerInput, first: UpstreamResponse): Promise<void> {
  const { res, ledger, plan } = input;
  if (!isSuccess(first.status)) return passError(res, ledger, first);
  // A status that carries no body cannot carry the stream: refused before anything goes out.
  if (first.status === 204 || first.status === 205) {
    discardBody(first.body);
    throw new ApiError(502, 'api_error', `upstream answered a stream request ${first.status}, without a body`);
  }
  // Another media type is no stream at all: a 502 while nothing went out, not a 200 that breaks off.
  const type =
    String(first.headers['content-type'] ?? '')
      .split(';')[0]
      ?.trim()
      .toLowerCase() ?? '';
  if (type !== '' && type !== 'text/event-stream') {
    discardBody(first.body);
    throw new ApiError(
      502,
      'api_error',
      `upstream answered a stream request with ${JSON.stringify(type.slice(0, 60))}, not text/event-stream`,
    );
  }
  // The stream's own content type whatever the upstream said, so every event, errors included, goes out as SSE.
  res.writeHead(first.status, { ...passedHeaders(first), 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const signer = new StreamSigner(input.ctx, input.keyring);
  const filter = plan.decoys.length > 0 ? new DecoyStreamFilter(plan.decoys) : undefined;
  /** The status the client got, and the record keeps (an error event's own, once one came). */
  let status = first.status;
  let stopped = false;
  let errored = false;
  /**
   * The events of one upstream chunk, serialized, until they go out together in one write
   * (`flush`): events that arrived together leave together, not one system call each.
   */
  let pending = '';
  const flush = async () => {
    const text = pending;
    pending = '';
    if (text !== '') await write(res, text);
  };
  /**
   * The client may send its next turn as soon as it sees message_stop: everything it needs is
   * stored first. The events of its chunk wait (pending) while the record commits and go out
   * with message_stop and the stream's end in one write.
   */
  const storeBeforeStop = async () => {
    await rememberUpstreamSignatures(input.storage, signer.upstreamSignatures, (i) => signer.issuedSignatures.get(i));
    await ledger.finishStored(status);
    stopped = true;
  };
  /**
   * Every event goes out serialized again from what the verifier read, never as the upstream's
   * text: a duplicate member or an escape could say another thing to the client.
   */
  const emit = (ev: StreamEvent): Promise<void> | undefined => {
    // The message is over at message_stop: whatever the upstream sends after it is not passed on.
    if (stopped) return undefined;
    if (ev.event === 'error') {
      status = statusOfErrorEvent(ev.data);
      errored = true;
    }
    const outs = signer.handle(ev);
    for (let i = 0; i < outs.length; i++) {
      const out = outs[i] as StreamEvent;
      // Only message_stop waits (for the record); other events cost no turn of the event loop.
      if (out.event === 'message_stop') return stopWith(outs.slice(i));
      pending += formatStreamEvent(out);
    }
    return undefined;
  };
  const stopWith = async (outs: StreamEvent[]) => {
    await storeBeforeStop();
    for (const out of outs) pending += formatStreamEvent(out);
  };
  let upstream = first;
  let messages = plan.messages;
  /** Passes one upstream stream on; a stream that breaks (socket reset, garbage) ends in an SSE error, recorded 502. */
  const relay = async (body: UpstreamResponse['body']) => {
    const grammar = new StreamGrammar();
    try {
      for await (const batch of readStreamEventBatches(body)) {
        for (const ev of batch) {
          grammar.check(ev);
          for (const kept of filter === undefined ? [ev] : filter.handle(ev)) {
            const stopping = emit(kept);
            if (stopping !== undefined) await stopping;
          }
          if (stopped) break;
        }
        // message_stop's chunk goes out with the stream's end (below), in one write. The rest of
        // the upstream stream is dropped here: left unfinished, the reader would destroy it with
        // an AbortError, a stack trace per streamed answer.
        if (stopped) {
          discardBody(body);
          break;
        }
        await flush();
      }
    } catch (error) {
      if (input.signal?.aborted === true || error instanceof RecordStoreError) throw error;
      if (stopped) return; // junk after message_stop: the client has its whole answer
      ledger.reason(`upstream stream broke off: ${errorMessage(error).slice(0, 120)}`);
      await emit({ event: 'error', data: { type: 'error', error: { type: 'api_error', message: 'upstream stream broke off' } } });
      status = 502;
    }
  };
  try {
    for (let round = 0; ; round++) {
      await relay(upstream.body);
      const turn = filter?.takeTurn();
      if (filter === undefined || turn?.continueWith === undefined || errored) break;
      if (round + 1 === DECOY_ROUNDS) {
        for (const ev of filter.close()) await emit(ev);
        break;
      }
      messages = continued(messages, turn.continueWith, turn.calls, input.secret);
      filter.nextRound();
      upstream = await input.resend(plan.withMessages(messages));
      if (!isSuccess(upstream.status)) {
        const body = (await readAnswerJson(upstream.body).catch(() => ({}))) as {
          error?: { type?: string; message?: string };
        } | null;
        await emit({
          event: 'error',
          data: {
            type: 'error',
            error: { type: body?.error?.type ?? 'api_error', message: body?.error?.message ?? `upstream answered ${upstream.status}` },
          },
        });
        break;
      }
    }
  } finally {
    input.onDecoyCalls(filter?.decoyCalls ?? 0);
  }
  if (!stopped) {
    if (!errored) {
      status = 502;
      ledger.reason('upstream stream ended before message_stop');
      await ledger.finish(status);
      pending += formatStreamEvent({
        event: 'error',
        data: { type: 'error', error: { type: 'api_error', message: 'upstream stream ended before message_stop' } },
      });
    } else await ledger.finish(status);
  }
  // What is still pending (message_stop's chunk, or an error event) goes out with the end.
  if (pending === '' || res.destroyed) res.end();
  else res.end(pending);
}
