import { randomBytes } from 'node:crypto';
import { formatStreamEvent } from '@moat/protocol/messages';
import { errorMessage } from '@moat/protocol/support';
import { ApiError } from './errors.js';
import { mockCountTokens, mockEvents, mockMessages, mockModels } from './mock-upstream.js';

const encoder = new TextEncoder();

/** A JSON answer of the mock, with its request id. */
function json(status: number, body: unknown, requestId: string): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', 'request-id': requestId },
  });
}

/**
 * The embedded deterministic mock model as a web-standard handler, `(Request) => Promise<Response>`:
 * the model call of `createMoatHandler`'s examples, tests and benchmark. It answers
 * `POST /v1/messages` (JSON, or SSE with `stream: true`; thinking blocks when asked),
 * `POST /v1/messages/count_tokens` and `GET /v1/models` as the mock served over HTTP does,
 * and refuses a body with a member the API does not know (Moat's own tags) as the real API does.
 */
export async function mockModel(request: Request): Promise<Response> {
  const requestId = `req_mock_${randomBytes(10).toString('hex')}`;
  const url = new URL(request.url);
  const beta = request.headers.has('anthropic-beta') || url.searchParams.get('beta') === 'true';
  try {
    if (request.method === 'GET' && url.pathname === '/v1/models') return json(200, mockModels(), requestId);
    const messages = url.pathname === '/v1/messages';
    if (request.method !== 'POST' || (!messages && url.pathname !== '/v1/messages/count_tokens'))
      throw new ApiError(404, 'not_found_error', `Not found: ${request.method} ${url.pathname.slice(0, 100)}`);
    let body: unknown;
    try {
      body = JSON.parse(await request.text());
    } catch (error) {
      throw new ApiError(400, 'invalid_request_error', `body: Invalid JSON (${errorMessage(error)})`);
    }
    if (!messages) return json(200, mockCountTokens(body, { beta }), requestId);
    const response = mockMessages(body, { beta });
    if ((body as { stream?: unknown }).stream !== true) return json(200, response, requestId);
    const events = mockEvents(response);
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        const next = events.next();
        if (next.done === true) controller.close();
        else controller.enqueue(encoder.encode(formatStreamEvent(next.value)));
      },
    });
    return new Response(stream, {
      headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': requestId },
    });
  } catch (error) {
    if (error instanceof ApiError) return json(error.status, error.body(), requestId);
    throw error;
  }
}
