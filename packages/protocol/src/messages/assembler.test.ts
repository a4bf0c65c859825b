import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readStreamEvents } from '../stream.js';
import { assembleStream, MessageAssembler, type StreamEvent } from './assembler.js';
import { MessagesError } from './errors.js';
import { chunked, formatStreamEvent, streamEventsOf } from './events.js';
import type { ContentBlock, MessagesResponse } from './types.js';

const text = fc.string({ unit: 'binary', maxLength: 80 });
const jsonValue = fc.jsonValue({ maxDepth: 3 });

const block: fc.Arbitrary<ContentBlock> = fc.oneof(
  fc.record({ type: fc.constant('text' as const), text }),
  fc.record({
    type: fc.constant('text' as const),
    text,
    citations: fc.array(fc.record({ cited_text: text, type: fc.constant('char_location') }), { maxLength: 3 }),
  }),
  fc.record({ type: fc.constant('thinking' as const), thinking: text, signature: fc.string({ minLength: 1, maxLength: 40 }) }),
  fc.record({ type: fc.constant('redacted_thinking' as const), data: fc.base64String({ maxLength: 40 }) }),
  fc.record({
    type: fc.constantFrom('tool_use' as const, 'server_tool_use' as const),
    id: fc.stringMatching(/^toolu_[a-z0-9]{4,12}$/),
    name: fc.stringMatching(/^[a-z_]{1,12}$/),
    input: fc.dictionary(fc.string({ maxLength: 8 }), jsonValue, { maxKeys: 4 }),
  }),
  // A block type this model does not know, with members it does not know: kept whole.
  fc.record({ type: fc.constant('web_search_tool_result'), tool_use_id: fc.string(), content: jsonValue, future_member: jsonValue }),
);

const message: fc.Arbitrary<MessagesResponse> = fc.record({
  id: fc.stringMatching(/^msg_[a-z0-9]{6}$/),
  type: fc.constant('message' as const),
  role: fc.constant('assistant' as const),
  model: fc.constantFrom('claude-sonnet-4-5', 'claude-test'),
  content: fc.array(block, { maxLength: 5 }),
  stop_reason: fc.constantFrom('end_turn', 'tool_use', 'max_tokens', null),
  stop_sequence: fc.constant(null),
  usage: fc.record({ input_tokens: fc.nat(10_000), output_tokens: fc.nat(10_000) }),
});

/** Splits into pieces at random cut points (the whole string, one-character pieces, anything between). */
const splitter = fc.array(fc.nat(40), { maxLength: 20 }).map((cuts) => (s: string) => {
  const parts: string[] = [];
  let start = 0;
  for (const cut of cuts) {
    const end = Math.min(s.length, start + cut + 1);
    if (start >= s.length) break;
    parts.push(s.slice(start, end));
    start = end;
  }
  if (start < s.length) parts.push(s.slice(start));
  return parts;
});

