import { GrowthBook } from '@growthbook/growthbook';
import { createAttestedFetch } from '@moat/attest/client';
import { AntiDistillationGate, type HistoryEntry, keyIdentity, stripForeignSignedBlocks } from '@moat/distill-guard/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { GatewayDetector, TelemetryQueue } from '@moat/gateway-detect/client';
import { harden, hardenStatusEvent } from '@moat/harden';
import { DISCOVERY_PATH, type Feature, tryParseDiscovery } from '@moat/protocol';
import { MessageAssembler, readStreamEvents } from '@moat/protocol/messages';
import { errorCode, errorMessage, loadNativeAddon, MoatError } from '@moat/protocol/support';
import { CLIENT_VERSION } from './version.js';

/** Deployment salt of the fingerprint (a build constant shared with the verifier). */
export const FINGERPRINT_SALT = process.env.MOAT_FINGERPRINT_SALT ?? 'moat-dev-salt';

/** Why a turn failed. */
export type ChatErrorCode = 'ERR_HTTP' | 'ERR_STREAM' | 'ERR_OVERLOADED' | 'ERR_NETWORK' | 'ERR_TIMEOUT';

/** A turn that did not complete: the verifier or the model refused it, or its stream broke off. */
export class ChatError extends MoatError<ChatErrorCode> {
  override readonly name = 'ChatError';
}

/** How one layer came up. */
export interface LayerStatus {
  readonly layer: string;
  readonly state: 'on' | 'off' | 'degraded';
  readonly detail: string;
}

export interface SessionOptions {
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly model: string;
  readonly fallbackModel?: string;
  /** Compile-time anti-distillation gate (`feature('ANTI_DISTILLATION')`). */
  readonly antiDistillation: boolean;
  readonly thinking: boolean;
  readonly warn: (message: string) => void;
  /**
   * How long to wait for the answer to start, and then between two parts of it, in
   * milliseconds (default 60,000): a server that accepts and never answers fails the turn.
   */
  readonly timeoutMs?: number;
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
 * One chat session: every client-side layer composed, each failing open. The verifier's
 * GrowthBook flags can switch any layer off for everyone (`moat-kill-*`), and the
 * attribution block, the envelope and the anti-distillation request each have a flag too.
 */
export class ChatSession {
  readonly status: LayerStatus[] = [];
  readonly history: HistoryEntry[] = [];
  model: string;
  #apiKey: string;
  readonly #options: SessionOptions;
  #features: readonly Feature[] = [];
  #flags = new Map<string, unknown>();
  #fetch: typeof fetch = fetch;
  #gate: AntiDistillationGate | undefined;
  #detector: GatewayDetector | undefined;
  #telemetry: TelemetryQueue | undefined;

  private constructor(options: SessionOptions) {
    this.#options = options;
    this.model = options.model;
    this.#apiKey = options.apiKey;
  }

  static async start(options: SessionOptions): Promise<ChatSession> {
    const s = new ChatSession(options);
    await s.#setUp();
    return s;
  }

  #flag(name: string, fallback: boolean): boolean {
    const v = this.#flags.get(name);
    return typeof v === 'boolean' ? v : fallback;
  }

  async #setUp(): Promise<void> {
    const { baseUrl, warn } = this.#options;
    // Discovery: which tags this endpoint accepts (none if it does not speak Moat).
    try {
      const res = await fetch(new URL(DISCOVERY_PATH, baseUrl), { signal: AbortSignal.timeout(2_000) });
      const doc = tryParseDiscovery(res.ok ? await res.json() : {});
      this.#features = doc.ok ? doc.value.features : [];
    } catch (error) {
      warn(`no Moat discovery at ${baseUrl} (${errorMessage(error)}); sending no tags`);
    }
    // Remote flags, with the stock GrowthBook SDK, from the verifier's features endpoint.
    const gb = new GrowthBook({ apiHost: baseUrl, clientKey: process.env.MOAT_CLIENT_KEY ?? 'moat' });
    try {
      const r = await gb.init({ timeout: 2_000, skipCache: true });
      if (!r.success) throw r.error ?? new Error(r.source);
      for (const key of Object.keys(gb.getFeatures())) this.#flags.set(key, gb.getFeatureValue(key, null));
    } catch (error) {
      warn(`remote flags unavailable (${errorMessage(error)}); using defaults`);
    } finally {
      gb.destroy();
    }

