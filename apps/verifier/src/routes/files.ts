/**
 * The Files API routes, scoped per API key as the batches are: every file lives in the one
 * upstream account all keys are forwarded with, so the verifier keeps who uploaded each
 * (`files` table) and answers another key's file as no file at all (404) — on retrieve,
 * content and delete, in the list (narrowed to the caller's own), and where a Messages or
 * batch request names it (`file_id`, see `file-owners.ts`). A file uploaded around the
 * verifier is nobody's. Every request leaves one record, durable before the answer goes out.
 */
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { authenticate } from '../auth.js';
import { ApiError } from '../errors.js';
import { fileNotFound } from '../file-owners.js';
import { abortWhenClientGone, assertUncoded } from '../http.js';
import type { TraceCut } from '../metrics.js';
import { DECOY_HIT_CONFIDENCE } from '../pipeline/evidence.js';
import { fail } from '../pipeline/index.js';
import { newRequestId, RequestLedger } from '../pipeline/record.js';
import { isSuccess, passError } from '../pipeline/rewrite-response.js';
import { readAnswerJson, type UpstreamResponse } from '../pipeline/upstream.js';
import type { RouteContext, RouteHandler } from '../router.js';
import type { FileRow } from '../storage.js';

/** One authenticated Files request: its key, its record, the file it names (if any), and the upstream call. */
interface FileCall {
  readonly keyId: string;
  readonly ledger: RequestLedger;
  readonly file: FileRow | undefined;
  /** Sends the request upstream; with `body`, the client's body streamed through as it came (through `through`, when given). */
  readonly send: (options?: {
    readonly body?: boolean;
    readonly through?: Transform;
    readonly raw?: boolean;
  }) => Promise<UpstreamResponse>;
}

/** `through` fed from `source`: an error or an abort on either side ends both. */
function throughFrom(source: Readable, through: Transform): Transform {
  pipeline(source, through).catch(() => {});
  return through;
}

/** Runs a Files route: one record, the client authenticated, a named file only for its owner. */
function fileRoute(what: string, action: (ctx: RouteContext, call: FileCall) => Promise<void>): RouteHandler {
  return async (ctx) => {
    const { req, res, services, target, params } = ctx;
    const ledger = new RequestLedger(services.guard, newRequestId());
    res.setHeader('moat-request-id', ledger.id);
    ledger.reason(`files ${what}`);
    const abort = abortWhenClientGone(res);
    try {
      const keyId = await authenticate(req.headers, services.keyCache, services.storage);
      ledger.set({ keyId });
      let file: FileRow | undefined;
      if (params.id !== undefined) {
        file = await services.storage.fileOf(params.id);
        if (file === undefined || file.keyId !== keyId) throw fileNotFound(params.id);
      }
      services.guard.assertWritable();
      // Nothing is forwarded that cannot be recorded: the record is reserved first.
      await ledger.reserve();
      const send = (options: { readonly body?: boolean; readonly through?: Transform; readonly raw?: boolean } = {}) =>
        services.upstream.send({
          method: req.method ?? 'GET',
          path: `${target.path}${target.query}`,
          headers: req.headers,
          signal: abort.signal,
          ...(options.body === true
            ? { body: options.through === undefined ? req : throughFrom(req, options.through) }
            : {}),
          ...(options.raw === true ? { raw: true } : {}),
        });
      await action(ctx, { keyId, ledger, file, send });
    } catch (error) {
      if (res.headersSent) {
        // Part of a file went out: cut it short, so the client cannot take it for the whole.
        await ledger.finish(error instanceof ApiError ? error.status : 502).catch(() => {});
        res.destroy();
        return;
      }
      req.resume();
      await fail(error, res, ledger, abort.signal, ctx.services);
    }
  };
}

