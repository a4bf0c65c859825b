import { type BlockOrigin, type HistoryEntry, keyIdentity, stripForeignSignedBlocks } from '@moat/distill-guard/client';
import { blockSignatureOf } from '@moat/protocol';
import { MessageAssembler, type MessagesRequest, readStreamEvents } from '@moat/protocol/messages';
import { LruMap } from '@moat/protocol/support';
import { type MoatLayer, withBodies } from '../compose.js';

type Issued = LruMap<string, BlockOrigin>;

/** The request with the signed blocks of another API key or model dropped. */
function withoutForeignBlocks(request: MessagesRequest, current: BlockOrigin, issued: Issued): MessagesRequest {
  if (!Array.isArray(request.messages)) return request;
  const history: HistoryEntry[] = request.messages.map((message) => {
    const message_ = message as HistoryEntry['message'];
    if (message.role !== 'assistant') return { message: message_ };
    const content = Array.isArray(message.content) ? message.content : [];
    const signature = content.map(blockSignatureOf).find((s) => typeof s === 'string');
    // A block this client never passed on is taken as the current key's and model's.
    return { message: message_, origin: (signature === undefined ? undefined : issued.peek(signature)) ?? current };
  });
  const { messages, stripped } = stripForeignSignedBlocks(history, current);
  return stripped === 0 ? request : { ...request, messages: messages as MessagesRequest['messages'] };
}

/** Remembers who the signed blocks of an answer were issued to, from a copy (never delaying the caller). */
function remember(response: Response, producedFor: BlockOrigin, issued: Issued): Response {
  if (!response.ok || response.body === null) return response;
  const note = (content: unknown) => {
    if (!Array.isArray(content)) return;
    for (const block of content) {
      const signature = blockSignatureOf(block);
      if (typeof signature === 'string' && signature.startsWith('ms1.')) issued.set(signature, producedFor);
    }
  };
  const [mine, theirs] = response.body.tee();
  const stream = (response.headers.get('content-type') ?? '').includes('text/event-stream');
  void (async () => {
    try {
      if (stream) {
        const assembler = new MessageAssembler({ parseToolInput: false });
        for await (const ev of readStreamEvents(mine)) assembler.push(ev);
        note(assembler.blocks);
      } else note(((await new Response(mine).json()) as { content?: unknown }).content);
    } catch {
      // Not a Messages answer this layer can read: nothing to remember.
    }
  })();
  return new Response(theirs, { status: response.status, statusText: response.statusText, headers: response.headers });
}

/** A Message Batch's results (JSON lines, each a result whose `message` names its model). */
const BATCH_RESULTS_PATH = /\/v1\/messages\/batches\/[^/]+\/results$/;

/**
 * Remembers who the signed blocks of a batch's results were issued to — the key that reads
 * them, each result's own model — from a copy read line by line (never delaying the caller),
 * so a result's thinking sent back under another model is dropped as an answer's would be.
 */
function rememberResults(response: Response, apiKeyId: string, issued: Issued): Response {
  if (!response.ok || response.body === null) return response;
  const [mine, theirs] = response.body.tee();
  const note = (line: string) => {
    if (line.trim() === '') return;
    try {
      const message = (JSON.parse(line) as { result?: { message?: { model?: unknown; content?: unknown } } }).result?.message;
      if (typeof message?.model !== 'string' || !Array.isArray(message.content)) return;
      for (const block of message.content) {
        const signature = blockSignatureOf(block);
        if (typeof signature === 'string' && signature.startsWith('ms1.')) issued.set(signature, { apiKeyId, model: message.model });
      }
    } catch {
      // A line that is not a result: nothing to remember.
    }
  };
  void (async () => {
    try {
      const decoder = new TextDecoder();
      let pending = '';
      for await (const chunk of mine) {
        pending += decoder.decode(chunk, { stream: true });
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) note(line);
      }
      note(pending + decoder.decode());
    } catch {
      // The app's own read reports a broken body.
    }
  })();
  return new Response(theirs, { status: response.status, statusText: response.statusText, headers: response.headers });
}

/**
 * Signed-block hygiene (layer 4, client side): drops thinking, redacted_thinking and
 * connector_text blocks issued to another API key or model (a login switch, a model
 * fallback), which the verifier would refuse; remembers who each signed block it passes on
 * was issued to, from Messages answers and from Message Batch results.
 */
export function signedBlocksLayer(options: { readonly maxRemembered?: number | undefined } = {}): MoatLayer {
  const issued: Issued = new LruMap<string, BlockOrigin>({ maxSize: options.maxRemembered ?? 10_000 });
  return {
    name: 'signed-blocks',
    phase: 'history',
    intercept: (next) => async (call) => {
      const apiKeyId = keyIdentity(call.apiKey ?? '');
      const clean = (body: MessagesRequest) => withoutForeignBlocks(body, { apiKeyId, model: body.model }, issued);
      // A batch's results are remembered as they are read; a batch create answers with the batch, not blocks.
      if (call.method === 'GET' && BATCH_RESULTS_PATH.test(call.url.pathname)) return rememberResults(await next(call), apiKeyId, issued);
      if (call.body === undefined) return next(withBodies(call, clean));
      const response = await next(withBodies(call, clean));
      return remember(response, { apiKeyId, model: call.body.model }, issued);
    },
    status: () => ({ layer: 'signed-blocks', state: 'on', detail: `${issued.size} signed blocks remembered` }),
  };
}
