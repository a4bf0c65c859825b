import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createHmac, createPublicKey, timingSafeEqual, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { type AttributionFields, parseAttribution, serializeAttribution } from './attribution.js';
import { appendEnvelope, locateEnvelope, parseEnvelope } from './envelope.js';
import { ProtocolError } from './errors.js';
import { fingerprint, fingerprintChars } from './fingerprint.js';
import { detectGateways, parseGatewayRuleTable } from './gateway.js';
import { describeValue } from './internal/describe.js';
import { negotiateVersion, parseDiscovery, parseVersionHeader } from './negotiation.js';
import { firstUserText } from './request.js';
import { conversationDigest, parseBlockSignature, type SigningContext, serializeBlockSignature, signingInput } from './signature.js';
import { authorityOf, computeStamp, credentialOf, type RequestComponents, requestBase, verifyStamp } from './stamp.js';
import { errorMessage } from './support/index.js';
import { parseTelemetryBatch } from './telemetry.js';
import { toHex, utf8 } from './text.js';

/** One conformance case: what is sent to the implementation and what must come back. */
export interface ConformanceCase {
  readonly name: string;
  readonly request: Record<string, unknown>;
  /** The whole answer (without `id`), compared as canonical JSON. */
  readonly expected: Record<string, unknown>;
  /** The vector this case comes from (`file.json#index`); derived cases have none. */
  readonly vector?: string;
}

/** The outcome of one case. */
export interface ConformanceResult {
  readonly name: string;
  readonly pass: boolean;
  readonly detail?: string;
}

// biome-ignore lint/suspicious/noExplicitAny: vector files are schemaless JSON, checked member by member by their own tests
type Vector = Record<string, any>;

/**
 * The operations of the stdio interface (SPEC.md §15): one per normative function, named
 * `file.op` after the vectors that pin it, with the case members that go in the request
 * and those that make up the answer. `gateway.detect` also gets the built-in rule table.
 */
export const KIT_OPERATIONS: Readonly<Record<string, { readonly inputs: readonly string[]; readonly outputs: readonly string[] }>> = {
  'attribution.parse': { inputs: ['input'], outputs: ['valid', 'fields', 'serialized', 'error'] },
  'attribution.serialize': { inputs: ['fields'], outputs: ['valid', 'serialized', 'error'] },
  'envelope.parse': { inputs: ['input'], outputs: ['valid', 'envelope', 'error'] },
  'envelope.locate': {
    inputs: ['body'],
    outputs: ['status', 'envelope', 'memberStart', 'valueStart', 'valueEnd', 'stampStart', 'stampEnd', 'error'],
  },
  'envelope.append': { inputs: ['body', 'envelope'], outputs: ['valid', 'result', 'error'] },
  'stamp.compute': { inputs: ['key', 'body', 'request'], outputs: ['valid', 'stamp', 'stamped', 'error'] },
  'stamp.verify': { inputs: ['key', 'body', 'request'], outputs: ['result', 'valid', 'error'] },
  'stamp.authority': { inputs: ['url'], outputs: ['authority', 'valid', 'error'] },
  'stamp.credential': { inputs: ['headers'], outputs: ['credential'] },
  'stamp.request_base': { inputs: ['request'], outputs: ['valid', 'base', 'error'] },
  'fingerprint.fingerprint': { inputs: ['request', 'salt', 'version'], outputs: ['text', 'chars', 'fp'] },
  'signature.parse': { inputs: ['input'], outputs: ['valid', 'signature', 'error'] },
  'signature.conversation_digest': { inputs: ['messages'], outputs: ['digest'] },
  'signature.signing_input': { inputs: ['block', 'context'], outputs: ['valid', 'input', 'error'] },
  'signature.sign_hs256': { inputs: ['key', 'block', 'context'], outputs: ['input', 'signature', 'valid', 'error'] },
  'signature.verify': { inputs: ['key', 'publicKey', 'block', 'context', 'signature'], outputs: ['input', 'valid', 'error'] },
  'gateway.detect': { inputs: ['table', 'headers', 'baseUrl'], outputs: ['detections', 'valid', 'error'] },
  'gateway.table': { inputs: ['table'], outputs: ['valid', 'error'] },
  'negotiation.discovery': { inputs: ['input'], outputs: ['valid', 'discovery', 'error'] },
  'negotiation.version_header': { inputs: ['input'], outputs: ['versions'] },
  'negotiation.negotiate': { inputs: ['server', 'client'], outputs: ['version'] },
  'telemetry.batch': { inputs: ['input', 'byteLength'], outputs: ['valid', 'batch', 'error'] },
};

