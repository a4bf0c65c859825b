import { type BlockOrigin, type HistoryEntry, keyIdentity, stripForeignSignedBlocks } from '@moat/distill-guard/client';
import { blockSignatureOf } from '@moat/protocol';
import { MessageAssembler, type MessagesRequest, readStreamEvents } from '@moat/protocol/messages';
import { LruMap } from '@moat/protocol/support';
import type { MoatLayer } from '../compose.js';

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

/**
 * Signed-block hygiene (layer 4, client side): drops thinking, redacted_thinking and
 * connector_text blocks issued to another API key or model (a login switch, a model
 * fallback), which the verifier would refuse; remembers who each signed block it passes on
 * was issued to.
 */
export function signedBlocksLayer(options: { readonly maxRemembered?: number | undefined } = {}): MoatLayer {
  const issued: Issued = new LruMap<string, BlockOrigin>({ maxSize: options.maxRemembered ?? 10_000 });
  return {
    name: 'signed-blocks',
    phase: 'history',
    intercept: (next) => async (call) => {
      if (call.body === undefined) return next(call);
      const current = { apiKeyId: keyIdentity(call.apiKey ?? ''), model: call.body.model };
      const response = await next({ ...call, body: withoutForeignBlocks(call.body, current, issued) });
      return remember(response, current, issued);
    },
    status: () => ({ layer: 'signed-blocks', state: 'on', detail: `${issued.size} signed blocks remembered` }),
  };
}
