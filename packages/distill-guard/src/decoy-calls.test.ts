import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ContentBlock, DecoyStreamFilter, interceptDecoyCalls } from './decoy-calls.js';
import { decoyTools } from './decoys.js';
import type { StreamEvent } from './signing.js';

const decoys = decoyTools({ secret: new Uint8Array(32).fill(0x5a), apiKeyId: 'key_1', period: 2925, avoid: ['lookup'] });
const decoyName = (decoys[0] as (typeof decoys)[number]).tool.name;

const thinking = { type: 'thinking', thinking: 'Let me look that up.', signature: 'upstream-sig' };
const text = (t: string) => ({ type: 'text', text: t });
const decoyUse = (id: string) => ({ type: 'tool_use', id, name: decoyName, input: { account_id: 'acct_7', limit: 3 } });
const realUse = (id: string) => ({ type: 'tool_use', id, name: 'lookup', input: { q: 'ledger' } });

/** A response as the Messages SSE event sequence, the way the API streams it. */
function events(content: readonly ContentBlock[], stop: string, outputTokens: number): StreamEvent[] {
  const out: StreamEvent[] = [
    { event: 'message_start', data: { type: 'message_start', message: { id: 'msg_1', content: [], stop_reason: null } } },
  ];
  for (const [index, b] of content.entries()) {
    const delta = (d: Record<string, unknown>) =>
      out.push({ event: 'content_block_delta', data: { type: 'content_block_delta', index, delta: d } });
    if (b.type === 'thinking') {
      out.push({
        event: 'content_block_start',
        data: { type: 'content_block_start', index, content_block: { type: 'thinking', thinking: '' } },
      });
      delta({ type: 'thinking_delta', thinking: (b.thinking as string).slice(0, 5) });
      delta({ type: 'thinking_delta', thinking: (b.thinking as string).slice(5) });
      delta({ type: 'signature_delta', signature: b.signature });
    } else if (b.type === 'text') {
      out.push({ event: 'content_block_start', data: { type: 'content_block_start', index, content_block: { type: 'text', text: '' } } });
      delta({ type: 'text_delta', text: b.text });
    } else {
      out.push({ event: 'content_block_start', data: { type: 'content_block_start', index, content_block: { ...b, input: {} } } });
      const json = JSON.stringify(b.input);
      delta({ type: 'input_json_delta', partial_json: json.slice(0, 4) });
      delta({ type: 'input_json_delta', partial_json: json.slice(4) });
    }
    out.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index } });
  }
  out.push({
    event: 'message_delta',
    data: { type: 'message_delta', delta: { stop_reason: stop, stop_sequence: null }, usage: { output_tokens: outputTokens } },
  });
  out.push({ event: 'message_stop', data: { type: 'message_stop' } });
  return out;
}

/** What a client assembles from the events it receives, checking their order as it goes. */
function assemble(evs: readonly StreamEvent[]) {
  const content: Array<Record<string, unknown>> = [];
  const json = new Map<number, string>();
  let stop: unknown;
  let tokens: unknown;
  let open = -1;
  for (const ev of evs) {
    const index = ev.data.index as number;
    if (ev.event === 'content_block_start') {
      expect(index).toBe(content.length);
      expect(open).toBe(-1);
      open = index;
      content[index] = { ...(ev.data.content_block as object) };
    } else if (ev.event === 'content_block_delta') {
      expect(index).toBe(open);
      const d = ev.data.delta as Record<string, string>;
      const b = content[index] as Record<string, string>;
      if (d.type === 'text_delta') b.text = (b.text ?? '') + d.text;
      if (d.type === 'thinking_delta') b.thinking = (b.thinking ?? '') + d.thinking;
      if (d.type === 'signature_delta') b.signature = d.signature as string;
      if (d.type === 'input_json_delta') json.set(index, (json.get(index) ?? '') + d.partial_json);
    } else if (ev.event === 'content_block_stop') {
      expect(index).toBe(open);
      open = -1;
      if (json.has(index)) (content[index] as Record<string, unknown>).input = JSON.parse(json.get(index) as string);
    } else if (ev.event === 'message_delta') {
      stop = (ev.data.delta as { stop_reason: unknown }).stop_reason;
      tokens = (ev.data.usage as { output_tokens: unknown }).output_tokens;
    }
  }
  expect(evs.filter((e) => e.event === 'message_start')).toHaveLength(1);
  expect(evs.filter((e) => e.event === 'message_stop')).toHaveLength(1);
  expect(evs.at(-1)?.event).toBe('message_stop');
  return { content, stop, tokens };
}

