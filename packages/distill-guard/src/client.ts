import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { GrowthBook } from '@growthbook/growthbook';
import { ANTI_DISTILLATION_MEMBER, CLIENT_FLAGS, isSignedBlockType } from '@moat/protocol';
import { createWarner, errorCode, errorMessage, type Warner } from '@moat/protocol/support';

/** GrowthBook feature key of the remote anti-distillation flag. */
export const ANTI_DISTILLATION_FEATURE = CLIENT_FLAGS.antiDistillation;

/** Where the remote flag's value came from. */
export type RemoteFlagSource = 'network' | 'cache' | 'default';

/** Options of {@link AntiDistillationGate.create}. */
export interface AntiDistillationGateOptions {
  /**
   * Gate 1, compile time: the app passes `feature('ANTI_DISTILLATION')` here, so the bundler
   * removes anti-distillation from builds that must not have it.
   */
  readonly compileTime: boolean;
  /** Gate 2: the running entrypoint (`cli`, `sdk`, …). */
  readonly entrypoint: string;
  /** Entrypoints the gate opens for (default `['cli']`: never for SDK use). */
  readonly allowedEntrypoints?: readonly string[];
  /**
   * Gate 3: the remote flag, read with the GrowthBook SDK from a features endpoint, or its
   * value when the app already read the endpoint's flags (one fetch for every layer).
   */
  readonly remote: RemoteFlagOptions | RemoteFlagValue;
  /** Called once per problem (flag server down, unreadable cache); never throws. */
  readonly onWarning?: ((message: string) => void) | undefined;
}

/** The remote flag's value, already read by the app. */
export interface RemoteFlagValue {
  readonly value: boolean;
  /** Where the app got it (default `network`). */
  readonly source?: RemoteFlagSource;
}

/** Where and how {@link AntiDistillationGate} reads the remote flag. */
export interface RemoteFlagOptions {
  /** Base URL of the features endpoint (GrowthBook `apiHost`), e.g. the verifier's base URL. */
  readonly apiHost: string;
  readonly clientKey: string;
  /** Feature key (default {@link ANTI_DISTILLATION_FEATURE}). */
  readonly featureKey?: string;
  /** Value when the flag server was never reached and nothing is cached (default false). */
  readonly defaultValue?: boolean;
  /** How long to wait for the flag server (default 2,000 ms); the gate never blocks longer. */
  readonly timeoutMs?: number;
  /** File that keeps the last value fetched, for runs where the server is down. */
  readonly cacheFile?: string;
  /** GrowthBook targeting attributes. */
  readonly attributes?: Record<string, unknown>;
}

/** The gate's state: the decision and each gate's part in it. */
export interface GateDecision {
  readonly enabled: boolean;
  readonly gates: { readonly compileTime: boolean; readonly entrypoint: boolean; readonly remote: boolean };
  readonly remoteSource: RemoteFlagSource;
}

/**
 * Decides whether requests ask for anti-distillation decoys. Three independent gates must
 * all be open: the compile-time flag, the entrypoint (the CLI, not SDK use), and a remote
 * GrowthBook flag. The remote flag is read with the stock `@growthbook/growthbook` SDK; if
 * the flag server is unreachable, the last cached value (or the default) is used. Nothing
 * here blocks or throws.
 *
 * @example
 * ```ts
 * const gate = await AntiDistillationGate.create({
 *   compileTime: feature('ANTI_DISTILLATION'), entrypoint: 'cli',
 *   remote: { apiHost: 'http://127.0.0.1:8787', clientKey: 'moat' },
 * });
 * const body = gate.apply({ model: 'm', max_tokens: 64, messages });
 * ```
 */
export class AntiDistillationGate {
  readonly #warn: Warner;
  readonly #options: AntiDistillationGateOptions;
  #remote = false;
  #source: RemoteFlagSource = 'default';

  private constructor(options: AntiDistillationGateOptions) {
    this.#options = options;
    this.#warn = createWarner('distill-guard', options.onWarning);
    const remote = options.remote;
    if ('value' in remote) {
      this.#remote = remote.value;
      this.#source = remote.source ?? 'network';
    } else this.#remote = remote.defaultValue ?? false;
  }

  /** Creates the gate and reads the remote flag once (bounded by `timeoutMs`). */
  static async create(options: AntiDistillationGateOptions): Promise<AntiDistillationGate> {
    const gate = new AntiDistillationGate(options);
    await gate.refresh();
    return gate;
  }

