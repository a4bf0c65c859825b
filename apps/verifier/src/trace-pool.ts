import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import {
  type Attribution,
  type CanaryIndex,
  conversationPrelude,
  decoyTraceTexts,
  type TextCut,
  TRACE_INFLATE_BYTES,
} from '@moat/distill-guard/server';
import type { BodyLayout } from './json-body.js';
import type { TraceCut } from './metrics.js';
import {
  type RequestTrace,
  type RequestTraceTexts,
  requestTraceTexts,
  type TracedKey,
  traceTexts,
  type UploadParts,
  uploadTraceTexts,
} from './trace-texts.js';
import type { TraceAnswer, TraceJob } from './trace-worker.ts';

export type { RequestTrace, TracedKey } from './trace-texts.js';

/** What a trace is made against: the decoy index, and the confidence a key must reach. */
export interface TraceAgainst {
  readonly index: CanaryIndex;
  readonly threshold: number;
}

/** What one request's trace read spends and reports: shared with the other items of its Message Batch. */
export interface TraceRead {
  /** Where the read was cut, added to. */
  readonly cuts: Set<TraceCut>;
  /** Bytes its documents and hidden gzip may still inflate, counted down. */
  readonly inflate: { inflateLeft: number };
}

/** Options of {@link DecoyTracePool}. */
export interface DecoyTracePoolOptions {
  /** Trace workers at most (default: the cores but one, 1 to 4); 0 traces every request on the event loop. */
  readonly workers?: number;
  /** A request of this many bytes or more is traced in a worker (default 64 KiB). */
  readonly inlineBytes?: number;
  /**
   * Bytes a smaller request may inflate on the event loop (default 256 KiB): one whose
   * documents or hidden gzip would inflate more is traced again, whole, in a worker.
   */
  readonly inlineInflateBytes?: number;
  /** A trace in a worker longer than this is stopped (the worker ended) and cut `trace_failed` (default 30 s). */
  readonly timeoutMs?: number;
  /** Told when a worker's trace fails, and once when no worker file is found (traces then stay on the event loop). */
  readonly warn?: (message: string) => void;
  /** The worker's file (default: `trace-worker.js` beside this module, or its source in a checkout). */
  readonly workerFile?: URL;
  /** A worker idle this long is ended, and the memory it held given back (default 30 s); the next trace starts another. */
  readonly idleMs?: number;
}

/**
 * Members a client sends the same on every request — its system prompt and tool definitions,
 * most of what Claude Code sends — traced once per version of the index and the trace kept:
 * the rest of the request is traced and the two combined (`combineAttributions`).
 */
const REPEATED_MEMBERS: ReadonlySet<string> = new Set(['system', 'tools']);
/** Repeated members shorter than this in all are traced with the rest: keeping them would cost more than it saves. */
const REPEATED_MIN_BYTES = 2_048;
/** Traces of repeated members kept, at most (the least recently used goes first). */
const REPEATED_KEPT = 256;

/** The hash of a body's repeated members (names and bytes), when they are long enough to keep their trace. */
function repeatedKey(raw: Uint8Array, layout: BodyLayout): string | undefined {
  const spans = layout.members.filter((m) => REPEATED_MEMBERS.has(m.key));
  if (spans.reduce((n, m) => n + m.end - m.start, 0) < REPEATED_MIN_BYTES) return undefined;
  const hash = createHash('sha256');
  for (const m of spans) hash.update(`${m.key}:${m.end - m.start}:`).update(raw.subarray(m.start, m.end));
  return hash.digest('base64');
}

/** A request's texts to trace, and the kept trace of its repeated members when they were left out of them. */
type TextsToTrace = RequestTraceTexts & { readonly kept?: Attribution[] };

/** The worker's file beside this module: built (`dist/trace-worker.js`) or as source (`src/trace-worker.ts`). */
function workerFile(): URL | undefined {
  for (const name of ['./trace-worker.js', './trace-worker.ts']) {
    const url = new URL(name, import.meta.url);
    if (existsSync(url)) return url;
  }
  return undefined;
}

/** A job as the pool is given it: its bytes not yet copied, its index not yet sent. */
/** A Messages body, and whether a member name in it is escaped (then the worker parses it as `parseJsonBody` did). */
type JobParts =
  | { readonly kind: 'messages'; readonly raw: Uint8Array; readonly escapedNames: boolean }
  | ({ readonly kind: 'upload' } & UploadParts);