describe('interceptDecoyCalls', () => {
  it('takes a decoy-only turn away from the client and hands it to the server to continue', () => {
    const response = { id: 'msg_1', content: [thinking, decoyUse('toolu_1')], stop_reason: 'tool_use' };
    const { response: out, turn } = interceptDecoyCalls(response, decoys);
    expect(out.content).toEqual([thinking]);
    expect(out.stop_reason).toBe('end_turn');
    expect(turn.calls).toEqual([{ id: 'toolu_1', name: decoyName, input: { account_id: 'acct_7', limit: 3 } }]);
    expect(turn.continueWith).toEqual([thinking, decoyUse('toolu_1')]);
  });

  it('withholds decoy calls next to real ones and lets the client run the real ones', () => {
    const response = { content: [text('Two lookups.'), decoyUse('toolu_1'), realUse('toolu_2')], stop_reason: 'tool_use' };
    const { response: out, turn } = interceptDecoyCalls(response, decoys);
    expect(out.content).toEqual([text('Two lookups.'), realUse('toolu_2')]);
    expect(out.stop_reason).toBe('tool_use');
    expect(turn.calls.map((c) => c.id)).toEqual(['toolu_1']);
    expect(turn.continueWith).toBeUndefined();
  });

  it('leaves responses without decoy calls, and requests without decoys, untouched', () => {
    const response = { content: [realUse('toolu_2')], stop_reason: 'tool_use' };
    expect(interceptDecoyCalls(response, decoys).response).toBe(response);
    const withDecoy = { content: [decoyUse('toolu_1')], stop_reason: 'tool_use' };
    expect(interceptDecoyCalls(withDecoy, []).response).toBe(withDecoy);
  });
});

describe('DecoyStreamFilter', () => {
  it('stitches a server-answered decoy round into one gapless client message', () => {
    const filter = new DecoyStreamFilter(decoys);
    const client = events([thinking, decoyUse('toolu_1')], 'tool_use', 40).flatMap((e) => filter.handle(e));
    const turn = filter.takeTurn();
    expect(turn?.calls).toEqual([{ id: 'toolu_1', name: decoyName, input: { account_id: 'acct_7', limit: 3 } }]);
    // The upstream's own signature goes back to it with the continued turn.
    expect(turn?.continueWith).toEqual([thinking, decoyUse('toolu_1')]);
    filter.nextRound();
    client.push(...events([text('No records matched.')], 'end_turn', 12).flatMap((e) => filter.handle(e)));
    expect(filter.takeTurn()).toBeUndefined();
    expect(JSON.stringify(client)).not.toContain(decoyName);
    expect(assemble(client)).toEqual({ content: [thinking, text('No records matched.')], stop: 'end_turn', tokens: 52 });
    expect(filter.decoyCalls).toBe(1);
  });

  it('renumbers around a withheld decoy call and keeps the real call for the client', () => {
    const filter = new DecoyStreamFilter(decoys);
    const client = events([text('Two lookups.'), decoyUse('toolu_1'), realUse('toolu_2')], 'tool_use', 30).flatMap((e) => filter.handle(e));
    expect(filter.takeTurn()).toBeUndefined();
    expect(assemble(client)).toEqual({ content: [text('Two lookups.'), realUse('toolu_2')], stop: 'tool_use', tokens: 30 });
  });

  it('close() ends the message when the server stops answering decoys', () => {
    const filter = new DecoyStreamFilter(decoys);
    const client = events([text('Looking.'), decoyUse('toolu_1')], 'tool_use', 9).flatMap((e) => filter.handle(e));
    expect(filter.takeTurn()).toBeDefined();
    client.push(...filter.close());
    expect(assemble(client)).toEqual({ content: [text('Looking.')], stop: 'end_turn', tokens: 9 });
  });

  it('names the block when a decoy call streams input that is not JSON', () => {
    const filter = new DecoyStreamFilter(decoys);
    const evs = events([decoyUse('toolu_1')], 'tool_use', 1).map((e) =>
      e.event === 'content_block_delta' ? { ...e, data: { ...e.data, delta: { type: 'input_json_delta', partial_json: '{"a' } } } : e,
    );
    expect(() => evs.flatMap((e) => filter.handle(e))).toThrow(
      /content\.0\.input: expected the joined input_json_delta fragments to be JSON, got "\{\\"a\{/,
    );
  });

  it('agrees with the non-streaming form on any turn', () => {
    const block = fc.oneof(
      fc.string().map((t) => text(t)),
      fc.string({ minLength: 5 }).map((t) => ({ type: 'thinking', thinking: t, signature: 'sig' })),
      fc.nat(999).map((n) => realUse(`toolu_r${n}`)),
      fc.nat(999).map((n) => decoyUse(`toolu_d${n}`)),
    );
    fc.assert(
      fc.property(fc.array(block, { maxLength: 8 }), fc.nat(500), (content, tokens) => {
        const stop = content.some((b) => b.type === 'tool_use') ? 'tool_use' : 'end_turn';
        const expected = interceptDecoyCalls({ content, stop_reason: stop }, decoys);
        const filter = new DecoyStreamFilter(decoys);
        const client = events(content, stop, tokens).flatMap((e) => filter.handle(e));
        const turn = filter.takeTurn();
        expect(turn?.continueWith).toEqual(expected.turn.continueWith);
        expect(filter.decoyCalls).toBe(expected.turn.calls.length);
        if (turn !== undefined) client.push(...filter.close());
        const got = assemble(client);
        expect(got.content).toEqual(expected.response.content);
        expect(got.stop).toBe(expected.response.stop_reason);
      }),
      { numRuns: 300 },
    );
  });
});
