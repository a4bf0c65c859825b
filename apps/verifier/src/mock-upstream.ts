import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  chunked,
  type DeltaSplitter,
  formatStreamEvent,
  type MessagesResponse,
  type StreamEvent,
  streamEventsOf,
} from '@moat/protocol/messages';
import { errorMessage } from '@moat/protocol/support';
import { ApiError } from './errors.js';
import { MockBatchStore, mockBatchRoute } from './mock-batches.js';
import { MockFileStore } from './mock-files.js';

/**
 * Top-level members of a GA Messages request (`@anthropic-ai/sdk`'s `MessageCreateParams`, plus
 * the sampling settings older clients send). `mock-upstream.sdk.test.ts` fails to type-check
 * when the SDK gains a member missing here.
 */
export const MESSAGES_MEMBERS = [
  'max_tokens',
  'messages',
  'model',
  'cache_control',
  'container',
  'diagnostics',
  'inference_geo',
  'metadata',
  'output_config',
  'service_tier',
  'speed',
  'stop_sequences',
  'stream',
  'system',
  'thinking',
  'tool_choice',
  'tools',
  'user_profile_id',
  'workspace_id',
  'temperature',
  'top_k',
  'top_p',
] as const;

/** Members only beta requests carry (`anthropic-beta` header or `?beta=true`), from the SDK's beta params. */
export const BETA_MESSAGES_MEMBERS = [
  'billing_policy',
  'compaction',
  'context_management',
  'fallback_credit_token',
  'fallbacks',
  'mcp_servers',
  'output_format',
  'thread',
] as const;

/** Content block types a request may carry (GA and beta), from the SDK's block params. */
export const REQUEST_BLOCK_TYPES = [
  'text',
  'image',
  'document',
  'search_result',
  'thinking',
  'redacted_thinking',
  'tool_use',
  'tool_result',
  'server_tool_use',
  'web_search_tool_result',
  'web_fetch_tool_result',
  'advisor_tool_result',
  'code_execution_tool_result',
  'bash_code_execution_tool_result',
  'text_editor_code_execution_tool_result',
  'tool_search_tool_result',
  'mcp_tool_use',
  'mcp_tool_result',
  'mcp_tool_listing',
  'container_upload',
  'compaction',
  'tool_addition',
  'tool_removal',
  'fallback',
  'connector_text',
] as const;

/**
 * The models the mock serves: the current models the SDK names (checked against its `Model`
 * type) and the mock's own family `claude-mock`, `claude-mock-*` — names containing
 * `overloaded` answer 529, names containing `slow` stream slowly, `midstream` breaks off
 * after `message_start`. Any other name is 404 `not_found_error`, as the real API answers.
 */
export const MOCK_MODELS = [
  'claude-fable-5-2',
  'claude-mythos-5-2',
  'claude-haiku-5-5',
  'claude-sonnet-5-5',
  'claude-fable-5-1',
  'claude-opus-5-5',
  'claude-mythos-5-1',
  'claude-sonnet-5',
  'claude-fable-5',
  'claude-mythos-5',
  'claude-opus-5',
  'claude-opus-4-8',
  'claude-opus-4-7',
  'claude-mythos-preview',
  'claude-opus-4-6',
  'claude-sonnet-4-6',
  'claude-haiku-4-5',
  'claude-haiku-4-5-20251001',
  'claude-opus-4-5',
  'claude-opus-4-5-20251101',
  'claude-sonnet-4-5',
  'claude-sonnet-4-5-20250929',
] as const;

const GA = new Set<string>(MESSAGES_MEMBERS);
const BETA = new Set<string>(BETA_MESSAGES_MEMBERS);
const BLOCK_TYPES = new Set<string>(REQUEST_BLOCK_TYPES);
const COUNT_TOKENS_EXCLUDED = new Set([
  'max_tokens',
  'stream',
  'stop_sequences',
  'temperature',
  'top_k',
  'top_p',
  'metadata',
  'service_tier',
]);

/** Whether the mock serves `model`. */
export function isMockModel(model: string): boolean {
  return (MOCK_MODELS as readonly string[]).includes(model) || model === 'claude-mock' || model.startsWith('claude-mock-');
}

type Block = { type: string } & Record<string, unknown>;

/** A non-streaming Messages response. */
export type MockResponse = MessagesResponse & { content: Block[]; stop_reason: string };

/** Options of {@link mockMessages}. */
export interface MockRequestOptions {
  /** The request is a beta request (`anthropic-beta` header or `?beta=true`): beta members are allowed. */
  readonly beta?: boolean;
}

