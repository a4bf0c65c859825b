import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { CanaryIndex, decoyPeriod, decoyTools, type TextCut, TRACE_INFLATE_BYTES } from '@moat/distill-guard/server';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { parseJsonBody } from './json-body.js';
import type { TraceCut } from './metrics.js';
import { glyphPdf, paddedPdf } from './pdf.test-util.js';
import { DecoyTracePool, type TraceRead } from './trace-pool.js';
import { requestTraceTexts, type UploadParts, uploadTraceTexts } from './trace-texts.js';

const secret = randomBytes(32);
const period = decoyPeriod();
const index = new CanaryIndex({ secret, keys: ['key_a', 'key_b'], periods: [period] });
const against = { index, threshold: 0.7 };
/** A decoy of key_a: its tool name, as a text that replays it would hold it. */
const decoyOfA = (decoyTools({ secret, apiKeyId: 'key_a', period })[0] as { tool: { name: string } }).tool.name;

const pools: DecoyTracePool[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});
const poolOf = (options: ConstructorParameters<typeof DecoyTracePool>[0] = {}) => {
  const pool = new DecoyTracePool({ workers: 1, ...options });
  pools.push(pool);
  return pool;
};

/** A Messages body of one base64 document (`media_type`, bytes) and a text: its bytes and its parsed form. */
function requestOf(mediaType: string, data: Buffer, text = 'summarize') {
  const body = {
    model: 'claude-mock',
    max_tokens: 64,
    messages: [
      {
        role: 'user',
        content: [
          { type: 'document', source: { type: 'base64', media_type: mediaType, data: data.toString('base64') } },
          { type: 'text', text },
        ],
      },
    ],
  };
  return bytesOf(body);
}

const bytesOf = (body: object) => {
  const raw = Buffer.from(JSON.stringify(body));
  return { raw, body: JSON.parse(raw.toString('utf8')) as { messages?: unknown } };
};

const freshRead = (inflateLeft = TRACE_INFLATE_BYTES): TraceRead => ({ cuts: new Set<TraceCut>(), inflate: { inflateLeft } });

/** The same trace on the event loop, as the reference. */
async function inPlace(texts: { calls: string[]; all: string[] }) {
  const keys = (list: string[]) =>
    index.traceLong(list, 0.7).then((t) => t.map((k) => ({ apiKeyId: k.apiKeyId, confidence: k.confidence })));
  return { calls: texts.calls.length === 0 ? [] : await keys(texts.calls), all: await keys(texts.all) };
}
async function reference(body: { messages?: unknown }, inflateLeft = TRACE_INFLATE_BYTES) {
  const cuts = new Set<TextCut>();
  const inflate = { inflateLeft };
  const texts = requestTraceTexts(body, { cuts, inflate });
  return { trace: await inPlace(texts), cuts: [...cuts], inflateLeft: inflate.inflateLeft };
}

/** How many turns the event loop took while `work` ran: 0 when it held the loop from start to end. */
async function turnsDuring<T>(work: () => Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let done = false;
  const spin = () => {
    if (done) return;
    turns++;
    setImmediate(spin);
  };
  const started = work();
  setImmediate(spin);
  const value = await started;
  done = true;
  return { value, turns };
}

