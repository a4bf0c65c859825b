import { createMoatFetch, type LayerStatus, type MoatFetch } from '@moat/client';
import { type HistoryEntry, keyIdentity, stripForeignSignedBlocks } from '@moat/distill-guard/client';
import { MessageAssembler, readStreamEvents } from '@moat/protocol/messages';
import { errorCode, errorMessage } from '@moat/protocol/support';
import { ChatError } from './errors.js';
import { CLIENT_VERSION } from './version.js';

export type { LayerStatus } from '@moat/client';
export { ChatError, type ChatErrorCode } from './errors.js';

/** Deployment salt of the fingerprint (a build constant shared with the verifier). */
export const FINGERPRINT_SALT = process.env.MOAT_FINGERPRINT_SALT ?? 'moat-dev-salt';

export interface SessionOptions {
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly model: string;
  readonly fallbackModel?: string | undefined;
  /** Compile-time anti-distillation gate (`feature('ANTI_DISTILLATION')`). */
  readonly antiDistillation: boolean;
  readonly thinking: boolean;
  readonly warn: (message: string) => void;
  /**
   * How long to wait for the answer to start, and then between two parts of it, in
   * milliseconds (default 60,000): a server that accepts and never answers fails the turn.
   */
  readonly timeoutMs?: number | undefined;
}

/** Names what a failed network call ran into: `ECONNREFUSED`, `ENOTFOUND`, a TLS error, … */
function networkCause(error: unknown): string {
  const cause = (error as { cause?: unknown }).cause;
  const code = errorCode(cause) ?? errorCode(error);
  const detail = cause instanceof Error ? cause.message : errorMessage(error);
  return code === undefined || detail.includes(code) ? detail : `${code}: ${detail}`;
}

type Block = Record<string, unknown> & { type: string };

/** What one turn produced. */
export interface TurnResult {
  readonly text: string;
  readonly model: string;
  readonly content: Block[];
  readonly fellBack: boolean;
}

/**
 * One chat session over `@moat/client`: every client-side layer composed once (hardening
 * too: this process is ours), each failing open. The verifier's GrowthBook flags, read once,
 * switch any layer off for everyone (`moat-kill-*`); the attribution block, the envelope and
 * the anti-distillation request each have a flag too.
 */
export class ChatSession {
  /** How each layer came up at the verifier (`--verbose`, `/debug`). */
  status: readonly LayerStatus[] = [];
  readonly history: HistoryEntry[] = [];
  model: string;
  #apiKey: string;
  readonly #options: SessionOptions;
  readonly #fetch: MoatFetch;

