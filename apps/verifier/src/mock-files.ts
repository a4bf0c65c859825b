import { randomBytes } from 'node:crypto';
import { ApiError } from './errors.js';

/** A file's metadata as the API describes it (`@anthropic-ai/sdk`'s `FileMetadata`). */
export interface MockFile {
  readonly id: string;
  readonly type: 'file';
  readonly filename: string;
  readonly mime_type: string;
  readonly size_bytes: number;
  readonly created_at: string;
  readonly downloadable: boolean;
}

/** The most files the mock keeps, and the most bytes in all: the oldest go first. */
const MAX_FILES = 1_000;
const MAX_BYTES = 64 * 1024 * 1024;

const invalid = (message: string) => new ApiError(400, 'invalid_request_error', message);

/**
 * The file part of a `multipart/form-data` upload (field `file`): its name, media type and
 * bytes, as the API reads an upload.
 *
 * @throws {ApiError} 400 for a body that is not such an upload.
 */
export function filePart(body: Buffer, contentType: string): { filename: string; mimeType: string; bytes: Buffer } {
  const boundary = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  if (!/^multipart\/form-data/i.test(contentType) || boundary === null) throw invalid('body: expected multipart/form-data with a boundary');
  const delimiter = Buffer.from(`--${boundary[1] ?? boundary[2]}`);
  let at = body.indexOf(delimiter);
  while (at !== -1) {
    const headStart = at + delimiter.length + 2;
    const headEnd = body.indexOf('\r\n\r\n', headStart);
    if (headEnd === -1) break;
    const next = body.indexOf(delimiter, headEnd + 4);
    if (next === -1) break;
    const head = body.toString('utf8', headStart, headEnd);
    if (/name="file"/i.test(head)) {
      const filename = /filename="([^"]*)"/i.exec(head)?.[1] ?? 'upload';
      const mimeType = /^content-type:\s*([^\r\n;]+)/im.exec(head)?.[1]?.trim() ?? 'application/octet-stream';
      // The part's bytes end before the CRLF that precedes the next delimiter.
      return { filename, mimeType, bytes: body.subarray(headEnd + 4, next - 2) };
    }
    at = next;
  }
  throw invalid('file: Field required');
}

/**
 * The mock's Files API: uploads kept in memory (bounded: the oldest go first), listed newest
 * first, their metadata and bytes served, deleted — one account, as the API's is for one key.
 */
export class MockFileStore {
  readonly #files = new Map<string, { meta: MockFile; bytes: Buffer }>();
  #bytes = 0;

  /** `POST /v1/files`. */
  upload(body: Buffer, contentType: string): MockFile {
    const { filename, mimeType, bytes } = filePart(body, contentType);
    if (bytes.length > MAX_BYTES) throw new ApiError(413, 'request_too_large', `file: larger than the mock keeps (${MAX_BYTES} bytes)`);
    const meta: MockFile = {
      id: `file_${randomBytes(12).toString('hex')}`,
      type: 'file',
      filename,
      mime_type: mimeType,
      size_bytes: bytes.length,
      created_at: new Date().toISOString(),
      downloadable: true,
    };
    this.#files.set(meta.id, { meta, bytes: Buffer.from(bytes) });
    this.#bytes += bytes.length;
    for (const [id, file] of this.#files) {
      if (this.#files.size <= MAX_FILES && this.#bytes <= MAX_BYTES) break;
      this.#files.delete(id);
      this.#bytes -= file.bytes.length;
    }
    return meta;
  }

  /** `GET /v1/files`: newest first. */
  list(): { data: MockFile[]; first_id: string | null; last_id: string | null; has_more: boolean } {
    const data = [...this.#files.values()].map((f) => f.meta).reverse();
    return { data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: false };
  }

  /** `GET /v1/files/:id`. */
  metadata(id: string): MockFile {
    return this.#file(id).meta;
  }

  /** `GET /v1/files/:id/content`. */
  content(id: string): Buffer {
    return this.#file(id).bytes;
  }

  /** `DELETE /v1/files/:id`. */
  delete(id: string): { id: string; type: 'file_deleted' } {
    const file = this.#file(id);
    this.#files.delete(id);
    this.#bytes -= file.bytes.length;
    return { id, type: 'file_deleted' };
  }

  #file(id: string): { meta: MockFile; bytes: Buffer } {
    const file = this.#files.get(id);
    if (file === undefined) throw new ApiError(404, 'not_found_error', `File not found: ${id.slice(0, 100)}`);
    return file;
  }
}
