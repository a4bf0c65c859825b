/**
 * The texts a request's decoy trace reads, apart from the index they are traced against: the
 * same function runs on the event loop for a small request and in a trace worker for a large
 * one (`trace-worker.ts`), so it imports nothing of the verifier's own.
 */
import {
  type Attribution,
  type CanaryIndex,
  combineAttributions,
  DECOY_TRACE_LIMIT,
  decoyTraceTexts,
  documentText,
  type TraceTextsOptions,
} from '@moat/distill-guard/server';

/** A tool call block of any kind the API has or may add: `tool_use`, `server_tool_use`, `mcp_tool_use`, … */
const TOOL_CALL_TYPE = /tool_use$/i;

/** How much of each tool call is read before any call is read whole: its name, and its input's start. */
const CALL_HEAD_CHARS = 4_096;

/** What a request's decoy trace reads: its tool calls (traced against any key) and all of it (against other keys). */
export interface RequestTraceTexts {
  /** The tool calls' heads, then the calls whole; empty when the request has none. */
  readonly calls: string[];
  /** Every text of the request, the calls included. */
  readonly all: string[];
}

/** A key a trace named, and how confidently. */
export interface TracedKey {
  readonly apiKeyId: string;
  readonly confidence: number;
}

/** The keys a request's tool calls name (against any key), and the keys all of it names. */
export interface RequestTrace {
  readonly calls: TracedKey[];
  readonly all: TracedKey[];
}

const keysOf = (traced: readonly Attribution[]): TracedKey[] => traced.map((t) => ({ apiKeyId: t.apiKeyId, confidence: t.confidence }));

/**
 * The keys a request's texts name at `threshold` or more, traced in slices with the event loop
 * given turns between them; with `kept`, the trace of the members left out of `texts.all`
 * (all its evidence), combined with it as one trace of the whole gives.
 */
export async function traceTexts(
  index: CanaryIndex,
  texts: RequestTraceTexts,
  threshold: number,
  kept?: readonly Attribution[],
): Promise<RequestTrace> {
  return {
    calls: texts.calls.length === 0 ? [] : keysOf(await index.traceLong(texts.calls, threshold)),
    all: keysOf(
      kept === undefined
        ? await index.traceLong(texts.all, threshold)
        : combineAttributions([await index.traceLong(texts.all, 0), kept], threshold),
    ),
  };
}

/**
 * The texts of a request a decoy trace reads, with one decode budget for both reads (`read.inflate`):
 * a request's documents inflate once.
 */
export function requestTraceTexts(body: { readonly messages?: unknown }, read: TraceTextsOptions): RequestTraceTexts {
  const calls: unknown[] = [];
  if (Array.isArray(body.messages))
    for (const m of body.messages as Array<{ content?: unknown } | null>)
      if (Array.isArray(m?.content))
        for (const block of m.content) {
          const type = (block as { type?: unknown } | null)?.type;
          if (typeof type === 'string' && TOOL_CALL_TYPE.test(type)) calls.push(block);
        }
  // The calls alone: nothing before them is joined to them (`before` is for the whole request).
  const alone = { ...read, before: '' };
  return {
    calls: calls.length === 0 ? [] : [...callHeads(calls, read), ...decoyTraceTexts({ messages: calls }, Number.POSITIVE_INFINITY, alone)],
    all: decoyTraceTexts(body, Number.POSITIVE_INFINITY, read),
  };
}

/**
 * The start of every tool call — its name, its input's first {@link CALL_HEAD_CHARS}
 * characters — within the trace limit in all: no call, however long, can push a decoy call
 * after it past what is read.
 */
function callHeads(calls: readonly unknown[], read: TraceTextsOptions): string[] {
  const out: string[] = [];
  let left = DECOY_TRACE_LIMIT;
  // The request's one decode budget (a head is no second allowance), and no cuts: the calls are read whole after.
  const inflate = read.inflate === undefined ? {} : { inflate: read.inflate };
  for (const call of calls) {
    let head = CALL_HEAD_CHARS;
    for (const text of decoyTraceTexts({ messages: [call] }, DECOY_TRACE_LIMIT, inflate)) {
      const part = text.slice(0, Math.min(head, left));
      out.push(part);
      head -= part.length;
      left -= part.length;
      if (head <= 0 || left <= 0) break;
    }
    if (left <= 0) break;
  }
  return out;
}

/** What is kept of an upload for its trace: the body's start, and the file part's content and type. */
export interface UploadParts {
  readonly head: Uint8Array;
  readonly file?: Uint8Array;
  readonly fileType?: string;
}

/**
 * What a decoy trace reads of an upload: the body's start as text, and the file part's content
 * as its type and bytes say (`documentText`: UTF-16, what a PDF shows, text under any type),
 * else as UTF-8; with what the texts may hide (`decoyTraceTexts`' split, base64 and rot13 forms).
 */
export function uploadTraceTexts({ head, file, fileType }: UploadParts, read: TraceTextsOptions): string[] {
  const texts = [Buffer.from(head.buffer, head.byteOffset, head.byteLength).toString('utf8')];
  if (file !== undefined) {
    const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
    texts.push(
      documentText(fileType, bytes, {
        ...(read.inflate === undefined ? {} : { shared: read.inflate }),
        ...(read.cuts === undefined ? {} : { cuts: read.cuts }),
      }) ?? bytes.toString('utf8'),
    );
  }
  return decoyTraceTexts({ messages: texts }, Number.POSITIVE_INFINITY, read);
}
