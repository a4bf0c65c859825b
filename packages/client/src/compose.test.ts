/**
 * The composition seam: the order check at construction, the order layers run in, and
 * failing open per layer (a warning and a `layer_degraded` telemetry event; the request
 * still goes out, once).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkLayers, degradedEvent, type MoatLayer } from './compose.js';
import { attestationLayer, createMoatFetch, defaultLayers, MoatClientError } from './index.js';

const origin = 'http://moat.test';
const layer = (name: string, phase: MoatLayer['phase'], intercept: MoatLayer['intercept'] = (next) => next): MoatLayer => ({
  name,
  phase,
  intercept,
});

/** A Moat endpoint in a function: discovery with telemetry, Messages answers, and the telemetry it receives. */
function fakeEndpoint(features = ['telemetry']) {
  const sent: Array<{ url: string; body: string | undefined; headers: Headers }> = [];
  const telemetry: Array<Record<string, unknown>> = [];
  const fetch = (async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.pathname === '/v1/moat') return Response.json({ moat: { versions: [1], features, telemetry: '/v1/telemetry' } });
    if (url.pathname === '/v1/telemetry') {
      telemetry.push(...(JSON.parse(String(init.body)) as { events: Array<Record<string, unknown>> }).events);
      return new Response(null, { status: 204 });
    }
    sent.push({ url: url.href, body: typeof init.body === 'string' ? init.body : undefined, headers: new Headers(init.headers) });
    return Response.json({ type: 'message', content: [{ type: 'text', text: 'ok' }] }, { headers: { 'helicone-id': 'x' } });
  }) as typeof globalThis.fetch;
  return { fetch, sent, telemetry };
}

/** A client with every layer but the stamp, over `fetch`. */
const taggingFetch = (fetch: typeof globalThis.fetch, clientVersion: string) =>
  createMoatFetch({ salt: 's', clientVersion, fetch, layers: (d) => d.filter((l) => l.name !== 'attest') });