/** The vector files, in the order the kit runs them. */
export const VECTOR_FILES = [
  'attribution',
  'envelope',
  'stamp',
  'fingerprint',
  'signature',
  'gateway',
  'negotiation',
  'telemetry',
] as const;

/** Which kit operation a vector case runs through (`verify_ed25519` cases are `signature.verify`). */
function kitOp(file: string, op: string): string {
  return file === 'signature' && op === 'verify_ed25519' ? 'signature.verify' : `${file}.${op}`;
}

function pick(v: Vector, members: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const m of members) if (m in v) out[m] = v[m];
  return out;
}

/** The vector files' cases, each with its file, checked against the file's `count`. */
export function loadVectors(dir: URL): Array<{ file: string; index: number; vector: Vector }> {
  const out: Array<{ file: string; index: number; vector: Vector }> = [];
  for (const file of VECTOR_FILES) {
    const doc = JSON.parse(readFileSync(new URL(`${file}.json`, dir), 'utf8')) as { count: number; cases: Vector[] };
    if (doc.cases.length !== doc.count) throw new Error(`${file}.json: count says ${doc.count}, the file has ${doc.cases.length} cases`);
    doc.cases.forEach((vector, index) => {
      out.push({ file, index, vector });
    });
  }
  return out;
}

/**
 * The cases of the stdio conformance interface (SPEC.md §15): every case of every vector
 * file, through the operation that pins it, expecting the whole answer; and for every
 * hs256 signing case, four derived `signature.verify` cases (genuine; presented for another
 * model; forged; its kid, then its scope, altered), so an implementation that never
 * verifies, or ignores the signature's own kid and scope, fails.
 */
export function conformanceCases(vectorsDir: URL): ConformanceCase[] {
  const cases: ConformanceCase[] = [];
  const all = loadVectors(vectorsDir);
  const builtIn = all.find((x) => x.file === 'gateway' && x.vector.op === 'table')?.vector.table;
  for (const { file, index, vector: v } of all) {
    const op = kitOp(file, v.op);
    const spec = KIT_OPERATIONS[op];
    if (spec === undefined) throw new Error(`${file}.json#${index}: no kit operation for op ${v.op}`);
    const request: Record<string, unknown> = { op, ...pick(v, spec.inputs) };
    if (op === 'gateway.detect') request.table = builtIn;
    cases.push({ name: `${op}: ${v.name}`, request, expected: pick(v, spec.outputs), vector: `${file}.json#${index}` });
    if (v.op === 'sign_hs256') cases.push(...derivedVerifyCases(v));
  }
  return cases;
}

function derivedVerifyCases(v: Vector): ConformanceCase[] {
  const base = { op: 'signature.verify', key: v.key, block: v.block, context: v.context };
  const [prefix, alg, kid, scope, sig] = String(v.signature).split('.') as [string, string, string, string, string];
  const mac = createHmac('sha256', Buffer.from(v.key, 'hex')).update(Buffer.from(v.input, 'hex')).digest();
  mac[0] = (mac[0] as number) ^ 1;
  const otherModel = { ...v.context, model: `${v.context.model}-other` };
  return [
    { name: `signature.verify: ${v.name}`, request: { ...base, signature: v.signature }, expected: { input: v.input, valid: true } },
    {
      name: `signature.verify: ${v.name}, presented for another model`,
      request: { ...base, context: otherModel, signature: v.signature },
      expected: { input: toHex(signingInput(v.block, otherModel)), valid: false },
    },
    {
      name: `signature.verify: ${v.name}, forged`,
      request: { ...base, signature: `${prefix}.${alg}.${kid}.${scope}.${mac.toString('base64url')}` },
      expected: { input: v.input, valid: false },
    },
    {
      name: `signature.verify: ${v.name}, its kid altered`,
      request: { ...base, signature: `${prefix}.${alg}.${kid}x.${scope}.${sig}` },
      expected: { input: v.input, valid: false },
    },
    {
      name: `signature.verify: ${v.name}, its scope altered`,
      request: { ...base, signature: `${prefix}.${alg}.${kid}.${scope === 'k' ? 'c' : 'k'}.${sig}` },
      expected: { input: v.input, valid: false },
    },
  ];
}

