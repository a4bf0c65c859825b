import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createHmac, createPublicKey, timingSafeEqual, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseAttribution, serializeAttribution } from './attribution.js';
import { ProtocolError } from './errors.js';
import { fingerprint, fingerprintChars } from './fingerprint.js';
import { firstUserText } from './request.js';
import { parseBlockSignature, type SigningContext, signingInput } from './signature.js';
import { errorMessage } from './support/index.js';
import { toHex } from './text.js';

/** One conformance case: what is sent to the implementation and what must come back. */
export interface ConformanceCase {
  readonly name: string;
  readonly request: Record<string, unknown>;
  /** Members the answer must have, compared byte for byte (as canonical JSON). */
  readonly expected: Record<string, unknown>;
}

/** The outcome of one case. */
export interface ConformanceResult {
  readonly name: string;
  readonly pass: boolean;
  readonly detail?: string;
}

// biome-ignore lint/suspicious/noExplicitAny: vector files are schemaless JSON, checked member by member by their own tests
type Vector = Record<string, any>;

function load(dir: URL, file: string): Vector[] {
  return (JSON.parse(readFileSync(new URL(`${file}.json`, dir), 'utf8')) as { cases: Vector[] }).cases;
}

/**
 * The cases of the stdio conformance interface (SPEC.md §15), built from the vector files:
 * `fingerprint`, `parse_attribution` and `verify_signature` (every hs256 vector, and the
 * same with the model changed, which must not verify; every ed25519 vector, where `valid` is
 * checked when the implementation reports it).
 */
export function conformanceCases(vectorsDir: URL): ConformanceCase[] {
  const cases: ConformanceCase[] = [];
  for (const v of load(vectorsDir, 'fingerprint')) {
    cases.push({
      name: `fingerprint: ${v.name}`,
      request: { op: 'fingerprint', request: v.request, salt: v.salt, version: v.version },
      expected: { chars: v.chars, fp: v.fp },
    });
  }
  for (const v of load(vectorsDir, 'attribution').filter((x) => x.op === 'parse')) {
    cases.push({
      name: `parse_attribution: ${v.name}`,
      request: { op: 'parse_attribution', input: v.input },
      expected: v.valid ? { valid: true, fields: v.fields, serialized: v.serialized } : { valid: false, error: v.error },
    });
  }
  for (const v of load(vectorsDir, 'signature')) {
    if (v.op === 'sign_hs256') {
      const base = { op: 'verify_signature', alg: 'hs256', key: v.key, block: v.block, signature: v.signature };
      cases.push({
        name: `verify_signature: ${v.name}`,
        request: { ...base, context: v.context },
        expected: { input: v.input, valid: true },
      });
      cases.push({
        name: `verify_signature: ${v.name}, presented for another model`,
        request: { ...base, context: { ...v.context, model: `${v.context.model}-other` } },
        expected: { valid: false },
      });
      const mac = createHmac('sha256', Buffer.from(v.key, 'hex')).update(Buffer.from(v.input, 'hex')).digest();
      mac[0] = (mac[0] as number) ^ 1;
      const forged = `${v.signature.split('.').slice(0, 4).join('.')}.${mac.toString('base64url')}`;
      cases.push({
        name: `verify_signature: ${v.name}, forged`,
        request: { ...base, context: v.context, signature: forged },
        expected: { valid: false },
      });
    } else if (v.op === 'verify_ed25519') {
      cases.push({
        name: `verify_signature: ${v.name}`,
        request: {
          op: 'verify_signature',
          alg: 'ed25519',
          publicKey: v.publicKey,
          block: v.block,
          context: v.context,
          signature: v.signature,
        },
        expected: { input: v.input, valid: v.valid },
      });
    }
  }
  return cases;
}

const canonical = (x: unknown): string =>
  JSON.stringify(x, (_k, value) =>
    value && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1)))
      : value,
  );

/**
 * Compares one answer with what its case expects. A `verify_signature` answer may leave out
 * `valid` for an algorithm the implementation cannot check (then `input` alone is compared);
 * everything else is compared exactly, as canonical JSON.
 */
export function compareAnswer(c: ConformanceCase, answer: Record<string, unknown> | undefined, missing = 'no answer'): ConformanceResult {
  if (answer === undefined || answer === null || typeof answer !== 'object') return { name: c.name, pass: false, detail: missing };
  for (const [key, want] of Object.entries(c.expected)) {
    if (key === 'valid' && c.request.op === 'verify_signature' && !('valid' in answer)) continue;
    if (canonical(answer[key]) !== canonical(want))
      return { name: c.name, pass: false, detail: `${key}: expected ${canonical(want)}, got ${canonical(answer[key])}` };
  }
  return { name: c.name, pass: true };
}

