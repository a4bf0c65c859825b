import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  appendEnvelope,
  locateEnvelope,
  placeholderEnvelope,
  type RequestComponents,
  receivedRequestComponents,
  verifyStamp,
} from '@moat/protocol';
import { STAMP_RESULTS } from '@moat/protocol/support';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDevKey } from '../dev-key.js';
import { native } from '../index.js';

const dev = readDevKey() as { kid: string; key: string };
const key = new Uint8Array(Buffer.from(dev.key, 'hex'));
const addon = native as NonNullable<typeof native>;

/**
 * What `jsonObject` must answer, from JavaScript's own parser: 0 or 1 exactly when the
 * protocol's appendEnvelope takes the bytes as they stand (strict UTF-8, "{" first and "}"
 * last, JSON.parse accepts them, no own "moat_att") — 1 for an object without members — and
 * 2 for everything else, including nesting deeper than 512 containers.
 */
function expected(bytes: Uint8Array): 0 | 1 | 2 {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return 2;
  }
  if (!text.startsWith('{') || !text.endsWith('}')) return 2;
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return 2;
  }
  if (Object.hasOwn(value, 'moat_att') || depth(value) > 512) return 2;
  return Object.keys(value).length === 0 ? 1 : 0;
}

function depth(value: unknown): number {
  if (value === null || typeof value !== 'object') return 0;
  let deepest = 0;
  for (const child of Object.values(value)) deepest = Math.max(deepest, depth(child));
  return 1 + deepest;
}

const encode = (text: string) => new Uint8Array(Buffer.from(text));

/** JSON objects written in every spacing JSON.stringify knows, with names that come close to the envelope's. */
const objectText = fc
  .tuple(
    fc.dictionary(
      fc.oneof(
        fc.string({ unit: 'grapheme' }),
        fc.string({ unit: 'binary' }),
        fc.constantFrom('moat_att', 'moat_at', 'Moat_att', 'moat_att '),
      ),
      fc.jsonValue({ maxDepth: 4 }),
      { maxKeys: 5 },
    ),
    fc.constantFrom(undefined, 1, 2, '\t', '\r\n'),
  )
  .map(([object, space]) => JSON.stringify(object, null, space));

/** The same names spelled with escapes: JSON.parse unescapes them, so must the check. */
const escapedName = objectText.map((text) =>
  text.replace(
    /"moat_att"/g,
    () => ['"moat\\u005fatt"', '"\\u006doat_att"', '"moat_at\\u0074"', '"moat\\u005Fatt"'][text.length % 4] as string,
  ),
);

/** Bytes that matter to a JSON parser, and bytes that break UTF-8. */
const edit = fc.oneof(
  fc.constantFrom(...'{}[]",:\\ \t\n\r0123456789-+.eEtrufalsn/bu'.split('').map((c) => c.charCodeAt(0))),
  fc.integer({ min: 0x00, max: 0x1f }),
  fc.integer({ min: 0x80, max: 0xff }),
);

/** A text with some of its bytes replaced, inserted or deleted. */
const mutated = fc
  .tuple(objectText, fc.array(fc.tuple(fc.nat(), edit, fc.constantFrom('replace', 'insert', 'delete')), { minLength: 1, maxLength: 3 }))
  .map(([text, edits]) => {
    const bytes = [...encode(text)];
    for (const [at, byte, how] of edits) {
      const i = at % (bytes.length + 1);
      if (how === 'insert') bytes.splice(i, 0, byte);
      else if (how === 'delete') bytes.splice(i, 1);
      else bytes[Math.min(i, bytes.length - 1)] = byte;
    }
    return new Uint8Array(bytes);
  });

/** Strings whose characters need escapes or several UTF-8 bytes: lone surrogates too. */
const awkwardText = fc
  .array(fc.oneof(fc.string({ unit: 'binary' }), fc.constantFrom('\ud800', '\udfff', '\u2028', '\0', '"', '\\', 'é', '😀', '\u00ff')), {
    maxLength: 8,
  })
  .map((parts) => parts.join(''));