/**
 * Canonical JSON (RFC 8785 for the values the vectors hold): object members sorted by
 * their names' UTF-16 code units, no whitespace, ECMAScript string and number spelling.
 * Answers and expectations are compared in this form, byte for byte.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v,
  );
}

/**
 * Compares one answer with what its case expects: the answer without its `id`, as
 * canonical JSON, must be byte for byte the expected answer — a missing member, an extra
 * one or another value fails.
 */
export function compareAnswer(c: ConformanceCase, answer: Record<string, unknown> | undefined, missing = 'no answer'): ConformanceResult {
  if (answer === undefined || answer === null || typeof answer !== 'object' || Array.isArray(answer))
    return { name: c.name, pass: false, detail: missing };
  const { id: _id, ...rest } = answer;
  const got = canonicalJson(rest);
  const want = canonicalJson(c.expected);
  return got === want ? { name: c.name, pass: true } : { name: c.name, pass: false, detail: `expected ${want}, got ${got}` };
}

/** A conformance request with a member the interface cannot read. */
export class ConformanceRequestError extends Error {
  override readonly name = 'ConformanceRequestError';
  readonly code = 'ERR_CONFORMANCE_REQUEST';
  constructor(member: string, expected: string, received: unknown) {
    super(`ERR_CONFORMANCE_REQUEST: ${member}: expected ${expected}, got ${JSON.stringify(received)?.slice(0, 80)}`);
  }
}

const hexBytes = (value: unknown, what: string): Uint8Array => {
  if (typeof value !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(value)) throw new ConformanceRequestError(what, 'lowercase hex', value);
  return new Uint8Array(Buffer.from(value, 'hex'));
};
const text = (value: unknown, what: string): string => {
  if (typeof value !== 'string') throw new ConformanceRequestError(what, 'a string', value);
  return value;
};

/** `{ valid: true, ...out }` when `fn` succeeds, `{ valid: false, error }` on a ProtocolError. */
function validOrError(fn: () => Record<string, unknown>): Record<string, unknown> {
  try {
    return { valid: true, ...fn() };
  } catch (error) {
    if (error instanceof ProtocolError) return { valid: false, error: error.code };
    throw error;
  }
}