  /** Reads the remote flag again; on failure keeps the cached value or the default. */
  async refresh(): Promise<GateDecision> {
    // Gates 1 and 2 are checked first: a closed local gate needs no network at all.
    if (!this.#options.compileTime || !this.#entrypointOpen()) return this.decision();
    const remote = this.#options.remote;
    // A value the app read itself: nothing to fetch.
    if ('value' in remote) return this.decision();
    const key = remote.featureKey ?? ANTI_DISTILLATION_FEATURE;
    const gb = new GrowthBook({ apiHost: remote.apiHost, clientKey: remote.clientKey, attributes: remote.attributes ?? {} });
    try {
      const result = await gb.init({ timeout: remote.timeoutMs ?? 2_000, skipCache: true });
      if (result.success && result.source === 'network') {
        this.#remote = gb.isOn(key);
        this.#source = 'network';
        await this.#saveCache(key, this.#remote);
        return this.decision();
      }
      this.#warn(
        `flag server ${remote.apiHost} not reached (${result.error?.message ?? result.source}); using the cached value or the default`,
      );
    } catch (error) {
      this.#warn(`flag server ${remote.apiHost} not reached (${errorMessage(error)}); using the cached value or the default`);
    } finally {
      gb.destroy();
    }
    const cached = await this.#loadCache(key);
    if (cached !== undefined) {
      this.#remote = cached;
      this.#source = 'cache';
    }
    return this.decision();
  }

  #entrypointOpen(): boolean {
    return (this.#options.allowedEntrypoints ?? ['cli']).includes(this.#options.entrypoint);
  }

  /** The current decision. */
  decision(): GateDecision {
    const gates = { compileTime: this.#options.compileTime, entrypoint: this.#entrypointOpen(), remote: this.#remote };
    return { enabled: gates.compileTime && gates.entrypoint && gates.remote, gates, remoteSource: this.#source };
  }

  /** Returns a copy of `request` that asks for decoys when every gate is open; else `request` itself. */
  apply<T extends object>(request: T): T {
    if (!this.decision().enabled) return request;
    return { ...request, [ANTI_DISTILLATION_MEMBER]: ['fake_tools'] };
  }

  #cacheFile(): string | undefined {
    const remote = this.#options.remote;
    return 'value' in remote ? undefined : remote.cacheFile;
  }

  async #saveCache(key: string, value: boolean): Promise<void> {
    const file = this.#cacheFile();
    if (file === undefined) return;
    try {
      await writeFile(file, `${JSON.stringify({ feature: key, value, fetchedAt: new Date().toISOString() })}\n`, { mode: 0o600 });
    } catch (error) {
      this.#warn(`cannot write the flag cache ${file}: ${errorMessage(error)}`);
    }
  }

  async #loadCache(key: string): Promise<boolean | undefined> {
    const file = this.#cacheFile();
    if (file === undefined) return undefined;
    try {
      const data = JSON.parse(await readFile(file, 'utf8')) as { feature?: unknown; value?: unknown };
      if (data.feature === key && typeof data.value === 'boolean') return data.value;
      this.#warn(`flag cache ${file} holds no boolean value for ${key}; ignored`);
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') this.#warn(`cannot read the flag cache ${file}: ${errorMessage(error)}`);
    }
    return undefined;
  }
}

/**
 * A client-side identity for an API key, to remember which key produced which turn without
 * keeping the key itself: `k_` and 16 hex digits of its SHA-256.
 */
export function keyIdentity(apiKey: string): string {
  return `k_${createHash('sha256').update(apiKey).digest('hex').slice(0, 16)}`;
}

/** The API key (as {@link keyIdentity}) and model an assistant turn was produced with. */
export interface BlockOrigin {
  readonly apiKeyId: string;
  readonly model: string;
}

/** One conversation entry: a message and, for assistant turns, where it came from. */
export interface HistoryEntry {
  readonly message: { readonly role: string; readonly content: unknown };
  readonly origin?: BlockOrigin;
}

/** Text that stands in for an assistant turn whose only content was stripped reasoning. */
export const STRIPPED_PLACEHOLDER = '(earlier reasoning omitted)';

/**
 * Signed-block hygiene before sending: removes thinking / redacted_thinking /
 * connector_text blocks from assistant turns produced with another API key or another model
 * (after a login switch or a model fallback), because the server checks their signatures
 * against the request's own key and model. Everything else is kept as it was; an assistant
 * turn left empty gets a short text placeholder so the conversation keeps its shape. Turns
 * without a recorded origin are treated as foreign.
 *
 * @example
 * ```ts
 * const { messages } = stripForeignSignedBlocks(history, { apiKeyId: keyIdentity(newKey), model: 'fallback-model' });
 * ```
 */
export function stripForeignSignedBlocks(
  history: readonly HistoryEntry[],
  current: BlockOrigin,
): { messages: Array<{ role: string; content: unknown }>; stripped: number } {
  let stripped = 0;
  const messages = history.map(({ message, origin }) => {
    const same = origin !== undefined && origin.apiKeyId === current.apiKeyId && origin.model === current.model;
    if (message.role !== 'assistant' || same || !Array.isArray(message.content)) return { ...message };
    const kept = (message.content as unknown[]).filter((block) => {
      const signed = typeof block === 'object' && block !== null && isSignedBlockType((block as { type?: unknown }).type);
      if (signed) stripped++;
      return !signed;
    });
    return { ...message, content: kept.length > 0 ? kept : [{ type: 'text', text: STRIPPED_PLACEHOLDER }] };
  });
  return { messages, stripped };
}