    // Layer 5: harden the process first.
    if (this.#flag('moat-kill-harden', false)) this.status.push({ layer: 'harden', state: 'off', detail: 'kill switch' });
    else {
      const report = await harden({ onWarning: warn });
      this.status.push({
        layer: 'harden',
        state: report.skipped.length === 0 ? 'on' : 'degraded',
        detail: report.skipped.map((x) => `${x.step}:${x.reason}`).join(', ') || `dumpable=${report.dumpable}`,
      });
      this.#queueEvent(hardenStatusEvent(report));
    }

    // Layer 2: attested transport.
    const attest =
      this.#features.includes('attestation') && !this.#flag('moat-kill-attestation', false) && this.#flag('moat-envelope', true);
    if (attest) {
      let unattested = '';
      const bindRequest = this.#features.includes('request_binding');
      this.#fetch = createAttestedFetch({
        onWarning: warn,
        bindRequestFor: () => bindRequest,
        onUnattested: (reason) => {
          unattested = reason;
          this.#queueEvent({ type: 'attestation_unavailable', ts: Math.floor(Date.now() / 1000), reason });
        },
      }) as typeof fetch;
      const { native, reason } = await loadNativeAddon(() => import('@moat/native'));
      this.status.push({
        layer: 'attest',
        state: native === undefined ? 'degraded' : 'on',
        detail: native === undefined ? `unattested: ${reason || unattested}` : `key ${native.keyId()}`,
      });
    } else
      this.status.push({
        layer: 'attest',
        state: 'off',
        detail: this.#features.includes('attestation') ? 'flag off' : 'endpoint does not attest',
      });

    // Layer 4: the three anti-distillation gates.
    if (this.#flag('moat-kill-anti-distillation', false))
      this.status.push({ layer: 'anti-distillation', state: 'off', detail: 'kill switch' });
    else {
      this.#gate = await AntiDistillationGate.create({
        compileTime: this.#options.antiDistillation && this.#features.includes('anti_distillation'),
        entrypoint: 'cli',
        remote: { apiHost: baseUrl, clientKey: process.env.MOAT_CLIENT_KEY ?? 'moat', timeoutMs: 2_000 },
        onWarning: warn,
      });
      const d = this.#gate.decision();
      this.status.push({
        layer: 'anti-distillation',
        state: d.enabled ? 'on' : 'off',
        detail: `compile=${d.gates.compileTime} entrypoint=${d.gates.entrypoint} remote=${d.gates.remote} (${d.remoteSource})`,
      });
    }

    // Layer 6: gateway detection and telemetry.
    if (this.#flag('moat-kill-gateway-detect', false)) this.status.push({ layer: 'gateway-detect', state: 'off', detail: 'kill switch' });
    else {
      if (this.#features.includes('telemetry')) {
        this.#telemetry = new TelemetryQueue({
          endpoint: new URL('/v1/telemetry', baseUrl),
          client: { cv: CLIENT_VERSION, ep: 'cli' },
          headers: { 'x-api-key': this.#apiKey },
          onWarning: warn,
        });
      }
      this.#detector = new GatewayDetector({
        baseUrl,
        ...(this.#telemetry === undefined ? {} : { telemetry: this.#telemetry }),
        onWarning: warn,
      });
      this.status.push({
        layer: 'gateway-detect',
        state: 'on',
        detail: this.#telemetry === undefined ? 'no telemetry endpoint' : 'telemetry on',
      });
    }
    const fp =
      this.#features.includes('fingerprint') && this.#flag('moat-attribution', true) && !this.#flag('moat-kill-fingerprint', false);
    this.status.push({
      layer: 'fingerprint',
      state: fp ? 'on' : 'off',
      detail: fp ? `salt ${FINGERPRINT_SALT.slice(0, 4)}…` : 'flag off or endpoint without fingerprint',
    });
    for (const e of this.#pending.splice(0)) this.#telemetry?.push(e);
  }

  #pending: Array<{ type: string; ts: number; [k: string]: unknown }> = [];
  #queueEvent(e: { type: string; ts: number; [k: string]: unknown }): void {
    if (this.#telemetry === undefined) this.#pending.push(e);
    else this.#telemetry.push(e);
  }

  /** Switches the API key (login); the other key's signed blocks are stripped before the next request. */
  switchKey(apiKey: string): void {
    this.#apiKey = apiKey;
  }

  #body(messages: unknown[], model: string): Record<string, unknown> {
    let request: Record<string, unknown> = {
      model,
      max_tokens: 1024,
      stream: true,
      messages,
      ...(this.#options.thinking ? { thinking: { type: 'enabled', budget_tokens: 512 } } : {}),
    };
    if (this.status.find((s) => s.layer === 'fingerprint')?.state === 'on') {
      const tagged = tagFingerprint(request, {
        salt: FINGERPRINT_SALT,
        version: CLIENT_VERSION,
        entrypoint: 'cli',
        onWarning: this.#options.warn,
      });
      request = tagged.request;
    }
    return this.#gate?.apply(request) ?? request;
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
        this.#detector?.observe({ headers: res.headers });
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

  async close(): Promise<void> {
    await this.#telemetry?.close();
  }
}
