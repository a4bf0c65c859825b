import { ATTRIBUTION_PREFIX } from './attribution.js';
import { ENVELOPE_MEMBER } from './envelope.js';
import { ProtocolError } from './errors.js';
import { describeValue, isRecord } from './internal/describe.js';

/** The members of a Messages API request this protocol reads. Everything else passes through. */
export interface MessagesRequest {
  model?: unknown;
  system?: unknown;
  messages?: unknown;
  tools?: unknown;
  anti_distillation?: unknown;
  [member: string]: unknown;
}

/** The top-level request member that asks for anti-distillation measures. */
export const ANTI_DISTILLATION_MEMBER = 'anti_distillation';

/** Anti-distillation measures defined in v1. */
export const ANTI_DISTILLATION_MEASURES = ['fake_tools'] as const;

/**
 * The text the fingerprint is computed from: the first message whose role is `user`; its
 * content if that is a string, else the `text` of its first block of type `text`, else `""`.
 * No user message, or content of any other shape, gives `""`.
 */
export function firstUserText(request: unknown): string {
  if (!isRecord(request) || !Array.isArray(request.messages)) return '';
  for (const message of request.messages) {
    if (!isRecord(message) || message.role !== 'user') continue;
    const content = message.content;
    if (typeof content === 'string') return content;
    if (Array.isArray(content)) {
      for (const block of content) {
        if (isRecord(block) && block.type === 'text') {
          return typeof block.text === 'string' ? block.text : '';
        }
      }
    }
    return '';
  }
  return '';
}

/** Where a request's attribution block stands, if it has one. */
export type AttributionLocation = { readonly status: 'absent' } | { readonly status: 'present'; readonly text: string };

/**
 * Finds the attribution block: `system` is an array whose first element is a `text` block
 * whose text starts with `x-moat:`. Anything else is `absent`. The text is returned
 * unparsed, so the caller decides what a malformed block means.
 */
export function findAttribution(request: unknown): AttributionLocation {
  if (!isRecord(request) || !Array.isArray(request.system)) return { status: 'absent' };
  const first: unknown = request.system[0];
  if (isRecord(first) && first.type === 'text' && typeof first.text === 'string' && first.text.startsWith(ATTRIBUTION_PREFIX)) {
    return { status: 'present', text: first.text };
  }
  return { status: 'absent' };
}

/**
 * Returns a copy of `request` whose `system` starts with the attribution block. A string
 * `system` becomes one text block after it; an existing attribution block is replaced.
 *
 * @throws {ProtocolError} `ERR_ATTRIBUTION_TYPE` for a `system` that is neither a string nor
 *   an array of blocks: it cannot hold the block, and replacing it would drop the caller's text.
 */
export function withAttribution<T extends MessagesRequest>(request: T, block: string): T & { system: unknown[] } {
  const system: unknown = request.system;
  if (system !== undefined && system !== null && typeof system !== 'string' && !Array.isArray(system))
    throw new ProtocolError('ERR_ATTRIBUTION_TYPE', '"system" as a string or an array of blocks', describeValue(system));
  const rest = systemWithoutAttribution(request.system);
  return { ...request, system: [{ type: 'text', text: block }, ...rest] };
}

function systemWithoutAttribution(system: unknown): unknown[] {
  if (typeof system === 'string') return system === '' ? [] : [{ type: 'text', text: system }];
  if (!Array.isArray(system)) return [];
  const first: unknown = system[0];
  if (isRecord(first) && first.type === 'text' && typeof first.text === 'string' && first.text.startsWith(ATTRIBUTION_PREFIX)) {
    return system.slice(1);
  }
  return system.slice();
}

/**
 * Removes every Moat tag from a parsed request: the attribution block, the attestation
 * envelope member and `anti_distillation`. An emptied `system` is removed. The input is not
 * modified. This is what a verifier forwards upstream.
 */
export function stripMoatTags<T extends MessagesRequest>(request: T): T {
  const out: MessagesRequest = { ...request };
  delete out[ENVELOPE_MEMBER];
  delete out[ANTI_DISTILLATION_MEMBER];
  if (Array.isArray(request.system)) {
    const rest = systemWithoutAttribution(request.system);
    if (rest.length === 0) delete out.system;
    else out.system = rest;
  }
  return out as T;
}
