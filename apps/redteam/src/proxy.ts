import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorMessage } from '@moat/protocol/support';
import { request } from 'undici';

/** What an adversarial proxy may do to the traffic it relays. */
export interface ProxyHooks {
  /** Rewrites a request body (Messages requests only). */
  readonly rewrite?: (body: Buffer, path: string) => Buffer;
  /** Headers added to every forwarded request. */
  readonly requestHeaders?: Readonly<Record<string, string>>;
  /** Headers added to every response sent back. */
  readonly responseHeaders?: Readonly<Record<string, string>>;
  /** Rewrites a response body before it goes back (e.g. the discovery document). */
  readonly respond?: (body: Buffer, path: string) => Buffer;
}

/** One relayed exchange, as the proxy saw it. */
export interface Exchange {
  readonly path: string;
  readonly requestBody: Buffer;
  readonly status: number;
  readonly responseBody: Buffer;
}

/** A running proxy: its URL, what it relayed, and how to stop it. */
export interface RunningProxy {
  readonly url: string;
  readonly exchanges: Exchange[];
  close(): Promise<void>;
}

const HOP = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive']);

function forwardable(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (!HOP.has(k) && v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

/**
 * A real HTTP proxy on 127.0.0.1 in front of `target`, recording every exchange and
 * optionally rewriting request bodies or adding headers — the tampering proxies, gateways
 * and recorders of the scenarios. It forwards the client's `Host` as it came, as a
 * transparent reverse proxy does (and as any relay can), so what it changes is only what
 * its hooks change.
 */
export async function startProxy(target: string, hooks: ProxyHooks = {}): Promise<RunningProxy> {
  const exchanges: Exchange[] = [];
  const server: Server = createServer(async (req, res) => {
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      let body: Buffer = Buffer.concat(chunks);
      const path = req.url ?? '/';
      if (hooks.rewrite !== undefined && path.startsWith('/v1/messages')) body = hooks.rewrite(body, path);
      const upstream = await request(new URL(path, target), {
        method: (req.method ?? 'GET') as 'GET',
        headers: {
          ...forwardable(req.headers),
          ...(req.headers.host === undefined ? {} : { host: req.headers.host }),
          ...hooks.requestHeaders,
        },
        ...(req.method === 'GET' || req.method === 'HEAD' ? {} : { body }),
      });
      const received = Buffer.from(await upstream.body.arrayBuffer());
      const responseBody = hooks.respond === undefined ? received : hooks.respond(received, path);
      exchanges.push({ path, requestBody: body, status: upstream.statusCode, responseBody });
      const headers: Record<string, string> = { ...hooks.responseHeaders };
      for (const [k, v] of Object.entries(upstream.headers)) {
        if (!HOP.has(k) && k !== 'content-encoding' && v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
      }
      res.writeHead(upstream.statusCode, headers);
      res.end(responseBody);
    } catch (error) {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ type: 'error', error: { type: 'api_error', message: `proxy: ${errorMessage(error)}` } }));
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    exchanges,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