describe('MessageAssembler', () => {
  it('assembles any stream, split into arbitrary deltas, to the JSON answer', async () => {
    await fc.assert(
      fc.asyncProperty(message, splitter, async (m, split) => {
        expect(await assembleStream(streamEventsOf(m, split))).toEqual(m);
      }),
      { numRuns: 400 },
    );
  });

  it('assembles the same message from the wire bytes cut into arbitrary chunks', async () => {
    await fc.assert(
      fc.asyncProperty(message, fc.array(fc.nat(200), { minLength: 1, maxLength: 30 }), async (m, cuts) => {
        const bytes = Buffer.from([...streamEventsOf(m, chunked(3))].map(formatStreamEvent).join(''));
        const chunks: Uint8Array[] = [];
        let start = 0;
        for (const cut of cuts) {
          if (start >= bytes.length) break;
          chunks.push(bytes.subarray(start, start + cut + 1));
          start += cut + 1;
        }
        if (start < bytes.length) chunks.push(bytes.subarray(start));
        expect(
          await assembleStream(
            readStreamEvents(
              (async function* () {
                yield* chunks;
              })(),
            ),
          ),
        ).toEqual(JSON.parse(JSON.stringify(m))); // the wire has no -0
      }),
      { numRuns: 150 },
    );
  });

  it('joins a tool input split into one-character deltas and parses it once, at content_block_stop', () => {
    const input = { path: '/tmp/ä.txt', lines: [1, 2, 3], nested: { ok: true } };
    const m: MessagesResponse = {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'm',
      content: [{ type: 'tool_use', id: 'toolu_1', name: 'read', input }],
      stop_reason: 'tool_use',
      stop_sequence: null,
      usage: { input_tokens: 1, output_tokens: 2 },
    };
    const assembler = new MessageAssembler();
    for (const ev of streamEventsOf(m, chunked(1))) {
      assembler.push(ev);
      // Before its stop, the block still holds the input it started with.
      if (ev.event === 'content_block_delta') expect(assembler.block(0)).toMatchObject({ input: {} });
    }
    expect(assembler.complete).toBe(true);
    expect(assembler.message?.content).toEqual([{ type: 'tool_use', id: 'toolu_1', name: 'read', input }]);
  });

  it('keeps unknown event types, unknown delta types and unknown members', () => {
    const assembler = new MessageAssembler();
    const events: StreamEvent<unknown>[] = [
      {
        event: 'message_start',
        data: {
          type: 'message_start',
          message: {
            id: 'm',
            type: 'message',
            role: 'assistant',
            model: 'x',
            content: [],
            stop_reason: null,
            stop_sequence: null,
            usage: { input_tokens: 3, output_tokens: 1 },
            container: { id: 'c' },
          },
        },
      },
      { event: 'future_event', data: { type: 'future_event', anything: 1 } },
      {
        event: 'content_block_start',
        data: { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '', extra: 'kept' } },
      },
      { event: 'content_block_delta', data: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'hi' } } },
      { event: 'content_block_delta', data: { type: 'content_block_delta', index: 0, delta: { type: 'future_delta', x: 1 } } },
      { event: 'ping', data: { type: 'ping' } },
      { event: 'content_block_stop', data: { type: 'content_block_stop', index: 0 } },
      {
        event: 'message_delta',
        data: {
          type: 'message_delta',
          delta: { stop_reason: 'end_turn', stop_sequence: null, stop_details: null },
          usage: { output_tokens: 7, input_tokens: null },
        },
      },
      { event: 'message_stop', data: { type: 'message_stop' } },
    ];
    for (const ev of events) assembler.push(ev);
    expect(assembler.unknownEvents).toBe(1);
    expect(assembler.message).toEqual({
      id: 'm',
      type: 'message',
      role: 'assistant',
      model: 'x',
      content: [{ type: 'text', text: 'hi', extra: 'kept' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      stop_details: null,
      usage: { input_tokens: 3, output_tokens: 7 },
      container: { id: 'c' },
    });
  });

  it('rejects events out of order and tool input that is not JSON, with a typed error', () => {
    const start = {
      event: 'message_start',
      data: { type: 'message_start', message: { id: 'm', content: [], usage: { output_tokens: 0 } } },
    };
    const cases: Array<[StreamEvent<unknown>[], string]> = [
      [[{ event: 'content_block_start', data: { index: 0, content_block: { type: 'text', text: '' } } }], 'ERR_STREAM_ORDER'],
      [[start, { event: 'content_block_delta', data: { index: 0, delta: { type: 'text_delta', text: 'x' } } }], 'ERR_STREAM_ORDER'],
      [[start, { event: 'content_block_start', data: { index: -1, content_block: { type: 'text' } } }], 'ERR_STREAM_ORDER'],
      [[start, { event: 'content_block_start', data: { index: 0, content_block: null } }], 'ERR_STREAM_ORDER'],
      [[start, start], 'ERR_STREAM_ORDER'],
      [[{ event: 'message_start', data: null }], 'ERR_STREAM_ORDER'],
      [
        [
          start,
          { event: 'content_block_start', data: { index: 0, content_block: { type: 'tool_use', id: 't', name: 'n', input: {} } } },
          { event: 'content_block_delta', data: { index: 0, delta: { type: 'input_json_delta', partial_json: '{"a":' } } },
          { event: 'content_block_stop', data: { index: 0 } },
        ],
        'ERR_STREAM_TOOL_INPUT',
      ],
      [
        [
          start,
          { event: 'content_block_start', data: { index: 0, content_block: { type: 'text', text: '' } } },
          { event: 'content_block_delta', data: { index: 0, delta: { type: 'text_delta', text: 5 } } },
        ],
        'ERR_STREAM_ORDER',
      ],
    ];
    for (const [events, code] of cases) {
      const assembler = new MessageAssembler();
      let caught: unknown;
      try {
        for (const ev of events) assembler.push(ev);
      } catch (error) {
        caught = error;
      }
      expect(caught, JSON.stringify(events)).toBeInstanceOf(MessagesError);
      expect((caught as MessagesError).code).toBe(code);
    }
  });

  it('leaves tool input unparsed when asked to', () => {
    const assembler = new MessageAssembler({ parseToolInput: false });
    const events: StreamEvent<unknown>[] = [
      { event: 'message_start', data: { message: { id: 'm', content: [], usage: { output_tokens: 0 } } } },
      { event: 'content_block_start', data: { index: 0, content_block: { type: 'tool_use', id: 't', name: 'n', input: {} } } },
      { event: 'content_block_delta', data: { index: 0, delta: { type: 'input_json_delta', partial_json: '{"a":' } } },
      { event: 'content_block_stop', data: { index: 0 } },
    ];
    for (const ev of events) assembler.push(ev);
    expect(assembler.block(0)).toEqual({ type: 'tool_use', id: 't', name: 'n', input: {} });
  });

  it('records the stream error event', async () => {
    const assembler = new MessageAssembler();
    assembler.push({ event: 'error', data: { type: 'error', error: { type: 'overloaded_error', message: 'busy' } } });
    expect(assembler.error).toEqual({ type: 'overloaded_error', message: 'busy' });
    await expect(assembleStream([])).rejects.toMatchObject({ code: 'ERR_STREAM_ORDER' });
  });
});
