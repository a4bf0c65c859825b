import { createHash } from 'node:crypto';
import { chunked, type DeltaSplitter, type MessagesResponse, type StreamEvent, streamEventsOf } from '@moat/protocol/messages';
import { ApiError } from './errors.js';

/** Top-level members the Messages API accepts; anything else is refused, as the real API does. */
const ALLOWED = new Set([
  'model',
  'messages',
  'max_tokens',
  'system',
  'metadata',
  'stop_sequences',
  'stream',
  'temperature',
  'top_k',
  'top_p',
  'tools',
  'tool_choice',
  'thinking',
  'service_tier',
  'container',
  'mcp_servers',
]);

interface Block {
  type: string;
  [key: string]: unknown;
}

/** A non-streaming Messages response. */
export interface MockResponse {
  id: string;
  type: 'message';
  role: 'assistant';
  model: string;
  content: Block[];
  stop_reason: string;
  stop_sequence: null;
  usage: { input_tokens: number; output_tokens: number };
}

/**
 * The mock's own signature on the thinking it returns. Like the real API it refuses thinking
 * sent back without it, so a gateway that loses the upstream's signatures fails here too.
 */
export function mockThinkingSignature(thinking: string): string {
  return `mock-${createHash('sha256').update(`moat-mock-upstream|${thinking}`).digest('base64url').slice(0, 32)}`;
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((b) => (typeof b === 'object' && b !== null ? ((b as Block).text ?? (b as Block).content ?? '') : ''))
    .filter((t): t is string => typeof t === 'string')
    .join(' ');
}

/**
 * Validates a request as strictly as the real Messages API (unknown top-level members are
 * "Extra inputs are not permitted"), and answers deterministically: thinking when asked,
 * a tool call when the user names a tool or asks to "check" something and tools are given,
 * a text reply otherwise; model names containing "overloaded" get the 529 error (and the
 * verifier streams the mock's answer slowly for names containing "slow").
 *
 * @throws {ApiError} with the status and type the real API would use.
 */
export function mockMessages(body: unknown): MockResponse {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new ApiError(400, 'invalid_request_error', 'body: Input should be a valid dictionary');
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b))
    if (!ALLOWED.has(key)) throw new ApiError(400, 'invalid_request_error', `${key}: Extra inputs are not permitted`);
  if (typeof b.model !== 'string' || b.model === '') throw new ApiError(400, 'invalid_request_error', 'model: Field required');
  if (!Number.isSafeInteger(b.max_tokens) || (b.max_tokens as number) < 1)
    throw new ApiError(400, 'invalid_request_error', 'max_tokens: Input should be a positive integer');
  if (!Array.isArray(b.messages) || b.messages.length === 0)
    throw new ApiError(400, 'invalid_request_error', 'messages: at least one message is required');
  for (const [i, m] of (b.messages as unknown[]).entries()) {
    const msg = m as { role?: unknown; content?: unknown };
    if (msg?.role !== 'user' && msg?.role !== 'assistant')
      throw new ApiError(400, 'invalid_request_error', `messages.${i}.role: Input should be 'user' or 'assistant'`);
    if (typeof msg.content !== 'string' && !Array.isArray(msg.content))
      throw new ApiError(400, 'invalid_request_error', `messages.${i}.content: Input should be a valid string or list`);
    if (msg.role !== 'assistant' || !Array.isArray(msg.content)) continue;
    for (const [j, block] of (msg.content as Block[]).entries()) {
      if (block?.type === 'thinking' && block.signature !== mockThinkingSignature(String(block.thinking)))
        throw new ApiError(400, 'invalid_request_error', `messages.${i}.content.${j}: Invalid \`signature\` in \`thinking\` block`);
    }
  }
  if (b.model.includes('overloaded')) throw new ApiError(529, 'overloaded_error', 'Overloaded');
  const messages = b.messages as Array<{ role: string; content: unknown }>;
  const last = messages.at(-1) as { role: string; content: unknown };
  const lastText = textOf(last.content).trim();
  const tools = Array.isArray(b.tools) ? (b.tools as Array<{ name?: unknown }>).filter((t) => typeof t?.name === 'string') : [];
  const toolResult = Array.isArray(last.content) ? (last.content as Block[]).find((x) => x.type === 'tool_result') : undefined;
  const content: Block[] = [];
  const thinking = (b.thinking as { type?: unknown } | undefined)?.type === 'enabled';
  if (thinking) {
    const thought = `The user asks: "${lastText.slice(0, 80)}". I will answer briefly.`;
    content.push({ type: 'thinking', thinking: thought, signature: mockThinkingSignature(thought) });
  }
  let stop = 'end_turn';
  const named = tools.find((t) => lastText.includes(t.name as string));
  const wanted = toolResult === undefined ? (named ?? (/\bcheck\b/i.test(lastText) ? tools[0] : undefined)) : undefined;
  if (wanted !== undefined) {
    const id = `toolu_${createHash('sha256').update(lastText).digest('hex').slice(0, 20)}`;
    content.push({ type: 'tool_use', id, name: wanted.name, input: { query: lastText.slice(0, 60) } });
    stop = 'tool_use';
  } else if (toolResult !== undefined) {
    const used = messages
      .flatMap((m) => (Array.isArray(m.content) ? (m.content as Block[]) : []))
      .filter((x) => x.type === 'tool_use')
      .at(-1);
    content.push({
      type: 'text',
      text: `Checked with ${String(used?.name ?? 'a tool')}: ${textOf(toolResult.content) || String(toolResult.content ?? '')}`,
    });
  } else {
    content.push({ type: 'text', text: `Echo: ${lastText}` });
  }
  const input = JSON.stringify(b).length;
  return {
    id: `msg_${createHash('sha256').update(JSON.stringify(b.messages)).digest('hex').slice(0, 24)}`,
    type: 'message',
    role: 'assistant',
    model: b.model,
    content,
    stop_reason: stop,
    stop_sequence: null,
    usage: { input_tokens: Math.ceil(input / 4), output_tokens: Math.ceil(JSON.stringify(content).length / 4) },
  };
}

/**
 * The same response as the Messages SSE event sequence, with texts, thinking and tool input
 * split into deltas of `split` (12 UTF-16 units by default, so tool input arrives in pieces as
 * it does from the real API).
 */
export function mockEvents(response: MockResponse, split: DeltaSplitter = chunked(12)): Generator<StreamEvent> {
  return streamEventsOf(response as unknown as MessagesResponse, split);
}
