import { describeValue, isRecord } from '../internal/describe.js';
import { MessagesError } from './errors.js';
import type { MessagesRequest, MessagesResponse } from './types.js';

type Path = string;

/**
 * Deepest JSON nesting the walk of {@link parseMessagesRequest} and {@link parseMessagesResponse}
 * enters, counting objects and arrays with the body itself at 1 (as the verifier's
 * `maxJsonDepth` counts); 512, the nesting the native addon's JSON check takes. Only content
 * blocks nest without bound (a `tool_result` holds blocks), so this bounds that recursion
 * well before the call stack runs out: about 250 levels of `tool_result` in a request.
 */
export const MESSAGES_MAX_DEPTH = 512;

const join = (path: Path, member: string | number): Path => (path === '' ? String(member) : `${path}.${member}`);

function fail(path: Path, expected: string, value: unknown): never {
  throw new MessagesError('ERR_MESSAGES_SHAPE', path, expected, describeValue(value));
}

/** Refuses a container (`what`) at JSON depth `depth` past {@link MESSAGES_MAX_DEPTH}. */
function bound(depth: number, path: Path, what: string): void {
  if (depth > MESSAGES_MAX_DEPTH) {
    throw new MessagesError('ERR_MESSAGES_DEPTH', path, `nesting at most ${MESSAGES_MAX_DEPTH} deep`, `${what} at depth ${depth}`);
  }
}

function object(value: unknown, path: Path): Record<string, unknown> {
  if (!isRecord(value)) fail(path, 'an object', value);
  return value;
}

function string(value: unknown, path: Path): void {
  if (typeof value !== 'string') fail(path, 'a string', value);
}

function optional(record: Record<string, unknown>, member: string, path: Path, check: (value: unknown, path: Path) => void): void {
  const value = record[member];
  if (value !== undefined) check(value, join(path, member));
}

function nullable(check: (value: unknown, path: Path) => void): (value: unknown, path: Path) => void {
  return (value, path) => {
    if (value !== null) check(value, path);
  };
}

function number(value: unknown, path: Path): void {
  if (typeof value !== 'number' || !Number.isFinite(value)) fail(path, 'a number', value);
}

function boolean(value: unknown, path: Path): void {
  if (typeof value !== 'boolean') fail(path, 'a boolean', value);
}

function array(value: unknown, path: Path, item?: (value: unknown, path: Path) => void): unknown[] {
  if (!Array.isArray(value)) fail(path, 'an array', value);
  if (item !== undefined) for (const [i, v] of value.entries()) item(v, join(path, i));
  return value;
}

/**
 * Checks the members of a content block this model names; other members and block types pass.
 * `depth` is the block's JSON depth: a `tool_result` nests blocks, the one recursion here.
 */
function block(value: unknown, path: Path, depth: number): void {
  const b = object(value, path);
  bound(depth, path, 'an object');
  string(b.type, join(path, 'type'));
  switch (b.type) {
    case 'text':
    case 'connector_text':
      string(b.text, join(path, 'text'));
      optional(b, 'citations', path, nullable(array));
      break;
    case 'thinking':
      string(b.thinking, join(path, 'thinking'));
      optional(b, 'signature', path, string);
      break;
    case 'redacted_thinking':
      string(b.data, join(path, 'data'));
      break;
    case 'tool_use':
    case 'server_tool_use':
      string(b.id, join(path, 'id'));
      string(b.name, join(path, 'name'));
      break;
    case 'tool_result':
      string(b.tool_use_id, join(path, 'tool_use_id'));
      optional(b, 'is_error', path, boolean);
      optional(b, 'content', path, (content, at) => {
        if (typeof content !== 'string') blocks(content, at, depth + 1);
      });
      break;
    case 'image':
    case 'document':
      object(b.source, join(path, 'source'));
      break;
    default:
  }
  optional(b, 'cache_control', path, nullable(object));
}

/** An array of content blocks at JSON depth `depth`. */
function blocks(value: unknown, path: Path, depth: number): void {
  const items = array(value, path);
  bound(depth, path, 'an array');
  for (const [i, item] of items.entries()) block(item, join(path, i), depth + 1);
}

/** A `content` or `system` member at JSON depth `depth`: a string, or an array of blocks. */
function content(value: unknown, path: Path, depth: number): void {
  if (typeof value !== 'string') blocks(value, path, depth);
}

function message(value: unknown, path: Path): void {
  const m = object(value, path);
  string(m.role, join(path, 'role'));
  // The body is at depth 1, `messages` 2, a message 3, its content 4.
  if (m.role !== 'system' || m.content !== undefined) content(m.content, join(path, 'content'), 4);
}

function tool(value: unknown, path: Path): void {
  const t = object(value, path);
  if (t.type === undefined || t.type === null || t.type === 'custom') string(t.name, join(path, 'name'));
  else optional(t, 'name', path, string);
  optional(t, 'type', path, nullable(string));
  optional(t, 'description', path, string);
  optional(t, 'input_schema', path, object);
  optional(t, 'cache_control', path, nullable(object));
}

/**
 * Checks that `value` has the shape of a Messages request wherever this model names a member
 * (model, messages and their content blocks, system, tools, max_tokens, stream, sampling
 * settings, Moat's `anti_distillation`) and returns it typed. Members and block types it
 * does not name pass unchecked, as the API may accept them. `max_tokens` is optional here
 * because `count_tokens` takes the same body without it.
 *
 * @throws {MessagesError} `ERR_MESSAGES_SHAPE` naming the first wrong member's path;
 *   `ERR_MESSAGES_DEPTH` for content blocks nested past {@link MESSAGES_MAX_DEPTH}.
 *
 * @example
 * ```ts
 * const request = parseMessagesRequest(JSON.parse(body));
 * request.messages[0]?.role; // typed
 * ```
 */
export function parseMessagesRequest(value: unknown): MessagesRequest {
  const r = object(value, '');
  string(r.model, 'model');
  array(r.messages, 'messages', message);
  optional(r, 'max_tokens', '', (v, at) => {
    if (typeof v !== 'number' || !Number.isInteger(v)) fail(at, 'an integer', v);
  });
  optional(r, 'system', '', (v, at) => content(v, at, 2));
  optional(r, 'tools', '', (v, at) => array(v, at, tool));
  optional(r, 'stream', '', boolean);
  for (const member of ['temperature', 'top_k', 'top_p']) optional(r, member, '', number);
  optional(r, 'stop_sequences', '', (v, at) => array(v, at, string));
  optional(r, 'anti_distillation', '', (v, at) => array(v, at, string));
  return r as unknown as MessagesRequest;
}

/**
 * Checks that `value` has the shape of a Messages response (id, model, content blocks,
 * stop reason, usage) and returns it typed; unknown members and block types pass.
 *
 * @throws {MessagesError} `ERR_MESSAGES_SHAPE` naming the first wrong member's path;
 *   `ERR_MESSAGES_DEPTH` for content blocks nested past {@link MESSAGES_MAX_DEPTH}.
 */
export function parseMessagesResponse(value: unknown): MessagesResponse {
  const r = object(value, '');
  string(r.id, 'id');
  optional(r, 'model', '', string);
  blocks(r.content, 'content', 2);
  optional(r, 'stop_reason', '', nullable(string));
  const usage = object(r.usage ?? {}, 'usage');
  optional(usage, 'output_tokens', 'usage', number);
  return r as unknown as MessagesResponse;
}
