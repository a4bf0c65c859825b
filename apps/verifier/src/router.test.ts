import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compilePattern, createRouter, type RouteHandler } from './router.js';
import { ROUTES } from './routes/table.js';

const noop: RouteHandler = () => {};

describe('compilePattern', () => {
  it('matches an exact path and nothing else', () => {
    const m = compilePattern('/healthz');
    expect(m('/healthz')).toEqual({});
    expect(m('/healthz/')).toBeUndefined();
    expect(m('/healthzz')).toBeUndefined();
  });

  it('gives a trailing wildcard the rest of the path, empty included', () => {
    const m = compilePattern('/v1/moat*');
    expect(m('/v1/moat')).toEqual({ '*': '' });
    expect(m('/v1/moat/conformance')).toEqual({ '*': '/conformance' });
    expect(m('/v1/mo')).toBeUndefined();
  });

  it('binds one decoded segment per :name and refuses an empty or malformed one', () => {
    const m = compilePattern('/v1/messages/batches/:id/results');
    expect(m('/v1/messages/batches/msgbatch%5F1/results')).toEqual({ id: 'msgbatch_1' });
    expect(m('/v1/messages/batches//results')).toBeUndefined();
    expect(m('/v1/messages/batches/%E0%A4%A/results')).toBeUndefined();
    expect(m('/v1/messages/batches/a/b/results')).toBeUndefined();
  });

  it('combines segment parameters with a trailing wildcard', () => {
    const m = compilePattern('/files/:id/*');
    expect(m('/files/f1/')).toEqual({ id: 'f1', '*': '' });
    expect(m('/files/f1/content/raw')).toEqual({ id: 'f1', '*': 'content/raw' });
    expect(m('/files/f1')).toBeUndefined();
  });

  it('refuses a pattern that is not a path', () => {
    expect(() => compilePattern('v1/messages')).toThrow(/expected a path starting with "\/"/);
  });

  it('never throws on any path', () => {
    const matchers = ROUTES.map(([, pattern]) => compilePattern(pattern));
    fc.assert(
      fc.property(fc.string(), (tail) => {
        for (const m of matchers) m(`/${tail}`);
      }),
    );
  });
});

describe('the route table', () => {
  const router = createRouter(ROUTES);
  const where = (method: string, path: string) => {
    const hit = router.match(method, path);
    return hit === undefined ? undefined : `${hit.route.mode} ${hit.route.access} ${hit.route.pattern}`;
  };

  it('sends Messages bodies through the pipeline and nothing else', () => {
    expect(where('POST', '/v1/messages')).toBe('pipeline client /v1/messages');
    expect(where('POST', '/v1/messages/count_tokens')).toBe('pipeline client /v1/messages/count_tokens');
    expect(router.routes.filter((r) => r.mode === 'pipeline').map((r) => r.pattern)).toEqual([
      '/v1/messages',
      '/v1/messages/count_tokens',
    ]);
  });

  it('passes other /v1 paths through for authenticated clients, but never Moat’s own', () => {
    expect(where('GET', '/v1/models')).toBe('passthrough client /v1/*');
    expect(where('GET', '/v1/messages')).toBe('passthrough client /v1/*');
    expect(where('POST', '/v1/messages/batches')).toBe('passthrough client /v1/*');
    expect(where('POST', '/v1/moat')).toBe('local public /v1/moat*');
    expect(where('GET', '/v1/moatx')).toBe('local public /v1/moat*');
  });

  it('puts every /admin path behind the admin token, unknown ones included', () => {
    for (const [method, path] of [
      ['GET', '/admin/records'],
      ['POST', '/admin/records'],
      ['DELETE', '/admin/keys'],
      ['GET', '/admin/nothing'],
    ] as const)
      expect(where(method, path)).toMatch(/^local admin /);
    expect(where('GET', '/metrics')).toBe('local metrics /metrics');
  });

  it('answers Moat’s read-only endpoints to GET only, and names no route for the rest', () => {
    expect(where('GET', '/readyz')).toBe('local public /readyz');
    expect(where('POST', '/healthz')).toBeUndefined();
    expect(where('HEAD', '/dashboard')).toBeUndefined();
    expect(where('GET', '/')).toBeUndefined();
    expect(where('GET', '/api/features/moat')).toBe('local public /api/features/*');
  });

  it('has no row that an earlier row hides entirely', () => {
    const probes = ROUTES.map(
      ([method, pattern]) => [method === '*' ? 'PATCH' : method, pattern.replace('*', 'x')] as const,
    );
    for (const [i, [method, path]] of probes.entries())
      expect(router.match(method, path)?.route).toBe(router.routes[i]);
    expect(createRouter([['GET', '/a', 'local', 'public', noop]]).match('GET', '/a')?.route.pattern).toBe('/a');
  });
});
