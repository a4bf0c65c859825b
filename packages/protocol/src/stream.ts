import { ProtocolError } from './errors.js';

/** One event of a Messages SSE stream: its `event` name and its JSON `data`. */
export interface MessagesStreamEvent<T = Record<string, unknown>> {
  readonly event: string;
  readonly data: T;
  /**
   * The event's data as it arrived, before parsing (set when {@link ReadStreamEventsOptions.keepText}
   * asks for it): a relay that passes the event on unchanged writes it instead of serializing `data` again.
   */
  readonly text?: string;
}

/** Options of {@link readStreamEvents}. */
export interface ReadStreamEventsOptions {
  /**
   * Longest line, and longest data of one event, in characters (default 8 MiB): a stream
   * that sends more without a line break or a blank line is refused, so memory stays bounded.
   */
  readonly maxLineLength?: number;
  /** Keep each event's data text as it arrived in {@link MessagesStreamEvent.text} (default false). */
  readonly keepText?: boolean;
}

/** Default of {@link ReadStreamEventsOptions.maxLineLength}. */
export const MAX_STREAM_LINE = 8 * 1024 * 1024;

/**
 * Reads a Messages server-sent-event stream (`text/event-stream`) as events while it arrives,
 * following the HTML SSE rules the Messages API relies on: events end at a blank line, lines
 * end in LF, CRLF or CR, several `data:` lines join with LF, one space after the colon is
 * dropped, comments (`:` lines) and unknown fields are ignored, and an event with no data is
 * skipped. A trailing event without its blank line is dropped, as the SSE rules require. Each
 * character is scanned once, and lines and events are bounded by `maxLineLength`.
 *
 * @throws {ProtocolError} `ERR_STREAM_EVENT` when an event's data is not JSON, or a line or
 *   an event's data is longer than `maxLineLength`.
 *
 * @example
 * ```ts
 * for await (const { event, data } of readStreamEvents(response.body)) console.log(event, data);
 * ```
 */
export async function* readStreamEvents<T = Record<string, unknown>>(
  body: AsyncIterable<Uint8Array>,
  options: ReadStreamEventsOptions = {},
): AsyncGenerator<MessagesStreamEvent<T>> {
  for await (const batch of readStreamEventBatches<T>(body, options)) yield* batch;
}

/**
 * {@link readStreamEvents}, one array per chunk of `body`: the events that chunk completed, in
 * order (chunks that complete none give nothing). A relay that writes each batch at once sends
 * what arrived together in one write, and pays for one step of the iteration per chunk rather
 * than per event. An error comes after the batch of the events before it.
 *
 * @throws {ProtocolError} as {@link readStreamEvents}.
 *
 * @example
 * ```ts
 * for await (const batch of readStreamEventBatches(response.body)) res.write(batch.map(format).join(''));
 * ```
 */
export async function* readStreamEventBatches<T = Record<string, unknown>>(
  body: AsyncIterable<Uint8Array>,
  options: ReadStreamEventsOptions = {},
): AsyncGenerator<Array<MessagesStreamEvent<T>>> {
  const parser = new StreamEventParser<T>(options);
  for await (const chunk of body) {
    const batch: Array<MessagesStreamEvent<T>> = [];
    try {
      parser.push(chunk, batch);
    } catch (error) {
      if (batch.length > 0) yield batch;
      throw error;
    }
    if (batch.length > 0) yield batch;
  }
}

/** The SSE reader's state between chunks: the line and the event read so far. */
class StreamEventParser<T> {
  readonly #max: number;
  readonly #keepText: boolean;
  readonly #decoder = new TextDecoder();
  readonly #parts: string[] = [];
  #partsLength = 0;
  #event = '';
  #data: string[] = [];
  #dataLength = 0;
  #skipLF = false;

  constructor(options: ReadStreamEventsOptions) {
    this.#max = options.maxLineLength ?? MAX_STREAM_LINE;
    this.#keepText = options.keepText === true;
  }

  #tooLong(what: string, length: number): never {
    throw new ProtocolError('ERR_STREAM_EVENT', `${what} of at most ${this.#max} characters`, `${length} or more`);
  }

  #finish(): MessagesStreamEvent<T> | undefined {
    const name = this.#event === '' ? 'message' : this.#event;
    const text = this.#data.length === 1 ? (this.#data[0] as string) : this.#data.join('\n');
    this.#event = '';
    this.#data = [];
    this.#dataLength = 0;
    if (text === '') return undefined;
    let parsed: T;
    try {
      parsed = JSON.parse(text) as T;
    } catch {
      throw new ProtocolError('ERR_STREAM_EVENT', `JSON data in event "${name}"`, JSON.stringify(text.slice(0, 60)));
    }
    return this.#keepText ? { event: name, data: parsed, text } : { event: name, data: parsed };
  }

  /** Reads `chunk`, appending to `out` each event it completes; on an error `out` holds those before it. */
  push(chunk: Uint8Array, out: Array<MessagesStreamEvent<T>>): void {
    const text = this.#decoder.decode(chunk, { stream: true });
    // A CR ended the previous chunk: an LF opening this one belongs to it.
    let start = this.#skipLF && text.startsWith('\n') ? 1 : 0;
    if (text !== '') this.#skipLF = false;
    // Each chunk is scanned once (by indexOf, for LF and for CR apart: a stream without CR is
    // searched for it once); a line longer than one chunk waits as parts, joined once it ends.
    let lf = text.indexOf('\n', start);
    let cr = text.indexOf('\r', start);
    while (lf !== -1 || cr !== -1) {
      const i = cr === -1 || (lf !== -1 && lf < cr) ? lf : cr;
      const line = this.#parts.length === 0 ? text.slice(start, i) : this.#parts.join('') + text.slice(start, i);
      this.#parts.length = 0;
      this.#partsLength = 0;
      let end = i;
      if (i === cr) {
        if (i + 1 === text.length) this.#skipLF = true;
        else if (text.charCodeAt(i + 1) === 10) end = i + 1;
      }
      start = end + 1;
      if (lf !== -1 && lf < start) lf = text.indexOf('\n', start);
      if (cr !== -1 && cr < start) cr = text.indexOf('\r', start);
      if (line === '') {
        const done = this.#finish();
        if (done !== undefined) out.push(done);
      } else if (line.charCodeAt(0) !== 58 /* ':' */) {
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? '' : line.slice(colon + 1);
        if (value.charCodeAt(0) === 32 /* ' ' */) value = value.slice(1);
        if (field === 'event') this.#event = value;
        else if (field === 'data') {
          this.#dataLength += value.length + 1;
          if (this.#dataLength > this.#max) this.#tooLong("an event's data", this.#dataLength);
          this.#data.push(value);
        }
      }
    }
    if (start < text.length) {
      this.#parts.push(text.slice(start));
      this.#partsLength += text.length - start;
      if (this.#partsLength > this.#max) this.#tooLong('a line', this.#partsLength);
    }
  }
}
