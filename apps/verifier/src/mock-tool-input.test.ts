import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mockMessages, toolInput } from './mock-upstream.js';

const read = {
  name: 'Read',
  description: 'Reads a file',
  input_schema: {
    type: 'object',
    properties: { file_path: { type: 'string' }, offset: { type: 'number' }, limit: { type: 'number' } },
    required: ['file_path'],
  },
};

describe('the mock model’s tool inputs', () => {
  it("fill a Read tool's required file_path with the path the user wrote, and nothing else", () => {
    const answer = mockMessages({
      model: 'claude-mock',
      max_tokens: 64,
      tools: [read],
      messages: [{ role: 'user', content: 'Use Read on /tmp/project/notes.txt, please.' }],
    });
    expect(answer.content).toContainEqual(
      expect.objectContaining({ type: 'tool_use', name: 'Read', input: { file_path: '/tmp/project/notes.txt' } }),
    );
  });

  it('follow types, enums, minimums, nested objects and arrays', () => {
    const schema = {
      type: 'object',
      properties: {
        mode: { enum: ['fast', 'slow'] },
        count: { type: 'integer', minimum: 3 },
        dry: { type: 'boolean' },
        tags: { type: 'array', items: { type: 'string' }, minItems: 2 },
        where: { type: 'object', properties: { dir: { type: 'string' } }, required: ['dir'] },
        note: { type: 'string' },
      },
      required: ['mode', 'count', 'dry', 'tags', 'where', 'note'],
    };
    expect(toolInput(schema, 'look in ./src now')).toEqual({
      mode: 'fast',
      count: 3,
      dry: false,
      tags: ['look in ./src now', 'look in ./src now'],
      where: { dir: './src' },
      note: 'look in ./src now',
    });
  });

  it('always give every required member a value of its declared type', () => {
    const member = fc.constantFrom(
      { type: 'string' },
      { type: 'integer' },
      { type: 'number', minimum: 2 },
      { type: 'boolean' },
      { type: 'object', properties: {} },
    );
    fc.assert(
      fc.property(fc.dictionary(fc.stringMatching(/^[a-z_]{1,12}$/), member), fc.string(), (props, text) => {
        const input = toolInput({ type: 'object', properties: props, required: Object.keys(props) }, text) as Record<string, unknown>;
        expect(Object.keys(input).sort()).toEqual(Object.keys(props).sort());
        for (const [key, s] of Object.entries(props)) {
          const want = s.type === 'integer' ? 'number' : s.type;
          expect(typeof input[key]).toBe(want);
        }
      }),
    );
  });
});
