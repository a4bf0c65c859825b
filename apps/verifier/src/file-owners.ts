import { ApiError } from './errors.js';
import { USER_DATA_MEMBERS } from './json-body.js';
import type { FileRow, Storage } from './storage.js';

/** The most distinct files one request may name. */
export const MAX_FILES_PER_REQUEST = 1_000;

/** Another key's file, or none: answered alike, so a key cannot learn which ids exist. */
export function fileNotFound(id: string): ApiError {
  return new ApiError(404, 'not_found_error', `file ${id.slice(0, 100)} not found`);
}

/**
 * The file ids a request body names: every string member `file_id`, at any depth (a
 * `document` or `image` source of type `file`, a `container_upload` block, and whatever
 * carries one next), each once — but inside the user's own JSON (a tool call's `input`, a
 * tool's `input_schema` and `input_examples`, an output schema), which the API passes on
 * without reading: a `file_id` there is the app's, not a Files reference.
 */
export function namedFileIds(value: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(value)) for (const item of value) namedFileIds(item, out);
  else if (typeof value === 'object' && value !== null)
    for (const [name, member] of Object.entries(value)) {
      if (name === 'file_id' && typeof member === 'string') out.add(member);
      else if (!USER_DATA_MEMBERS.has(name)) namedFileIds(member, out);
    }
  return out;
}

/**
 * Whether `raw` may name a file: it holds `file_id`, or a `\u` escape that could spell it.
 * A body without either names none, and is not walked.
 */
export function mayNameFiles(raw: Buffer): boolean {
  let may = mayNameFilesOf.get(raw);
  if (may === undefined) {
    may = raw.includes(FILE_ID) || raw.includes(UNICODE_ESCAPE);
    mayNameFilesOf.set(raw, may);
  }
  return may;
}

const FILE_ID = Buffer.from('file_id');
const UNICODE_ESCAPE = Buffer.from('\\u');
/** Per request body: the evidence and the owner check ask of the same bytes (two searches of up to 32 MB). */
const mayNameFilesOf = new WeakMap<Buffer, boolean>();

/** The files a request body names: how many ids, and the rows of the first {@link MAX_FILES_PER_REQUEST}. */
interface NamedFiles {
  readonly count: number;
  readonly rows: ReadonlyMap<string, FileRow | undefined>;
}

/** Per request body: its named files, looked up once for every check that reads them. */
const namedFilesOf = new WeakMap<object, Promise<NamedFiles>>();

/**
 * The files `body` names, each looked up once per body: the decoy evidence and the owner
 * check of one request share the lookups.
 */
export function namedFiles(body: object, storage: Pick<Storage, 'fileOf'>): Promise<NamedFiles> {
  let named = namedFilesOf.get(body);
  if (named === undefined) {
    named = (async () => {
      const ids = namedFileIds(body);
      const rows = new Map<string, FileRow | undefined>();
      for (const id of ids) {
        if (rows.size === MAX_FILES_PER_REQUEST) break;
        rows.set(id, await storage.fileOf(id));
      }
      return { count: ids.size, rows };
    })();
    namedFilesOf.set(body, named);
  }
  return named;
}

/**
 * Refuses a request that names a file `keyId` did not upload through this verifier.
 *
 * @throws {ApiError} 404 `not_found_error` for the first such file; 400 past {@link MAX_FILES_PER_REQUEST}.
 */
export async function assertOwnFiles(body: object, keyId: string, storage: Pick<Storage, 'fileOf'>): Promise<void> {
  const { count, rows } = await namedFiles(body, storage);
  if (count > MAX_FILES_PER_REQUEST)
    throw new ApiError(400, 'invalid_request_error', `expected at most ${MAX_FILES_PER_REQUEST} files in one request, got ${count}`);
  for (const [id, file] of rows) if (file === undefined || file.keyId !== keyId) throw fileNotFound(id);
}
