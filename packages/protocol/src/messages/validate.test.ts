import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MessagesError } from './errors.js';
import { MESSAGES_MAX_DEPTH, parseMessagesRequest, parseMessagesResponse } from './validate.js';

const ok = { model: 'claude-test', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] };

function pathOf(body: unknown): string {
  try {
    parseMessagesRequest(body);
  } catch (error) {
    if (error instanceof MessagesError) return error.path;
    throw error;
  }
  return 'accepted';
}

describe('parseMessagesRequest', () => {
  it('accepts what the API accepts, unknown members and block types included, and keeps them', () => {
    const body = {
      ...ok,
      output_config: { effort: 'high' },
      context_management: { edits: [] },
      cache_control: { type: 'ephemeral' },
      system: [{ type: 'text', text: 'be brief', cache_control: { type: 'ephemeral', ttl: '1h' } }],
      tools: [
        { name: 'read', input_schema: { type: 'object' } },
        { type: 'web_search_20250305', name: 'web_search' },
        { type: 'browser_toolset_20260801' },
      ],
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'a' },
            { type: 'image', source: { type: 'base64', data: '' } },
            { type: 'future_block', x: 1 },
          ],
        },
        {
          role: 'assistant',
          content: [
            { type: 'thinking', thinking: 't', signature: 's' },
            { type: 'redacted_thinking', data: 'd' },
            { type: 'tool_use', id: 'i', name: 'read', input: {} },
          ],
        },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'i', content: [{ type: 'text', text: 'r' }] }] },
        { role: 'system', content: 'mid-conversation instructions' },
      ],
    };
    expect(parseMessagesRequest(body)).toBe(body);
    expect(pathOf({ model: 'm', messages: [] })).toBe('accepted');
  });

  it('keeps an unknown anti_distillation measure: the verifier ignores it, the request stays valid (§7)', () => {
    const body = { ...ok, anti_distillation: ['fake_tools', 'a_future_measure'] };
    expect(parseMessagesRequest(body).anti_distillation).toEqual(['fake_tools', 'a_future_measure']);
    expect(pathOf({ ...ok, anti_distillation: ['a_future_measure'] })).toBe('accepted');
  });

  it('names the path of the first wrong member', () => {
    const cases: Array<[unknown, string]> = [
      [null, ''],
      [[], ''],
      [{ ...ok, model: 1 }, 'model'],
      [{ ...ok, messages: null }, 'messages'],
      [{ ...ok, messages: [null] }, 'messages.0'],
      [{ ...ok, messages: [{ role: 'user', content: [null] }] }, 'messages.0.content.0'],
      [{ ...ok, messages: [{ role: 'user', content: [{ type: 'text', text: 5 }] }] }, 'messages.0.content.0.text'],
      [{ ...ok, messages: [{ role: 'user', content: [{ text: 'x' }] }] }, 'messages.0.content.0.type'],
      [{ ...ok, messages: [{ role: 2, content: 'x' }] }, 'messages.0.role'],
      [
        { ...ok, messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'x', content: [{ type: 1 }] }] }] },
        'messages.0.content.0.content.0.type',
      ],
      [{ ...ok, tools: [null] }, 'tools.0'],
      [{ ...ok, tools: [{ input_schema: {} }] }, 'tools.0.name'],
      [{ ...ok, system: [null] }, 'system.0'],
      [{ ...ok, system: 3 }, 'system'],
      [{ ...ok, max_tokens: 1.5 }, 'max_tokens'],
      [{ ...ok, stream: 'yes' }, 'stream'],
      [{ ...ok, anti_distillation: 'fake_tools' }, 'anti_distillation'],
      [
        { ...ok, messages: [{ role: 'user', content: [{ type: 'text', text: 'x', cache_control: 'ephemeral' }] }] },
        'messages.0.content.0.cache_control',
      ],
    ];
    for (const [body, path] of cases) expect(pathOf(body), JSON.stringify(body)).toBe(path);
  });

  it('throws nothing but MessagesError, whatever the input', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.anything(), fc.record({ model: fc.anything(), messages: fc.array(fc.anything()) }), fc.jsonValue()),
        (value) => {
          try {
            parseMessagesRequest(value);
            parseMessagesResponse(value);
          } catch (error) {
            expect(error).toBeInstanceOf(MessagesError);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

/**
 * Blocks nested through `tool_result` content so that the deepest container the walk reaches
 * (a block, or an empty `content` array) is at JSON depth `depth`; `top` is the depth of the
 * outermost block (5 in a request, 3 in a response).
 */
function nestedBlock(depth: number, top: number): unknown {
  let at = depth;
  let block: unknown = { type: 'text', text: 'x' };
  if ((at - top) % 2 !== 0) {
    block = { type: 'tool_result', tool_use_id: 't', content: [] };
    at--;
  }
  for (; at > top; at -= 2) block = { type: 'tool_result', tool_use_id: 't', content: [block] };
  return block;
}

const deepRequest = (depth: number) => ({ model: 'm', messages: [{ role: 'user', content: [nestedBlock(depth, 5)] }] });
const deepResponse = (depth: number) => ({ id: 'msg_1', content: [nestedBlock(depth, 3)] });

function depthError(run: () => unknown): MessagesError | undefined {
  try {
    run();
  } catch (error) {
    if (error instanceof MessagesError) return error;
    throw error;
  }
  return undefined;
}

describe('nesting bound', () => {
  it('accepts content nested up to MESSAGES_MAX_DEPTH and refuses one level more, naming the path', () => {
    expect(MESSAGES_MAX_DEPTH).toBe(512);
    for (const [parse, body] of [
      [parseMessagesRequest, deepRequest],
      [parseMessagesResponse, deepResponse],
    ] as const) {
      expect(depthError(() => parse(body(MESSAGES_MAX_DEPTH - 1)))).toBeUndefined();
      expect(depthError(() => parse(body(MESSAGES_MAX_DEPTH)))).toBeUndefined();
      const error = depthError(() => parse(body(MESSAGES_MAX_DEPTH + 1)));
      expect(error?.code).toBe('ERR_MESSAGES_DEPTH');
      expect(error?.message).toMatch(/: expected nesting at most 512 deep, got (an array|an object) at depth 513$/);
      expect(error?.path.split('.').length).toBeGreaterThan(250);
    }
    // The shapes stay as they were: a response's content is an array, a request's may be a string.
    expect(depthError(() => parseMessagesResponse({ id: 'msg_1', content: 'x' }))?.code).toBe('ERR_MESSAGES_SHAPE');
    expect(depthError(() => parseMessagesRequest({ model: 'm', messages: [{ role: 'user', content: 'x' }], system: 'y' }))).toBeUndefined();
  });

  it('refuses 100,000 levels of tool_result with the typed error, not a stack overflow', () => {
    const levels = 100_000;
    const nested = `${'{"type":"tool_result","tool_use_id":"t","content":['.repeat(levels)}{"type":"text","text":"x"}${']}'.repeat(levels)}`;
    const request = JSON.parse(`{"model":"m","messages":[{"role":"user","content":[${nested}]}]}`);
    const response = JSON.parse(`{"id":"msg_1","content":[${nested}]}`);
    expect(depthError(() => parseMessagesRequest(request))?.code).toBe('ERR_MESSAGES_DEPTH');
    expect(depthError(() => parseMessagesResponse(response))?.code).toBe('ERR_MESSAGES_DEPTH');
    expect(depthError(() => parseMessagesRequest(deepRequest(2 * levels + 5)))?.code).toBe('ERR_MESSAGES_DEPTH');
  });
});
