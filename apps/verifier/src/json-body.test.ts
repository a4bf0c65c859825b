import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { JsonBodyError, parseJsonBody, rewriteMembers } from './json-body.js';

const parse = (text: string | Buffer, depth = 64) => parseJsonBody(Buffer.isBuffer(text) ? text : Buffer.from(text), depth);
const codeOf = (text: string | Buffer, depth = 64): string => {
  try {
    parse(text, depth);
  } catch (error) {
    if (error instanceof JsonBodyError) return `${error.code} ${error.path}`;
    throw error;
  }
  return 'ok';
};

describe('parseJsonBody', () => {
  it('refuses invalid UTF-8, duplicate keys at any depth (escaped too), deep nesting and non-objects', () => {
    expect(codeOf(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]))).toBe('ERR_JSON_UTF8 ');
    expect(codeOf(Buffer.from('{"a":"\xed\xa0\x80"}', 'latin1'))).toBe('ERR_JSON_UTF8 '); // an encoded surrogate
    expect(codeOf('{"model":"a","model":"b"}')).toBe('ERR_JSON_DUPLICATE_KEY model');
    expect(codeOf('{"messages":[{"role":"user","role":"assistant"}]}')).toBe('ERR_JSON_DUPLICATE_KEY messages.0.role');
    expect(codeOf('{"a":{"b":1,"\\u0062":2}}')).toBe('ERR_JSON_DUPLICATE_KEY a.b');
    expect(codeOf('{"a":{"b":1},"c":{"b":2}}')).toBe('ok');
    // In any letter case, as an upstream that ignores case reads names (Go folds ſ to s, K to k; Java and .NET take ı and İ for i).
    expect(codeOf('{"messages":[],"MESSAGES":[]}')).toBe('ERR_JSON_DUPLICATE_KEY MESSAGES');
    expect(codeOf('{"messages":[{"role":"user","Role":"assistant"}]}')).toBe('ERR_JSON_DUPLICATE_KEY messages.0.Role');
    expect(codeOf('{"a":{"key":1,"\u212aey":2}}')).toBe('ERR_JSON_DUPLICATE_KEY a.\u212aey');
    expect(codeOf('{"a":{"\u017fystem":1,"system":2}}')).toBe('ERR_JSON_DUPLICATE_KEY a.system');
    expect(codeOf('{"Model":"x"}')).toBe('ERR_JSON_MEMBER_CASE Model');
    expect(codeOf('{"me\u017f\u017fages":[]}')).toBe('ERR_JSON_MEMBER_CASE me\u017f\u017fages');
    expect(codeOf('{"m":[{"input":{},"\u0131nput":{}}]}')).toBe('ERR_JSON_DUPLICATE_KEY m.0.\u0131nput');
    expect(codeOf('{"m":[{"\u0130d":1,"id":2}]}')).toBe('ERR_JSON_DUPLICATE_KEY m.0.id');
    expect(codeOf('{"tool_cho\u0131ce":{}}')).toBe('ERR_JSON_MEMBER_CASE tool_cho\u0131ce');
    expect(codeOf('{"input":{"Name":1,"other":2}}')).toBe('ok');
    // The user's own JSON (a tool's input, a schema) may hold names alike in case; exact twins are still refused.
    expect(codeOf('{"m":[{"type":"tool_use","input":{"headers":{"Accept":"a","accept":"b"},"PATH":1,"path":2}}]}')).toBe('ok');
    expect(codeOf('{"tools":[{"name":"t","input_schema":{"properties":{"id":{},"ID":{}}}}]}')).toBe('ok');
    expect(codeOf('{"output_format":{"type":"json_schema","schema":{"properties":{"Name":{},"name":{}}}}}')).toBe('ok');
    expect(codeOf('{"m":[{"input":{"a":1,"a":2}}]}')).toBe('ERR_JSON_DUPLICATE_KEY m.0.input.a');
    expect(codeOf('{"m":[{"input":{},"INPUT":{}}]}')).toBe('ERR_JSON_DUPLICATE_KEY m.0.INPUT');
    expect(codeOf(`{"a":${'['.repeat(10_000)}${']'.repeat(10_000)}}`)).toMatch(/^ERR_JSON_DEPTH a(\.0)+$/);
    expect(codeOf(`{"a":${'['.repeat(62)}${']'.repeat(62)}}`)).toBe('ok');
    expect(codeOf('[1]')).toBe('ERR_JSON_NOT_OBJECT ');
    expect(codeOf('{"a":1} x')).toBe('ERR_JSON_SYNTAX ');
    expect(codeOf('{"a":"unterminated}')).toBe('ERR_JSON_SYNTAX ');
    expect(codeOf('')).toBe('ERR_JSON_SYNTAX ');
    expect(codeOf('{"a\\x":1}')).toBe('ERR_JSON_SYNTAX ');
    // A byte order mark is refused, not dropped: the stamp locator and a strict upstream read the bytes as they are.
    expect(codeOf(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}')]))).toBe('ERR_JSON_SYNTAX ');
    expect(codeOf(' \ufeff{"a":1}')).toBe('ERR_JSON_SYNTAX ');
    expect(codeOf('{"a":"\ufeff"}')).toBe('ok');
    expect(codeOf('{"m":[{"b\\u12":1}]}')).toBe('ERR_JSON_SYNTAX m.0');
  });

  it('refuses a name the checks read, spelt another way below the top level, even alone; the user’s own JSON aside', () => {
    const readNames = new Set(['file_id', 'type', 'messages']);
    const checked = (text: string): string => {
      try {
        parseJsonBody(Buffer.from(text), 64, { readNames });
      } catch (error) {
        if (error instanceof JsonBodyError) return `${error.code} ${error.path}`;
        throw error;
      }
      return 'ok';
    };
    expect(checked('{"m":[{"source":{"FILE_ID":"f"}}]}')).toBe('ERR_JSON_MEMBER_CASE m.0.source.FILE_ID');
    expect(checked('{"m":[{"source":{"file_\\u0131d":"f"}}]}')).toBe('ERR_JSON_MEMBER_CASE m.0.source.file_\u0131d');
    expect(checked('{"requests":[{"params":{"Messages":[]}}]}')).toBe('ERR_JSON_MEMBER_CASE requests.0.params.Messages');
    expect(checked('{"m":[{"\u017fource":1,"Type":"x"}]}')).toBe('ERR_JSON_MEMBER_CASE m.0.Type');
    // Names the checks do not read, exact names, and the user's own JSON pass.
    expect(checked('{"m":[{"Other":1,"file_id":"f","type":"t"}]}')).toBe('ok');
    expect(checked('{"m":[{"type":"tool_use","input":{"FILE_ID":1,"Type":2}}]}')).toBe('ok');
    expect(checked('{"tools":[{"input_schema":{"properties":{"Messages":{}}},"input_examples":[{"Type":1}]}]}')).toBe('ok');
    // Without the option, only the top level is held to lower case.
    expect(codeOf('{"m":[{"source":{"FILE_ID":"f"}}]}')).toBe('ok');
    fc.assert(
      fc.property(
        fc.constantFrom('file_id', 'type', 'messages'),
        fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
        fc.constantFrom('m', 'x'),
        (name, upper, parent) => {
          const spelt = [...name].map((ch, i) => (upper[i % 8] === true ? ch.toUpperCase() : ch)).join('');
          const text = `{"${parent}":[{"${spelt}":1}]}`;
          expect(checked(text)).toBe(spelt === name ? 'ok' : `ERR_JSON_MEMBER_CASE ${parent}.0.${spelt}`);
        },
      ),
    );
  });

  it('finds every top-level member and the system elements, by byte span, whatever the spacing and escapes', () => {
    const text = ' { "model" : "m\\"x" ,\n"system":[ {"type":"text","text":"x-moat: v=1;"} , "ü" ,3],"n":[1,{"a":[]}] } ';
    const { value, layout } = parse(text);
    const bytes = Buffer.from(text);
    expect(layout.members.map((m) => m.key)).toEqual(['model', 'system', 'n']);
    expect(layout.members.map((m) => bytes.toString('utf8', m.start, m.end))).toEqual([
      '"model" : "m\\"x"',
      '"system":[ {"type":"text","text":"x-moat: v=1;"} , "ü" ,3]',
      '"n":[1,{"a":[]}]',
    ]);
    expect(layout.systemElements?.map((e) => bytes.toString('utf8', e.start, e.end))).toEqual([
      '{"type":"text","text":"x-moat: v=1;"}',
      '"ü"',
      '3',
    ]);
    expect(value).toEqual(JSON.parse(text));
  });

  it('reads strings of any length with escapes anywhere, and every name any way it may fold, ASCII or not', () => {
    // Strings around the length searched before the native search, escaped quotes and backslashes at any place in them.
    const piece = fc.oneof(fc.constantFrom('"', '\\', '\\"', 'ü', '\u00e9', 'K', '\u212a', '\u017f'), fc.string({ maxLength: 40 }));
    const longString = fc.array(piece, { maxLength: 12 }).map((parts) => parts.join(''));
    let runs = 0;
    fc.assert(
      fc.property(
        fc.dictionary(
          longString.filter((k) => k.toLowerCase() === k && [...k].every((ch) => ch.charCodeAt(0) < 0x80)),
          longString,
          { maxKeys: 5 },
        ),
        longString,
        (members, inner) => {
          runs++;
          const body = { ...members, zz: { [inner]: inner } };
          const text = JSON.stringify(body);
          const { value, layout } = parse(text);
          // Not against JSON.parse: V8 13.6 misreads some escaped names (see the test above).
          expect(value).toEqual(body);
          const bytes = Buffer.from(text);
          const spans = layout.members.map((m) => bytes.toString('utf8', m.start, m.end));
          expect(parse(`{${spans.join(',')}}`).value).toEqual(body);
          expect(layout.members.map((m) => m.key).sort()).toEqual(Object.keys(value).sort());
          // The same name in capitals is one member to a decoder that ignores case: refused, below the top level, whatever the name.
          const twice = `{"zz":{${JSON.stringify(inner)}:1,${JSON.stringify(inner.toUpperCase())}:2}}`;
          expect(codeOf(twice)).toBe(`ERR_JSON_DUPLICATE_KEY zz.${inner.toUpperCase()}`);
        },
      ),
      { numRuns: 400 },
    );
    expect(runs).toBe(400);
  });

  it('reads escaped member names as they are written, whatever bodies came before (V8 13.6 misreads short ones)', () => {
    // Under Node 24's V8, JSON.parse names the member of the first body `\"` (the raw text) once it has read the second.
    const bodies = ['{"x":1,"\\"a":2}', '{"x":1,"\\\\\\"":2}', '{"a\\"":1}', '{"a\\\\":1}', '{"\\n":[{"\\\\":{}}]}'];
    const names = [['x', '"a'], ['x', '\\"'], ['a"'], ['a\\'], ['\n']];
    for (let round = 0; round < 200; round++)
      for (const [i, body] of bodies.entries()) expect(Object.keys(parse(body).value)).toEqual(names[i]);
    expect(parse('{"\\n":[{"\\\\":{}}]}').value).toEqual({ '\n': [{ '\\': {} }] });
    // Built as JSON.parse builds it: an own "__proto__", numbers, literals, nesting, escapes in values.
    const text = '{"__proto__":{"\\"":[1,-0.5e3,true,false,null,"\\u00e9\\ud83d\\ude00\\/\\b\\f\\r\\t"]},"z\\"":{}}';
    const { value } = parse(text);
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
    expect(Object.hasOwn(value, '__proto__')).toBe(true);
    expect(JSON.stringify(value)).toBe(JSON.stringify(JSON.parse(text)));
  });

  it('any object with short escaped names parses to itself, read after any other', () => {
    const name = fc.string({ unit: fc.constantFrom('"', '\\', '\n', 'a', 'é', '\u0000', '/', '\u2028'), maxLength: 3 });
    const node = fc.letrec((tie) => ({
      value: fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 0 }), tie('object'), fc.array(tie('value'), { maxLength: 3 })),
      object: fc.dictionary(name, tie('value'), { maxKeys: 4 }),
    }));
    const noDuplicates = (v: unknown): boolean =>
      Array.isArray(v)
        ? v.every(noDuplicates)
        : typeof v !== 'object' ||
          v === null ||
          (new Set(Object.keys(v).map((k) => k.toUpperCase().toLowerCase())).size === Object.keys(v).length &&
            Object.values(v).every(noDuplicates));
    let runs = 0;
    fc.assert(
      fc.property(fc.array(node.object, { minLength: 2, maxLength: 4 }), (objects) => {
        fc.pre(objects.every((o) => noDuplicates({ input: o })) && objects.every(noDuplicates));
        runs++;
        for (let round = 0; round < 3; round++)
          for (const o of objects) expect(JSON.stringify(parse(JSON.stringify({ input: o })).value)).toBe(JSON.stringify({ input: o }));
      }),
      { numRuns: 300 },
    );
    expect(runs).toBeGreaterThan(100);
  });

  it('names the path of a refusal through objects and arrays, however deep', () => {
    const step = fc.oneof(fc.nat(3), fc.constantFrom('a', 'b.c', 'ü', 'x y'));
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 12 }), (steps) => {
        // Containers along `steps` (an index: an array with that many elements before; a name: an object), a duplicate at the end.
        let inner = '{"d":1,"d":2}';
        for (let i = steps.length - 1; i >= 0; i--) {
          const at = steps[i] as number | string;
          inner = typeof at === 'number' ? `[${'0,'.repeat(at)}${inner}]` : `{"q":0,${JSON.stringify(at)}:${inner}}`;
        }
        expect(codeOf(`{"top":${inner}}`, 128)).toBe(`ERR_JSON_DUPLICATE_KEY ${['top', ...steps, 'd'].join('.')}`);
      }),
      { numRuns: 300 },
    );
  });

  it('cutting and replacing members by their bytes gives the same value as editing the parsed object', () => {
    const member = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.string({ unit: 'binary' }));
    // Top-level names in lower case, as the parser wants them.
    const fold = (k: string) => k.toUpperCase().toLowerCase().replaceAll('i\u0307', 'i');
    const name = fc.string({ unit: 'binary', maxLength: 6 }).filter((k) => fold(k) === k);
    const body = fc.dictionary(name, member, { maxKeys: 6 });
    /** Whether no object in `value` has two member names alike in letter case. */
    const unfolded = (value: unknown): boolean => {
      if (Array.isArray(value)) return value.every(unfolded);
      if (typeof value !== 'object' || value === null) return true;
      const names = Object.keys(value).map(fold);
      return new Set(names).size === names.length && Object.values(value).every(unfolded);
    };
    fc.assert(
      fc.property(
        body,
        fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
        fc.subarray(['moat_att', 'anti_distillation', 'tools']),
        fc.integer({ min: 0, max: 2 }),
        (obj, system, dropped, indent) => {
          const full = { ...obj, system, moat_att: 'v1.k.1.2.3', anti_distillation: ['fake_tools'] } as Record<string, unknown>;
          fc.pre(unfolded(full));
          const raw = Buffer.from(JSON.stringify(full, null, indent));
          const { layout } = parse(raw, 64);
          const out = rewriteMembers(raw, layout, {
            drop: new Set(dropped),
            replace: new Map([['tools', ['t']]]),
            dropFirstSystemElement: true,
          });
          const expected: Record<string, unknown> = { ...full, tools: ['t'] };
          for (const d of dropped) if (d !== 'tools') delete expected[d];
          if (system.length <= 1) delete expected.system;
          else expected.system = system.slice(1);
          expect(JSON.parse(out.toString('utf8'))).toEqual(JSON.parse(JSON.stringify(expected)));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('throws nothing but JsonBodyError on any bytes', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
          fc.json().map((t) => Buffer.from(t)),
          fc.string({ unit: 'binary' }).map((t) => Buffer.from(`{"a":${t}}`)),
          // Member names with escapes, valid and not.
          fc
            .array(fc.constantFrom('a', '\\x', '\\u12', '\\ud800', '\\"', '\\\\', '\\'), { maxLength: 5 })
            .map((parts) => Buffer.from(`{"x":{"${parts.join('')}":1}}`)),
        ),
        (raw) => {
          try {
            parse(raw, 16);
          } catch (error) {
            expect(error).toBeInstanceOf(JsonBodyError);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});