describe('DecoyTracePool', () => {
  it('traces a large request in a worker, the event loop free meanwhile, finding what a trace in place finds', async () => {
    const { raw, body } = requestOf('application/pdf', glyphPdf(150_000, `we called ${decoyOfA}`));
    expect(raw.length).toBeGreaterThan(2_000_000);
    const pool = poolOf();
    const read = freshRead();
    const { value, turns } = await turnsDuring(() => pool.traceRequest(raw, body, read, against));
    expect(pool.workers).toBe(1);
    const expected = await reference(body);
    expect(value).toEqual(expected.trace);
    expect(value.all.map((t) => t.apiKeyId)).toEqual(['key_a']);
    expect({ cuts: [...read.cuts], inflateLeft: read.inflate.inflateLeft }).toEqual({
      cuts: expected.cuts,
      inflateLeft: expected.inflateLeft,
    });
    // The worker held the trace; the event loop ran meanwhile. In place, reading the PDF holds it throughout.
    expect(turns).toBeGreaterThan(10);
    const held = await turnsDuring(async () => requestTraceTexts(body, {}));
    expect(held.turns).toBe(0);
  });

  it('parses a body whose names are escaped name by name in the worker, and finds what a trace in place finds', async () => {
    const filler = 'x'.repeat(100_000);
    // Escaped names, the short ones V8 13.6 may misread among them, around a text that names a decoy of key_a.
    const text = `{"model":"claude-mock","max_tokens":64,"messages":[{"role":"user","content":[{"type":"text","text":"${filler}"},{"\\u0074ype":"text","t\\u0065xt":"we called ${decoyOfA}","\\"a":1,"\\\\\\"":2}]}]}`;
    const raw = Buffer.from(text);
    const { value: body, layout } = parseJsonBody(raw, 64);
    expect(layout.escapedNames).toBe(true);
    const pool = poolOf();
    const value = await pool.traceRequest(raw, body, freshRead(), against, layout);
    expect(pool.workers).toBe(1);
    expect(value).toEqual((await reference(body)).trace);
    expect(value.all.map((t) => t.apiKeyId)).toEqual(['key_a']);
  });

  it('traces a small request in place, and again in a worker when its documents or hidden gzip would inflate more than a moment’s work', async () => {
    const pool = poolOf();
    const small = requestOf('text/plain', Buffer.from(`a short note on ${decoyOfA}`));
    expect(await pool.traceRequest(small.raw, small.body, freshRead(), against)).toEqual((await reference(small.body)).trace);
    expect(pool.workers).toBe(0);
    for (const { raw, body } of [
      requestOf('application/pdf', paddedPdf(2_000_000, `past the padding ${decoyOfA}`)),
      bytesOf({
        messages: [
          { role: 'user', content: `x ${gzipSync(`${'words '.repeat(100_000)}past the padding ${decoyOfA}`).toString('base64')}` },
        ],
      }),
    ]) {
      expect(raw.length).toBeLessThan(64 * 1024);
      const read = freshRead();
      const trace = await pool.traceRequest(raw, body, read, against);
      const expected = await reference(body);
      expect(trace).toEqual(expected.trace);
      expect(trace.all.map((t) => t.apiKeyId)).toEqual(['key_a']);
      expect(read.inflate.inflateLeft).toBe(expected.inflateLeft);
      expect([...read.cuts]).toEqual([]);
    }
    expect(pool.workers).toBe(1);
  });

  it('spends one decode budget over traces that share it (a batch’s items), in place and in a worker alike', async () => {
    const pool = poolOf();
    const shared = freshRead(20_000_000);
    const budget = { inflateLeft: 20_000_000 };
    const found: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      const { raw, body } = requestOf('application/pdf', paddedPdf(8_000_000, `item ${i} ${decoyOfA}`));
      found.push((await pool.traceRequest(raw, body, shared, against)).all.length > 0);
      requestTraceTexts(body, { inflate: budget });
      expect(shared.inflate.inflateLeft).toBe(budget.inflateLeft);
    }
    // Two fit in 20 MB; the third finds too little left; the fourth nothing.
    expect(found).toEqual([true, true, false, false]);
    expect([...shared.cuts]).toEqual(['pdf_inflate_budget']);
  });

  it('traces against the index as it is: a key added since the worker copied it is found', async () => {
    const grown = new CanaryIndex({ secret, keys: ['key_a'], periods: [period] });
    const pool = poolOf();
    const decoyOfC = (decoyTools({ secret, apiKeyId: 'key_c', period })[0] as { tool: { name: string } }).tool.name;
    const { raw, body } = requestOf('text/plain', Buffer.from(`${'words '.repeat(20_000)}${decoyOfA} and ${decoyOfC}`));
    const first = await pool.traceRequest(raw, body, freshRead(), { index: grown, threshold: 0.7 });
    expect(first.all.map((t) => t.apiKeyId)).toEqual(['key_a']);
    grown.add(['key_c'], [period]);
    const second = await pool.traceRequest(raw, body, freshRead(), { index: grown, threshold: 0.7 });
    expect(second.all.map((t) => t.apiKeyId).sort()).toEqual(['key_a', 'key_c']);
  });

  it('cuts a trace that fails in its worker as trace_failed, never a whole trace, and starts another worker for the next', async () => {
    const warnings: string[] = [];
    const pool = poolOf({ timeoutMs: 1, warn: (m) => warnings.push(m) });
    const { raw, body } = requestOf('application/pdf', glyphPdf(150_000, decoyOfA));
    const read = freshRead();
    expect(await pool.traceRequest(raw, body, read, against)).toEqual({ calls: [], all: [] });
    expect([...read.cuts]).toEqual(['trace_failed']);
    expect(warnings).toEqual([expect.stringContaining('no answer within 1 ms')]);
    expect(pool.workers).toBe(0);
    // Bytes its worker cannot read (no JSON: the verifier hands over only what it parsed) fail alike.
    const patient = poolOf({ warn: (m) => warnings.push(m) });
    const broken = freshRead();
    expect(await patient.traceRequest(Buffer.alloc(100_000, '{'), body, broken, against)).toEqual({ calls: [], all: [] });
    expect([...broken.cuts]).toEqual(['trace_failed']);
    // The worker stays for the next trace, which is whole.
    const next = freshRead();
    const big = requestOf('text/plain', Buffer.from(`${'words '.repeat(20_000)}${decoyOfA}`));
    expect((await patient.traceRequest(big.raw, big.body, next, against)).all.map((t) => t.apiKeyId)).toEqual(['key_a']);
    expect([...next.cuts]).toEqual([]);
    expect(patient.workers).toBe(1);
  });

  it('cuts every trace as trace_failed when its worker cannot start or load, and answers each', async () => {
    const { raw, body } = requestOf('text/plain', Buffer.from(`${'words '.repeat(20_000)}${decoyOfA}`));
    for (const [workerFile, reason] of [
      [new URL('data:text/javascript,throw new Error("the worker broke as it loaded")'), 'the worker broke as it loaded'],
      // A path Node refuses at once (not absolute, not ./): the thread is never made.
      ['trace-worker.js' as unknown as URL, 'no trace worker could start'],
    ] as const) {
      const warnings: string[] = [];
      const pool = poolOf({ workerFile, warn: (m) => warnings.push(m) });
      for (let i = 0; i < 2; i++) {
        const read = freshRead();
        expect(await pool.traceRequest(raw, body, read, against)).toEqual({ calls: [], all: [] });
        expect([...read.cuts]).toEqual(['trace_failed']);
      }
      expect(warnings).toEqual([expect.stringContaining(reason), expect.stringContaining(reason)]);
      expect(pool.workers).toBe(0);
    }
  });

  it('ends a worker that has been idle, and starts another for the next trace', async () => {
    const pool = poolOf({ idleMs: 50 });
    const big = requestOf('text/plain', Buffer.from(`${'words '.repeat(20_000)}${decoyOfA}`));
    const traceBig = async () => (await pool.traceRequest(big.raw, big.body, freshRead(), against)).all.map((t) => t.apiKeyId);
    expect(await traceBig()).toEqual(['key_a']);
    expect(pool.workers).toBe(1);
    for (let i = 0; i < 100 && pool.workers > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(pool.workers).toBe(0);
    expect(await traceBig()).toEqual(['key_a']);
    expect(pool.workers).toBe(1);
  });

  it('ends its traces when closed: what was waiting is trace_failed', async () => {
    const pool = new DecoyTracePool({ workers: 1 });
    const { raw, body } = requestOf('application/pdf', glyphPdf(150_000, 'slow'));
    const reads = [freshRead(), freshRead()];
    const pending = reads.map((read) => pool.traceRequest(raw, body, read, against));
    await pool.close();
    expect(await Promise.all(pending)).toEqual([
      { calls: [], all: [] },
      { calls: [], all: [] },
    ]);
    expect(reads.map((r) => [...r.cuts])).toEqual([['trace_failed'], ['trace_failed']]);
    expect(pool.workers).toBe(0);
  });

  it('traces a large upload in a worker and a small one in place, finding what a trace in place finds', async () => {
    const pool = poolOf();
    const head = Buffer.from('--boundary\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n');
    const expected = async (upload: UploadParts) =>
      (await inPlace({ calls: [], all: uploadTraceTexts(upload, { inflate: { inflateLeft: TRACE_INFLATE_BYTES } }) })).all;
    const small = { head, file: paddedPdf(1000, `a small upload ${decoyOfA}`), fileType: 'application/pdf' };
    expect(await pool.traceUpload(small, new Set(), against)).toEqual(await expected(small));
    expect(pool.workers).toBe(0);
    const large = { head, file: glyphPdf(100_000, `a large upload ${decoyOfA}`), fileType: 'application/pdf' };
    const cuts = new Set<TraceCut>();
    const traced = await pool.traceUpload(large, cuts, against);
    expect(pool.workers).toBe(1);
    expect(traced).toEqual(await expected(large));
    expect(traced.map((t) => t.apiKeyId)).toEqual(['key_a']);
    expect([...cuts]).toEqual([]);
  });
});

