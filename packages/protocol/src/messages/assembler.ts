import { describeValue, isRecord } from '../internal/describe.js';
import { MessagesError } from './errors.js';
import type { ContentBlock, ErrorEvent, MessagesResponse, Usage } from './types.js';

/** One server-sent event of a Messages stream: its name and its parsed data. */
export interface StreamEvent<T = Record<string, unknown>> {
  readonly event: string;
  readonly data: T;
}

/** Options of {@link MessageAssembler}. */
export interface MessageAssemblerOptions {
  /**
   * Whether a tool call's `input_json_delta` fragments are parsed at `content_block_stop`
   * (default `true`). A pass-through that never reads tool input sets `false`: the block then
   * keeps the input it started with, and malformed fragments are not its concern.
   */
  readonly parseToolInput?: boolean;
}

/**
 * Builds a Messages response from its stream events, incrementally: the one place in Moat
 * where stream deltas become content blocks. It follows the API's stream: `message_start`
 * gives the message, `content_block_start` opens block `index`, `content_block_delta`
 * appends to it (`text_delta`, `thinking_delta`, `citations_delta`; `signature_delta`
 * replaces the signature; `input_json_delta` fragments are joined and parsed once, at
 * `content_block_stop`), `message_delta` sets the stop reason and overwrites the usage
 * counters it carries, `message_stop` completes the message. `ping`, `error` and event types
 * this model does not know are accepted and leave the message as it is; delta types it does
 * not know leave their block as it is. Unknown members of every object are kept.
 *
 * @example
 * ```ts
 * const assembler = new MessageAssembler();
 * for await (const ev of readStreamEvents(response.body)) assembler.push(ev);
 * console.log(assembler.message?.content);
 * ```
 */
export class MessageAssembler {
  readonly #parseToolInput: boolean;
  #message: MessagesResponse | undefined;
  readonly #blocks: Array<ContentBlock | undefined> = [];
  readonly #json = new Map<number, string>();
  readonly #open = new Set<number>();
  #complete = false;
  #error: ErrorEvent['error'] | undefined;
  /** Events of types this model does not name, seen so far. */
  unknownEvents = 0;

  constructor(options: MessageAssemblerOptions = {}) {
    this.#parseToolInput = options.parseToolInput ?? true;
  }

