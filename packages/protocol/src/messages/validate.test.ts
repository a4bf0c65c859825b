import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MessagesError } from './errors.js';
import { parseMessagesRequest, parseMessagesResponse } from './validate.js';

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
