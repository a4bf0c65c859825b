import { createHash } from 'node:crypto';
import { ApiError } from './errors.js';

/** A Message Batch as the API describes it (`@anthropic-ai/sdk`'s `MessageBatch`). */
export interface MockBatch {
  id: string;
  type: 'message_batch';
  processing_status: 'in_progress' | 'canceling' | 'ended';
  request_counts: { processing: number; succeeded: number; errored: number; canceled: number; expired: number };
  created_at: string;
  ended_at: string | null;
  expires_at: string;
  archived_at: string | null;
  cancel_initiated_at: string | null;
  results_url: string | null;
}

/** One line of a batch's results (`MessageBatchIndividualResponse`). */
export interface MockBatchResult {
  readonly custom_id: string;
  readonly result:
    | { readonly type: 'succeeded'; readonly message: unknown }
    | { readonly type: 'errored'; readonly error: { type: 'error'; error: { type: string; message: string } } };
}

/** What a batch item is answered with: the mock's Messages answer for its `params`. */
export type AnswerItem = (params: unknown) => unknown;

const invalid = (message: string) => new ApiError(400, 'invalid_request_error', message);

/** Checks a batch create body as the API does: `requests` only, each a `custom_id` and `params`. */
function validateCreate(body: unknown): Array<{ custom_id: string; params: unknown }> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw invalid('body: Input should be a valid dictionary');
  for (const key of Object.keys(body))
    if (key !== 'requests') throw invalid(`${key.slice(0, 100)}: Extra inputs are not permitted`);
  const requests = (body as { requests?: unknown }).requests;
  if (!Array.isArray(requests) || requests.length === 0) throw invalid('requests: at least one request is required');
  const seen = new Set<string>();
  return requests.map((r, i) => {
    const item = r as { custom_id?: unknown; params?: unknown } | null;
    if (typeof item?.custom_id !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(item.custom_id))
      throw invalid(`requests.${i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'`);
    if (seen.has(item.custom_id)) throw invalid(`requests.${i}.custom_id: duplicate custom_id`);
    seen.add(item.custom_id);
    for (const key of Object.keys(item))
      if (key !== 'custom_id' && key !== 'params')
        throw invalid(`requests.${i}.${key.slice(0, 100)}: Extra inputs are not permitted`);
    return { custom_id: item.custom_id, params: item.params };
  });
}

/**
 * The mock's Message Batches: created batches end at once (each item answered as a Messages
 * request would be, an error becoming an `errored` result), and are listed, retrieved,
 * cancelled, deleted and their results served as JSONL, as the API does.
 */
export class MockBatchStore {
  readonly #batches = new Map<string, { batch: MockBatch; results: MockBatchResult[] }>();
  #count = 0;

  /** `POST /v1/messages/batches`. */
  create(body: unknown, answer: AnswerItem, origin: string): MockBatch {
    const requests = validateCreate(body);
    const results: MockBatchResult[] = requests.map(({ custom_id, params }) => {
      try {
        if ((params as { stream?: unknown } | null)?.stream === true)
          throw invalid('stream: batch requests cannot stream');
        return { custom_id, result: { type: 'succeeded', message: answer(params) } };
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        return {
          custom_id,
          result: { type: 'errored', error: { type: 'error', error: { type: error.type, message: error.message } } },
        };
      }
    });
    const digest = createHash('sha256')
      .update(`${++this.#count}|${JSON.stringify(body)}`)
      .digest('hex')
      .slice(0, 24);
    const id = `msgbatch_${digest}`;
    const now = new Date();
    const succeeded = results.filter((r) => r.result.type === 'succeeded').length;
    const batch: MockBatch = {
      id,
      type: 'message_batch',
      processing_status: 'ended',
      request_counts: { processing: 0, succeeded, errored: results.length - succeeded, canceled: 0, expired: 0 },
      created_at: now.toISOString(),
      ended_at: now.toISOString(),
      expires_at: new Date(now.getTime() + 86_400_000).toISOString(),
      archived_at: null,
      cancel_initiated_at: null,
      results_url: `${origin}/v1/messages/batches/${id}/results`,
    };
    this.#batches.set(id, { batch, results });
    return batch;
  }

  #get(id: string): { batch: MockBatch; results: MockBatchResult[] } {
    const found = this.#batches.get(id);
    if (found === undefined) throw new ApiError(404, 'not_found_error', `message batch ${id.slice(0, 100)} not found`);
    return found;
  }

  retrieve(id: string): MockBatch {
    return this.#get(id).batch;
  }

  list(): { data: MockBatch[]; has_more: false; first_id: string | null; last_id: string | null } {
    const data = [...this.#batches.values()].map((b) => b.batch).reverse();
    return { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
  }

  cancel(id: string): MockBatch {
    const { batch } = this.#get(id);
    batch.cancel_initiated_at ??= new Date().toISOString();
    return batch;
  }

  delete(id: string): { id: string; type: 'message_batch_deleted' } {
    this.#get(id);
    this.#batches.delete(id);
    return { id, type: 'message_batch_deleted' };
  }

  /** The results as JSONL, one line per item. */
  results(id: string): string {
    return this.#get(id)
      .results.map((r) => `${JSON.stringify(r)}\n`)
      .join('');
  }
}

/** The batch route a path names: `create`/`list` at the collection, else an id and an action. */
export function mockBatchRoute(method: string, path: string): { action: string; id?: string } | undefined {
  if (path === '/v1/messages/batches')
    return method === 'POST' ? { action: 'create' } : method === 'GET' ? { action: 'list' } : undefined;
  const m = /^\/v1\/messages\/batches\/([A-Za-z0-9_-]+)(\/results|\/cancel)?$/.exec(path);
  if (m === null) return undefined;
  const id = m[1] as string;
  if (m[2] === '/results') return method === 'GET' ? { action: 'results', id } : undefined;
  if (m[2] === '/cancel') return method === 'POST' ? { action: 'cancel', id } : undefined;
  return method === 'GET' ? { action: 'retrieve', id } : method === 'DELETE' ? { action: 'delete', id } : undefined;
}