/** The answer of one operation (the request's members already checked for type where it matters). */
function answerOp(op: string, req: Record<string, unknown>): Record<string, unknown> {
  switch (op) {
    case 'attribution.parse':
      return validOrError(() => {
        const block = parseAttribution(req.input);
        return { fields: { ...block, extensions: block.extensions.map(([k, v]) => [k, v]) }, serialized: serializeAttribution(block) };
      });
    case 'attribution.serialize':
      return validOrError(() => ({ serialized: serializeAttribution(req.fields as AttributionFields) }));
    case 'envelope.parse':
      return validOrError(() => ({ envelope: parseEnvelope(req.input) }));
    case 'envelope.locate': {
      const loc = locateEnvelope(utf8(text(req.body, 'body')));
      if (loc.status === 'found') {
        const { status, envelope, memberStart, valueStart, valueEnd, stampStart, stampEnd } = loc;
        return { status, envelope, memberStart, valueStart, valueEnd, stampStart, stampEnd };
      }
      return loc.status === 'missing' ? { status: 'missing' } : { status: loc.status, error: loc.error.code };
    }
    case 'envelope.append':
      return validOrError(() => ({ result: appendEnvelope(text(req.body, 'body'), text(req.envelope, 'envelope')) }));
    case 'stamp.compute':
      return validOrError(() => {
        const body = utf8(text(req.body, 'body'));
        const loc = foundEnvelope(body);
        const request = loc.envelope.binding === 'request' ? requestComponents(req.request) : undefined;
        const stamp = computeStamp(hexBytes(req.key, 'key'), body, loc.stampStart, loc.stampEnd, request);
        const stamped = new Uint8Array(body);
        stamped.set(utf8(stamp), loc.stampStart);
        return { stamp, stamped: new TextDecoder().decode(stamped) };
      });
    case 'stamp.verify': {
      const body = utf8(text(req.body, 'body'));
      const loc = locateEnvelope(body);
      if (loc.status !== 'found') return { result: loc.status };
      const bound = loc.envelope.binding === 'request';
      if (bound && req.request === undefined) return { result: 'invalid' };
      try {
        const request = bound ? requestComponents(req.request) : undefined;
        return { result: verifyStamp(hexBytes(req.key, 'key'), body, loc.stampStart, loc.stampEnd, request) ? 'valid' : 'invalid' };
      } catch (error) {
        if (error instanceof ProtocolError)
          return error.code === 'ERR_STAMP_REQUEST' ? { result: 'invalid' } : { valid: false, error: error.code };
        throw error;
      }
    }
    case 'stamp.authority': {
      const out = validOrError(() => ({ authority: authorityOf(text(req.url, 'url')) }));
      return out.valid === true ? { authority: out.authority } : out;
    }
    case 'stamp.credential': {
      if (!Array.isArray(req.headers)) throw new ConformanceRequestError('headers', 'an array of [name, value] pairs', req.headers);
      const headers = req.headers as Array<[string, string]>;
      return { credential: credentialOf((name) => headerValue(headers, name)) };
    }
    case 'stamp.request_base':
      return validOrError(() => ({ base: toHex(requestBase(req.request as RequestComponents)) }));
    case 'fingerprint.fingerprint': {
      const t = firstUserText(req.request);
      const options = { salt: text(req.salt, 'salt'), version: text(req.version, 'version') };
      return { text: t, chars: fingerprintChars(t), fp: fingerprint(t, options) };
    }
    case 'signature.parse':
      return validOrError(() => {
        const sig = parseBlockSignature(req.input);
        return { signature: { alg: sig.alg, kid: sig.kid, scope: sig.scope, sig: toHex(sig.sig) } };
      });
    case 'signature.conversation_digest':
      if (!Array.isArray(req.messages)) throw new ConformanceRequestError('messages', 'an array', req.messages);
      return { digest: conversationDigest(req.messages) };
    case 'signature.signing_input':
      return validOrError(() => ({ input: toHex(signingInput(req.block, signingContext(req.context))) }));
    case 'signature.sign_hs256': {
      const out = validOrError(() => {
        const context = signingContext(req.context);
        const input = signingInput(req.block, context);
        const mac = createHmac('sha256', hexBytes(req.key, 'key')).update(input).digest();
        const scope = context.context === undefined ? 'k' : 'c';
        return { input: toHex(input), signature: serializeBlockSignature({ alg: 'hs256', kid: context.kid, scope, sig: mac }) };
      });
      return out.valid === true ? { input: out.input, signature: out.signature } : out;
    }
    case 'signature.verify': {
      let input: Uint8Array;
      let context: SigningContext;
      try {
        context = signingContext(req.context);
        input = signingInput(req.block, context);
      } catch (error) {
        if (error instanceof ProtocolError) return { valid: false, error: error.code };
        throw error;
      }
      return { input: toHex(input), valid: verifiesAs(req, context, input) };
    }
    case 'gateway.detect': {
      const out = validOrError(() => {
        const table = parseGatewayRuleTable(req.table);
        if (!Array.isArray(req.headers)) throw new ConformanceRequestError('headers', 'an array of [name, value] pairs', req.headers);
        const baseUrl = req.baseUrl === undefined ? {} : { baseUrl: text(req.baseUrl, 'baseUrl') };
        return { detections: detectGateways({ headers: req.headers as Array<[string, string]>, ...baseUrl }, table) };
      });
      return out.valid === true ? { detections: out.detections } : out;
    }
    case 'gateway.table':
      return validOrError(() => {
        parseGatewayRuleTable(req.table);
        return {};
      });
    case 'negotiation.discovery':
      return validOrError(() => ({ discovery: parseDiscovery(req.input) }));
    case 'negotiation.version_header':
      return { versions: parseVersionHeader(req.input === null ? null : text(req.input, 'input')) };
    case 'negotiation.negotiate':
      return { version: negotiateVersion(integers(req.server, 'server'), integers(req.client, 'client')) ?? null };
    case 'telemetry.batch': {
      const byteLength = req.byteLength === undefined ? undefined : integers([req.byteLength], 'byteLength')[0];
      return validOrError(() => ({ batch: parseTelemetryBatch(req.input, byteLength) }));
    }
    default:
      throw new ConformanceRequestError('op', `one of ${Object.keys(KIT_OPERATIONS).join(', ')}`, op);
  }
}