interface Pending {
  readonly parts: JobParts;
  readonly inflateLeft: number;
  readonly against: TraceAgainst;
  readonly id: number;
  readonly resolve: (answer: TraceAnswer) => void;
}

interface Slot {
  readonly worker: Worker;
  /** The version of each index this worker holds a copy of. */
  readonly holds: Map<number, number>;
  busy: { readonly pending: Pending; readonly timer: NodeJS.Timeout } | undefined;
  /** Ends the worker once it has been idle for `idleMs`: the memory a large trace took goes back. */
  idle: NodeJS.Timeout | undefined;
}

/**
 * Traces requests for decoys, a large one in a worker thread: decoding a many-MiB PDF or
 * inflating hidden gzip, then reading megabytes of text, takes the CPU for up to a second or
 * more, which on the event loop would hold every other client's request up. A small request
 * is traced in place, within a small decode budget; one that needs more is traced again in a
 * worker. Each worker traces against its own copy of the decoy index, made again when the
 * index changed, and sends back only the keys. A trace that fails there (the worker ends, runs
 * out of memory or past `timeoutMs`) is reported as the cut `trace_failed`, never as a whole one.
 */
export class DecoyTracePool {
  readonly #size: number;
  readonly #inlineBytes: number;
  readonly #inlineInflateBytes: number;
  readonly #timeoutMs: number;
  readonly #idleMs: number;
  readonly #warn: (message: string) => void;
  readonly #slots: Slot[] = [];
  readonly #queue: Pending[] = [];
  readonly #indexIds = new WeakMap<CanaryIndex, number>();
  /** Traces of repeated members by their bytes' hash, for one index at one version. */
  readonly #repeated = new Map<string, { readonly index: CanaryIndex; readonly version: number; readonly trace: Attribution[] }>();
  #file: URL | undefined | null = null;
  #nextId = 0;
  #nextIndexId = 0;
  #closed = false;

  constructor(options: DecoyTracePoolOptions = {}) {
    this.#size = options.workers ?? Math.max(1, Math.min(4, availableParallelism() - 1));
    this.#inlineBytes = options.inlineBytes ?? 64 * 1024;
    this.#inlineInflateBytes = options.inlineInflateBytes ?? 256 * 1024;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#idleMs = options.idleMs ?? 30_000;
    this.#warn = options.warn ?? (() => {});
    if (options.workerFile !== undefined) this.#file = options.workerFile;
  }

  /** Traces of repeated members (system prompts, tool definitions) kept. */
  get keptTraces(): number {
    return this.#repeated.size;
  }

  /** Workers started so far (they start at the first trace that needs one). */
  get workers(): number {
    return this.#slots.length;
  }

  /**
   * The keys whose decoys a Messages request brings back: `raw` is its body as received
   * (already parsed and checked into `body`), `read` its decode budget and cuts, updated as
   * the read goes.
   */
  async traceRequest(
    raw: Uint8Array,
    body: { readonly messages?: unknown },
    read: TraceRead,
    against: TraceAgainst,
    layout?: BodyLayout,
  ): Promise<RequestTrace> {
    const repeated = layout === undefined ? undefined : repeatedKey(raw, layout);
    const texts = (options: { cuts: Set<TextCut>; inflate: { inflateLeft: number } }): TextsToTrace => {
      const kept = repeated === undefined ? undefined : this.#repeatedTrace(repeated, body, options, against);
      if (kept === undefined) return requestTraceTexts(body, options);
      const rest = Object.fromEntries(Object.entries(body).filter(([name]) => !REPEATED_MEMBERS.has(name)));
      // The system prompt's end is joined with the conversation's start even so.
      return { ...requestTraceTexts(rest, { ...options, before: conversationPrelude(body) }), kept };
    };
    // Without a layout nothing says the names are plain: the worker builds the value name by name.
    const escapedNames = layout === undefined || layout.escapedNames === true;
    return this.#trace(raw.length, texts, { kind: 'messages', raw, escapedNames }, read, against);
  }

