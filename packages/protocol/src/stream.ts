import { ProtocolError } from './errors.js';

/** One event of a Messages SSE stream: its `event` name and its JSON `data`. */
export interface MessagesStreamEvent<T = Record<string, unknown>> {
  readonly event: string;
  readonly data: T;
}

/**
 * Reads a Messages server-sent-event stream (`text/event-stream`) as events while it arrives,
 * following the HTML SSE rules the Messages API relies on: events end at a blank line, lines
 * end in LF, CRLF or CR, several `data:` lines join with LF, one space after the colon is
 * dropped, comments (`:` lines) and unknown fields are ignored, and an event with no data is
 * skipped. A trailing event without its blank line is dropped, as the SSE rules require.
 *
 * @throws {ProtocolError} `ERR_STREAM_EVENT` when an event's data is not JSON.
 *
 * @example
 * ```ts
 * for await (const { event, data } of readStreamEvents(response.body)) console.log(event, data);
 * ```
 */
export async function* readStreamEvents<T = Record<string, unknown>>(
  body: AsyncIterable<Uint8Array>,
): AsyncGenerator<MessagesStreamEvent<T>> {
  const decoder = new TextDecoder();
  let pending = '';
  let event = '';
  let data: string[] = [];
  let skipLF = false;
  const finish = (): MessagesStreamEvent<T> | undefined => {
    const name = event === '' ? 'message' : event;
    const text = data.join('\n');
    event = '';
    data = [];
    if (text === '') return undefined;
    try {
      return { event: name, data: JSON.parse(text) as T };
    } catch {
      throw new ProtocolError('ERR_STREAM_EVENT', `JSON data in event "${name}"`, JSON.stringify(text.slice(0, 60)));
    }
  };
  for await (const chunk of body) {
    let text = decoder.decode(chunk, { stream: true });
    if (text === '') continue;
    // A CR ended the previous chunk: an LF opening this one belongs to it.
    if (skipLF) {
      skipLF = false;
      if (text.startsWith('\n')) text = text.slice(1);
    }
    pending += text;
    let start = 0;
    for (let i = 0; i < pending.length; i++) {
      const c = pending.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = pending.slice(start, i);
      if (c === 13) {
        if (i + 1 === pending.length) skipLF = true;
        else if (pending.charCodeAt(i + 1) === 10) i++;
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
        else if (field === 'data') data.push(value);
      }
    }
    pending = pending.slice(start);
  }
}