/** The found envelope of a body, or the error `stamp.compute` answers with (§15). */
function foundEnvelope(body: Uint8Array): Extract<ReturnType<typeof locateEnvelope>, { status: 'found' }> {
  const loc = locateEnvelope(body);
  if (loc.status === 'found') return loc;
  if (loc.status === 'missing') throw new ProtocolError('ERR_ENVELOPE_MISSING', 'a body with an envelope', 'none');
  throw loc.error;
}

function requestComponents(value: unknown): RequestComponents {
  if (typeof value !== 'object' || value === null)
    throw new ProtocolError('ERR_STAMP_REQUEST', 'the request components', describeValue(value));
  return value as RequestComponents;
}

function signingContext(value: unknown): SigningContext {
  if (typeof value !== 'object' || value === null) throw new ConformanceRequestError('context', 'a signing context object', value);
  const c = value as Record<string, unknown>;
  for (const m of ['alg', 'kid', 'apiKeyId', 'model'])
    if (typeof c[m] !== 'string') throw new ConformanceRequestError(`context.${m}`, 'a string', c[m]);
  if (c.context !== undefined && typeof c.context !== 'string') throw new ConformanceRequestError('context.context', 'a string', c.context);
  return c as unknown as SigningContext;
}

function integers(value: unknown, what: string): number[] {
  if (!Array.isArray(value) || !value.every((v) => Number.isSafeInteger(v))) throw new ConformanceRequestError(what, 'integers', value);
  return value as number[];
}

/** The first value of header `name` (compared case-insensitively), repeated ones joined with `, `. */
function headerValue(headers: ReadonlyArray<readonly [string, string]>, name: string): string | undefined {
  const values = headers.filter(([n]) => typeof n === 'string' && n.toLowerCase() === name).map(([, v]) => String(v));
  return values.length === 0 ? undefined : values.join(', ');
}

/** §8.5: the signature parses, its own alg, kid and scope are the context's, and it verifies over `input`. */
function verifiesAs(req: Record<string, unknown>, context: SigningContext, input: Uint8Array): boolean {
  let sig: ReturnType<typeof parseBlockSignature>;
  try {
    sig = parseBlockSignature(req.signature);
  } catch (error) {
    if (error instanceof ProtocolError) return false;
    throw error;
  }
  const scope = context.context === undefined ? 'k' : 'c';
  if (sig.alg !== context.alg || sig.kid !== context.kid || sig.scope !== scope) return false;
  if (sig.alg === 'hs256') {
    const mac = createHmac('sha256', hexBytes(req.key, 'key')).update(input).digest();
    return timingSafeEqual(mac, Buffer.from(sig.sig));
  }
  const key = createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(hexBytes(req.publicKey, 'publicKey')).toString('base64url') },
    format: 'jwk',
  });
  return verify(null, input, key, sig.sig);
}

/**
 * The TypeScript implementation's answer to one request of the stdio conformance interface
 * (SPEC.md §15) — what a verifier serves at `POST /v1/moat/conformance`. Never throws: a
 * request it cannot read is answered `{ error: "ERR_CONFORMANCE_REQUEST: …" }`.
 */
export function answerConformanceRequest(request: unknown): Record<string, unknown> {
  try {
    if (typeof request !== 'object' || request === null || Array.isArray(request))
      throw new ConformanceRequestError('request', 'an object', request);
    const req = request as Record<string, unknown>;
    return answerOp(String(req.op), req);
  } catch (error) {
    if (error instanceof ProtocolError) return { valid: false, error: error.code };
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
