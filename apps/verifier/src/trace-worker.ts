/**
 * A trace worker: traces a large request for decoys off the event loop — reads its texts
 * (`requestTraceTexts`, `uploadTraceTexts`) and traces them against its own copy of the decoy
 * index. Gets the request's bytes as the verifier received them (already checked: UTF-8, no
 * member twice) or what it kept of an upload, the decode budget left, and the index's options
 * when its copy is out of date; answers with the keys traced, the cuts and the budget left, or
 * the error. Only the keys go back: the texts of a large request are megabytes, which would
 * take as long to copy back as to read.
 */
import { parentPort } from 'node:worker_threads';
import { CanaryIndex, type CanaryIndexOptions, type TextCut } from '@moat/distill-guard/server';
import { parseWellFormedJson } from './json-value.ts';
import { requestTraceTexts, type TracedKey, traceTexts, type UploadParts, uploadTraceTexts } from './trace-texts.ts';

/** A job: a Messages request's bytes, or what is kept of an upload; the bytes its documents may still inflate; the index to trace against. */
export type TraceJob = {
  readonly id: number;
  readonly inflateLeft: number;
  readonly threshold: number;
  /** Which of the verifier's indexes (one per verifier in the process), at which version. */
  readonly index: { readonly id: number; readonly version: number; readonly options?: CanaryIndexOptions };
} & ({ readonly kind: 'messages'; readonly raw: Uint8Array; readonly escapedNames: boolean } | ({ readonly kind: 'upload' } & UploadParts));

/** A job's answer: the keys its tool calls and all of it name. */
export type TraceAnswer =
  | {
      readonly id: number;
      readonly calls: TracedKey[];
      readonly all: TracedKey[];
      readonly cuts: TextCut[];
      readonly inflateLeft: number;
    }
  | { readonly id: number; readonly error: string };

const decoder = new TextDecoder('utf-8', { ignoreBOM: true });

/** The body the main thread checked: with escaped names, built name by name (JSON.parse may misread them, see json-value.ts). */
function bodyOf(raw: Uint8Array, escapedNames: boolean): { messages?: unknown } {
  const text = decoder.decode(raw);
  return (escapedNames ? parseWellFormedJson(text) : JSON.parse(text)) as { messages?: unknown };
}
const indexes = new Map<number, { version: number; index: CanaryIndex }>();

function indexFor(job: TraceJob): CanaryIndex {
  const { id, version, options } = job.index;
  if (options !== undefined) indexes.set(id, { version, index: new CanaryIndex(options) });
  const held = indexes.get(id);
  if (held === undefined) throw new Error(`no copy of decoy index ${id}`);
  return held.index;
}

parentPort?.on('message', async (job: TraceJob) => {
  let answer: TraceAnswer;
  try {
    const index = indexFor(job);
    const cuts = new Set<TextCut>();
    const inflate = { inflateLeft: job.inflateLeft };
    const texts =
      job.kind === 'messages'
        ? requestTraceTexts(bodyOf(job.raw, job.escapedNames), { cuts, inflate })
        : { calls: [], all: uploadTraceTexts(job, { cuts, inflate }) };
    answer = { id: job.id, ...(await traceTexts(index, texts, job.threshold)), cuts: [...cuts], inflateLeft: inflate.inflateLeft };
  } catch (error) {
    answer = { id: job.id, error: error instanceof Error ? error.message : String(error) };
  }
  parentPort?.postMessage(answer);
});
