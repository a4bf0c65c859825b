import type { IncomingMessage } from 'node:http';
import { MessagesError, type MessagesRequest, parseMessagesRequest } from '@moat/protocol/messages';
import { ApiError } from '../errors.js';
import { readBody } from '../http.js';
import { type BodyLayout, JsonBodyError, parseJsonBody } from '../json-body.js';
import { BETA_MESSAGES_MEMBERS, MESSAGES_MEMBERS } from '../mock-upstream.js';

/**
 * The API's member names Moat's checks read below the top level of a Messages or batch body:
 * a request's own members (a batch's `params`), messages and content blocks, sources and the
 * files they name, tool calls and tools, thinking blocks, a batch's items. Spelt another way
 * (`FILE_ID`, `Type`), one is refused even alone (see `parseJsonBody`).
 */
export const CHECKED_MEMBER_NAMES: ReadonlySet<string> = new Set<string>([
  ...MESSAGES_MEMBERS,
  ...BETA_MESSAGES_MEMBERS,
  'role',
  'content',
  'type',
  'text',
  'source',
  'data',
  'media_type',
  'file_id',
  'url',
  'name',
  'input',
  'id',
  'tool_use_id',
  'signature',
  'citations',
  'title',
  'context',
  'description',
  'input_schema',
  'custom_id',
  'params',
  'requests',
]);

/** A Messages request as read: its exact bytes, the typed body and its byte layout. */
export interface ReadRequest {
  readonly raw: Buffer;
  readonly body: MessagesRequest;
  readonly layout: BodyLayout;
}

/** Limits of {@link readMessagesRequest}. */
export interface ReadLimits {
  readonly maxBodyBytes: number;
  readonly maxJsonDepth: number;
}

/**
 * Parses a body already read: strict JSON (UTF-8, no duplicate member, bounded nesting) with
 * the shape of a Messages request wherever the model names a member.
 *
 * @throws {ApiError} 400 `invalid_request_error` naming the path.
 */
export function parseMessagesBody(raw: Buffer, maxJsonDepth: number): ReadRequest {
  try {
    const { value, layout } = parseJsonBody(raw, maxJsonDepth, { readNames: CHECKED_MEMBER_NAMES });
    return { raw, body: parseMessagesRequest(value), layout };
  } catch (error) {
    if (error instanceof JsonBodyError || error instanceof MessagesError) {
      const message =
        error instanceof MessagesError
          ? `${error.path === '' ? 'body' : error.path}: expected ${error.expected}, got ${error.received}`
          : `${error.path === '' ? 'body' : error.path}: ${error.message.slice(error.code.length + 2)}`;
      throw new ApiError(400, 'invalid_request_error', message, { cause: error });
    }
    throw error;
  }
}

/**
 * Stage 2: reads and validates a Messages body.
 *
 * @throws {ApiError} 413 over the size limit, 400 for anything that is not a well-formed
 * Messages request, naming the path.
 */
export async function readMessagesRequest(req: IncomingMessage, limits: ReadLimits): Promise<ReadRequest> {
  return parseMessagesBody(await readBody(req, limits.maxBodyBytes), limits.maxJsonDepth);
}
