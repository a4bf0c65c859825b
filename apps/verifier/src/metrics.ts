import { escapeControl } from '@moat/protocol/support';
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import { ENROLL_OUTCOMES } from './installs.js';
import { SIGNAL_ROWS } from './signals.js';

/** The verifier's Prometheus series. */
export interface VerifierMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'verdict'>;
  readonly signals: Counter<'layer' | 'value'>;
  readonly duration: Histogram;
  readonly decoyCalls: Counter;
  readonly telemetryEvents: Counter<'type'>;
  /** Enrollment attempts of per-install keys, by outcome. */
  readonly enrollments: Counter<'outcome'>;
  /** Requests and uploads whose decoy trace did not read all of them, by where it was cut. */
  readonly traceCuts: Counter<'cut'>;
  /** Decoy calls kept from clients since start. */
  decoyCallCount: number;
}

/**
 * A label value safe for the Prometheus text format: prom-client escapes backslash, quote and
 * line feed only, so control characters (CR, ESC, BEL, …) are written as the text `\uXXXX`
 * first (`escapeControl`), and values are cut at 128 characters. Values from a closed set pass unchanged.
 */
export function labelValue(value: string): string {
  const text = escapeControl(value);
  return text.length > 128 ? `${text.slice(0, 128)}…` : text;
}

/**
 * Where a decoy trace can be cut: the reader's own cuts, an upload read for its first bytes
 * only, no index to trace against yet, and a read that failed in a trace worker.
 */
export const TRACE_CUTS = [
  'pdf_stream_cap',
  'pdf_inflate_budget',
  'pdf_stream_count',
  'pdf_encrypted',
  'gzip_inflate_budget',
  'gzip_stream_cap',
  'chars',
  'upload_bytes',
  'no_index',
  'trace_failed',
] as const;

/** One of {@link TRACE_CUTS}. */
export type TraceCut = (typeof TRACE_CUTS)[number];

/** Creates the registry and the series; process metrics included. */
export function createMetrics(): VerifierMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const metrics: VerifierMetrics = {
    registry,
    requests: new Counter({
      name: 'moat_requests_total',
      help: 'Policy decisions on Messages requests by verdict (answers by status: moat_responses_total)',
      labelNames: ['verdict'],
      registers: [registry],
    }),
    signals: new Counter({
      name: 'moat_signals_total',
      help: "Signals by layer and value (the signal registry: each signal's metric label and its values)",
      labelNames: ['layer', 'value'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'moat_request_duration_seconds',
      help: 'Time to answer a Messages request',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [registry],
    }),
    decoyCalls: new Counter({
      name: 'moat_decoy_calls_total',
      help: 'Decoy tool calls the verifier kept from the client (answered, or withheld next to real calls)',
      registers: [registry],
    }),
    telemetryEvents: new Counter({
      name: 'moat_telemetry_events_total',
      help: 'Client telemetry events by type',
      labelNames: ['type'],
      registers: [registry],
    }),
    enrollments: new Counter({
      name: 'moat_enrollments_total',
      help: 'Enrollment attempts of per-install keys by outcome (created, over_limit, or why refused)',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    traceCuts: new Counter({
      name: 'moat_decoy_trace_cuts_total',
      help: 'Requests and uploads the decoy trace did not read whole, by where it was cut (a budget spent, an encrypted PDF, an upload past its first bytes)',
      labelNames: ['cut'],
      registers: [registry],
    }),
    decoyCallCount: 0,
  };
  for (const outcome of ENROLL_OUTCOMES) metrics.enrollments.inc({ outcome }, 0);
  for (const cut of TRACE_CUTS) metrics.traceCuts.inc({ cut }, 0);
  // Every signal value of the registry is a series from the start, at 0, so rates and alerts see it before it happens.
  for (const row of SIGNAL_ROWS) for (const value of row.values) metrics.signals.inc({ layer: row.metric, value }, 0);
  return metrics;
}