  /**
   * The trace of a request's repeated members at threshold 0 (all its evidence): as kept for
   * their bytes (`key`) at the index's version, else made — and kept when it read them whole
   * with nothing to inflate, so what is kept is what any read of the same bytes gives.
   */
  #repeatedTrace(
    key: string,
    body: { readonly messages?: unknown },
    options: { inflate: { inflateLeft: number } },
    against: TraceAgainst,
  ): Attribution[] | undefined {
    const held = this.#repeated.get(key);
    if (held !== undefined && held.index === against.index && held.version === against.index.version) {
      this.#repeated.delete(key);
      this.#repeated.set(key, held);
      return held.trace;
    }
    const part = Object.fromEntries(Object.entries(body).filter(([name]) => REPEATED_MEMBERS.has(name)));
    const cuts = new Set<TextCut>();
    const inflate = { inflateLeft: options.inflate.inflateLeft };
    const texts = decoyTraceTexts(part, Number.POSITIVE_INFINITY, { cuts, inflate });
    if (cuts.size > 0 || inflate.inflateLeft !== options.inflate.inflateLeft) return undefined;
    const trace = against.index.trace(texts, 0);
    if (this.#repeated.size >= REPEATED_KEPT) this.#repeated.delete(this.#repeated.keys().next().value as string);
    this.#repeated.set(key, { index: against.index, version: against.index.version, trace });
    return trace;
  }

  /** The keys whose decoys what was kept of an upload holds (with a decode budget of its own). */
  async traceUpload(upload: UploadParts, cuts: Set<TraceCut>, against: TraceAgainst): Promise<TracedKey[]> {
    const size = upload.head.length + (upload.file?.length ?? 0);
    const read = { cuts, inflate: { inflateLeft: TRACE_INFLATE_BYTES } };
    const texts = (options: { cuts: Set<TextCut>; inflate: { inflateLeft: number } }) => ({
      calls: [],
      all: uploadTraceTexts(upload, options),
    });
    return (await this.#trace(size, texts, { kind: 'upload', ...upload }, read, against)).all;
  }

  /** Ends the workers; traces still waiting or running end as `trace_failed`. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const pending of this.#queue.splice(0)) pending.resolve({ id: pending.id, error: 'the verifier is closing' });
    await Promise.all(this.#slots.splice(0).map((slot) => this.#end(slot, 'the verifier is closing')));
  }

  /** One trace: in place when small and light, else in a worker; what it spent and where it was cut go to `read`. */
  async #trace(
    size: number,
    texts: (options: { cuts: Set<TextCut>; inflate: { inflateLeft: number } }) => TextsToTrace,
    parts: JobParts,
    read: TraceRead,
    against: TraceAgainst,
  ): Promise<RequestTrace> {
    const inPlace = (found: TextsToTrace) => traceTexts(against.index, found, against.threshold, found.kept);
    const cuts = new Set<TextCut>();
    if (this.#size === 0 || this.#workerFile() === undefined) {
      const found = texts({ cuts, inflate: read.inflate });
      for (const cut of cuts) read.cuts.add(cut);
      return inPlace(found);
    }
    if (size < this.#inlineBytes) {
      // In place, with no more to inflate than a moment's work; past that, traced again in a worker.
      const start = read.inflate.inflateLeft;
      const allowed = Math.min(start, this.#inlineInflateBytes);
      const probe = { inflateLeft: allowed };
      const found = texts({ cuts, inflate: probe });
      const spent = cuts.has('pdf_inflate_budget') || cuts.has('gzip_inflate_budget');
      if (!spent || start <= this.#inlineInflateBytes) {
        read.inflate.inflateLeft = start - (allowed - probe.inflateLeft);
        for (const cut of cuts) read.cuts.add(cut);
        return inPlace(found);
      }
    }
    const answer = await this.#run(parts, read.inflate.inflateLeft, against);
    if ('error' in answer) {
      this.#warn(`decoy trace failed in a worker: ${answer.error}`);
      read.cuts.add('trace_failed');
      return { calls: [], all: [] };
    }
    read.inflate.inflateLeft = answer.inflateLeft;
    for (const cut of answer.cuts) read.cuts.add(cut);
    return { calls: answer.calls, all: answer.all };
  }

  #workerFile(): URL | undefined {
    if (this.#file === null) {
      this.#file = workerFile();
      if (this.#file === undefined)
        this.#warn('no trace worker file beside the verifier (a bundle without it): large requests are traced on the event loop');
    }
    return this.#file;
  }

  #run(parts: JobParts, inflateLeft: number, against: TraceAgainst): Promise<TraceAnswer> {
    if (this.#closed) return Promise.resolve({ id: -1, error: 'the verifier is closing' });
    return new Promise((resolve) => {
      this.#queue.push({ parts, inflateLeft, against, id: this.#nextId++, resolve });
      this.#dispatch();
    });
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      let slot = this.#slots.find((s) => s.busy === undefined);
      if (slot === undefined && this.#slots.length < this.#size) {
        try {
          slot = this.#start();
        } catch (error) {
          // No thread to be had (a resource limit): the trace fails as a worker's would, and says why.
          const failed = this.#queue.shift() as Pending;
          failed.resolve({
            id: failed.id,
            error: `no trace worker could start: ${error instanceof Error ? error.message : String(error)}`,
          });
          continue;
        }
      }
      if (slot === undefined) return;
      const pending = this.#queue.shift() as Pending;
      const { index, threshold } = pending.against;
      let indexId = this.#indexIds.get(index);
      if (indexId === undefined) {
        indexId = this.#nextIndexId++;
        this.#indexIds.set(index, indexId);
      }
      // The index as it is now, sent to a worker whose copy is older (or that has none).
      const version = index.version;
      const stale = slot.holds.get(indexId) !== version;
      const { parts } = pending;
      // Copies of its own, moved to the worker: the received buffers may be slices of larger ones, and stay with the request.
      const bytes =
        parts.kind === 'messages'
          ? { kind: 'messages' as const, raw: new Uint8Array(parts.raw), escapedNames: parts.escapedNames }
          : {
              kind: 'upload' as const,
              head: new Uint8Array(parts.head),
              ...(parts.file === undefined ? {} : { file: new Uint8Array(parts.file) }),
              ...(parts.fileType === undefined ? {} : { fileType: parts.fileType }),
            };
      const job: TraceJob = {
        id: pending.id,
        inflateLeft: pending.inflateLeft,
        threshold,
        index: { id: indexId, version, ...(stale ? { options: index.toOptions() } : {}) },
        ...bytes,
      };
      const moved = bytes.kind === 'messages' ? [bytes.raw] : bytes.file === undefined ? [bytes.head] : [bytes.head, bytes.file];
      const timer = setTimeout(() => {
        void this.#end(slot as Slot, `no answer within ${this.#timeoutMs} ms`);
      }, this.#timeoutMs);
      clearTimeout(slot.idle);
      slot.busy = { pending, timer };
      slot.holds.set(indexId, version);
      slot.worker.postMessage(
        job,
        moved.map((b) => b.buffer as ArrayBuffer),
      );
    }
  }

  #start(): Slot {
    const worker = new Worker(this.#workerFile() as URL, { resourceLimits: { maxOldGenerationSizeMb: 1024 } });
    // The pool never keeps the process alive: a server holds it open while it serves.
    worker.unref();
    const slot: Slot = { worker, holds: new Map(), busy: undefined, idle: undefined };
    worker.on('message', (answer: TraceAnswer) => {
      const busy = slot.busy;
      if (busy === undefined || busy.pending.id !== answer.id) return;
      clearTimeout(busy.timer);
      slot.busy = undefined;
      busy.pending.resolve(answer);
      this.#dispatch();
      if (slot.busy === undefined) {
        slot.idle = setTimeout(() => void this.#end(slot, 'idle'), this.#idleMs);
        slot.idle.unref();
      }
    });
    // A worker that fails (out of memory, an error it did not catch) ends its trace; the next trace starts another.
    worker.on('error', (error) => void this.#end(slot, error.message));
    worker.on('exit', (code) => void this.#end(slot, `the worker exited with code ${code}`));
    this.#slots.push(slot);
    return slot;
  }

  async #end(slot: Slot, reason: string): Promise<void> {
    const at = this.#slots.indexOf(slot);
    if (at !== -1) this.#slots.splice(at, 1);
    const busy = slot.busy;
    slot.busy = undefined;
    clearTimeout(slot.idle);
    if (busy !== undefined) {
      clearTimeout(busy.timer);
      busy.pending.resolve({ id: busy.pending.id, error: reason });
    }
    await slot.worker.terminate().catch(() => 0);
    if (!this.#closed) this.#dispatch();
  }
}
