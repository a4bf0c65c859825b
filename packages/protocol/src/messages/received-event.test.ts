import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readStreamEvents } from '../stream.js';
import type { StreamEvent } from './assembler.js';
import { formatReceivedEvent, formatStreamEvent } from './events.js';

async function read(text: string, keepText = false): Promise<Array<StreamEvent & { text?: string }>> {
  const out: Array<StreamEvent & { text?: string }> = [];
  async function* body() {
    yield new TextEncoder().encode(text);
  }
  for await (const ev of readStreamEvents(body(), { keepText })) out.push(ev);
  return out;
}

/** An upstream's wire form of one event: data on one line (any spacing) or split over several `data:` lines. */
const wireEvent = fc.record({
  name: fc.constantFrom('message_start', 'content_block_delta', 'ping', 'message_stop'),
  data: fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
  indent: fc.constantFrom(0, 0, 1, 2),
  space: fc.constantFrom('', ' ', '  '),
  eol: fc.constantFrom('\n', '\r\n', '\r'),
});

describe('formatReceivedEvent', () => {
  it('passes each event on with the meaning the re-serialized form has, and a one-line data text byte for byte', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(wireEvent, { minLength: 1, maxLength: 6 }), async (events) => {
        const wire = events
          .map(({ name, data, indent, space, eol }) => {
            const lines = JSON.stringify(data, null, indent).split('\n');
            return `event: ${name}${eol}${lines.map((l) => `data:${space}${l}${eol}`).join('')}${eol}`;
          })
          .join('');
        const received = await read(wire, true);
        const passed = received.map(formatReceivedEvent).join('');
        const reserialized = received.map((ev) => formatStreamEvent({ event: ev.event, data: ev.data })).join('');
        // The client reads the same events either way.
        expect(await read(passed)).toEqual(await read(reserialized));
        for (const [i, ev] of received.entries()) {
          const text = ev.text as string;
          if (!text.includes('\n')) expect(formatReceivedEvent(ev)).toBe(`event: ${ev.event}\ndata: ${text}\n\n`);
          expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(events[i]?.data))); // the wire has no -0
        }
      }),
    );
  });

  it('serializes an event that carries no data text', () => {
    const ev = { event: 'ping', data: { type: 'ping' } };
    expect(formatReceivedEvent(ev)).toBe(formatStreamEvent(ev));
  });
});
