import { existsSync } from 'node:fs';
import {
  type ClientSettings,
  createMoatFetch,
  defaultSettingsFile,
  type LayerStatus,
  type MoatFetch,
  readClientSettings,
} from '@moat/client';
import { type HistoryEntry, keyIdentity, stripForeignSignedBlocks } from '@moat/distill-guard/client';
import { MessageAssembler, readStreamEvents } from '@moat/protocol/messages';
import { errorCode, errorMessage } from '@moat/protocol/support';
import { ChatError } from './errors.js';
import { CLIENT_VERSION } from './version.js';

export type { LayerStatus } from '@moat/client';
export { ChatError, type ChatErrorCode } from './errors.js';

/**
 * The deployment's salt and product name: the client settings `moat-verifier provision` wrote
 * (`MOAT_CLIENT_SETTINGS`, or `moat.client.json` here), as every `@moat/client` app reads
 * them; without that file the development salt (or `MOAT_FINGERPRINT_SALT`) and `moat-chat`.
 */
export function deploymentSettings(): ClientSettings {
  const file = defaultSettingsFile();
  if (process.env.MOAT_CLIENT_SETTINGS !== undefined || existsSync(file)) return readClientSettings(file);
  return { salt: process.env.MOAT_FINGERPRINT_SALT ?? 'moat-dev-salt', userAgentProduct: 'moat-chat' };
}

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
  /**
   * Directory of the install's key state (per-install keys, protocol 1.2: enrolled at a
   * verifier that advertises them, `i1` stamps after); default `@moat/client`'s.
   */
  readonly installDir?: string | undefined;
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
 * One controller for a turn: the user's cancel and the time-outs (silence before the answer
 * starts, or between two of its parts) abort the same request.
 */
class TurnTimer {
  readonly #controller = new AbortController();
  readonly #url: URL;
  readonly #timeoutMs: number;
  readonly #user: AbortSignal | undefined;
  readonly #cancel = () => this.#controller.abort(this.#user?.reason);
  #timer: NodeJS.Timeout | undefined;
  #timedOut = false;

  constructor(url: URL, timeoutMs: number, user: AbortSignal | undefined) {
    this.#url = url;
    this.#timeoutMs = timeoutMs;
    this.#user = user;
    user?.addEventListener('abort', this.#cancel, { once: true });
    this.arm();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Starts the time-out again: called at the start and for every part of the answer. */
  arm(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#controller.abort(new ChatError('ERR_TIMEOUT', `no answer from ${this.#url.origin} within ${this.#timeoutMs / 1000} s`));
    }, this.#timeoutMs);
  }

  /** The turn is over (answered or failed): no more time-outs, the user's signal let go. */
  done(): void {
    clearTimeout(this.#timer);
    this.#user?.removeEventListener('abort', this.#cancel);
  }

  /** Throws what the turn's failure means to the user: a time-out, their cancel, or the network. */
  fail(error: unknown): never {
    const origin = this.#url.origin;
    if (this.#timedOut) {
      const message = `no answer from ${origin} within ${this.#timeoutMs / 1000} s (--timeout to wait longer)`;
      throw new ChatError('ERR_TIMEOUT', message, { cause: error });
    }
    if (this.#user?.aborted === true || error instanceof ChatError) throw error;
    throw new ChatError('ERR_NETWORK', `cannot reach ${origin}: ${networkCause(error)}`, { cause: error });
  }
}

/** Reads a streamed answer with the one stream assembler: text deltas go to `onText` as they come. */
async function readAnswer(
  body: ReadableStream<Uint8Array>,
  onText: (delta: string) => void,
  onPart: () => void,
): Promise<{ text: string; content: Block[] }> {
  // Tool input split across any number of deltas is joined and parsed once.
  const assembler = new MessageAssembler();
  let text = '';
  for await (const ev of readStreamEvents(body)) {
    onPart();
    assembler.push(ev);
    const delta = ev.data.delta as { type?: unknown; text?: unknown } | undefined;
    if (ev.event === 'content_block_delta' && delta?.type === 'text_delta' && typeof delta.text === 'string') {
      text += delta.text;
      onText(delta.text);
    }
  }
  if (assembler.error !== undefined) throw new ChatError('ERR_STREAM', `${assembler.error.type}: ${assembler.error.message}`);
  return { text, content: assembler.blocks as Block[] };
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
      ...deploymentSettings(),
      clientVersion: CLIENT_VERSION,
      entrypoint: 'cli',
      antiDistillation: options.antiDistillation,
      harden: true,
      onWarning: options.warn,
      installKeys: { stateDir: options.installDir },
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
    try {
      let result = await this.#attempt(this.model, onText, signal);
      if (result === 'overloaded') {
        const fallback = this.#options.fallbackModel;
        if (fallback === undefined)
          throw new ChatError('ERR_OVERLOADED', 'HTTP 529: the model is overloaded and no --fallback-model is set');
        this.#options.warn(`${this.model} is overloaded; retrying on ${fallback}`);
        result = await this.#attempt(fallback, onText, signal);
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

  /** One request of a turn on `model`: its answer, or `overloaded` (HTTP 529) for the caller to fall back. */
  async #attempt(model: string, onText: (delta: string) => void, signal?: AbortSignal): Promise<TurnResult | 'overloaded'> {
    const { messages } = stripForeignSignedBlocks(this.history, { apiKeyId: keyIdentity(this.#apiKey), model });
    const url = new URL('/v1/messages', this.#options.baseUrl);
    const turn = new TurnTimer(url, this.#options.timeoutMs ?? 60_000, signal);
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
      turn.done();
      return turn.fail(error);
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
      const { text, content } = await readAnswer(res.body, onText, () => turn.arm());
      return { text, model, content, fellBack: model !== this.model };
    } catch (error) {
      return turn.fail(error);
    } finally {
      turn.done();
    }
  }

  /** Flushes the telemetry. */
  async close(): Promise<void> {
    await this.#fetch.close();
  }
}
