import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { describe, expect, it } from 'vitest';
import * as p from './index.js';

type VectorCase = Record<string, any> & { name: string; op: string };
interface VectorFile {
  specVersion: string;
  file: string;
  count: number;
  cases: VectorCase[];
}

/** Case counts per file: a vector that silently vanishes fails here. */
const EXPECTED_COUNTS: Record<string, number> = {
  attribution: 51,
  envelope: 66,
  stamp: 74,
  fingerprint: 36,
  signature: 47,
  gateway: 45,
  negotiation: 25,
  telemetry: 14,
};

function load(file: string): VectorFile {
  return JSON.parse(readFileSync(new URL(`../vectors/${file}.json`, import.meta.url), 'utf8')) as VectorFile;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    expect(error).toBeInstanceOf(p.ProtocolError);
    return (error as p.ProtocolError).code;
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const fromHex = (t: string) => new Uint8Array(Buffer.from(t, 'hex'));

describe('vector files', () => {
  for (const [file, count] of Object.entries(EXPECTED_COUNTS)) {
    it(`${file}.json has specVersion ${p.SPEC_VERSION} and ${count} cases`, () => {
      const doc = load(file);
      expect(doc.specVersion).toBe(p.SPEC_VERSION);
      expect(doc.file).toBe(file);
      expect(doc.cases).toHaveLength(count);
      expect(doc.count).toBe(count);
    });
  }

  it('every file has valid and invalid cases', () => {
    for (const file of ['attribution', 'envelope', 'stamp', 'signature', 'gateway', 'negotiation', 'telemetry']) {
      const cases = load(file).cases;
      const invalid = cases.filter((c) => c.valid === false || (c.status !== undefined && c.status !== 'found') || c.result === 'invalid');
      expect(invalid.length, file).toBeGreaterThan(0);
      expect(invalid.length, file).toBeLessThan(cases.length);
    }
  });
});

describe('attribution vectors', () => {
  for (const c of load('attribution').cases) {
    it(`${c.op}: ${c.name}`, () => {
      if (c.op === 'parse') {
        if (c.valid) {
          const block = p.parseAttribution(c.input);
          expect({ ...block, extensions: block.extensions.map(([k, v]) => [k, v]) }).toEqual(c.fields);
          expect(p.serializeAttribution(block)).toBe(c.serialized);
          expect(c.serialized).toBe(c.input);
        } else {
          expect(codeOf(() => p.parseAttribution(c.input))).toBe(c.error);
          const r = p.tryParseAttribution(c.input);
          expect(r.ok).toBe(false);
        }
      } else if (c.valid) {
        expect(p.serializeAttribution(c.fields)).toBe(c.serialized);
      } else {
        expect(codeOf(() => p.serializeAttribution(c.fields))).toBe(c.error);
      }
    });
  }
});

describe('envelope vectors', () => {
  for (const c of load('envelope').cases) {
    it(`${c.op}: ${c.name}`, () => {
      if (c.op === 'parse') {
        if (c.valid) expect(p.parseEnvelope(c.input)).toEqual(c.envelope);
        else expect(codeOf(() => p.parseEnvelope(c.input))).toBe(c.error);
      } else if (c.op === 'locate') {
        const loc = p.locateEnvelope(p.utf8(c.body));
        expect(loc.status).toBe(c.status);
        if (loc.status === 'found') {
          const { status, name, op, body, ...offsets } = c;
          expect({ ...loc, status: undefined }).toEqual({ ...offsets, status: undefined });
          const bytes = p.utf8(c.body);
          expect(Buffer.from(bytes.subarray(loc.stampStart, loc.stampEnd)).toString()).toBe(loc.envelope.stamp);
        } else if (loc.status !== 'missing') {
          expect(loc.error.code).toBe(c.error);
        }
      } else if (c.valid) {
        expect(p.appendEnvelope(c.body, c.envelope)).toBe(c.result);
        expect(c.result.startsWith(c.body.slice(0, -1))).toBe(true);
      } else {
        expect(codeOf(() => p.appendEnvelope(c.body, c.envelope))).toBe(c.error);
      }
    });
  }
});

describe('stamp vectors', () => {
  for (const c of load('stamp').cases) {
    it(`${c.op}: ${c.name}`, () => {
      if (c.op === 'authority') {
        if (c.error !== undefined) expect(codeOf(() => p.authorityOf(c.url))).toBe(c.error);
        else expect(p.authorityOf(c.url)).toBe(c.authority);
        return;
      }
      if (c.op === 'credential') {
        const headers = new Headers(c.headers);
        expect(p.credentialOf((name) => headers.get(name))).toBe(c.credential);
        return;
      }
      if (c.op === 'request_base') {
        if (c.valid) expect(Buffer.from(p.requestBase(c.request)).toString('hex')).toBe(c.base);
        else expect(codeOf(() => p.requestBase(c.request))).toBe(c.error);
        return;
      }
      const bytes = p.utf8(c.body);
      const loc = p.locateEnvelope(bytes);
      if (c.op === 'compute') {
        if (loc.status !== 'found') throw new Error('vector body has no envelope');
        if (!c.valid) {
          expect(codeOf(() => p.computeStamp(fromHex(c.key), bytes, loc.stampStart, loc.stampEnd))).toBe(c.error);
          return;
        }
        const stamp = p.computeStamp(fromHex(c.key), bytes, loc.stampStart, loc.stampEnd, c.request);
        expect(stamp).toBe(c.stamp);
        // Independent: node:crypto HMAC over the request base (r1) and the placeholder body, truncated.
        const mac = createHmac('sha256', Buffer.from(c.key, 'hex'));
        if (c.request !== undefined) mac.update(p.requestBase(c.request));
        expect(mac.update(c.body).digest('hex').startsWith(stamp)).toBe(true);
        expect(c.stamped.length).toBe(c.body.length);
        expect(p.verifyStamp(fromHex(c.key), p.utf8(c.stamped), loc.stampStart, loc.stampEnd, c.request)).toBe(true);
      } else {
        let result: string = loc.status;
        if (loc.status === 'found') {
          const request = loc.envelope.binding === 'request' ? c.request : undefined;
          result =
            p.computeStamp(fromHex(c.key), bytes, loc.stampStart, loc.stampEnd, request) === loc.envelope.stamp ? 'valid' : 'invalid';
          expect(p.verifyStamp(fromHex(c.key), bytes, loc.stampStart, loc.stampEnd, request)).toBe(result === 'valid');
        }
        expect(result).toBe(c.result);
      }
    });
  }
});

describe('fingerprint vectors', () => {
  for (const c of load('fingerprint').cases) {
    it(c.name, () => {
      expect(p.firstUserText(c.request)).toBe(c.text);
      expect(p.fingerprintChars(c.text)).toBe(c.chars);
      expect(p.fingerprintRequest(c.request, { salt: c.salt, version: c.version })).toBe(c.fp);
      // Independent: node:crypto SHA-256 of the same UTF-8 input.
      const reference = createHash('sha256')
        .update(Buffer.from(p.utf8(c.salt + c.chars + c.version)))
        .digest('hex')
        .slice(0, 3);
      expect(c.fp).toBe(reference);
    });
  }

  it('pins one fingerprint computed by hand', () => {
    // chars of "Hello, how are you doing today?" at 4, 7, 20 are "o", "h", "o".
    const expected = createHash('sha256').update('moat-test-saltoho1.4.2').digest('hex').slice(0, 3);
    expect(p.fingerprint('Hello, how are you doing today?', { salt: 'moat-test-salt', version: '1.4.2' })).toBe(expected);
    const fp = load('fingerprint').cases.find((c) => c.name === 'ASCII text')?.fp;
    expect(fp).toBe(expected);
  });
});

describe('signature vectors', () => {
  for (const c of load('signature').cases) {
    it(`${c.op}: ${c.name}`, () => {
      switch (c.op) {
        case 'parse':
          if (c.valid) {
            const s = p.parseBlockSignature(c.input);
            expect({ alg: s.alg, kid: s.kid, scope: s.scope, sig: hex(s.sig) }).toEqual(c.signature);
            expect(p.serializeBlockSignature(s)).toBe(c.input);
          } else expect(codeOf(() => p.parseBlockSignature(c.input))).toBe(c.error);
          break;
        case 'conversation_digest':
          expect(p.conversationDigest(c.messages)).toBe(c.digest);
          break;
        case 'signing_input':
          if (c.valid) expect(hex(p.signingInput(c.block, c.context))).toBe(c.input);
          else expect(codeOf(() => p.signingInput(c.block, c.context))).toBe(c.error);
          break;
        case 'sign_hs256': {
          const input = p.signingInput(c.block, c.context);
          expect(hex(input)).toBe(c.input);
          const sig = p.parseBlockSignature(c.signature);
          const mac = createHmac('sha256', Buffer.from(c.key, 'hex')).update(input).digest();
          expect(hex(sig.sig)).toBe(mac.toString('hex'));
          break;
        }
        case 'verify_ed25519': {
          const input = p.signingInput(c.block, c.context);
          expect(hex(input)).toBe(c.input);
          const sig = p.parseBlockSignature(c.signature);
          expect(ed25519.verify(sig.sig, input, fromHex(c.publicKey))).toBe(c.valid);
          break;
        }
        default:
          throw new Error(`unknown op ${c.op}`);
      }
    });
  }
});

describe('gateway vectors', () => {
  for (const c of load('gateway').cases) {
    it(`${c.op}: ${c.name}`, () => {
      if (c.op === 'detect') {
        const input = {
          headers: c.headers as Array<[string, string]>,
          ...(c.baseUrl === undefined ? {} : { baseUrl: c.baseUrl as string }),
        };
        expect(p.detectGateways(input)).toEqual(c.detections);
      } else if (c.valid) {
        expect(p.parseGatewayRuleTable(c.table)).toEqual(c.table);
      } else {
        expect(codeOf(() => p.parseGatewayRuleTable(c.table))).toBe(c.error);
      }
    });
  }
});

describe('negotiation vectors', () => {
  for (const c of load('negotiation').cases) {
    it(`${c.op}: ${c.name}`, () => {
      if (c.op === 'discovery') {
        if (c.valid) expect(p.parseDiscovery(c.input)).toEqual(c.discovery);
        else expect(codeOf(() => p.parseDiscovery(c.input))).toBe(c.error);
      } else if (c.op === 'version_header') {
        expect(p.parseVersionHeader(c.input)).toEqual(c.versions);
      } else {
        expect(p.negotiateVersion(c.server, c.client) ?? null).toBe(c.version);
      }
    });
  }
});

describe('telemetry vectors', () => {
  for (const c of load('telemetry').cases) {
    it(c.name, () => {
      if (c.valid) expect(p.parseTelemetryBatch(c.input, c.byteLength)).toEqual(c.batch);
      else expect(codeOf(() => p.parseTelemetryBatch(c.input, c.byteLength))).toBe(c.error);
    });
  }
});
