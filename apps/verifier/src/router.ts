/**
 * The verifier's router: an ordered table of routes, each a method, a path pattern, a
 * handling mode, an access rule and one handler signature — hono's `app.on(method, path,
 * handler)` as data. Patterns are exact paths, `:name` for one segment, and a trailing `*`
 * for any rest (`/admin/*`, `/v1/moat*`). The first row that matches wins, so a narrower row
 * goes above a wider one; a linear scan of a few dozen compiled rows costs well under a
 * microsecond (bench/router.bench.ts), so no router library pays for itself here.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Access, admit, type OperatorTokens } from './auth.js';
import { VerifierTableError } from './errors.js';
import type { VerifierServices } from './pipeline/services.js';
import type { CanonicalTarget } from './target.js';

/**
 * How a route is handled: `pipeline` runs the decision pipeline (it authenticates as its
 * first stage, so a refused request is recorded too); `passthrough` forwards upstream
 * unchanged once the client is authenticated (only the routes the `passthroughRoutes`
 * setting names); `local` is answered by the verifier itself.
 */
export type RouteMode = 'pipeline' | 'passthrough' | 'local';

/** What every handler gets. */
export interface RouteContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly url: URL;
  /** The request target in canonical form: what was routed, and what is forwarded. */
  readonly target: CanonicalTarget;
  /** `:name` segments of the pattern, and `*` for the rest a trailing wildcard matched. */
  readonly params: Readonly<Record<string, string>>;
  readonly services: VerifierServices;
  /** The client's API key id on `client` routes that are not `pipeline` routes. */
  readonly keyId: string | undefined;
  /** Whether the verifier is shutting down. */
  readonly closing: boolean;
}

/** The one handler signature. */
export type RouteHandler = (ctx: RouteContext) => Promise<void> | void;

/** One row of the route table. */
export interface Route {
  /** An HTTP method, or `*` for any. */
  readonly method: string;
  readonly pattern: string;
  readonly mode: RouteMode;
  readonly access: Access;
  readonly handler: RouteHandler;
}

/** A row of the table as written: `[method, pattern, mode, access, handler]`. */
export type RouteRow = readonly [
  method: string,
  pattern: string,
  mode: RouteMode,
  access: Access,
  handler: RouteHandler,
];

type Matcher = (path: string) => Record<string, string> | undefined;

const NO_PARAMS: Readonly<Record<string, string>> = Object.freeze({});

/** A percent-decoded path segment; `undefined` for a malformed escape (no match, not a crash). */
function decodeSegment(part: string): string | undefined {
  try {
    return decodeURIComponent(part);
  } catch {
    return undefined;
  }
}

/** Compiles a pattern to a matcher: exact, segment parameters, or a trailing wildcard. */
export function compilePattern(pattern: string): Matcher {
  if (!pattern.startsWith('/')) {
    const got = JSON.stringify(pattern);
    throw new VerifierTableError('ERR_VERIFIER_TABLE', `route pattern: expected a path starting with "/", got ${got}`);
  }
  const wildcard = pattern.endsWith('*');
  const fixed = wildcard ? pattern.slice(0, -1) : pattern;
  if (!fixed.includes(':')) {
    if (!wildcard) return (path) => (path === fixed ? NO_PARAMS : undefined);
    return (path) => (path.startsWith(fixed) ? { '*': path.slice(fixed.length) } : undefined);
  }
  const segments = fixed.split('/');
  return (path) => {
    const parts = path.split('/');
    if (wildcard ? parts.length < segments.length : parts.length !== segments.length) return undefined;
    const params: Record<string, string> = {};
    for (const [i, segment] of segments.entries()) {
      const part = parts[i] as string;
      if (segment.startsWith(':')) {
        if (part === '') return undefined;
        const value = decodeSegment(part);
        if (value === undefined) return undefined;
        params[segment.slice(1)] = value;
      } else if (segment !== part && !(wildcard && i === segments.length - 1 && part.startsWith(segment)))
        return undefined;
    }
    if (wildcard)
      params['*'] = parts
        .slice(segments.length - 1)
        .join('/')
        .slice((segments.at(-1) as string).length);
    return params;
  };
}

/** A compiled route table. */
export interface Router {
  /** The first route that matches, with its parameters; `undefined` when none does. */
  match(method: string, path: string): { route: Route; params: Readonly<Record<string, string>> } | undefined;
  readonly routes: readonly Route[];
}

/** Compiles a route table (rows in order of precedence). */
export function createRouter(rows: readonly RouteRow[]): Router {
  const routes = rows.map(([method, pattern, mode, access, handler]) => ({ method, pattern, mode, access, handler }));
  const compiled = routes.map((route) => ({ route, matches: compilePattern(route.pattern) }));
  return {
    routes,
    match(method, path) {
      for (const { route, matches } of compiled) {
        if (route.method !== '*' && route.method !== method) continue;
        const params = matches(path);
        if (params !== undefined) return { route, params };
      }
      return undefined;
    },
  };
}

/** Headers of every answer to an operator route (`admin`, `metrics` access), refusals included. */
export const OPERATOR_HEADERS: Readonly<Record<string, string>> = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/**
 * Runs a matched route: its access rule (bar `pipeline` and `passthrough` routes, which
 * authenticate in their handler so that a refusal is recorded), then its handler.
 */
export async function dispatch(
  matched: { route: Route; params: Readonly<Record<string, string>> },
  base: Omit<RouteContext, 'params' | 'keyId'>,
  tokens: OperatorTokens,
): Promise<void> {
  const { route, params } = matched;
  // Operator answers (records, keys, metrics) are never cached, sniffed or sent on as a referrer.
  if (route.access === 'admin' || route.access === 'metrics')
    for (const [name, value] of Object.entries(OPERATOR_HEADERS)) base.res.setHeader(name, value);
  const keyId = route.mode !== 'local' ? undefined : await admit(route.access, base.req, tokens, base.services);
  await route.handler({ ...base, params, keyId });
}
