import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { closestName, createWarner, errorCode, errorMessage, LruMap, LruMapError, waitAtMost } from './index.js';
import { loadNativeAddon } from './native.js';

describe('closestName', () => {
  it('names the known name a typo meant, in any letter case, and nothing for a name far from all', () => {
    const known = ['moat-policy-attestation', 'moat-policy-install', 'maxBodyBytes', 'port'];
    expect(closestName('moat-policy-attestaton', known)).toBe('moat-policy-attestation');
    expect(closestName('maxBodyByts', known)).toBe('maxBodyBytes');
    expect(closestName('MAXBODYBYTES', known)).toBe('maxBodyBytes');
    expect(closestName('prot', known)).toBe('port');
    expect(closestName('upstreamUrl', known)).toBeUndefined();
    expect(closestName('anything', [])).toBeUndefined();
  });
});

describe('LruMap', () => {
  it('behaves like a model LRU under any sequence of operations', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), key: fc.nat(8), value: fc.nat() }),
      fc.record({ kind: fc.constant('get' as const), key: fc.nat(8) }),
      fc.record({ kind: fc.constant('delete' as const), key: fc.nat(8) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.array(op, { maxLength: 60 }), (maxSize, ops) => {
        const lru = new LruMap<number, number>({ maxSize });
        let model: Array<[number, number]> = [];
        for (const o of ops) {
          if (o.kind === 'set') {
            model = model.filter(([k]) => k !== o.key);
            if (model.length >= maxSize) model.shift();
            model.push([o.key, o.value]);
            lru.set(o.key, o.value);
          } else if (o.kind === 'get') {
            const hit = model.find(([k]) => k === o.key);
            if (hit !== undefined) model = [...model.filter(([k]) => k !== o.key), hit];
            expect(lru.get(o.key)).toBe(hit?.[1]);
          } else {
            model = model.filter(([k]) => k !== o.key);
            lru.delete(o.key);
          }
          expect([...lru.entries()]).toEqual(model);
        }
      }),
    );
  });

  it('counts and reports evictions, and refuses a size below 1', () => {
    const evicted: string[] = [];
    const lru = new LruMap<string, number>({ maxSize: 1, onEvict: (k) => evicted.push(k) });
    lru.set('a', 1).set('b', 2);
    expect(evicted).toEqual(['a']);
    expect(lru.evicted).toBe(1);
    expect(() => new LruMap({ maxSize: 0 })).toThrow(LruMapError);
  });
});

describe('createWarner', () => {
  it('prefixes, warns once per key, and survives a throwing handler', () => {
    const seen: string[] = [];
    const warn = createWarner('attest', (m) => seen.push(m));
    warn('a', 'k');
    warn('a again', 'k');
    warn('b');
    warn('b');
    expect(seen).toEqual(['moat attest: a', 'moat attest: b', 'moat attest: b']);
    const broken = createWarner('x', () => {
      throw new Error('handler broke');
    });
    expect(() => broken('hello')).not.toThrow();
    expect(() => createWarner('x', undefined)('nobody listens')).not.toThrow();
  });
});

describe('errorMessage and errorCode', () => {
  it('say what was thrown, whatever it was', () => {
    expect(errorMessage(new TypeError('bad'))).toBe('bad');
    expect(errorMessage('plain')).toBe('plain');
    expect(errorMessage(42)).toBe('42');
    expect(errorMessage(Object.create(null))).toBe('unprintable error');
    expect(errorCode(Object.assign(new Error('x'), { code: 'ENOENT' }))).toBe('ENOENT');
    expect(errorCode(new Error('x'))).toBeUndefined();
    expect(errorCode(null)).toBeUndefined();
  });
});

describe('loadNativeAddon', () => {
  it('fails open with the reason, and loads once', async () => {
    let imports = 0;
    const first = await loadNativeAddon(async () => {
      imports++;
      throw new Error("Cannot find package '@moat/native'");
    });
    expect(first.native).toBeUndefined();
    expect(first.reason).toContain('not installed');
    await loadNativeAddon(async () => {
      imports++;
      return {};
    });
    expect(imports).toBe(1);
  });
});

describe('waitAtMost', () => {
  const later = <T>(value: T, ms: number) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

  it("gives the work's outcome, undefined once the time passed, the signal's reason once it aborts", async () => {
    expect(await waitAtMost(later('done', 5), 1_000, undefined)).toBe('done');
    expect(await waitAtMost(later('late', 500), 20, undefined)).toBeUndefined();
    await expect(waitAtMost(Promise.reject(new Error('broke')), 1_000, undefined)).rejects.toThrow('broke');
    const client = new AbortController();
    const waiting = waitAtMost(later('late', 500), undefined, client.signal);
    client.abort(new Error('gone'));
    await expect(waiting).rejects.toThrow('gone');
    await expect(waitAtMost(later('x', 5), 1_000, AbortSignal.abort(new Error('gone before')))).rejects.toThrow('gone before');
  });
});
