import { type ParseResult, ProtocolError, toResult } from './errors.js';
import { describeValue } from './internal/describe.js';
import { utf8Length } from './text.js';

/** Path of the telemetry endpoint relative to the API base URL. */
export const TELEMETRY_PATH = '/v1/telemetry';

/** Bounds of one telemetry batch. */
export const TELEMETRY_LIMITS = { events: 100, bytes: 65_536, stringLength: 256, listLength: 32 } as const;

/** Event types defined in v1. Unknown types are accepted and counted, not rejected. */
export const TELEMETRY_EVENT_TYPES = ['gateway_detected', 'harden_status', 'attestation_unavailable', 'layer_degraded'] as const;
export type TelemetryEventType = (typeof TELEMETRY_EVENT_TYPES)[number];

/** One telemetry event: a `type`, a Unix-seconds `ts`, and type-specific members. */
export interface TelemetryEvent {
  readonly type: string;
  readonly ts: number;
  readonly [member: string]: unknown;
}

/** A telemetry batch `POST`ed by a client. */
export interface TelemetryBatch {
  readonly v: 1;
  /** Client version and entrypoint, as in the attribution block. */
  readonly client: { readonly cv: string; readonly ep: string };
  readonly events: readonly TelemetryEvent[];
}

const SCHEMAS: Readonly<Record<TelemetryEventType, Readonly<Record<string, 'string' | 'boolean' | 'number' | 'strings'>>>> = {
  gateway_detected: { gateways: 'strings', evidence: 'strings' },
  harden_status: { dumpable: 'boolean', tracer: 'number', platform: 'string', skipped: 'strings' },
  attestation_unavailable: { reason: 'string' },
  layer_degraded: { layer: 'string', reason: 'string' },
};

const OPTIONAL = new Set(['evidence', 'skipped', 'tracer']);

function fail(expected: string, received: string): never {
  throw new ProtocolError('ERR_TELEMETRY', expected, received);
}

function checkString(value: unknown, where: string): string {
  if (typeof value !== 'string' || value.length === 0 || utf8Length(value) > TELEMETRY_LIMITS.stringLength) {
    fail(`${where} as a string of 1-${TELEMETRY_LIMITS.stringLength} UTF-8 bytes`, describeValue(value));
  }
  return value;
}

function checkEvent(raw: unknown, i: number): TelemetryEvent {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(`events[${i}] as an object`, describeValue(raw));
  const event = raw as Record<string, unknown>;
  const type = checkString(event.type, `events[${i}].type`);
  if (!Number.isSafeInteger(event.ts) || (event.ts as number) < 0) fail(`events[${i}].ts as Unix seconds`, describeValue(event.ts));
  // Own members only: a type named `constructor` or `__proto__` is an unknown type, not a prototype member.
  const schema = Object.hasOwn(SCHEMAS, type) ? SCHEMAS[type as TelemetryEventType] : undefined;
  if (schema === undefined) return { type, ts: event.ts as number };
  const out: Record<string, unknown> = { type, ts: event.ts };
  for (const [member, kind] of Object.entries(schema)) {
    const value = event[member];
    const where = `events[${i}].${member}`;
    if (value === undefined && OPTIONAL.has(member)) continue;
    if (kind === 'string') out[member] = checkString(value, where);
    else if (kind === 'boolean') {
      if (typeof value !== 'boolean') fail(`${where} as a boolean`, describeValue(value));
      out[member] = value;
    } else if (kind === 'number') {
      if (!Number.isSafeInteger(value) || (value as number) < 0) fail(`${where} as a non-negative integer`, describeValue(value));
      out[member] = value;
    } else {
      if (!Array.isArray(value) || value.length > TELEMETRY_LIMITS.listLength) {
        fail(`${where} as an array of at most ${TELEMETRY_LIMITS.listLength} strings`, describeValue(value));
      }
      out[member] = value.map((v, j) => checkString(v, `${where}[${j}]`));
    }
  }
  return out as TelemetryEvent;
}

/**
 * Validates a telemetry batch from an untrusted client. Known event types are checked
 * member by member and reduced to their known members; unknown types keep only `type` and
 * `ts` (forward compatibility).
 *
 * @throws {ProtocolError} `ERR_TELEMETRY` naming the first problem.
 */
export function parseTelemetryBatch(input: unknown, byteLength?: number): TelemetryBatch {
  if (byteLength !== undefined && byteLength > TELEMETRY_LIMITS.bytes) {
    fail(`a batch of at most ${TELEMETRY_LIMITS.bytes} bytes`, `${byteLength} bytes`);
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) fail('an object', describeValue(input));
  const batch = input as Record<string, unknown>;
  if (batch.v !== 1) fail('"v": 1', describeValue(batch.v));
  const client = batch.client;
  if (typeof client !== 'object' || client === null || Array.isArray(client)) fail('"client" as an object', describeValue(client));
  const c = client as Record<string, unknown>;
  const cv = checkString(c.cv, 'client.cv');
  const ep = checkString(c.ep, 'client.ep');
  if (!Array.isArray(batch.events) || batch.events.length > TELEMETRY_LIMITS.events) {
    fail(`"events" as an array of at most ${TELEMETRY_LIMITS.events}`, describeValue(batch.events));
  }
  return { v: 1, client: { cv, ep }, events: batch.events.map(checkEvent) };
}

/** Like {@link parseTelemetryBatch}, but returns a {@link ParseResult} instead of throwing. */
export function tryParseTelemetryBatch(input: unknown, byteLength?: number): ParseResult<TelemetryBatch> {
  return toResult(() => parseTelemetryBatch(input, byteLength));
}