describe('DecoyTracePool: the members a client repeats', () => {
  const keyOf = (apiKeyId: string, i = 0) => decoyTools({ secret, apiKeyId, period })[i] as { tool: { name: string }; canary: string };
  /** A body as the verifier reads it: its bytes, parsed, and where its members lie. */
  const read = (body: object) => {
    const raw = Buffer.from(JSON.stringify(body));
    const { value, layout } = parseJsonBody(raw, 64);
    return { raw, body: value as { messages?: unknown }, layout };
  };
  const tools = (extra: string) =>
    Array.from({ length: 12 }, (_, i) => ({
      name: `tool_${i}`,
      description: `${'Reads the workspace and reports what it finds. '.repeat(8)}${i === 5 ? extra : ''}`,
      input_schema: { type: 'object', properties: { path: { type: 'string', description: 'where' } } },
    }));

  it('keeps their trace and finds what a trace of the whole request finds, whatever is where', async () => {
    const pool = poolOf();
    const token = fc.oneof(
      fc.constantFrom('key_a', 'key_b').map((k) => keyOf(k).tool.name),
      fc.constantFrom('key_a', 'key_b').map((k) => keyOf(k, 1).tool.name.toUpperCase().replaceAll('_', '-')),
      fc.constantFrom('key_b').map((k) => keyOf(k, 2).canary),
      fc.constant('nothing'),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(0, 1, 2),
        token,
        token,
        token,
        fc.boolean(),
        async (system, inSystem, inTools, inMessages, split) => {
          // `split`: a name cut in two, its first half ending the system prompt, its second starting the first message.
          const cut = keyOf('key_b').tool.name;
          const end = split ? ` ${cut.slice(0, 7)}` : '';
          const body = read({
            model: 'claude-mock',
            max_tokens: 64,
            ...(system === 0
              ? {}
              : {
                  system: system === 1 ? `You are a coding agent. ${inSystem}${end}` : [{ type: 'text', text: `Agent. ${inSystem}${end}` }],
                }),
            tools: tools(inTools),
            messages: [{ role: 'user', content: `${split ? cut.slice(7) : ''} please look at ${inMessages}` }],
          });
          const traced = await pool.traceRequest(body.raw, body.body, freshRead(), against, body.layout);
          expect(traced).toEqual((await reference(body.body)).trace);
        },
      ),
      { numRuns: 60 },
    );
    // One trace kept per distinct system prompt and tool set seen.
    expect(pool.keptTraces).toBeGreaterThan(0);
    expect(pool.keptTraces).toBeLessThanOrEqual(3 * 4 * 4 * 2);
  });

  it('joins the end of a kept system prompt with the conversation’s start, as a trace of the whole does', async () => {
    const pool = poolOf();
    const name = keyOf('key_b').tool.name;
    const body = read({
      model: 'claude-mock',
      max_tokens: 64,
      system: `You are a coding agent. ${'Follow the rules. '.repeat(150)}${name.slice(0, 9)}`,
      messages: [{ role: 'user', content: `${name.slice(9)} please` }],
    });
    for (let i = 0; i < 2; i++) {
      const traced = await pool.traceRequest(body.raw, body.body, freshRead(), against, body.layout);
      expect(traced.all.map((t) => t.apiKeyId)).toEqual(['key_b']);
    }
    expect(pool.keptTraces).toBe(1);
  });

  it('traces them again when the index changed: a key added since is found in them', async () => {
    const grown = new CanaryIndex({ secret, keys: ['key_a'], periods: [period] });
    const pool = poolOf();
    const body = read({
      model: 'claude-mock',
      max_tokens: 64,
      tools: tools(keyOf('key_c').tool.name),
      messages: [{ role: 'user', content: 'hi' }],
    });
    const traceNow = () => pool.traceRequest(body.raw, body.body, freshRead(), { index: grown, threshold: 0.7 }, body.layout);
    expect((await traceNow()).all).toEqual([]);
    expect(pool.keptTraces).toBe(1);
    grown.add(['key_c'], [period]);
    expect((await traceNow()).all.map((t) => t.apiKeyId)).toEqual(['key_c']);
  });

  it('keeps nothing for short ones, nor for ones it could not read whole', async () => {
    const pool = poolOf();
    const short = read({ model: 'claude-mock', max_tokens: 64, system: 'Be brief.', messages: [{ role: 'user', content: 'hi' }] });
    await pool.traceRequest(short.raw, short.body, freshRead(), against, short.layout);
    // A document in the system prompt (not the API's shape, but the bytes are read all the same) inflates.
    const pdf = {
      type: 'document',
      source: { type: 'base64', media_type: 'application/pdf', data: paddedPdf(10_000, keyOf('key_b').tool.name).toString('base64') },
    };
    const inflating = read({
      model: 'claude-mock',
      max_tokens: 64,
      system: [pdf],
      tools: tools(''),
      messages: [{ role: 'user', content: 'hi' }],
    });
    const traced = await pool.traceRequest(inflating.raw, inflating.body, freshRead(), against, inflating.layout);
    expect(traced.all.map((t) => t.apiKeyId)).toEqual(['key_b']);
    expect(pool.keptTraces).toBe(0);
  });
});
