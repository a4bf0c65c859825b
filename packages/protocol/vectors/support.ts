/** Helpers shared by the vector generators (generate.ts and the files of one release's cases). */
import * as p from '../dist/index.js';

export type Case = Record<string, unknown> & { name: string; op: string };

/** The request components of the r1 and i1 stamp vectors. */
export const REQUEST: p.RequestComponents = {
  method: 'POST',
  authority: 'api.example.com',
  path: '/v1/messages',
  credential: 'sk-ant-test-0001',
};

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export function fromHex(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'hex'));
}

/** Runs `fn`; on a ProtocolError returns its code, otherwise the value. */
export function attempt<T>(fn: () => T): { ok: true; value: T } | { ok: false; error: string } {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    if (error instanceof p.ProtocolError) return { ok: false, error: error.code };
    throw error;
  }
}

/** `body` with its envelope's stamp computed under `key` (hex) and written in. */
export function stamped(key: string, body: string, request?: p.RequestComponents): string {
  const bytes = p.utf8(body);
  const loc = p.locateEnvelope(bytes);
  if (loc.status !== 'found') throw new Error('no envelope');
  const stamp = p.computeStamp(fromHex(key), bytes, loc.stampStart, loc.stampEnd, request);
  return Buffer.concat([bytes.subarray(0, loc.stampStart), Buffer.from(stamp), bytes.subarray(loc.stampEnd)]).toString(
    'utf8',
  );
}
