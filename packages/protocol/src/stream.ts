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
  const max = options.maxLineLength ?? MAX_STREAM_LINE;
  const keepText = options.keepText === true;
  const decoder = new TextDecoder();
  const parts: string[] = [];
  let partsLength = 0;
  let event = '';
  let data: string[] = [];
  let dataLength = 0;
  let skipLF = false;
  const tooLong = (what: string, length: number): never => {
    throw new ProtocolError('ERR_STREAM_EVENT', `${what} of at most ${max} characters`, `${length} or more`);
  };
  const finish = (): MessagesStreamEvent<T> | undefined => {
    const name = event === '' ? 'message' : event;
    const text = data.join('\n');
    event = '';
    data = [];
    dataLength = 0;
    if (text === '') return undefined;
    try {
      const parsed = JSON.parse(text) as T;
      return keepText ? { event: name, data: parsed, text } : { event: name, data: parsed };
    } catch {
      throw new ProtocolError('ERR_STREAM_EVENT', `JSON data in event "${name}"`, JSON.stringify(text.slice(0, 60)));
    }
  };
  for await (const chunk of body) {
    const text = decoder.decode(chunk, { stream: true });
    // A CR ended the previous chunk: an LF opening this one belongs to it.
    let start = skipLF && text.startsWith('\n') ? 1 : 0;
    if (text !== '') skipLF = false;
    // Each chunk is scanned once; a line longer than one chunk waits as parts, joined once it ends.
    for (let i = start; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = parts.length === 0 ? text.slice(start, i) : parts.join('') + text.slice(start, i);
      parts.length = 0;
      partsLength = 0;
      if (c === 13) {
        if (i + 1 === text.length) skipLF = true;
        else if (text.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
      if (line === '') {
        const done = finish();
        if (done !== undefined) yield done;
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') event = value;
        else if (field === 'data') {
          dataLength += value.length + 1;
          if (dataLength > max) tooLong("an event's data", dataLength);
          data.push(value);
        }
      }
    }
    if (start < text.length) {
      parts.push(text.slice(start));
      partsLength += text.length - start;
      if (partsLength > max) tooLong('a line', partsLength);
    }
  }
}
