import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from './errors.js';
import { readStreamEventBatches, readStreamEvents } from './stream.js';

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

describe('readStreamEventBatches', () => {
  it('gives one batch per chunk that completes events: the same events as readStreamEvents, each in the batch of the chunk that ends it', async () => {
    const data = fc.dictionary(fc.stringMatching(/^[a-z]{1,6}$/), fc.oneof(fc.string(), fc.integer()));
    await fc.assert(
      fc.asyncProperty(fc.array(data, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), async (events, rawCuts) => {
        const text = events.map((d) => `event: e\ndata: ${JSON.stringify(d)}\n\n`).join('');
        const bytes = new TextEncoder().encode(text);
        const cuts = [...new Set(rawCuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const batches: Array<Array<{ data: unknown }>> = [];
        for await (const batch of readStreamEventBatches(chunks(bytes, cuts))) batches.push(batch);
        expect(batches.flat().map((e) => e.data)).toEqual(events);
        expect(batches.every((b) => b.length > 0)).toBe(true);
        // Where each event ends (its blank line's last byte) decides its chunk, hence its batch.
        const ends: number[] = [];
        let at = 0;
        for (const d of events) {
          at += new TextEncoder().encode(`event: e\ndata: ${JSON.stringify(d)}\n\n`).length;
          ends.push(at);
        }
        const chunkOf = (end: number) => cuts.filter((c) => c < end).length;
        const expected = new Map<number, number>();
        for (const end of ends) expected.set(chunkOf(end), (expected.get(chunkOf(end)) ?? 0) + 1);
        expect(batches.map((b) => b.length)).toEqual([...expected.values()]);
      }),
      { numRuns: 300 },
    );
  });

  it('gives the events before a bad one in its chunk, then the error', async () => {
    const text = 'event: a\ndata: {"n":1}\n\nevent: b\ndata: {"n":2}\n\nevent: bad\ndata: {nope\n\nevent: c\ndata: {"n":3}\n\n';
    const seen: unknown[][] = [];
    const error = await (async () => {
      for await (const batch of readStreamEventBatches(chunks(new TextEncoder().encode(text), []))) seen.push(batch.map((e) => e.data));
    })().catch((e: unknown) => e);
    expect(seen).toEqual([[{ n: 1 }, { n: 2 }]]);
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as ProtocolError).message).toMatch(/expected JSON data in event "bad"/);
  });
});

/** The SSE rules read plainly, on the whole text at once: what the incremental reader must match. */
function referenceEvents(text: string): { events: Array<{ event: string; data: unknown }>; error?: string } {
  const events: Array<{ event: string; data: unknown }> = [];
  const lines = text.split(/\r\n|\r|\n/);
  // The last piece has no line break after it: never a complete line.
  lines.pop();
  let event = '';
  let data: string[] = [];
  for (const line of lines) {
    if (line === '') {
      const joined = data.join('\n');
      const name = event === '' ? 'message' : event;
      event = '';
      data = [];
      if (joined === '') continue;
      try {
        events.push({ event: name, data: JSON.parse(joined) });
      } catch {
        return { events, error: `JSON data in event "${name}"` };
      }
    } else if (!line.startsWith(':')) {
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
  }
  return { events };
}

describe('the stream reader against the SSE rules read plainly', () => {
  it('gives the same events, or the same error after the same events, for any text of SSE pieces and any chunking', async () => {
    // Whole fields most of the time, so events complete; loose characters to break them.
    const piece = fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom('data: {}', 'data:1', 'data: [1,', 'data: 2]', 'event: e', 'event:f', ': note', 'id: 3') },
      { weight: 4, arbitrary: fc.constantFrom('\n', '\r', '\r\n', '\n\n', '\r\n\r\n') },
      { weight: 1, arbitrary: fc.constantFrom(':', ' ', 'data', 'x', '"', '{') },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { maxLength: 60 }), fc.array(fc.nat(), { maxLength: 8 }), async (pieces, rawCuts) => {
        const text = pieces.join('');
        const bytes = new TextEncoder().encode(text);
        const cuts = rawCuts.map((c) => c % (bytes.length + 1));
        const expected = referenceEvents(text);
        const got: Array<{ event: string; data: unknown }> = [];
        const error = await (async () => {
          for await (const e of readStreamEvents(chunks(bytes, cuts))) got.push({ event: e.event, data: e.data });
        })().catch((e: unknown) => e);
        expect(got).toEqual(expected.events);
        if (expected.error === undefined) expect(error).toBeUndefined();
        else expect((error as ProtocolError).message).toContain(expected.error);
      }),
      { numRuns: 2000 },
    );
  });
});