/**
 * The mock's own signature on the thinking it returns. Like the real API it refuses thinking
 * sent back without it, so a gateway that loses the upstream's signatures fails here too.
 */
export function mockThinkingSignature(thinking: string): string {
  return `mock-${createHash('sha256').update(`moat-mock-upstream|${thinking}`).digest('base64url').slice(0, 32)}`;
}

/** The opaque data of the mock's `redacted_thinking` blocks (asked for with `[redact]` in the prompt). */
export function mockRedactedData(text: string): string {
  return `mockred_${createHash('sha256').update(`moat-mock-redacted|${text}`).digest('base64url').slice(0, 40)}`;
}

const REDACTED_DATA = /^mockred_[A-Za-z0-9_-]{40}$/;

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((b) => (typeof b === 'object' && b !== null ? ((b as Block).text ?? (b as Block).content ?? '') : ''))
    .filter((t): t is string => typeof t === 'string')
    .join(' ');
}

/**
 * What the user wrote: the text without the `<system-reminder>` blocks clients such as
 * Claude Code add to a turn (tool lists, agent types), which name tools the user never asked for.
 */
function userTextOf(content: unknown): string {
  return textOf(content)
    .replace(/<system-reminder>[\s\S]*?(<\/system-reminder>|$)/g, ' ')
    .trim();
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const invalid = (message: string) => new ApiError(400, 'invalid_request_error', message);

/** What an error message quotes of the request: at most 100 characters, so an answer never echoes megabytes. */
const quoted = (value: unknown): string => {
  const text = typeof value === 'string' ? value : String(JSON.stringify(value) ?? value);
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text);
};

/** Tool names as the real API takes them. */
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,128}$/;

/** The tools' names: a string that is not a valid name is refused as the API does. */
function validateTools(tools: unknown): void {
  if (!Array.isArray(tools)) return;
  for (const [i, tool] of tools.entries()) {
    const name = (tool as { name?: unknown } | null)?.name;
    if (typeof name === 'string' && !TOOL_NAME.test(name))
      throw invalid(`tools.${i}.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$', got ${quoted(name)}`);
  }
}

/** Checks a request body as the real API does; returns it with its messages typed. */
function validate(
  body: unknown,
  options: MockRequestOptions & { countTokens?: boolean },
): Record<string, unknown> & { model: string; messages: Array<{ role: string; content: unknown }> } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('body: Input should be a valid dictionary');
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b)) {
    const allowed =
      (GA.has(key) || (options.beta === true && BETA.has(key))) && !(options.countTokens === true && COUNT_TOKENS_EXCLUDED.has(key));
    if (!allowed) throw invalid(`${quoted(key).slice(1, -1)}: Extra inputs are not permitted`);
  }
  if (typeof b.model !== 'string' || b.model === '') throw invalid('model: Field required');
  if (options.countTokens !== true && (!Number.isSafeInteger(b.max_tokens) || (b.max_tokens as number) < 1))
    throw invalid('max_tokens: Input should be a positive integer');
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw invalid('messages: at least one message is required');
  for (const [i, m] of (b.messages as unknown[]).entries()) {
    const msg = m as { role?: unknown; content?: unknown } | null;
    if (msg?.role !== 'user' && msg?.role !== 'assistant' && msg?.role !== 'system')
      throw invalid(`messages.${i}.role: Input should be 'user', 'assistant' or 'system'`);
    if (msg.role === 'system' && msg.content === undefined) continue;
    if (typeof msg.content !== 'string' && !Array.isArray(msg.content))
      throw invalid(`messages.${i}.content: Input should be a valid string or list`);
    if (!Array.isArray(msg.content)) continue;
    for (const [j, block] of (msg.content as Block[]).entries()) {
      if (typeof block !== 'object' || block === null || !BLOCK_TYPES.has(block.type))
        throw invalid(`messages.${i}.content.${j}.type: Input tag ${quoted(block?.type)} does not match any of the expected tags`);
      if (msg.role === 'assistant' && block.type === 'thinking' && block.signature !== mockThinkingSignature(String(block.thinking)))
        throw invalid(`messages.${i}.content.${j}: Invalid \`signature\` in \`thinking\` block`);
      if (msg.role === 'assistant' && block.type === 'redacted_thinking' && !REDACTED_DATA.test(String(block.data)))
        throw invalid(`messages.${i}.content.${j}: Invalid \`data\` in \`redacted_thinking\` block`);
      if (block.type === 'redacted_thinking' && 'signature' in block)
        throw invalid(`messages.${i}.content.${j}.signature: Extra inputs are not permitted`);
    }
  }
  validateTools(b.tools);
  if (!isMockModel(b.model)) throw new ApiError(404, 'not_found_error', `model: ${b.model.slice(0, 100)}`);
  if (b.model.includes('overloaded')) throw new ApiError(529, 'overloaded_error', 'Overloaded');
  return b as Record<string, unknown> & { model: string; messages: Array<{ role: string; content: unknown }> };
}

