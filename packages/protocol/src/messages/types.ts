/**
 * The Anthropic Messages model as Moat reads and writes it: requests, responses, content
 * blocks and stream events. The shapes follow the official `@anthropic-ai/sdk` definitions
 * (a type test checks that every SDK request, response and stream event is accepted here),
 * but they are open: members and block types this model does not name are kept as they came,
 * because the API grows every month and a gateway must pass what it does not understand.
 *
 * No shape declares an index signature (an SDK interface would not be assignable to one);
 * unknown members survive because every function of this module copies objects with spread
 * and never rebuilds them member by member.
 */

/** Any JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [member: string]: JsonValue };

/** A JSON object with members this model does not name. */
export type JsonObject = { [member: string]: unknown };

/** `cache_control` of a block, a tool or a system part. */
export interface CacheControl {
  type: 'ephemeral' | (string & {});
  ttl?: string;
}

/** A `text` block (request and response). */
export interface TextBlock {
  type: 'text';
  text: string;
  citations?: unknown[] | null;
  cache_control?: CacheControl | null;
}

/** A `thinking` block: the model's reasoning with the signature that lets it come back. */
export interface ThinkingBlock {
  type: 'thinking';
  thinking: string;
  signature: string;
}

/** A `redacted_thinking` block: opaque, encrypted reasoning. The API defines no `signature` on it. */
export interface RedactedThinkingBlock {
  type: 'redacted_thinking';
  data: string;
}

/** A `connector_text` block, which Moat signs like thinking. */
export interface ConnectorTextBlock {
  type: 'connector_text';
  text: string;
  signature?: string;
}

/** A client tool call. */
export interface ToolUseBlock {
  type: 'tool_use';
  id: string;
  name: string;
  input: unknown;
  cache_control?: CacheControl | null;
}

/** A server tool call (web search, code execution, …). */
export interface ServerToolUseBlock {
  type: 'server_tool_use';
  id: string;
  name: string;
  input: unknown;
  cache_control?: CacheControl | null;
}

/** The result of a client tool call, sent back in a `user` message. */
export interface ToolResultBlock {
  type: 'tool_result';
  tool_use_id: string;
  content?: string | unknown[];
  is_error?: boolean;
  cache_control?: CacheControl | null;
}

/** An `image` block. */
export interface ImageBlock {
  type: 'image';
  source: unknown;
  cache_control?: CacheControl | null;
}

/** A `document` block. */
export interface DocumentBlock {
  type: 'document';
  source: unknown;
  cache_control?: CacheControl | null;
}

/**
 * Any other block, present or future: server tool results (`web_search_tool_result`,
 * `code_execution_tool_result`, …), `search_result`, `container_upload`, and types the API
 * adds later. Kept exactly as it came.
 */
export interface OtherBlock {
  type: string;
}

/** The block types this model names. */
export type KnownBlock =
  | TextBlock
  | ThinkingBlock
  | RedactedThinkingBlock
  | ConnectorTextBlock
  | ToolUseBlock
  | ServerToolUseBlock
  | ToolResultBlock
  | ImageBlock
  | DocumentBlock;

/** A content block of a request or a response. */
export type ContentBlock = KnownBlock | OtherBlock;

/** The `type` of every named block. */
export type KnownBlockType = KnownBlock['type'];

/** One message of a request's conversation. */
export interface MessageParam {
  role: 'user' | 'assistant' | 'system' | (string & {});
  /** Always present on `user` and `assistant` messages; a beta `system` message may leave it out. */
  content?: string | ContentBlock[];
}

/**
 * A tool definition: a client tool (`name`, `input_schema`), a server tool (`type`, `name`)
 * or a toolset (`type` only).
 */
export interface ToolDefinition {
  name?: string;
  type?: string | null;
  description?: string;
  input_schema?: unknown;
  cache_control?: CacheControl | null;
}

/** A Messages API request body (`POST /v1/messages`, `/v1/messages/count_tokens`). */
export interface MessagesRequest {
  model: string;
  messages: MessageParam[];
  max_tokens?: number;
  system?: string | ContentBlock[];
  tools?: ToolDefinition[];
  tool_choice?: unknown;
  stream?: boolean;
  thinking?: unknown;
  metadata?: unknown;
  temperature?: number;
  top_k?: number;
  top_p?: number;
  stop_sequences?: string[];
  /** Moat's anti-distillation request (SPEC.md §7); never forwarded upstream. */
  anti_distillation?: string[];
}

/** Token usage of a response. */
export interface Usage {
  input_tokens?: number | null;
  output_tokens: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
}

/** A Messages API response (the JSON answer, or what a stream assembles to). */
export interface MessagesResponse {
  id: string;
  type: 'message';
  role: 'assistant';
  model: string;
  content: ContentBlock[];
  stop_reason: string | null;
  stop_sequence: string | null;
  usage: Usage;
}

/** A delta of a `content_block_delta` event. */
export type BlockDelta =
  | { type: 'text_delta'; text: string }
  | { type: 'thinking_delta'; thinking: string }
  | { type: 'signature_delta'; signature: string }
  | { type: 'input_json_delta'; partial_json: string }
  | { type: 'citations_delta'; citation: unknown }
  | { type: string };

/** The data of each event of a Messages stream. */
export interface MessageStartEvent {
  type: 'message_start';
  message: MessagesResponse;
}
export interface ContentBlockStartEvent {
  type: 'content_block_start';
  index: number;
  content_block: ContentBlock;
}
export interface ContentBlockDeltaEvent {
  type: 'content_block_delta';
  index: number;
  delta: BlockDelta;
}
export interface ContentBlockStopEvent {
  type: 'content_block_stop';
  index: number;
}
export interface MessageDeltaEvent {
  type: 'message_delta';
  delta: { stop_reason?: string | null; stop_sequence?: string | null };
  usage?: Partial<Usage>;
}
export interface MessageStopEvent {
  type: 'message_stop';
}
export interface PingEvent {
  type: 'ping';
}
export interface ErrorEvent {
  type: 'error';
  error: { type: string; message: string };
}
/** An event type this model does not name (kept and passed on). */
export interface OtherEvent {
  type: string;
}

/** The data of a stream event. */
export type StreamEventData =
  | MessageStartEvent
  | ContentBlockStartEvent
  | ContentBlockDeltaEvent
  | ContentBlockStopEvent
  | MessageDeltaEvent
  | MessageStopEvent
  | PingEvent
  | ErrorEvent
  | OtherEvent;
