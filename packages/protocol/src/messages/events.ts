import type { StreamEvent } from './assembler.js';
import type { ContentBlock, MessagesResponse } from './types.js';

/** Splits a streamed string into the parts its deltas carry. */
export type DeltaSplitter = (text: string) => readonly string[];

/** Parts of at most `size` UTF-16 units, never cutting a surrogate pair (default split of {@link streamEventsOf}). */
export function chunked(size: number): DeltaSplitter {
  return (text) => {
    const parts: string[] = [];
    let start = 0;
    while (start < text.length) {
      let end = Math.min(text.length, start + size);
      const last = text.charCodeAt(end - 1);
      if (end < text.length && last >= 0xd800 && last <= 0xdbff) end++;
      parts.push(text.slice(start, end));
      start = end;
    }
    return parts;
  };
}

/**
 * The stream events the Messages API sends for `message`, with each text, thinking and tool
 * input split by `split`: `message_start`, then per block `content_block_start` (the block
 * without its streamed members), its deltas and `content_block_stop`, then `message_delta`
 * and `message_stop`. {@link MessageAssembler} turns them back into `message`. Block types
 * this model does not name are sent whole in `content_block_start`, as the API sends
 * server-tool results.
 *
 * @example
 * ```ts
 * for (const ev of streamEventsOf(message, chunked(8))) res.write(formatStreamEvent(ev));
 * ```
 */
export function* streamEventsOf(message: MessagesResponse, split: DeltaSplitter = chunked(64)): Generator<StreamEvent> {
  const { content, stop_reason, stop_sequence, usage, ...rest } = message;
  yield {
    event: 'message_start',
    data: {
      type: 'message_start',
      message: {
        ...rest,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { ...usage, output_tokens: Math.min(1, usage.output_tokens) },
      },
    },
  };
  for (const [index, block] of content.entries()) {
    const { start, deltas } = blockEvents(block, split);
    yield { event: 'content_block_start', data: { type: 'content_block_start', index, content_block: start } };
    for (const delta of deltas) yield { event: 'content_block_delta', data: { type: 'content_block_delta', index, delta } };
    yield { event: 'content_block_stop', data: { type: 'content_block_stop', index } };
  }
  yield {
    event: 'message_delta',
    data: { type: 'message_delta', delta: { stop_reason, stop_sequence }, usage: { output_tokens: usage.output_tokens } },
  };
  yield { event: 'message_stop', data: { type: 'message_stop' } };
}

function blockEvents(block: ContentBlock, split: DeltaSplitter): { start: Record<string, unknown>; deltas: Record<string, unknown>[] } {
  const b = block as unknown as Record<string, unknown>;
  switch (block.type) {
    case 'text': {
      const { text, citations, ...start } = b;
      const deltas: Record<string, unknown>[] = [];
      // Citations arrive one delta each before the text they support; the API starts the block without them.
      if (Array.isArray(citations)) for (const citation of citations) deltas.push({ type: 'citations_delta', citation });
      for (const part of split(String(text))) deltas.push({ type: 'text_delta', text: part });
      return {
        start: { ...start, text: '', ...(citations === undefined ? {} : { citations: Array.isArray(citations) ? [] : citations }) },
        deltas,
      };
    }
    case 'thinking': {
      const { thinking, signature, ...start } = b;
      const deltas: Record<string, unknown>[] = split(String(thinking)).map((part) => ({ type: 'thinking_delta', thinking: part }));
      if (typeof signature === 'string') deltas.push({ type: 'signature_delta', signature });
      return { start: { ...start, thinking: '', ...(typeof signature === 'string' ? { signature: '' } : {}) }, deltas };
    }
    case 'tool_use':
    case 'server_tool_use': {
      const { input, ...start } = b;
      const json = JSON.stringify(input ?? {});
      return { start: { ...start, input: {} }, deltas: split(json).map((part) => ({ type: 'input_json_delta', partial_json: part })) };
    }
    default:
      return { start: { ...b }, deltas: [] };
  }
}

/** One event in the wire form of `text/event-stream`: `event: …\ndata: …\n\n`. */
export function formatStreamEvent(ev: StreamEvent<unknown>): string {
  return `event: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`;
}

/**
 * An event read with `readStreamEvents(…, { keepText: true })` and passed on unchanged, in the
 * wire form of `text/event-stream` with its data text as it arrived: a relay does not serialize
 * it again. Data that arrived over several `data:` lines (or with no text kept) is serialized
 * as {@link formatStreamEvent} does; either way a reader gets the same event.
 */
export function formatReceivedEvent(ev: StreamEvent<unknown> & { readonly text?: string }): string {
  const { text } = ev;
  if (text === undefined || text.includes('\n') || text.includes('\r')) return formatStreamEvent(ev);
  return `event: ${ev.event}\ndata: ${text}\n\n`;
}
