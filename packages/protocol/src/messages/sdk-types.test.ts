// The model must accept whatever the official SDK sends and receives: an SDK update that
// adds a shape this model would reject fails `pnpm typecheck` here.
import type Anthropic from '@anthropic-ai/sdk';
import { describe, expect, it } from 'vitest';
import type { ContentBlock, MessageParam, MessagesRequest, MessagesResponse, StreamEventData, ToolDefinition } from './types.js';

/** `true` only when every `A` is a `B`; a failing pair is a type error on its line. */
type Accepts<B, A extends B> = A extends B ? true : never;

describe('the Messages model and @anthropic-ai/sdk', () => {
  it('accepts every SDK response, block and stream event, and every SDK request', () => {
    const checks: true[] = [
      true satisfies Accepts<MessagesResponse, Anthropic.Message>,
      true satisfies Accepts<ContentBlock, Anthropic.ContentBlock>,
      true satisfies Accepts<StreamEventData, Anthropic.RawMessageStreamEvent>,
      true satisfies Accepts<MessagesRequest, Anthropic.MessageCreateParamsNonStreaming>,
      true satisfies Accepts<MessagesRequest, Anthropic.MessageCreateParamsStreaming>,
      true satisfies Accepts<MessagesRequest, Anthropic.MessageCountTokensParams>,
      true satisfies Accepts<MessageParam, Anthropic.MessageParam>,
      true satisfies Accepts<ContentBlock, Anthropic.ContentBlockParam>,
      true satisfies Accepts<ContentBlock, Anthropic.Beta.BetaContentBlockParam>,
      true satisfies Accepts<ToolDefinition, Anthropic.ToolUnion>,
      true satisfies Accepts<MessagesRequest, Anthropic.Beta.MessageCreateParamsNonStreaming>,
    ];
    expect(checks.every(Boolean)).toBe(true);
  });
});