const messages = (f: typeof fetch) =>
  f(`${origin}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': 'sk-test', 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'Hello there, world' }] }),
  });

describe('checkLayers', () => {
  it('refuses a layer after the stamp, two stamps, two layers of one name and a non-layer, naming them', () => {
    const stamp = layer('attest', 'stamp');
    expect(() => checkLayers([layer('a', 'observe'), layer('b', 'tag'), stamp])).not.toThrow();
    expect(() => checkLayers([stamp, layer('late-tag', 'tag')])).toThrow(
      expect.objectContaining({
        name: 'MoatClientError',
        code: 'ERR_LAYER_ORDER',
        message: expect.stringMatching(/"late-tag" \(tag\) before "attest"/),
      }),
    );
    expect(() => checkLayers([layer('x', 'tag'), layer('y', 'observe')])).toThrow(/ERR_LAYER_ORDER: expected "y" \(observe\) before "x"/);
    expect(() => checkLayers([stamp, layer('other-stamp', 'stamp')])).toThrow(/expected one stamp layer, got "attest" and "other-stamp"/);
    expect(() => checkLayers([layer('a', 'tag'), layer('a', 'tag')])).toThrow(/expected one layer named "a", got two/);
    expect(() => checkLayers([{ name: 'n', phase: 'later' } as unknown as MoatLayer])).toThrow(
      expect.objectContaining({ code: 'ERR_LAYER', message: expect.stringContaining('layer "n" (phase later)') }),
    );
  });

  it('createMoatFetch refuses a wrong order when it is created, not per request', () => {
    const late = layer('late', 'tag');
    expect(() => createMoatFetch({ salt: 's', clientVersion: '1', layers: (d) => [...d, late] })).toThrow(MoatClientError);
    const names = defaultLayers({ salt: 's', clientVersion: '1' }).map((l) => l.name);
    expect(names.at(-1)).toBe('attest');
    expect(names).toEqual(['gateway-detect', 'signed-blocks', 'user-agent', 'fingerprint', 'anti-distillation', 'attest']);
    expect(defaultLayers({ salt: 's', clientVersion: '1', harden: true }).map((l) => l.name)).toContain('harden');
  });
});

describe('composition', () => {
  it('runs layers outermost first on the way out and in reverse on the way back', async () => {
    const seen: string[] = [];
    const trace = (name: string, phase: MoatLayer['phase']) =>
      layer(name, phase, (next) => async (call) => {
        seen.push(`>${name}`);
        const res = await next(call);
        seen.push(`<${name}`);
        return res;
      });
    const endpoint = fakeEndpoint();
    const f = createMoatFetch({
      salt: 's',
      clientVersion: '1',
      fetch: endpoint.fetch,
      layers: [trace('o', 'observe'), trace('h', 'history'), trace('t', 'tag'), trace('s', 'stamp')],
    });
    await messages(f);
    expect(seen).toEqual(['>o', '>h', '>t', '>s', '<s', '<t', '<h', '<o']);
  });

  it('a layer that throws before handing on is skipped: the request goes out once, with a warning and telemetry', async () => {
    const endpoint = fakeEndpoint();
    const warnings: string[] = [];
    const broken = layer('broken', 'observe', () => () => {
      throw new Error('cannot tag today');
    });
    const f = createMoatFetch({
      salt: 's',
      clientVersion: '1',
      fetch: endpoint.fetch,
      onWarning: (m) => warnings.push(m),
      layers: (d) => [broken, ...d],
    });
    const res = await messages(f);
    expect(await res.json()).toMatchObject({ content: [{ text: 'ok' }] });
    await messages(f);
    expect(endpoint.sent).toHaveLength(2);
    expect(warnings).toEqual(['moat client: broken failed open (cannot tag today)']);
    await f.close();
    expect(endpoint.telemetry.filter((e) => e.type === 'layer_degraded')).toEqual([
      expect.objectContaining({ layer: 'broken', reason: 'cannot tag today' }),
      expect.objectContaining({ layer: 'broken', reason: 'cannot tag today' }),
    ]);
  });

  it("a Request's own signal reaches the network: the app can still cancel a Moat call made with a Request", async () => {
    const signals: Array<AbortSignal | null | undefined> = [];
    const endpoint = fakeEndpoint(['fingerprint']);
    const base = (async (input: string | URL | Request, init: RequestInit = {}) => {
      if (!String(input instanceof Request ? input.url : input).endsWith('/v1/moat')) signals.push(init.signal);
      return endpoint.fetch(input, init);
    }) as typeof globalThis.fetch;
    const f = taggingFetch(base, '1');
    const controller = new AbortController();
    const body = JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'Hello there, world' }] });
    const request = new Request(`${origin}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'sk-test', 'content-type': 'application/json' },
      body,
      signal: controller.signal,
    });
    await f(request);
    await f.close();
    expect(signals).toHaveLength(1);
    controller.abort();
    expect(signals[0]?.aborted).toBe(true);
  });

  it('tags a Messages body the app sent as bytes (Uint8Array, ArrayBuffer, Blob) as it tags a string', async () => {
    const endpoint = fakeEndpoint(['fingerprint']);
    const f = taggingFetch(endpoint.fetch, '1.2.3');
    const text = JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'Hello there, world' }] });
    const bytes = new TextEncoder().encode(text);
    for (const body of [bytes, bytes.buffer.slice(0), new Blob([bytes], { type: 'application/json' })])
      await f(`${origin}/v1/messages`, { method: 'POST', headers: { 'x-api-key': 'sk-test' }, body });
    await f.close();
    expect(endpoint.sent).toHaveLength(3);
    for (const sent of endpoint.sent)
      expect((JSON.parse(sent.body ?? '{}') as { system?: Array<{ text: string }> }).system?.[0]?.text).toMatch(
        /^x-moat: v=1; cv=1\.2\.3;/,
      );
  });

  it('tags a Messages request at every path a verifier routes as Messages, and nothing else', async () => {
    const endpoint = fakeEndpoint(['fingerprint']);
    const f = taggingFetch(endpoint.fetch, '1.2.3');
    const body = JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'Hello there, world' }] });
    const tagged = (sent: (typeof endpoint.sent)[number]) =>
      /^x-moat: v=1;/.test((JSON.parse(sent.body ?? '{}') as { system?: Array<{ text: string }> }).system?.[0]?.text ?? '');
    const routed = [
      '/v1//messages',
      '/v1/%6Dessages',
      '/V1/Messages',
      '//v1/messages',
      '/v1/messages/%63ount_tokens',
      '/v1/messages?beta=true',
    ];
    const other = ['/v1/messages/', '/v1/messagesx', '/v1/messages%2F', '/v2/messages'];
    for (const path of [...routed, ...other]) await f(`${origin}${path}`, { method: 'POST', headers: { 'x-api-key': 'sk-test' }, body });
    await f.close();
    expect(endpoint.sent.map((s) => [new URL(s.url).pathname + new URL(s.url).search, tagged(s)])).toEqual([
      ...routed.map((p) => [p, true]),
      ...other.map((p) => [p, false]),
    ]);
  });

  it('a tagged body keeps every digit of an integer past 2^53 and a literal past the double range (property)', async () => {
    const endpoint = fakeEndpoint(['fingerprint']);
    const f = taggingFetch(endpoint.fetch, '1');
    await fc.assert(
      fc.asyncProperty(
        fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }),
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        async (big, small) => {
          const input = `{"id":${big},"ratio":${JSON.stringify(small)},"huge":1e400,"list":[${big},-${2n ** 64n}]}`;
          const text = `{"model":"m","max_tokens":8,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"lookup","input":${input}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]}`;
          const before = endpoint.sent.length;
          await f(`${origin}/v1/messages`, { method: 'POST', headers: { 'x-api-key': 'sk-test' }, body: text });
          const sent = endpoint.sent[before]?.body ?? '';
          expect(sent).toMatch(/"system":\[\{"type":"text","text":"x-moat: /);
          expect(sent).toContain(`"input":${input}`);
        },
      ),
      { numRuns: 200 },
    );
    await f.close();
  });

  it('a layer that throws on the answer gives back the answer; an error from the network is not retried', async () => {
    const endpoint = fakeEndpoint();
    const after = layer('after', 'observe', (next) => async (call) => {
      await next(call);
      throw new Error('cannot read the answer');
    });
    const f = createMoatFetch({ salt: 's', clientVersion: '1', fetch: endpoint.fetch, layers: [after], onWarning: () => {} });
    expect((await messages(f)).status).toBe(200);
    expect(endpoint.sent).toHaveLength(1);

    let calls = 0;
    const down = (async (input: string | URL | Request) => {
      if (String(input).endsWith('/v1/moat')) return Response.json({ moat: { versions: [1], features: ['fingerprint'] } });
      calls++;
      throw new TypeError('fetch failed');
    }) as typeof fetch;
    const g = taggingFetch(down, '1');
    await expect(messages(g)).rejects.toThrow('fetch failed');
    expect(calls).toBe(1);
  });

  it('the default layers tag a Moat call and leave every other request as the app made it', async () => {
    const endpoint = fakeEndpoint(['fingerprint', 'telemetry']);
    const f = taggingFetch(endpoint.fetch, '1.2.3');
    await messages(f);
    const tagged = JSON.parse(endpoint.sent[0]?.body ?? '{}') as { system?: Array<{ text: string }> };
    expect(tagged.system?.[0]?.text).toMatch(/^x-moat: v=1; cv=1\.2\.3; fp=[0-9a-f]{3}; ep=sdk;/);
    expect(endpoint.sent[0]?.headers.get('user-agent')).toBe('moat-client/1.2.3');
    await f(`${origin}/v1/models`, { headers: { 'user-agent': 'app/1' } });
    expect(endpoint.sent[1]?.headers.get('user-agent')).toBe('app/1');
    await f.close();
    expect(endpoint.telemetry).toContainEqual(expect.objectContaining({ type: 'gateway_detected', gateways: ['helicone'] }));
  });
});

