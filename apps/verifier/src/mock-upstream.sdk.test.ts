// The mock must accept whatever the current official SDK can send: when an SDK update adds a
// request member, a block type or a model that the mock's lists lack, this file stops
// type-checking (`pnpm typecheck`), instead of the mock drifting from the API in silence.
import type Anthropic from '@anthropic-ai/sdk';
import { describe, expect, it } from 'vitest';
import {
  type BETA_MESSAGES_MEMBERS,
  type MESSAGES_MEMBERS,
  type MOCK_MODELS,
  mockCountTokens,
  mockMessages,
  type REQUEST_BLOCK_TYPES,
} from './mock-upstream.js';

/** `true` when nothing of `Needed` is missing from `Listed`; otherwise the missing names, a type error. */
type Covers<Listed, Needed> = [Exclude<Needed, Listed>] extends [never] ? true : Exclude<Needed, Listed>;
/** The literal members of a string union that also admits any string. */
type Literals<T> = T extends string ? (string extends T ? never : T) : never;

type GaMember = keyof Anthropic.MessageCreateParams;
// `betas` is the SDK's way to set the anthropic-beta header, never a body member.
type BetaMember = Exclude<keyof Anthropic.Beta.MessageCreateParams, 'betas'>;
type BlockType = Anthropic.ContentBlockParam['type'] | Anthropic.Beta.BetaContentBlockParam['type'];

describe('the mock upstream and @anthropic-ai/sdk', () => {
  it('lists every request member, block type and model the SDK knows', () => {
    const checks: true[] = [
      true satisfies Covers<(typeof MESSAGES_MEMBERS)[number], GaMember>,
      true satisfies Covers<(typeof MESSAGES_MEMBERS)[number] | (typeof BETA_MESSAGES_MEMBERS)[number], BetaMember>,
      true satisfies Covers<(typeof REQUEST_BLOCK_TYPES)[number], BlockType>,
      true satisfies Covers<(typeof MOCK_MODELS)[number], Literals<Anthropic.Model>>,
    ];
    expect(checks.every(Boolean)).toBe(true);
  });

  it('accepts a request with every GA member, beta members only on a beta request, and refuses the rest', () => {
    const base = { model: 'claude-opus-5-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] };
    const ga = {
      ...base,
      cache_control: { type: 'ephemeral' },
      output_config: { effort: 'high' },
      metadata: { user_id: 'u' },
      system: [{ type: 'text', text: 's' }],
      messages: [...base.messages, { role: 'system', content: 'mid-conversation' }, { role: 'user', content: 'again' }],
    };
    expect(mockMessages(ga).stop_reason).toBe('end_turn');
    const beta = { ...base, context_management: { edits: [] } };
    expect(() => mockMessages(beta)).toThrow(/context_management: Extra inputs are not permitted/);
    expect(mockMessages(beta, { beta: true }).model).toBe('claude-opus-5-5');
    for (const moat of [{ moat_att: 'v1…' }, { anti_distillation: ['fake_tools'] }, { some_future_member: 1 }])
      expect(() => mockMessages({ ...base, ...moat }, { beta: true })).toThrow(/Extra inputs are not permitted/);
    expect(() => mockMessages({ ...base, model: 'claude-does-not-exist' })).toThrow(
      expect.objectContaining({ status: 404, type: 'not_found_error' }),
    );
    expect(() => mockMessages({ ...base, messages: [{ role: 'user', content: [{ type: 'future_block' }] }] })).toThrow(
      /messages\.0\.content\.0\.type/,
    );
    expect(mockCountTokens({ model: base.model, messages: base.messages }).input_tokens).toBeGreaterThan(0);
    expect(() => mockCountTokens(base)).toThrow(/max_tokens: Extra inputs/);
  });
});
