// Test helper: what a client makes of a streamed Messages response.
import { MessageAssembler, readStreamEvents, type StreamEvent } from '@moat/protocol/messages';

/** Every event of the stream, and the content blocks the Messages model's assembler makes of them. */
export async function streamed(res: Response) {
  const events: StreamEvent[] = [];
  const assembler = new MessageAssembler();
  for await (const ev of readStreamEvents(res.body as ReadableStream<Uint8Array>)) {
    events.push(ev);
    assembler.push(ev);
  }
  return { events, content: assembler.blocks as unknown as Array<Record<string, string>> };
}
