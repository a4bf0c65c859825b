/**
 * `@moat/protocol/messages` — the one Messages model every Moat package reads and writes
 * bodies and streams with: typed requests, responses, blocks and stream events, validation
 * that names the failing path, the stream reader, the one incremental stream assembler and
 * the matching event emitter. Unknown members, block types and event types survive.
 *
 * @packageDocumentation
 */
export { readStreamEventBatches, readStreamEvents } from '../stream.js';
export { assembleStream, MessageAssembler, type MessageAssemblerOptions, type StreamEvent } from './assembler.js';
export { MessagesError, type MessagesErrorCode } from './errors.js';
export { chunked, type DeltaSplitter, formatReceivedEvent, formatStreamEvent, streamEventsOf } from './events.js';
export * from './types.js';
export { MESSAGES_MAX_DEPTH, parseMessagesRequest, parseMessagesResponse } from './validate.js';