describe('connect', () => {
  it("discovers an endpoint ahead of the first request and reports each layer's status there", async () => {
    const endpoint = fakeEndpoint(['fingerprint', 'telemetry']);
    const mute = layer('mute', 'observe');
    const broken: MoatLayer = {
      ...layer('broken-status', 'observe'),
      status: () => {
        throw new Error('no idea');
      },
    };
    const f = createMoatFetch({ salt: 'salty', clientVersion: '1', fetch: endpoint.fetch, layers: (d) => [mute, broken, ...d] });
    const status = await f.connect(`${origin}/`, 'sk-test');
    expect(status.map((s) => s.layer)).toEqual([
      'broken-status',
      'gateway-detect',
      'signed-blocks',
      'fingerprint',
      'anti-distillation',
      'attest',
    ]);
    expect(status).toContainEqual({ layer: 'broken-status', state: 'degraded', detail: 'no idea' });
    expect(status).toContainEqual({ layer: 'fingerprint', state: 'on', detail: 'salt salt…' });
    expect(status).toContainEqual({ layer: 'attest', state: 'off', detail: 'endpoint does not attest' });
    expect(status).toContainEqual({ layer: 'gateway-detect', state: 'on', detail: 'telemetry on' });
    await f.close();
  });
});

describe('discovery', () => {
  /** An endpoint whose discovery answers `answer`; every URL asked for is kept. */
  function endpointAnswering(answer: () => Response) {
    const asked: string[] = [];
    const fetch = (async (input: string | URL | Request) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      asked.push(url.href);
      if (url.pathname === '/v1/moat') return answer();
      return Response.json({ type: 'message', content: [{ type: 'text', text: 'ok' }] });
    }) as typeof globalThis.fetch;
    return { fetch, asked };
  }

  it('never sends the key to a host a discovery path names (//host/…), and says why the endpoint is untagged', async () => {
    const key = Buffer.alloc(32, 7).toString('base64url');
    const enrollment = { challenge: '//elsewhere.test/steal', enroll: '/v1/moat/enroll', kid: 'e1', key };
    const endpoint = endpointAnswering(() =>
      Response.json({ moat: { versions: [1], features: ['fingerprint', 'install_keys', 'attestation'], enrollment } }),
    );
    const warnings: string[] = [];
    const f = createMoatFetch({ salt: 's', clientVersion: '1', fetch: endpoint.fetch, onWarning: (w) => warnings.push(w) });
    expect((await messages(f)).status).toBe(200);
    await f.close();
    expect(endpoint.asked.every((u) => u.startsWith(`${origin}/`))).toBe(true);
    expect(warnings.some((w) => w.includes('no usable Moat discovery') && w.includes('enrollment.challenge'))).toBe(true);
  });

  it("reads the remote flags through the app's own fetch, at the path the document names; a broken payload is the defaults, with a warning", async () => {
    for (const [payload, expected] of [
      [{ features: { 'moat-kill-fingerprint': { defaultValue: true } } }, 'off'],
      [[1, 2], 'on'],
      ['nope', 'on'],
    ] as const) {
      const asked: string[] = [];
      const sent: string[] = [];
      const fetch = (async (input: string | URL | Request, init: RequestInit = {}) => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        asked.push(url.pathname);
        if (url.pathname === '/v1/moat')
          return Response.json({ moat: { versions: [1], features: ['attribution', 'fingerprint'], flags: '/custom/flags/k1' } });
        if (url.pathname === '/custom/flags/k1') return typeof payload === 'string' ? new Response(payload) : Response.json(payload);
        sent.push(String(init.body));
        return Response.json({ type: 'message', content: [{ type: 'text', text: 'ok' }] });
      }) as typeof globalThis.fetch;
      const warnings: string[] = [];
      const f = createMoatFetch({ salt: 's', clientVersion: '1', fetch, onWarning: (w) => warnings.push(w) });
      expect((await messages(f)).status).toBe(200);
      await f.close();
      expect(asked.slice(0, 2)).toEqual(['/v1/moat', '/custom/flags/k1']);
      // moat-kill-fingerprint from the network turns the fingerprint off; without flags it stays on.
      expect(sent[0]?.includes('x-moat:') ? 'on' : 'off', JSON.stringify(payload)).toBe(expected);
      expect(
        warnings.some((w) => w.includes('remote flags unavailable')),
        JSON.stringify(payload),
      ).toBe(expected === 'on');
    }
  });

  it('never follows a discovery path whose dot segments climb out of the base URL (another tenant on the host)', async () => {
    const key = Buffer.alloc(32, 7).toString('base64url');
    for (const doc of [
      { telemetry: '/../other/collect' },
      { flags: '/../other/flags' },
      { enrollment: { challenge: '/../../other/challenge', enroll: '/v1/moat/enroll', kid: 'e1', key } },
      { enrollment: { challenge: '/v1/moat/enroll/challenge', enroll: '/v1/../../other/enroll', kid: 'e1', key } },
    ]) {
      const asked: string[] = [];
      const fetch = (async (input: string | URL | Request) => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        asked.push(url.pathname);
        if (url.pathname === '/tenant/v1/moat')
          return Response.json({
            moat: { versions: [1], features: ['telemetry', 'fingerprint', ...('enrollment' in doc ? ['install_keys'] : [])], ...doc },
          });
        return Response.json({ type: 'message', content: [{ type: 'text', text: 'ok' }] });
      }) as typeof globalThis.fetch;
      const warnings: string[] = [];
      const f = createMoatFetch({ salt: 's', clientVersion: '1', fetch, onWarning: (w) => warnings.push(w) });
      const res = await f(`${origin}/tenant/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': 'sk-test', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'Hello there, world' }] }),
      });
      expect(res.status).toBe(200);
      await f.close();
      expect(asked, JSON.stringify(doc)).toEqual(['/tenant/v1/moat', '/tenant/v1/messages']);
      expect(
        warnings.some((w) => w.includes('no usable Moat discovery') && w.includes('expected a path under')),
        warnings.join('|'),
      ).toBe(true);
    }
  });

  it("two endpoints mounted on one host each get their own telemetry, an unattested request's report included", async () => {
    const reports: Record<string, string[]> = { '/a': [], '/b': [] };
    const fetch = (async (input: string | URL | Request, init: RequestInit = {}) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      const mount = url.pathname.slice(0, 2);
      if (url.pathname.endsWith('/v1/moat'))
        return Response.json({ moat: { versions: [1], features: ['telemetry', 'attestation'], telemetry: '/v1/telemetry' } });
      if (url.pathname.endsWith('/v1/telemetry')) {
        const { events } = JSON.parse(String(init.body)) as { events: Array<{ type: string }> };
        reports[mount]?.push(...events.map((e) => e.type));
        return new Response(null, { status: 204 });
      }
      return Response.json({ type: 'message', content: [{ type: 'text', text: 'ok' }] });
    }) as typeof globalThis.fetch;
    const f = createMoatFetch({
      salt: 's',
      clientVersion: '1',
      fetch,
      onWarning: () => {},
      // No native transport: every Moat call goes out unattested and is reported.
      layers: (d) => d.map((l) => (l.name === 'attest' ? attestationLayer({ native: null, installKeys: false, fetch }) : l)),
    });
    // Both discovered first: the report must follow the request's own endpoint, not the last one set up.
    await f.connect(`${origin}/a`, 'sk-test');
    await f.connect(`${origin}/b`, 'sk-test');
    for (const mount of ['/a', '/b', '/b'])
      await f(`${origin}${mount}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': 'sk-test', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'Hello there, world' }] }),
      });
    await f.close();
    expect(reports['/a']?.filter((t) => t === 'attestation_unavailable')).toHaveLength(1);
    expect(reports['/b']?.filter((t) => t === 'attestation_unavailable')).toHaveLength(2);
  });

  it('asks again when discovery failed, and the request that asks waits and is tagged: unreachable by the next request, broken after a back-off, a 404 every 5 min', async () => {
    for (const [name, failure, waitMs] of [
      ['503', () => new Response('busy', { status: 503 }), 2_100],
      ['not JSON', () => new Response('<html>', { status: 200 }), 2_100],
      ['unreachable', () => Promise.reject(new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED') })), 300],
      ['404', () => new Response('no', { status: 404 }), 5 * 60_000 + 100],
    ] as const) {
      const sentBodies: string[] = [];
      let failing = true;
      let discoveries = 0;
      let clock = Date.now();
      const fetch = (async (input: string | URL | Request, init: RequestInit = {}) => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        if (url.pathname === '/v1/moat') {
          discoveries++;
          return failing ? failure() : Response.json({ moat: { versions: [1], features: ['attribution', 'fingerprint'] } });
        }
        sentBodies.push(String(init.body));
        return Response.json({ type: 'message', content: [{ type: 'text', text: 'ok' }] });
      }) as typeof globalThis.fetch;
      const warnings: string[] = [];
      const realNow = Date.now;
      Date.now = () => clock;
      try {
        const f = createMoatFetch({ salt: 's', clientVersion: '1', fetch, onWarning: (w) => warnings.push(w) });
        expect((await messages(f)).status, name).toBe(200);
        expect(sentBodies.at(-1), name).not.toContain('x-moat');
        expect(
          warnings.some((w) => w.includes('requests go out untagged')),
          name,
        ).toBe(true);
        failing = false;
        // Before the wait: not asked again, untagged.
        clock += waitMs - 200;
        expect((await messages(f)).status, name).toBe(200);
        expect([discoveries, sentBodies.at(-1)?.includes('x-moat')], name).toEqual([1, false]);
        // After it, the next request asks, waits for the answer, and is tagged itself.
        clock += 200;
        expect((await messages(f)).status, name).toBe(200);
        expect([discoveries, sentBodies.at(-1)?.includes('x-moat')], name).toEqual([2, true]);
        await messages(f);
        expect([discoveries, sentBodies.at(-1)?.includes('x-moat')], name).toEqual([2, true]);
        await f.close();
      } finally {
        Date.now = realNow;
      }
    }
  });

  it("the app's cancellation holds while the endpoint is discovered: a hung discovery does not keep the call", async () => {
    const fetch = (async (input: string | URL | Request, init: RequestInit = {}) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      if (url.pathname === '/v1/moat')
        return new Promise<Response>((_, reject) => init.signal?.addEventListener('abort', () => reject(init.signal?.reason)));
      return Response.json({ type: 'message', content: [] });
    }) as typeof globalThis.fetch;
    const f = createMoatFetch({ salt: 's', clientVersion: '1', fetch, onWarning: () => {} });
    const started = Date.now();
    const call = f(`${origin}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'sk-test', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }),
      signal: AbortSignal.timeout(150),
    });
    await expect(call).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(Date.now() - started).toBeLessThan(1_500);
    await f.close();
  });

  it("warns, and tells the endpoint's telemetry, when this machine's clock is far off the endpoint's (its Date)", async () => {
    for (const [offsetMs, warned] of [
      [-600_000, 'ahead of'],
      [3_600_000, 'behind'],
      [20_000, undefined],
    ] as const) {
      const telemetry: string[] = [];
      const fetch = (async (input: string | URL | Request, init: RequestInit = {}) => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        if (url.pathname === '/v1/moat')
          return Response.json(
            { moat: { versions: [1], features: ['telemetry'], telemetry: '/v1/telemetry' } },
            { headers: { date: new Date(Date.now() + offsetMs).toUTCString() } },
          );
        if (url.pathname === '/v1/telemetry') {
          telemetry.push(String(init.body));
          return new Response(null, { status: 204 });
        }
        return Response.json({ type: 'message', content: [] });
      }) as typeof globalThis.fetch;
      const warnings: string[] = [];
      const f = createMoatFetch({ salt: 's', clientVersion: '1', fetch, onWarning: (w) => warnings.push(w) });
      await messages(f);
      await f.close();
      const said = warnings.find((w) => w.includes('refused as stale'));
      if (warned === undefined) expect(said, String(offsetMs)).toBeUndefined();
      else {
        expect(said, String(offsetMs)).toContain(warned);
        // The Date header says whole seconds: the figure is the offset's to a second.
        const [, seconds] = /clock (\d+) s /.exec(telemetry.join('')) ?? [];
        expect(Math.abs(Number(seconds) - Math.abs(offsetMs) / 1000), String(offsetMs)).toBeLessThanOrEqual(1);
        expect(telemetry.join(''), String(offsetMs)).toContain(` s ${warned} the endpoint's`);
      }
    }
  });

  it('warns, once, about an endpoint whose discovery fails (a 500) and about one that has none (a 404), naming the status', async () => {
    for (const [status, said] of [
      [500, 'answered 500'],
      [404, 'discovery answered 404'],
    ] as const) {
      const endpoint = endpointAnswering(() => new Response('nope', { status }));
      const warnings: string[] = [];
      const f = createMoatFetch({ salt: 's', clientVersion: '1', fetch: endpoint.fetch, onWarning: (w) => warnings.push(w) });
      expect((await messages(f)).status).toBe(200);
      expect((await messages(f)).status).toBe(200);
      await f.close();
      expect(
        warnings.filter((w) => w.includes(said)),
        String(status),
      ).toHaveLength(1);
    }
  });
});

describe('degradedEvent', () => {
  it('keeps the reason within the protocol bound of 256 UTF-8 bytes, never splitting a character', () => {
    const e = degradedEvent('x', 'é'.repeat(300), 5_000);
    expect(e).toMatchObject({ type: 'layer_degraded', ts: 5, layer: 'x' });
    expect(new TextEncoder().encode(e.reason as string).length).toBeLessThanOrEqual(256);
    expect(e.reason).toMatch(/^é+$/);
  });
});