/** A word of the user's text that looks like a path (`/etc/hosts`, `notes.txt`), else the whole text. */
function pathIn(text: string): string {
  return (
    text
      .split(/\s+/)
      .find((w) => /[/\\]|\.\w{1,8}$/.test(w))
      ?.replace(/[.,;:!?'"`)]+$/, '') ?? text
  );
}

/**
 * A tool input that follows the tool's `input_schema` (JSON Schema, as clients send it): every
 * required member, of its type — strings from the user's words (a path-like word for a member
 * named like a path or file), the first `enum` value, the minimum of a number, nested objects
 * and arrays filled the same way. No schema with properties: `{ query }`, the text.
 */
export function toolInput(schema: unknown, text: string, name = ''): unknown {
  const s = (typeof schema === 'object' && schema !== null ? schema : {}) as Record<string, unknown>;
  if (Array.isArray(s.enum) && s.enum.length > 0) return s.enum[0];
  if (s.const !== undefined) return s.const;
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  switch (type) {
    case 'string':
      return /path|file|dir/i.test(name) ? pathIn(text) : text.slice(0, 200);
    case 'integer':
    case 'number':
      return typeof s.minimum === 'number' ? s.minimum : 1;
    case 'boolean':
      return false;
    case 'array': {
      const count = typeof s.minItems === 'number' ? s.minItems : 0;
      return Array.from({ length: count }, () => toolInput(s.items, text, name));
    }
    case 'null':
      return null;
    default:
      break;
  }
  const properties = s.properties;
  if (typeof properties !== 'object' || properties === null) {
    if (name === '') return { query: text.slice(0, 60) };
    return type === 'object' ? {} : text;
  }
  const props = properties as Record<string, unknown>;
  const required = Array.isArray(s.required) ? s.required.filter((r): r is string => typeof r === 'string' && r in props) : [];
  return Object.fromEntries(required.map((key) => [key, toolInput(props[key], text, key)]));
}

/**
 * Validates a request as strictly as the real Messages API (unknown top-level members are
 * "Extra inputs are not permitted", beta members need a beta request, unknown block types and
 * models are refused), and answers deterministically: thinking when asked, a tool call when
 * the user names a tool or asks to "check" something and tools are given, a text reply
 * otherwise; model names containing "overloaded" get the 529 error.
 *
 * @throws {ApiError} with the status and type the real API would use.
 */
export function mockMessages(body: unknown, options: MockRequestOptions = {}): MockResponse {
  const b = validate(body, options);
  const messages = b.messages.filter((m) => m.role !== 'system');
  const last = messages.at(-1) ?? { role: 'user', content: '' };
  const lastText = userTextOf(last.content);
  const tools = Array.isArray(b.tools) ? (b.tools as Array<{ name?: unknown }>).filter((t) => typeof t?.name === 'string') : [];
  const toolResult = Array.isArray(last.content) ? (last.content as Block[]).find((x) => x.type === 'tool_result') : undefined;
  const content: Block[] = [];
  const thinkingType = (b.thinking as { type?: unknown } | undefined)?.type;
  if (thinkingType === 'enabled' || thinkingType === 'adaptive') {
    const thought = `The user asks: "${lastText.slice(0, 80)}". I will answer briefly.`;
    content.push({ type: 'thinking', thinking: thought, signature: mockThinkingSignature(thought) });
    if (lastText.includes('[redact]')) content.push({ type: 'redacted_thinking', data: mockRedactedData(lastText) });
  }
  let stop = 'end_turn';
  // A tool is named as a word of its own: "Read" in "Readme" is not a request for it.
  const named = tools.find((t) => new RegExp(`(^|[^A-Za-z0-9_])${escapeRegExp(t.name as string)}($|[^A-Za-z0-9_])`).test(lastText));
  const wanted = toolResult === undefined ? (named ?? (/\bcheck\b/i.test(lastText) ? tools[0] : undefined)) : undefined;
  if (wanted !== undefined) {
    const id = `toolu_${createHash('sha256').update(lastText).digest('hex').slice(0, 20)}`;
    content.push({
      type: 'tool_use',
      id,
      name: wanted.name as string,
      input: toolInput((wanted as { input_schema?: unknown }).input_schema, lastText),
    });
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
  return {
    id: `msg_${createHash('sha256').update(JSON.stringify(b.messages)).digest('hex').slice(0, 24)}`,
    type: 'message',
    role: 'assistant',
    model: b.model,
    content,
    stop_reason: stop,
    stop_sequence: null,
    usage: { input_tokens: inputTokens(b), output_tokens: Math.ceil(JSON.stringify(content).length / 4) },
  };
}

function inputTokens(body: Record<string, unknown>): number {
  return Math.ceil(JSON.stringify(body).length / 4);
}

/**
 * `POST /v1/messages/count_tokens`: the same checks as a message (without `max_tokens` and
 * the generation settings), and the token count.
 *
 * @throws {ApiError} as {@link mockMessages}.
 */
export function mockCountTokens(body: unknown, options: MockRequestOptions = {}): { input_tokens: number } {
  return { input_tokens: inputTokens(validate(body, { ...options, countTokens: true })) };
}

/** `GET /v1/models`: the mock's models in the API's list shape. */
export function mockModels(): {
  data: Array<{ type: 'model'; id: string; display_name: string; created_at: string }>;
  has_more: false;
  first_id: string;
  last_id: string;
} {
  const data = ['claude-mock', ...MOCK_MODELS].map((id) => ({
    type: 'model' as const,
    id,
    display_name: id,
    created_at: '2026-01-01T00:00:00Z',
  }));
  return { data, has_more: false, first_id: data[0]?.id ?? '', last_id: data.at(-1)?.id ?? '' };
}

/**
 * The same response as the Messages SSE event sequence, with texts, thinking and tool input
 * split into deltas of `split` (12 UTF-16 units by default, so tool input arrives in pieces as
 * it does from the real API).
 */
export function mockEvents(response: MockResponse, split: DeltaSplitter = chunked(12)): Generator<StreamEvent> {
  return streamEventsOf(response, split);
}

/** Options of {@link handleMockRequest} and {@link startMockUpstream}. */
export interface MockUpstreamOptions {
  /** The key the mock requires in `x-api-key` (any key when unset). */
  readonly apiKey?: string;
  /** Milliseconds between stream events for models whose name contains `slow` (default 150). */
  readonly slowEventMs?: number;
  /** Where Message Batches live (one per server; {@link startMockUpstream} makes it). */
  readonly batches?: MockBatchStore;
  /** Where uploaded files live (one per server; {@link startMockUpstream} makes it). */
  readonly files?: MockFileStore;
}

/** Answers a Files route of the mock; `false` when the path is none. */
function serveFiles(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  raw: Buffer,
  options: MockUpstreamOptions & { requestId: string },
): boolean {
  const store = options.files;
  const match = /^\/v1\/files(?:\/([^/]+)(\/content)?)?$/.exec(path);
  if (store === undefined || match === null) return false;
  const [, id, content] = match;
  const method = req.method ?? 'GET';
  if (id === undefined && method === 'POST')
    sendJson(res, 200, store.upload(raw, String(req.headers['content-type'] ?? '')), options.requestId);
  else if (id === undefined && method === 'GET') sendJson(res, 200, store.list(), options.requestId);
  else if (id !== undefined && content !== undefined && method === 'GET') {
    const bytes = store.content(decodeURIComponent(id));
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length, 'request-id': options.requestId });
    res.end(bytes);
  } else if (id !== undefined && content === undefined && method === 'GET')
    sendJson(res, 200, store.metadata(decodeURIComponent(id)), options.requestId);
  else if (id !== undefined && content === undefined && method === 'DELETE')
    sendJson(res, 200, store.delete(decodeURIComponent(id)), options.requestId);
  else return false;
  return true;
}

/** Answers a Message Batches route of the mock; `false` when the path is none. */
function serveBatches(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  raw: Buffer,
  options: MockUpstreamOptions & { beta: boolean; requestId: string },
): boolean {
  const route = mockBatchRoute(req.method ?? 'GET', path);
  if (route === undefined || options.batches === undefined) return false;
  const store = options.batches;
  const id = route.id ?? '';
  const origin = `http://${req.headers.host ?? '127.0.0.1'}`;
  switch (route.action) {
    case 'create': {
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch (error) {
        throw invalid(`body: Invalid JSON (${errorMessage(error).slice(0, 200)})`);
      }
      sendJson(
        res,
        200,
        store.create(body, (params) => mockMessages(params, { beta: options.beta }), origin),
        options.requestId,
      );
      break;
    }
    case 'list':
      sendJson(res, 200, store.list(), options.requestId);
      break;
    case 'retrieve':
      sendJson(res, 200, store.retrieve(id), options.requestId);
      break;
    case 'cancel':
      sendJson(res, 200, store.cancel(id), options.requestId);
      break;
    case 'delete':
      sendJson(res, 200, store.delete(id), options.requestId);
      break;
    default: {
      const text = store.results(id);
      res.writeHead(200, {
        'content-type': 'application/x-jsonl',
        'content-length': Buffer.byteLength(text),
        'request-id': options.requestId,
      });
      res.end(text);
    }
  }
  return true;
}

function sendJson(res: ServerResponse, status: number, body: unknown, requestId: string): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'request-id': requestId });
  res.end(text);
}

