import { MessageAssembler, type StreamEvent } from '@moat/protocol/messages';
import { type Decoy, findDecoyCall } from './decoys.js';

/** A content block of a Messages response. */
export type ContentBlock = { readonly type: string } & Readonly<Record<string, unknown>>;

/** A `tool_use` block that calls a decoy. */
export interface DecoyCall {
  readonly id: string;
  readonly name: string;
  readonly input: unknown;
}

/** What the model did with decoys in one turn. */
export interface DecoyTurn {
  /** The decoy calls the model made; the client never sees them. */
  readonly calls: readonly DecoyCall[];
  /**
   * Set when every tool call of the turn went to a decoy: the server answers them itself and
   * continues the conversation with this assistant message (exactly as the upstream sent it,
   * its own signatures included) followed by the decoy results. Unset when the turn also
   * calls real tools: the decoy calls are then withheld and the client runs the real ones.
   */
  readonly continueWith?: readonly ContentBlock[];
}

function isBlock(value: unknown): value is ContentBlock {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}

function decoyCallOf(block: ContentBlock, decoys: readonly Decoy[]): DecoyCall | undefined {
  if (block.type !== 'tool_use' || typeof block.id !== 'string' || findDecoyCall({ name: block.name }, decoys) === undefined)
    return undefined;
  return { id: block.id, name: block.name as string, input: block.input ?? {} };
}

/**
 * Takes decoy calls out of a non-streaming Messages response so they never reach the
 * client's executor. The returned response has the decoy `tool_use` blocks removed (and
 * `stop_reason` `end_turn` when no real call is left); `turn` says what the model called
 * and, when only decoys were called, what to continue the conversation with.
 *
 * @example
 * const { response, turn } = interceptDecoyCalls(upstreamJson, decoys);
 * if (turn.continueWith) messages.push({ role: 'assistant', content: turn.continueWith },
 *   { role: 'user', content: turn.calls.map((c) => decoyResult(c, secret)) });
 */
export function interceptDecoyCalls<T extends { readonly content?: unknown; readonly stop_reason?: unknown }>(
  response: T,
  decoys: readonly Decoy[],
): { response: T; turn: DecoyTurn } {
  if (decoys.length === 0 || !Array.isArray(response.content)) return { response, turn: { calls: [] } };
  const content = response.content as unknown[];
  const calls: DecoyCall[] = [];
  let realCalls = 0;
  const kept = content.filter((b) => {
    if (!isBlock(b)) return true;
    const call = decoyCallOf(b, decoys);
    if (call !== undefined) calls.push(call);
    else if (b.type === 'tool_use') realCalls++;
    return call === undefined;
  });
  if (calls.length === 0) return { response, turn: { calls } };
  const stop = realCalls === 0 && response.stop_reason === 'tool_use' ? { stop_reason: 'end_turn' } : {};
  return {
    response: { ...response, content: kept, ...stop },
    turn: realCalls === 0 ? { calls, continueWith: content as ContentBlock[] } : { calls },
  };
}

/**
 * The streaming form of {@link interceptDecoyCalls}: sits between the upstream's Messages
 * stream and the client, withholds the events of decoy `tool_use` blocks, renumbers the
 * blocks that pass so the client sees a gapless sequence, and stitches the rounds the server
 * answers itself into one message (one `message_start`, block indices continuing across
 * rounds, output tokens summed, one `message_delta` / `message_stop` at the very end).
 *
 * After the upstream stream of a round ends, {@link DecoyStreamFilter.takeTurn} returns the
 * turn to continue, if any; the caller answers the calls, opens the next upstream stream,
 * calls {@link DecoyStreamFilter.nextRound} and feeds its events on. {@link
 * DecoyStreamFilter.close} ends the client's message when the caller stops answering.
 */
export class DecoyStreamFilter {
  readonly #decoys: readonly Decoy[];
  #round = 0;
  #offset = 0;
  #next = 0;
  #outputTokens = 0;
  readonly #index = new Map<number, number>();
  readonly #withheld = new Set<number>();
  #assembler = new MessageAssembler();
  #calls: DecoyCall[] = [];
  #realCalls = 0;
  #pending: DecoyTurn | undefined;

  /** Decoy calls seen so far, over all rounds. */
  decoyCalls = 0;

  constructor(decoys: readonly Decoy[]) {
    this.#decoys = decoys;
  }

  /**
   * Handles one upstream event; returns the events to pass on, in order.
   *
   * @throws {MessagesError} for a stream that breaks the Messages event order, or a tool
   * call whose streamed input is not JSON (the turn could not be continued).
   */
  handle(ev: StreamEvent): StreamEvent[] {
    this.#assembler.push(ev);
    const data = ev.data;
    switch (ev.event) {
      case 'message_start':
        return this.#round === 0 ? [ev] : [];
      case 'content_block_start': {
        const index = data.index as number;
        const block = this.#assembler.block(index) as ContentBlock;
        if (block.type === 'tool_use' && findDecoyCall({ name: block.name }, this.#decoys) !== undefined) {
          this.#withheld.add(index);
          return [];
        }
        if (block.type === 'tool_use') this.#realCalls++;
        this.#index.set(index, this.#offset + this.#next++);
        return [this.#renumbered(ev)];
      }
      case 'content_block_delta':
        return this.#withheld.has(data.index as number) ? [] : [this.#renumbered(ev)];
      case 'content_block_stop': {
        const index = data.index as number;
        if (!this.#withheld.has(index)) return [this.#renumbered(ev)];
        const call = decoyCallOf(this.#assembler.block(index) as ContentBlock, this.#decoys);
        if (call !== undefined) {
          this.#calls.push(call);
          this.decoyCalls++;
        }
        return [];
      }
      case 'message_delta': {
        const usage = data.usage as { output_tokens?: unknown } | undefined;
        const tokens = typeof usage?.output_tokens === 'number' ? usage.output_tokens : 0;
        if (this.#calls.length > 0 && this.#realCalls === 0) {
          this.#pending = { calls: this.#calls, continueWith: this.#assembler.blocks as ContentBlock[] };
          this.#outputTokens += tokens;
          return [];
        }
        if (this.#outputTokens === 0) return [ev];
        return [{ event: ev.event, data: { ...data, usage: { ...usage, output_tokens: tokens + this.#outputTokens } } }];
      }
      case 'message_stop':
        return this.#pending === undefined ? [ev] : [];
      default:
        return [ev];
    }
  }

  /** The turn to continue after this round's upstream stream ended, if the model called only decoys. */
  takeTurn(): DecoyTurn | undefined {
    return this.#pending;
  }

  /** Prepares for the next upstream stream of the same client message. */
  nextRound(): void {
    this.#round++;
    this.#offset += this.#next;
    this.#next = 0;
    this.#index.clear();
    this.#withheld.clear();
    this.#assembler = new MessageAssembler();
    this.#calls = [];
    this.#realCalls = 0;
    this.#pending = undefined;
  }

  /** Ends the client's message after a withheld turn the caller will not continue. */
  close(): StreamEvent[] {
    this.#pending = undefined;
    return [
      {
        event: 'message_delta',
        data: {
          type: 'message_delta',
          delta: { stop_reason: 'end_turn', stop_sequence: null },
          usage: { output_tokens: this.#outputTokens },
        },
      },
      { event: 'message_stop', data: { type: 'message_stop' } },
    ];
  }

  #renumbered(ev: StreamEvent): StreamEvent {
    const index = this.#index.get(ev.data.index as number);
    return index === undefined || index === ev.data.index ? ev : { event: ev.event, data: { ...ev.data, index } };
  }
}
