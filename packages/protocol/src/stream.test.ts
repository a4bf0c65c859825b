import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from './errors.js';
import { readStreamEvents } from './stream.js';

async function* chunks(bytes: Uint8Array, cuts: number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    yield bytes.subarray(at, Math.max(at, cut));
    at = Math.max(at, cut);
  }
  yield bytes.subarray(at);
}

async function collect(text: string, cuts: number[] = []): Promise<Array<{ event: string; data: unknown }>> {
  const out: Array<{ event: string; data: unknown }> = [];
  for await (const e of readStreamEvents(chunks(new TextEncoder().encode(text), cuts))) out.push(e);
  return out;
}

describe('readStreamEvents', () => {
  it('reads a Messages stream: names, JSON data, comments, multi-line data', async () => {
    const text = [
      ': keep-alive',
      'event: message_start',
      'data: {"type":"message_start"}',
      '',
      'event:content_block_delta',
      'data: {"text":',
      'data: "é 👩‍💻"}',
      'id: 7',
      '',
      'data: {"unnamed":true}',
      '',
      'event: ping',
      '',
      'event: dropped',
      'data: {"no":"blank line"}',
    ].join('\n');
    expect(await collect(text)).toEqual([
      { event: 'message_start', data: { type: 'message_start' } },
      { event: 'content_block_delta', data: { text: 'é 👩‍💻' } },
      { event: 'message', data: { unnamed: true } },
    ]);
  });

  it('rejects data that is not JSON with ERR_STREAM_EVENT, naming the event', async () => {
    const error = await collect('event: oops\ndata: {not json\n\n').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as ProtocolError).code).toBe('ERR_STREAM_EVENT');
    expect((error as ProtocolError).message).toMatch(/expected JSON data in event "oops", got "\{not json"/);
  });

  it('gives the same events for any line endings and any chunking', async () => {
    const name = fc.stringMatching(/^[a-z_]{1,12}$/);
    const data = fc.dictionary(fc.stringMatching(/^[a-z]{1,6}$/), fc.oneof(fc.string(), fc.integer(), fc.boolean()));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ event: name, data }), { maxLength: 6 }),
        fc.constantFrom('\n', '\r\n', '\r'),
        fc.array(fc.nat(), { maxLength: 12 }),
        async (events, eol, rawCuts) => {
          const text = events.map((e) => `event: ${e.event}${eol}data: ${JSON.stringify(e.data)}${eol}${eol}`).join('');
          const size = new TextEncoder().encode(text).length;
          const cuts = rawCuts.map((c) => (size === 0 ? 0 : c % (size + 1)));
          expect(await collect(text, cuts)).toEqual(events);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses a line without a break past maxLineLength, holding no more than that', async () => {
    // 16 MiB in 64 KB chunks, no line break: refused once 8 MiB are pending.
    let sent = 0;
    async function* endless(): AsyncGenerator<Uint8Array> {
      const chunk = new Uint8Array(65_536).fill(0x61);
      for (; sent < 16 * 1024 * 1024; sent += chunk.length) yield chunk;
    }
    const error = await (async () => {
      for await (const _ of readStreamEvents(endless()));
    })().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as ProtocolError).message).toMatch(/expected a line of at most 8388608 characters, got \d+ or more/);
    expect(sent).toBeLessThanOrEqual(8 * 1024 * 1024 + 65_536);
    // An event's data over several lines is bounded the same way; a small bound for the check.
    const many = `data: ${'"x",'.repeat(10)}\n`.repeat(10);
    const small = await (async () => {
      for await (const _ of readStreamEvents(chunks(new TextEncoder().encode(many), []), { maxLineLength: 200 }));
    })().catch((e: unknown) => e);
    expect((small as ProtocolError).message).toMatch(/expected an event's data of at most 200 characters/);
  });
});
