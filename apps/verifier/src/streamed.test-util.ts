// Test helper: what a client makes of a streamed Messages response.
import { readStreamEvents } from '@moat/protocol';

/** Every event of the stream, and the content blocks assembled from them. */
export async function streamed(res: Response) {
  const events = [];
  for await (const ev of readStreamEvents(res.body as ReadableStream<Uint8Array>)) events.push(ev);
  const content: Array<Record<string, string>> = [];
  for (const ev of events) {
    const i = ev.data.index as number;
    const d = ev.data.delta as Record<string, string> | undefined;
    if (ev.event === 'content_block_start') content[i] = { ...(ev.data.content_block as Record<string, string>) };
    else if (d?.type === 'thinking_delta') (content[i] as Record<string, string>).thinking += d.thinking ?? '';
    else if (d?.type === 'text_delta') (content[i] as Record<string, string>).text += d.text ?? '';
    else if (d?.type === 'signature_delta') (content[i] as Record<string, string>).signature = d.signature ?? '';
  }
  return { events, content };
}