/** A conformance request with a member the interface cannot read. */
export class ConformanceRequestError extends Error {
  override readonly name = 'ConformanceRequestError';
  readonly code = 'ERR_CONFORMANCE_REQUEST';
  constructor(member: string, expected: string, received: unknown) {
    super(`ERR_CONFORMANCE_REQUEST: ${member}: expected ${expected}, got ${JSON.stringify(received)}`);
  }
}

const hexBytes = (value: unknown, what: string): Buffer => {
  if (typeof value !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(value)) throw new ConformanceRequestError(what, 'lowercase hex', value);
  return Buffer.from(value, 'hex');
};

/**
 * The TypeScript implementation's answer to one request of the stdio conformance interface
 * (SPEC.md §15) — what a verifier serves at `POST /v1/moat/conformance`. Never throws: a
 * request it cannot read is answered `{ error: code }`.
 */
export function answerConformanceRequest(request: unknown): Record<string, unknown> {
  try {
    const req = (typeof request === 'object' && request !== null ? request : {}) as Record<string, unknown>;
    switch (req.op) {
      case 'fingerprint': {
        const options = { salt: String(req.salt ?? ''), version: String(req.version ?? '') };
        const text = firstUserText(req.request);
        return { chars: fingerprintChars(text), fp: fingerprint(text, options) };
      }
      case 'parse_attribution': {
        let block: ReturnType<typeof parseAttribution>;
        try {
          block = parseAttribution(req.input);
        } catch (error) {
          if (error instanceof ProtocolError) return { valid: false, error: error.code };
          throw error;
        }
        const fields = { ...block, extensions: block.extensions.map(([k, v]) => [k, v]) };
        return { valid: true, fields, serialized: serializeAttribution(block) };
      }
      case 'verify_signature': {
        const context = req.context as SigningContext;
        const input = signingInput(req.block, context);
        let valid = false;
        try {
          const sig = parseBlockSignature(req.signature);
          // The signature's own kid, algorithm and scope must be the ones the input was built
          // with: a signature whose kid or scope was altered never verifies (SPEC §8.5).
          const scope = context.context === undefined ? 'k' : 'c';
          if (sig.kid !== context.kid || sig.alg !== context.alg || sig.scope !== scope) valid = false;
          else if (req.alg === 'hs256' && sig.alg === 'hs256') {
            const mac = createHmac('sha256', hexBytes(req.key, 'key')).update(input).digest();
            valid = timingSafeEqual(mac, Buffer.from(sig.sig));
          } else if (req.alg === 'ed25519' && sig.alg === 'ed25519') {
            const key = createPublicKey({
              key: { kty: 'OKP', crv: 'Ed25519', x: hexBytes(req.publicKey, 'publicKey').toString('base64url') },
              format: 'jwk',
            });
            valid = verify(null, input, key, sig.sig);
          }
        } catch (error) {
          if (!(error instanceof ProtocolError)) throw error;
        }
        return { input: toHex(input), valid };
      }
      default:
        return {
          error: `ERR_CONFORMANCE_REQUEST: expected op fingerprint, parse_attribution or verify_signature, got ${JSON.stringify(req.op)}`,
        };
    }
  } catch (error) {
    if (error instanceof ProtocolError) return { error: error.code };
    return { error: error instanceof ConformanceRequestError ? error.message : `ERR_CONFORMANCE_REQUEST: ${errorMessage(error)}` };
  }
}

/**
 * Runs every case through an implementation of the stdio interface: one JSON request per line
 * on its stdin (with an `id`), one JSON answer per line on its stdout, compared by
 * {@link compareAnswer}.
 */
export async function runConformance(command: readonly string[], cases: readonly ConformanceCase[]): Promise<ConformanceResult[]> {
  const [program, ...args] = command as [string, ...string[]];
  const child: ChildProcessWithoutNullStreams = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const answers = new Map<number, Record<string, unknown>>();
  const lines = createInterface({ input: child.stdout });
  const done = new Promise<void>((resolve) => {
    lines.on('line', (line) => {
      try {
        const answer = JSON.parse(line) as Record<string, unknown>;
        if (typeof answer.id === 'number') answers.set(answer.id, answer);
      } catch {
        // a garbled line fails the case it was meant for
      }
    });
    lines.on('close', () => resolve());
  });
  // A command that cannot start, or exits before reading everything, fails its cases instead of throwing.
  child.on('error', (error) => (stderr += error.message));
  child.stdin.on('error', () => {});
  for (const [id, c] of cases.entries()) child.stdin.write(`${JSON.stringify({ id, ...c.request })}\n`);
  child.stdin.end();
  await done;
  const missing = `no answer${stderr ? ` (stderr: ${stderr.trim().split('\n').at(-1)})` : ''}`;
  return cases.map((c, id) => compareAnswer(c, answers.get(id), missing));
}