describe('jsonObject: the check behind the addon appending the envelope', () => {
  it('answers as JSON.parse and appendEnvelope do, for objects, escaped names, edited bytes and random bytes (fast-check)', () => {
    const tally = [0, 0, 0];
    const check = (bytes: Uint8Array) => {
      const answer = addon.jsonObject(bytes);
      expect(answer, Buffer.from(bytes).toString('latin1')).toBe(expected(bytes));
      tally[answer] = (tally[answer] as number) + 1;
    };
    fc.assert(
      fc.property(objectText, (text) => check(encode(text))),
      { numRuns: 600 },
    );
    fc.assert(
      fc.property(escapedName, (text) => check(encode(text))),
      { numRuns: 300 },
    );
    fc.assert(fc.property(mutated, check), { numRuns: 3000 });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 24 }), (middle) => check(new Uint8Array([0x7b, ...middle, 0x7d]))),
      { numRuns: 1000 },
    );
    fc.assert(
      fc.property(awkwardText, awkwardText, (name, value) => check(encode(JSON.stringify({ [name]: value, n: [1, -0.5e3, true, null] })))),
      { numRuns: 500 },
    );
    // Each answer came up often enough for the agreement to mean something.
    expect(tally[0]).toBeGreaterThan(500);
    expect(tally[1]).toBeGreaterThan(20);
    expect(tally[2]).toBeGreaterThan(1000);
  });

  it('decides the edge cases by name', () => {
    const cases: Array<[string | Uint8Array, 0 | 1 | 2]> = [
      ['{}', 1],
      ['{ \t\r\n}', 1],
      ['{"a":1}', 0],
      ['{"a":{"moat_att":1}}', 0],
      ['{"a":"moat_att","b":["moat_att"]}', 0],
      ['{"moat_att":"x"}', 2],
      ['{"moat\\u005fatt":"x"}', 2],
      ['{"a":1,"moat_att":"x"}', 2],
      ['{"a":1,}', 2],
      ['{"a":01}', 2],
      ['{"a":1.}', 2],
      ['{"a":-}', 2],
      ['{"a":"\t"}', 2],
      ['{"a":"\\x"}', 2],
      ['{"a":"\\u12"}', 2],
      ['{"a":tru}', 2],
      ['{"a":1} ', 2],
      [' {"a":1}', 2],
      ['{"a":1}}', 2],
      ['[1]', 2],
      ['', 2],
      ['{', 2],
      [new Uint8Array([0xef, 0xbb, 0xbf, ...encode('{"a":1}')]), 2],
      [new Uint8Array([...encode('{"a":"'), 0xc0, 0xaf, ...encode('"}')]), 2],
      [new Uint8Array([...encode('{"a":"'), 0xed, 0xa0, 0x80, ...encode('"}')]), 2],
      [new Uint8Array([...encode('{"a":"'), 0xf4, 0x90, 0x80, 0x80, ...encode('"}')]), 2],
      [encode('{"a":"é😀\u00ff"}'), 0],
    ];
    for (const [input, answer] of cases) {
      const bytes = typeof input === 'string' ? encode(input) : input;
      expect(addon.jsonObject(bytes), String(input)).toBe(answer);
      expect(expected(bytes), String(input)).toBe(answer);
    }
  });

  it('takes nesting up to 512 containers and leaves deeper bodies to JavaScript', () => {
    const nested = (containers: number) => encode(`{"a":${'['.repeat(containers - 1)}${']'.repeat(containers - 1)}}`);
    expect(addon.jsonObject(nested(512))).toBe(0);
    expect(addon.jsonObject(nested(513))).toBe(2);
    expect(addon.jsonObject(nested(100_000))).toBe(2);
    expect(() => addon.jsonObject('{}' as never)).toThrow(/expected jsonObject\(bytes: Uint8Array\)/);
  });
});

const arrived: Array<{ raw: Buffer; request: RequestComponents }> = [];

/**
 * A server that records what arrives; with `dropSecond`, it drops a connection without an
 * answer the first time a second request arrives on one: with a reset as soon as its headers
 * are in, or with a plain close once its body is read. Once only: a transport that opened
 * two connections (a loaded machine) finds the other one alive afterwards.
 */
