import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PASSTHROUGH_ROUTES, parsePassthroughRoutes } from './config.js';
import { compilePattern, createRouter, type RouteHandler } from './router.js';
import { ROUTES, routeTable } from './routes/table.js';

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
  const router = createRouter(routeTable(parsePassthroughRoutes(DEFAULT_PASSTHROUGH_ROUTES)));
  const where = (method: string, path: string) => {
    const hit = router.match(method, path);
    return hit === undefined ? undefined : `${hit.route.mode} ${hit.route.access} ${hit.route.pattern}`;
  };

  it('sends Messages bodies through the pipeline and nothing else', () => {
    expect(where('POST', '/v1/messages')).toBe('pipeline client /v1/messages');
    expect(where('POST', '/v1/messages/count_tokens')).toBe('pipeline client /v1/messages/count_tokens');
    expect(where('POST', '/v1/messages/batches')).toBe('pipeline client /v1/messages/batches');
    expect(where('GET', '/v1/messages/batches/msgbatch_1/results')).toBe(
      'pipeline client /v1/messages/batches/:id/results',
    );
    // Besides Messages, only the Files routes (scoped per key) are the verifier's to forward.
    expect(
      router.routes
        .filter((r) => r.mode === 'pipeline')
        .every((r) => r.pattern.startsWith('/v1/messages') || r.pattern.startsWith('/v1/files')),
    ).toBe(true);
    expect(router.routes.filter((r) => r.pattern.startsWith('/v1/messages')).every((r) => r.mode === 'pipeline')).toBe(
      true,
    );
  });

  it('passes through only the upstream routes the configuration names, methods included', () => {
    expect(where('GET', '/v1/models')).toBe('passthrough client /v1/models');
    expect(where('GET', '/v1/models/claude-mock')).toBe('passthrough client /v1/models/:id');
    // Files live in the one upstream account every key shares: the verifier's own routes, scoped per key.
    expect(where('GET', '/v1/files')).toBe('pipeline client /v1/files');
    expect(where('POST', '/v1/files')).toBe('pipeline client /v1/files');
    expect(where('DELETE', '/v1/files/file_1')).toBe('pipeline client /v1/files/:id');
    expect(where('GET', '/v1/files/file_1/content')).toBe('pipeline client /v1/files/:id/content');
    for (const [method, path] of [
      ['PUT', '/v1/files/file_1'],
      ['GET', '/v1/messages'],
      ['PUT', '/v1/messages'],
      ['POST', '/v1/messages/'],
      ['POST', '/v1/complete'],
      ['POST', '/v1/models'],
      ['POST', '/v1/moat'],
      ['GET', '/v1/moatx'],
    ] as const)
      expect(where(method, path), `${method} ${path}`).toBeUndefined();
    expect(
      createRouter(routeTable(parsePassthroughRoutes('POST /v1/complete'))).match('POST', '/v1/complete')?.route.mode,
    ).toBe('passthrough');
    expect(
      createRouter(routeTable(parsePassthroughRoutes('GET /v1/models, DELETE /v1/skills/:id'))).match(
        'DELETE',
        '/v1/skills/f1',
      )?.route.mode,
    ).toBe('passthrough');
  });

  it('refuses a pass-through route that would take a Messages or Moat path', () => {
    for (const entry of [
      'POST /v1/messages',
      'GET /v1/messages/:id',
      'GET /v1/:a/:b',
      'GET /v1/*',
      'GET /v1/moat',
      'get /v1/models',
      'GET v1',
      // At any depth, in any case, with the slashes or dot segments a lenient upstream would merge.
      'POST /v1/messages/a/b/c/d',
      'POST /v1/messages/:a/:b/:c/:d',
      'GET /v1/messages/batches/:id/results/x',
      'POST /V1/Messages',
      'POST /v1/Messages/batches',
      'POST /v1/MOAT/enroll',
      'GET /v1/moat-conformance',
      'POST /v1/messages/',
      'POST /v1//messages',
      'POST //v1/messages',
      'POST /:a/messages',
      'POST /v1/x/../messages',
      'GET /v1/./models',
      // A suffix an upstream may strip or ignore.
      'POST /v1/messages.json',
      'POST /v1/Messages.',
      'POST /v1/messages~',
      'POST /v1/messages_batch',
      // Files are per key: no route under them, nor one an upstream would take for one, passes through.
      'GET /v1/files/:id/x',
      'GET /v1/Files',
      'GET /v1/files.json',
      'POST /v1.json/messages',
      'POST /v1~/messages',
    ])
      expect(() => parsePassthroughRoutes([entry]), entry).toThrow(/ERR_VERIFIER_CONFIG: passthroughRoutes\[0\]/);
  });

  it("refuses a pass-through route that could never match, or that names one of the verifier's own routes", () => {
    for (const [entry, why] of [
      ['POST /v1/me:ssages', /segments that are a name or one ":name" parameter/],
      ['GET /v1/models/:a:b', /segments that are a name or one ":name" parameter/],
      ['GET /admin/records', /its route "GET \/admin\/records" serves/],
      ['GET /metrics', /its route "GET \/metrics" serves/],
      ['GET /dashboard', /its route "GET \/dashboard" serves/],
      ['GET /healthz', /its route "GET \/healthz" serves/],
      ['GET /api/features/:k', /its route "GET \/api\/features\/\*" serves/],
      ['POST /v1/telemetry', /its route "POST \/v1\/telemetry" serves/],
    ] as const)
      expect(() => routeTable(parsePassthroughRoutes([entry])), entry).toThrow(why);
    // The defaults, and entries beside the verifier's own under another method, stand.
    expect(() => routeTable(parsePassthroughRoutes(DEFAULT_PASSTHROUGH_ROUTES))).not.toThrow();
    expect(() => routeTable(parsePassthroughRoutes(['POST /healthz', 'GET /v1/models/:id']))).not.toThrow();
  });

  it('refuses every pattern that could match a Messages or Moat path, whatever its depth and case (property)', () => {
    const segment = fc.oneof(
      fc.constantFrom(
        'v1',
        'V1',
        'messages',
        'Messages',
        'MESSAGES',
        'moat',
        'Moat',
        'batches',
        'count_tokens',
        'models',
        'files',
        '',
      ),
      fc.stringMatching(/^:[a-z]{1,5}$/),
      fc.stringMatching(/^[a-z0-9]{1,6}$/),
    );
    fc.assert(
      fc.property(fc.array(segment, { minLength: 1, maxLength: 7 }), (segments) => {
        const entry = `POST /${segments.join('/')}`;
        let routes: Array<{ pattern: string }>;
        try {
          routes = parsePassthroughRoutes([entry]);
        } catch {
          return;
        }
        // Accepted: no path under /v1/messages or /v1/moat, read as a lenient upstream reads it, is matched.
        const parts = (routes[0]?.pattern ?? '').split('/').filter((p) => p !== '');
        const lenient = [
          ['v1', 'messages'],
          ['v1', 'moat'],
        ];
        for (const [a, b] of lenient)
          expect(
            parts.length >= 2 &&
              (parts[0]?.startsWith(':') || parts[0]?.toLowerCase() === a) &&
              (parts[1]?.startsWith(':') || parts[1]?.toLowerCase() === b),
            entry,
          ).toBe(false);
      }),
      { numRuns: 2000 },
    );
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
