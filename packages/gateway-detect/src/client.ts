import {
  detectGateways,
  GATEWAY_RULES,
  type GatewayDetection,
  type GatewayRuleTable,
  type HeaderInput,
  type ProtocolError,
  tryParseGatewayRuleTable,
} from '@moat/protocol';
import { createWarner, errorMessage, type Warner } from '@moat/protocol/support';
import type { TelemetryQueue } from './telemetry-queue.js';

export * from './telemetry-queue.js';

/** Options of {@link GatewayDetector}. */
export interface GatewayDetectorOptions {
  /** The API base URL the client is configured with; its host is matched against host suffixes. */
  readonly baseUrl?: string | undefined;
  /** Starting rule table (default: the protocol's built-in table). */
  readonly rules?: GatewayRuleTable;
  /** Where detections are reported; without one, detections are only returned. */
  readonly telemetry?: Pick<TelemetryQueue, 'push'> | undefined;
  /** Called on a problem (a rule update refused, a throwing callback); never throws. */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Clock, for tests. */
  readonly now?: () => number;
}

/** Outcome of {@link GatewayDetector.updateRules}. */
export type RuleUpdateResult =
  | { readonly ok: true; readonly revision: string }
  | { readonly ok: false; readonly reason: 'invalid'; readonly error: ProtocolError }
  | { readonly ok: false; readonly reason: 'not_newer'; readonly revision: string };

function compareRevisions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * Watches responses for traces of AI gateways between the client and the API: header-name
 * prefixes (`x-litellm-`, `helicone-`, `x-portkey-`, `cf-aig-`, …) and the base URL's host
 * (`*.cloud.databricks.com`, …), from the protocol's rule table. Detection never blocks or
 * throws: it returns what it saw and queues a `gateway_detected` telemetry event. The
 * same evidence is reported once per distinct set of rule ids, not on every response.
 *
 * @example
 * ```ts
 * const detector = new GatewayDetector({ baseUrl: 'https://dbc-1.cloud.databricks.com/serving-endpoints' });
 * detector.observe({ headers: response.headers }); // [{ id: 'databricks', evidence: ['host:dbc-1.cloud.databricks.com'] }]
 * ```
 */
export class GatewayDetector {
  #rules: GatewayRuleTable;
  readonly #warn: Warner;
  readonly #options: GatewayDetectorOptions;
  readonly #reported = new Set<string>();

  constructor(options: GatewayDetectorOptions = {}) {
    this.#options = options;
    this.#warn = createWarner('gateway-detect', options.onWarning);
    this.#rules = options.rules ?? GATEWAY_RULES;
  }

  /** The rule table in use. */
  get rules(): GatewayRuleTable {
    return this.#rules;
  }

  /**
   * Replaces the rule table with an untrusted update (remote config), after validating it:
   * literal patterns only, bounded sizes, and a revision newer than the current one.
   */
  updateRules(update: unknown): RuleUpdateResult {
    const parsed = tryParseGatewayRuleTable(update);
    if (!parsed.ok) {
      this.#warn(`gateway rule update refused: ${parsed.error.message}`);
      return { ok: false, reason: 'invalid', error: parsed.error };
    }
    if (compareRevisions(parsed.value.revision, this.#rules.revision) <= 0) {
      return { ok: false, reason: 'not_newer', revision: this.#rules.revision };
    }
    this.#rules = parsed.value;
    this.#reported.clear();
    return { ok: true, revision: parsed.value.revision };
  }

  /**
   * Matches one response's header names (and the configured base URL, or `url`) against the
   * rules. Returns the detections; never throws.
   */
  observe(response: { readonly headers: HeaderInput; readonly url?: string }): GatewayDetection[] {
    let detections: GatewayDetection[];
    try {
      const baseUrl = this.#options.baseUrl ?? response.url;
      detections = detectGateways({ headers: response.headers, ...(baseUrl === undefined ? {} : { baseUrl }) }, this.#rules);
    } catch (error) {
      this.#warn(`gateway detection skipped: ${errorMessage(error)}`);
      return [];
    }
    if (detections.length > 0 && this.#options.telemetry !== undefined) {
      const signature = detections.map((d) => d.id).join(',');
      if (!this.#reported.has(signature)) {
        this.#reported.add(signature);
        try {
          this.#options.telemetry.push({
            type: 'gateway_detected',
            ts: Math.floor((this.#options.now ?? Date.now)() / 1000),
            gateways: detections.map((d) => d.id),
            // Telemetry strings are bounded to 256 bytes; header names and hosts are ASCII.
            evidence: detections.flatMap((d) => d.evidence.map((e) => e.slice(0, 256))).slice(0, 32),
          });
        } catch (error) {
          this.#warn(`gateway telemetry skipped: ${errorMessage(error)}`);
        }
      }
    }
    return detections;
  }
}