  /**
   * Takes the next event of the stream.
   *
   * @throws {MessagesError} `ERR_STREAM_ORDER` for an event that names no open block, comes
   * before `message_start` or lacks its members; `ERR_STREAM_TOOL_INPUT` when a tool call's
   * joined input is not JSON.
   */
  push(ev: StreamEvent<unknown>): void {
    const data = ev.data;
    if (!isRecord(data)) throw new MessagesError('ERR_STREAM_ORDER', ev.event, 'an object as event data', describeValue(data));
    switch (ev.event) {
      case 'message_start': {
        if (this.#message !== undefined)
          throw new MessagesError('ERR_STREAM_ORDER', ev.event, 'one message_start per stream', 'a second one');
        if (!isRecord(data.message))
          throw new MessagesError('ERR_STREAM_ORDER', 'message', 'a message object', describeValue(data.message));
        const message = data.message as unknown as MessagesResponse;
        this.#message = { ...message, content: [], usage: { ...(isRecord(message.usage) ? message.usage : { output_tokens: 0 }) } };
        if (Array.isArray(message.content)) for (const [i, block] of message.content.entries()) this.#blocks[i] = block;
        return;
      }
      case 'content_block_start': {
        this.#started(ev.event);
        const index = this.#index(data, false);
        if (!isRecord(data.content_block) || typeof data.content_block.type !== 'string')
          throw new MessagesError(
            'ERR_STREAM_ORDER',
            'content_block',
            'a block object with a string type',
            describeValue(data.content_block),
          );
        this.#blocks[index] = { ...(data.content_block as unknown as ContentBlock) };
        this.#open.add(index);
        return;
      }
      case 'content_block_delta': {
        this.#started(ev.event);
        const index = this.#index(data, true);
        if (!isRecord(data.delta) || typeof data.delta.type !== 'string')
          throw new MessagesError('ERR_STREAM_ORDER', 'delta', 'a delta object with a string type', describeValue(data.delta));
        this.#applyDelta(index, data.delta);
        return;
      }
      case 'content_block_stop': {
        this.#started(ev.event);
        const index = this.#index(data, true);
        this.#open.delete(index);
        const json = this.#json.get(index);
        if (json !== undefined) {
          this.#json.delete(index);
          if (this.#parseToolInput && json.trim() !== '')
            this.#blocks[index] = { ...(this.#blocks[index] as ContentBlock), input: parseInput(json, index) } as ContentBlock;
        }
        return;
      }
      case 'message_delta': {
        const message = this.#started(ev.event);
        if (isRecord(data.delta)) Object.assign(message, data.delta);
        if (isRecord(data.usage)) {
          const usage: Record<string, unknown> = { ...message.usage };
          // Counters other than output_tokens are whole-message totals, omitted or null when they do not apply.
          for (const [name, value] of Object.entries(data.usage)) if (value !== null && value !== undefined) usage[name] = value;
          message.usage = usage as unknown as Usage;
        }
        return;
      }
      case 'message_stop':
        this.#started(ev.event);
        this.#complete = true;
        return;
      case 'ping':
        return;
      case 'error':
        this.#error = isRecord(data.error)
          ? (data.error as ErrorEvent['error'])
          : { type: 'api_error', message: describeValue(data.error) };
        return;
      default:
        this.unknownEvents++;
    }
  }

  /** The message so far (complete after `message_stop`); `undefined` before `message_start`. */
  get message(): MessagesResponse | undefined {
    if (this.#message === undefined) return undefined;
    return { ...this.#message, content: this.#blocks.filter((b): b is ContentBlock => b !== undefined) };
  }

  /** Block `index` as assembled so far (its tool input parsed once it stopped). */
  block(index: number): ContentBlock | undefined {
    return this.#blocks[index];
  }

  /** The blocks so far, in index order. */
  get blocks(): ContentBlock[] {
    return this.#blocks.filter((b): b is ContentBlock => b !== undefined);
  }

  /** Whether `message_stop` arrived. */
  get complete(): boolean {
    return this.#complete;
  }

  /** The stream's `error` event, if it sent one. */
  get error(): ErrorEvent['error'] | undefined {
    return this.#error;
  }

  #started(event: string): MessagesResponse {
    if (this.#message === undefined) throw new MessagesError('ERR_STREAM_ORDER', event, 'message_start first', event);
    return this.#message;
  }

  #index(data: Record<string, unknown>, open: boolean): number {
    const index = data.index;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index > 100_000)
      throw new MessagesError('ERR_STREAM_ORDER', 'index', 'a block index (an integer from 0)', describeValue(index));
    if (open && !this.#open.has(index)) throw new MessagesError('ERR_STREAM_ORDER', 'index', 'the index of an open block', String(index));
    return index;
  }

  #applyDelta(index: number, delta: Record<string, unknown>): void {
    const block = this.#blocks[index] as unknown as Record<string, unknown>;
    const append = (member: string, part: unknown): void => {
      if (typeof part !== 'string') throw new MessagesError('ERR_STREAM_ORDER', `delta.${member}`, 'a string', describeValue(part));
      this.#blocks[index] = {
        ...block,
        [member]: (typeof block[member] === 'string' ? block[member] : '') + part,
      } as unknown as ContentBlock;
    };
    switch (delta.type) {
      case 'text_delta':
        append('text', delta.text);
        return;
      case 'thinking_delta':
        append('thinking', delta.thinking);
        return;
      case 'signature_delta':
        if (typeof delta.signature !== 'string')
          throw new MessagesError('ERR_STREAM_ORDER', 'delta.signature', 'a string', describeValue(delta.signature));
        this.#blocks[index] = { ...block, signature: delta.signature } as unknown as ContentBlock;
        return;
      case 'input_json_delta':
        if (typeof delta.partial_json !== 'string')
          throw new MessagesError('ERR_STREAM_ORDER', 'delta.partial_json', 'a string', describeValue(delta.partial_json));
        this.#json.set(index, (this.#json.get(index) ?? '') + delta.partial_json);
        return;
      case 'citations_delta':
        this.#blocks[index] = {
          ...block,
          citations: [...(Array.isArray(block.citations) ? block.citations : []), delta.citation],
        } as unknown as ContentBlock;
        return;
      default:
      // A delta type this model does not know: the block stays as it is.
    }
  }
}

function parseInput(json: string, index: number): unknown {
  try {
    return JSON.parse(json);
  } catch (error) {
    throw new MessagesError(
      'ERR_STREAM_TOOL_INPUT',
      `content.${index}.input`,
      'the joined input_json_delta fragments to be JSON',
      describeValue(json),
      {
        cause: error,
      },
    );
  }
}

/**
 * Assembles a whole stream into its message.
 *
 * @throws {MessagesError} as {@link MessageAssembler.push} does, and `ERR_STREAM_ORDER` when
 * the stream ends before `message_start`.
 *
 * @example
 * ```ts
 * const message = await assembleStream(readStreamEvents(response.body));
 * ```
 */
export async function assembleStream(
  events: AsyncIterable<StreamEvent<unknown>> | Iterable<StreamEvent<unknown>>,
  options?: MessageAssemblerOptions,
): Promise<MessagesResponse> {
  const assembler = new MessageAssembler(options);
  for await (const ev of events) assembler.push(ev);
  const message = assembler.message;
  if (message === undefined) throw new MessagesError('ERR_STREAM_ORDER', '', 'a stream with message_start', 'none');
  return message;
}