/** The upstream's JSON answer, edited, passed on once its record is durable (an error as it came). */
async function answerJson(
  ctx: RouteContext,
  call: FileCall,
  upstream: UpstreamResponse,
  edit: (body: unknown) => unknown,
): Promise<void> {
  if (!isSuccess(upstream.status)) return passError(ctx.res, call.ledger, upstream);
  const body = await readAnswerJson(upstream.body).catch((error: unknown) => {
    if (error instanceof ApiError) throw error;
    throw new ApiError(502, 'api_error', 'upstream answered an unreadable file object', { cause: error });
  });
  const answer = await edit(body);
  await call.ledger.finishStored(upstream.status);
  const json = JSON.stringify(answer);
  ctx.res.writeHead(upstream.status, {
    ...upstream.headers,
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(json)),
  });
  ctx.res.end(json);
}

const objectOf = (body: unknown): Record<string, unknown> =>
  typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};

/** How much of an upload is read for decoys: its first 4 MiB (the multipart body as text, headers of its part included). */
export const FILE_TRACE_BYTES = 4 * 1024 * 1024;

/** A multipart part's headers naming the field `file`, to the blank line that ends them. */
const FILE_PART_HEADERS = /content-disposition:[^\r\n]*\bname=(?:"file"|file\b)[^\r\n]*\r\n(?:[^\r\n]*\r\n)*?\r\n/i;
/** How much of what came before is kept to find part headers a chunk boundary splits. */
const HEADER_WINDOW = 16 * 1024;

/**
 * A pass-through that keeps copies of what a decoy trace reads of an upload: its first
 * {@link FILE_TRACE_BYTES}, and the first {@link FILE_TRACE_BYTES} of the file part's content
 * wherever that part starts — a preamble or other fields before it cannot push the file out
 * of what is read.
 */
function keepingStart(): { through: Transform; kept: () => KeptUpload } {
  const head: Buffer[] = [];
  let headSize = 0;
  // Whether bytes came past what is kept (of the body, or of the file part): not read whole.
  let cut = false;
  const file: Buffer[] = [];
  let fileSize = -1; // -1: the file part's start not found yet
  let fileType: string | undefined;
  let window = Buffer.alloc(0);
  const keepFile = (bytes: Buffer) => {
    const part = bytes.subarray(0, FILE_TRACE_BYTES - fileSize);
    if (part.length < bytes.length) cut = true;
    file.push(part);
    fileSize += part.length;
  };
  const through = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      if (headSize < FILE_TRACE_BYTES) {
        const part = chunk.subarray(0, FILE_TRACE_BYTES - headSize);
        head.push(part);
        headSize += part.length;
      }
      // Past the body's first bytes with the file part not found: what follows is not read.
      if (headSize >= FILE_TRACE_BYTES && fileSize === -1) cut = true;
      if (fileSize === -1) {
        const seen = Buffer.concat([window, chunk]);
        const found = FILE_PART_HEADERS.exec(seen.toString('latin1'));
        if (found === null) window = seen.subarray(Math.max(0, seen.length - HEADER_WINDOW));
        else {
          fileSize = 0;
          fileType = /^content-type:[ \t]*([^\r\n]*)/im.exec(found[0])?.[1]?.trim();
          window = Buffer.alloc(0);
          keepFile(seen.subarray(found.index + found[0].length));
        }
      } else if (fileSize < FILE_TRACE_BYTES) keepFile(chunk);
      else cut = true;
      done(null, chunk);
    },
  });
  return {
    through,
    kept: () =>
      fileSize <= 0
        ? { head: Buffer.concat(head), cut }
        : {
            head: Buffer.concat(head),
            file: Buffer.concat(file),
            ...(fileType === undefined ? {} : { fileType }),
            cut,
          },
  };
}

/** What is kept of an upload for its trace, and whether more came than that. */
interface KeptUpload {
  readonly head: Buffer;
  readonly file?: Buffer;
  readonly fileType?: string;
  readonly cut: boolean;
}

/**
 * `POST /v1/files`: the upload streams through; the file the upstream made is the caller's.
 * Its text is traced for decoys on the way (the first {@link FILE_TRACE_BYTES} of the body and
 * of the file part's content), and the keys
 * it names are kept with the file: a Messages request that names the file brings them back as
 * a text it held would (`decoy: hit` against any key but the uploader's).
 */