/**
 * Serves the mock as the Anthropic API over HTTP: `POST /v1/messages` (JSON and SSE),
 * `POST /v1/messages/count_tokens`, `GET /v1/models` and `GET /v1/models/{id}`, Message
 * Batches (create, list, retrieve, cancel, delete, results) when `options.batches` is given,
 * the Files API (upload, list, metadata, content, delete) when `options.files` is given,
 * errors in the API's shape with a `request-id` header.
 */
export async function handleMockRequest(req: IncomingMessage, res: ServerResponse, options: MockUpstreamOptions = {}): Promise<void> {
  const requestId = `req_mock_${createHash('sha256').update(`${Date.now()}${Math.random()}`).digest('hex').slice(0, 20)}`;
  const fail = (error: ApiError) => sendJson(res, error.status, error.body(), requestId);
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const url = new URL(req.url ?? '/', 'http://mock');
  if (options.apiKey !== undefined && req.headers['x-api-key'] !== options.apiKey)
    return fail(new ApiError(401, 'authentication_error', 'invalid x-api-key'));
  const beta = req.headers['anthropic-beta'] !== undefined || url.searchParams.get('beta') === 'true';
  try {
    if (req.method === 'GET' && url.pathname === '/v1/models') return sendJson(res, 200, mockModels(), requestId);
    if (req.method === 'GET' && url.pathname.startsWith('/v1/models/')) {
      const model = mockModels().data.find((m) => m.id === decodeURIComponent(url.pathname.slice('/v1/models/'.length)));
      if (model === undefined) throw new ApiError(404, 'not_found_error', `model: ${url.pathname.slice(11, 111)}`);
      return sendJson(res, 200, model, requestId);
    }
    if (serveBatches(req, res, url.pathname, Buffer.concat(chunks), { ...options, beta, requestId })) return;
    if (serveFiles(req, res, url.pathname, Buffer.concat(chunks), { ...options, requestId })) return;
    if (req.method !== 'POST' || (url.pathname !== '/v1/messages' && url.pathname !== '/v1/messages/count_tokens'))
      throw new ApiError(404, 'not_found_error', `Not found: ${req.method} ${quoted(url.pathname).slice(1, -1)}`);
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (error) {
      throw invalid(`body: Invalid JSON (${errorMessage(error)})`);
    }
    if (url.pathname === '/v1/messages/count_tokens') return sendJson(res, 200, mockCountTokens(body, { beta }), requestId);
    const response = mockMessages(body, { beta });
    if ((body as { stream?: unknown }).stream !== true) return sendJson(res, 200, response, requestId);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': requestId });
    const pause = response.model.includes('slow') ? (options.slowEventMs ?? 150) : 0;
    for (const ev of mockEvents(response)) {
      if (res.destroyed) return;
      res.write(formatStreamEvent(ev));
      if (ev.event === 'message_start') res.write(formatStreamEvent({ event: 'ping', data: { type: 'ping' } }));
      if (ev.event === 'message_start' && response.model.includes('midstream')) {
        res.end(formatStreamEvent({ event: 'error', data: { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } } }));
        return;
      }
      if (pause > 0) await new Promise((r) => setTimeout(r, pause));
    }
    res.end();
  } catch (error) {
    if (error instanceof ApiError) return fail(error);
    throw error;
  }
}

/** A running mock upstream. */
export interface MockUpstream {
  readonly server: Server;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Starts the mock as an HTTP server on `host` (default 127.0.0.1) and a free port: the
 * verifier's embedded upstream, reached over the same HTTP path as a real one.
 */
export async function startMockUpstream(options: MockUpstreamOptions & { host?: string } = {}): Promise<MockUpstream> {
  const withBatches = { ...options, batches: options.batches ?? new MockBatchStore(), files: options.files ?? new MockFileStore() };
  const server = createServer((req, res) => {
    handleMockRequest(req, res, withBatches).catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, 500, new ApiError(500, 'api_error', errorMessage(error)).body(), 'req_mock_error');
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, options.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://${address}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