  private constructor(options: SessionOptions) {
    this.#options = options;
    this.model = options.model;
    this.#apiKey = options.apiKey;
    this.#fetch = createMoatFetch({
      salt: FINGERPRINT_SALT,
      clientVersion: CLIENT_VERSION,
      entrypoint: 'cli',
      userAgentProduct: 'moat-chat',
      antiDistillation: options.antiDistillation,
      harden: true,
      onWarning: options.warn,
    });
  }

  /** Starts a session: discovers the verifier, reads its flags and brings every layer up. */
  static async start(options: SessionOptions): Promise<ChatSession> {
    const s = new ChatSession(options);
    s.status = await s.#fetch.connect(options.baseUrl, options.apiKey);
    return s;
  }

  /** Switches the API key (login); the other key's signed blocks are stripped before the next request. */
  switchKey(apiKey: string): void {
    this.#apiKey = apiKey;
  }

  /** The Messages body; `@moat/client` adds the tags, the decoy request and the stamp. */
  #body(messages: unknown[], model: string): Record<string, unknown> {
    const body: Record<string, unknown> = { model, max_tokens: 1024, stream: true, messages };
    if (this.#options.thinking) body.thinking = { type: 'enabled', budget_tokens: 512 };
    return body;
  }

  /**
   * Sends the user's message and streams the answer through `onText`. On an overloaded
   * error it retries once on the fallback model, after stripping the first model's signed
   * blocks. `signal` cancels the answer (Ctrl-C).
   */
  async send(text: string, onText: (delta: string) => void, signal?: AbortSignal): Promise<TurnResult> {
    this.history.push({ message: { role: 'user', content: text } });
    const attempt = async (model: string): Promise<TurnResult | 'overloaded'> => {
      const { messages } = stripForeignSignedBlocks(this.history, { apiKeyId: keyIdentity(this.#apiKey), model });
      const url = new URL('/v1/messages', this.#options.baseUrl);
      const timeoutMs = this.#options.timeoutMs ?? 60_000;
      // One controller for the user's cancel and the timeouts: silence before the answer starts, or between its parts.
      const turn = new AbortController();
      const cancel = () => turn.abort(signal?.reason);
      signal?.addEventListener('abort', cancel, { once: true });
      let timedOut = false;
      let timer: NodeJS.Timeout | undefined;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          timedOut = true;
          turn.abort(new ChatError('ERR_TIMEOUT', `no answer from ${url.origin} within ${timeoutMs / 1000} s`));
        }, timeoutMs);
      };
      arm();
      const fail = (error: unknown): never => {
        if (timedOut)
          throw new ChatError('ERR_TIMEOUT', `no answer from ${url.origin} within ${timeoutMs / 1000} s (--timeout to wait longer)`, {
            cause: error,
          });
        if (signal?.aborted === true || error instanceof ChatError) throw error;
        throw new ChatError('ERR_NETWORK', `cannot reach ${url.origin}: ${networkCause(error)}`, { cause: error });
      };
      let res: Response;
      try {
        res = await this.#fetch(url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'x-api-key': this.#apiKey,
            'anthropic-version': '2023-06-01',
            'user-agent': `moat-chat/${CLIENT_VERSION}`,
          },
          body: JSON.stringify(this.#body(messages, model)),
          signal: turn.signal,
        });
      } catch (error) {
        clearTimeout(timer);
        signal?.removeEventListener('abort', cancel);
        return fail(error);
      }
      try {
        if (res.status === 529) {
          await res.arrayBuffer();
          return 'overloaded';
        }
        if (!res.ok || res.body === null) {
          const err = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
          throw new ChatError('ERR_HTTP', `HTTP ${res.status}: ${err.error?.message ?? 'request failed'}`);
        }
        // The one stream assembler: tool input split across any number of deltas is joined and parsed once.
        const assembler = new MessageAssembler();
        let out = '';
        for await (const ev of readStreamEvents(res.body)) {
          arm();
          assembler.push(ev);
          const delta = ev.data.delta as { type?: unknown; text?: unknown } | undefined;
          if (ev.event === 'content_block_delta' && delta?.type === 'text_delta' && typeof delta.text === 'string') {
            out += delta.text;
            onText(delta.text);
          }
        }
        if (assembler.error !== undefined) throw new ChatError('ERR_STREAM', `${assembler.error.type}: ${assembler.error.message}`);
        return { text: out, model, content: assembler.blocks as Block[], fellBack: model !== this.model };
      } catch (error) {
        return fail(error);
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener('abort', cancel);
      }
    };
    try {
      let result = await attempt(this.model);
      if (result === 'overloaded') {
        const fallback = this.#options.fallbackModel;
        if (fallback === undefined)
          throw new ChatError('ERR_OVERLOADED', 'HTTP 529: the model is overloaded and no --fallback-model is set');
        this.#options.warn(`${this.model} is overloaded; retrying on ${fallback}`);
        result = await attempt(fallback);
        if (result === 'overloaded') throw new ChatError('ERR_OVERLOADED', `HTTP 529: ${fallback} is overloaded too`);
      }
      this.history.push({
        message: { role: 'assistant', content: result.content },
        origin: { apiKeyId: keyIdentity(this.#apiKey), model: result.model },
      });
      return result;
    } catch (error) {
      this.history.pop(); // the turn did not happen
      throw error;
    }
  }

  /** Flushes the telemetry. */
  async close(): Promise<void> {
    await this.#fetch.close();
  }
}