async function recordingServer(options: { dropSecond?: 'reset' | 'close' } = {}) {
  const requestsOn = new WeakMap<Socket, number>();
  let dropped = 0;
  const server = createServer(async (req: IncomingMessage, res) => {
    const seen = (requestsOn.get(req.socket) ?? 0) + 1;
    requestsOn.set(req.socket, seen);
    if (options.dropSecond !== undefined && seen === 2 && dropped === 0) {
      dropped++;
      if (options.dropSecond === 'reset') {
        req.socket.resetAndDestroy();
        return;
      }
      for await (const _ of req);
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    arrived.push({
      raw: Buffer.concat(chunks),
      request: receivedRequestComponents({ method: req.method ?? '', target: req.url ?? '', headers: req.headers }),
    });
    res.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/messages`,
    dropped: () => dropped,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

let shared: Awaited<ReturnType<typeof recordingServer>>;
let url = '';
beforeAll(async () => {
  shared = await recordingServer();
  url = shared.url;
});
afterAll(() => shared.close());

const placeholder = (bound: boolean) =>
  placeholderEnvelope({ kid: dev.kid, ts: 1764000000, nonce: '0011223344556677', ...(bound ? { binding: 'request' as const } : {}) });

/** Sends `body` with `envelope` for the addon to append; resolves with the stamp result and the bytes that arrived. */
function send(
  body: string | Buffer,
  envelope: string | undefined,
  headers: string[] = [],
  to = url,
): Promise<{ stamp: string; raw: Buffer; request: RequestComponents }> {
  return new Promise((resolve, reject) => {
    let stamp = '';
    addon.request({ method: 'POST', url: to, headers, body, ...(envelope === undefined ? {} : { envelope }) }, (event, a, _b, c) => {
      if (event === 'headers') stamp = STAMP_RESULTS[c ?? 1] as string;
      if (event === 'end') {
        const last = arrived.at(-1) as (typeof arrived)[number];
        resolve({ stamp, raw: last.raw, request: last.request });
      }
      if (event === 'error') reject(new Error(String(a)));
    });
  });
}

/** The stamp region zeroed again: the bytes JavaScript's appendEnvelope would have produced. */
function unstamped(raw: Buffer): Buffer {
  const loc = locateEnvelope(raw);
  if (loc.status !== 'found') throw new Error(`no envelope: ${loc.status}`);
  const copy = Buffer.from(raw);
  copy.fill('0', loc.stampStart, loc.stampEnd);
  return copy;
}

function stampVerifies(raw: Buffer, request: RequestComponents): boolean {
  const loc = locateEnvelope(raw);
  if (loc.status !== 'found') return false;
  return verifyStamp(key, raw, loc.stampStart, loc.stampEnd, loc.envelope.binding === 'request' ? request : undefined);
}

describe('request({ envelope }): the addon appends and stamps in its own copy', () => {
  it('runs on the transport this process asked for', () => {
    expect(addon.transportMode()).toBe(process.env.MOAT_NATIVE_TRANSPORT === 'thread' ? 'thread' : 'loop');
  });

  it('appends exactly what appendEnvelope appends, to strings and buffers, and the stamp verifies', async () => {
    const bodies = [
      '{"model":"m","messages":[{"role":"user","content":"hi"}]}',
      '{}',
      '{ \n }',
      '{ "spaced" : [ 1 , 2 ] }',
      JSON.stringify({ text: 'é😀\u00ff\u2028 "quoted" \\ \n', lone: '\ud800' }),
      JSON.stringify({ content: 'x'.repeat(100_000) }),
      JSON.stringify({ content: 'é'.repeat(40_000) }),
    ];
    for (const text of bodies)
      for (const bound of [true, false])
        for (const given of [text, Buffer.from(text)]) {
          const envelope = placeholder(bound);
          const { stamp, raw, request } = await send(given, envelope, ['x-api-key: sk-ant-test-0001']);
          expect(stamp).toBe('stamped');
          expect(unstamped(raw).equals(Buffer.from(appendEnvelope(Buffer.from(text).toString(), envelope)))).toBe(true);
          expect(stampVerifies(raw, request)).toBe(true);
        }
  });

  it('for any JSON object, string or buffer, sends what appendEnvelope makes of it, and the stamp verifies (fast-check)', async () => {
    let sent = 0;
    await fc.assert(
      fc.asyncProperty(objectText, fc.boolean(), fc.boolean(), async (text, asBuffer, bound) => {
        fc.pre(expected(encode(text)) !== 2);
        const envelope = placeholder(bound);
        const { stamp, raw, request } = await send(asBuffer ? Buffer.from(text) : text, envelope, ['x-api-key: sk-ant-test-0004']);
        expect(stamp).toBe('stamped');
        expect(unstamped(raw).equals(Buffer.from(appendEnvelope(text, envelope)))).toBe(true);
        expect(stampVerifies(raw, request)).toBe(true);
        sent++;
      }),
      { numRuns: 150 },
    );
    expect(sent).toBeGreaterThan(100);
  });

  it('refuses a body appendEnvelope would not take as it stands, and sends nothing', async () => {
    const before = arrived.length;
    const refused: Array<string | Buffer> = [
      '{"moat_att":"v1.k.1764000000.0011223344556677.00000000000000000000000000000000"}',
      '{"moat\\u005fatt":1}',
      '{"a":1} ',
      '[1]',
      '',
      'not json',
      Buffer.from([0xef, 0xbb, 0xbf, ...Buffer.from('{"a":1}')]),
      Buffer.from([...Buffer.from('{"a":"'), 0xff, ...Buffer.from('"}')]),
    ];
    for (const body of refused)
      expect(() => addon.request({ method: 'POST', url, body, envelope: placeholder(true) }, () => {})).toThrow(
        expect.objectContaining({ code: 'ERR_NATIVE_ENVELOPE_BODY' }),
      );
    for (const envelope of ['', 'v1.k".1', 'v1.k\\', `v1.${'k'.repeat(200)}`, 'r1.kid.1764000000.0011223344556677.00 '])
      expect(() => addon.request({ method: 'POST', url, body: '{}', envelope }, () => {})).toThrow(
        expect.objectContaining({ code: 'ERR_NATIVE_OPTIONS' }),
      );
    await new Promise((r) => setTimeout(r, 50));
    expect(arrived.length).toBe(before);
  });

  it('stamps large bodies as they go out: every size around the parts verifies, under v1 and r1', async () => {
    for (const size of [32 * 1024 - 1, 32 * 1024, 32 * 1024 + 1, 64 * 1024 + 17, 1_000_000])
      for (const bound of [true, false]) {
        const skeleton = JSON.stringify({ content: '' });
        const tail = `,"moat_att":"${placeholder(bound)}"}`.length;
        const text = JSON.stringify({ content: 'z'.repeat(Math.max(0, size - skeleton.length - tail)) });
        const { stamp, raw, request } = await send(text, placeholder(bound), ['authorization: Bearer sk-ant-test-0002']);
        expect(stamp).toBe('stamped');
        expect(raw.length).toBe(Buffer.byteLength(text) + tail - 1);
        expect(stampVerifies(raw, request)).toBe(true);
      }
  });

  it('never sends a stamped request again by itself when a kept connection turns out dead: it reports resend, so the caller stamps afresh', async () => {
    // libcurl reuses the connection for the second request and finds it dropped before any
    // answer; it would send the same bytes again on a new one, a replay to the verifier when
    // the first copy was read. The addon refuses that rewind and ends the request with
    // "resend: …": reset as soon as the headers are in, or closed once the body is read,
    // small body or stamped as it goes out. (A reset that comes before libcurl handed out any
    // of the body leaves nothing to replay: the request may then go again on a new connection.)
    for (const [size, drop] of [
      [100, 'reset'],
      [100, 'close'],
      [200_000, 'close'],
    ] as const) {
      const dropping = await recordingServer({ dropSecond: drop });
      try {
        const text = JSON.stringify({ content: 'r'.repeat(size) });
        // Requests go out until one is the second on a kept connection (on a loaded machine a
        // transport may open a new connection before the first is back in its pool).
        let failed: unknown;
        for (let attempt = 0; attempt < 10 && dropping.dropped() === 0; attempt++) {
          const before = arrived.length;
          const outcome = await send(text, placeholder(true), ['x-api-key: sk-ant-test-0003'], dropping.url).then(
            () => undefined,
            (error: unknown) => error,
          );
          if (dropping.dropped() === 0) expect(outcome).toBeUndefined();
          else if (drop === 'reset' && outcome === undefined) {
            // Reset before libcurl handed out any of the body: the dropped copy carried no
            // stamp, so sending it on a new connection is no replay. It arrived once.
            expect(arrived.length).toBe(before + 1);
            failed = 'sent again without a body gone out';
          } else {
            failed = outcome;
            // Nothing was sent again by itself.
            expect(arrived.length).toBe(before);
          }
        }
        expect(dropping.dropped()).toBe(1);
        if (failed !== 'sent again without a body gone out') expect(String((failed as Error | undefined)?.message)).toMatch(/^resend: /);
        // The connection pool is not left broken: the next request goes out and arrives, stamped.
        const { stamp, raw, request } = await send(text, placeholder(true), ['x-api-key: sk-ant-test-0003'], dropping.url);
        expect(stamp).toBe('stamped');
        expect(stampVerifies(raw, request)).toBe(true);
      } finally {
        await dropping.close();
      }
    }
  });

  it('aborts only through the handle it returned', async () => {
    const handle = addon.request({ method: 'POST', url, body: '{}', envelope: placeholder(false) }, () => {});
    const { abort } = handle;
    expect(() => abort()).toThrow(/expected abort\(\) called on the handle request\(\) returned/);
    expect(() => handle.abort()).not.toThrow();
  });
});