export const uploadFile: RouteHandler = fileRoute('upload', async (ctx, call) => {
  assertUncoded(ctx.req);
  const { through, kept } = keepingStart();
  const upstream = await call.send({ body: true, through });
  await answerJson(ctx, call, upstream, async (body) => {
    const id = objectOf(body).id;
    if (typeof id !== 'string' || id === '')
      throw new ApiError(502, 'api_error', 'upstream answered an upload without a file id');
    // An upload is traced once: one made while the index is first built waits for it.
    const { decoyIndex } = ctx.services;
    if (!decoyIndex.built) await decoyIndex.refresh().catch(() => {});
    const index = decoyIndex.current();
    if (index === undefined) {
      call.ledger.reason('not traced for decoys: the decoy index could not be built');
      ctx.services.metrics.traceCuts.inc({ cut: 'no_index' });
    }
    const upload = kept();
    const read = new Set<TraceCut>();
    const traced =
      index === undefined
        ? []
        : await ctx.services.decoyTracer.traceUpload(upload, read, { index, threshold: DECOY_HIT_CONFIDENCE });
    const cuts: TraceCut[] = [...(upload.cut ? (['upload_bytes'] as const) : []), ...read];
    if (index !== undefined && cuts.length > 0) {
      call.ledger.reason(`decoy trace incomplete: ${cuts.join(', ')}`);
      for (const cut of cuts) ctx.services.metrics.traceCuts.inc({ cut });
    }
    const tracedTo = traced.map((t) => ({ apiKeyId: t.apiKeyId, confidence: t.confidence }));
    for (const t of tracedTo)
      call.ledger.reason(`decoy traced to ${t.apiKeyId} (${t.confidence.toFixed(2)}) in the uploaded file`);
    // Kept before the client learns the id: a file it cannot be told the owner of is nobody's.
    await ctx.services.storage.saveFile({
      id,
      keyId: call.keyId,
      recordId: call.ledger.id,
      created: Date.now(),
      tracedTo,
    });
    return body;
  });
});

/** `GET /v1/files`: the upstream's list, narrowed to the caller's own files. */
export const listFiles: RouteHandler = fileRoute('list', async (ctx, call) => {
  const own = new Set(await ctx.services.storage.fileIds(call.keyId));
  const upstream = await call.send();
  await answerJson(ctx, call, upstream, (body) => {
    const list = objectOf(body);
    if (!Array.isArray(list.data)) throw new ApiError(502, 'api_error', 'upstream answered a file list without data');
    const data = list.data.filter((f) => own.has(objectOf(f).id as string));
    return { ...list, data, first_id: objectOf(data[0]).id ?? null, last_id: objectOf(data.at(-1)).id ?? null };
  });
});

/** `GET /v1/files/:id`: the caller's own file's metadata. */
export const fileMetadata: RouteHandler = fileRoute('retrieve', async (ctx, call) => {
  await answerJson(ctx, call, await call.send(), (body) => body);
});

/** `DELETE /v1/files/:id`: the caller's own file, forgotten once the upstream deleted it. */
export const deleteFile: RouteHandler = fileRoute('delete', async (ctx, call) => {
  const upstream = await call.send();
  await answerJson(ctx, call, upstream, async (body) => {
    await ctx.services.storage.deleteFile(call.file?.id as string);
    return body;
  });
});

/** `GET /v1/files/:id/content`: the caller's own file's bytes, streamed through as they come. */
export const fileContent: RouteHandler = fileRoute('content', async ({ res }, call) => {
  const upstream = await call.send({ raw: true });
  if (!isSuccess(upstream.status)) return passError(res, call.ledger, upstream);
  await call.ledger.finishStored(upstream.status);
  res.writeHead(upstream.status, upstream.headers);
  await pipeline(upstream.body, res);
});
