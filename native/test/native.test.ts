import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFile, readFileSync, realpathSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { computeStamp, locateEnvelope, type RequestComponents, receivedRequestComponents } from '@moat/protocol';
import { STAMP_RESULTS } from '@moat/protocol/support';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDevKey } from '../dev-key.js';
import { loadError, native } from '../index.js';

const dev = readDevKey() as { kid: string; key: string };
let base = '';
const bodies: Buffer[] = [];
const requests: RequestComponents[] = [];
const heads: Array<Record<string, string | string[] | undefined>> = [];
const server = createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  bodies.push(Buffer.concat(chunks));
  heads.push(req.headers);
  requests.push(receivedRequestComponents({ method: req.method ?? '', target: req.url ?? '', headers: req.headers }));
  res.writeHead(200, { 'x-seen-header': String(req.headers['x-probe'] ?? '') }).end('ok');
});
beforeAll(async () => {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

function send(
  body: string,
  headers: string[] = [],
  path = '/',
  method = 'POST',
): Promise<{ stamp: string; sent: Buffer; rawHeaders: string; request: RequestComponents }> {
  return new Promise((resolve, reject) => {
    let stamp = '';
    let rawHeaders = '';
    native?.request({ method, url: `${base}${path}`, headers, body: Buffer.from(body) }, (event, a, b, c) => {
      if (event === 'headers') {
        stamp = STAMP_RESULTS[c ?? 1] as string;
        rawHeaders = b ?? '';
      }
      if (event === 'end') resolve({ stamp, sent: bodies.at(-1) as Buffer, rawHeaders, request: requests.at(-1) as RequestComponents });
      if (event === 'error') reject(new Error(String(a)));
    });
  });
}

const envelope = (kid: string, stamp = '0'.repeat(32)) => `"moat_att":"v1.${kid}.1764000000.0011223344556677.${stamp}"`;

/**
 * Runs `script` in a fresh Node process where `native` is this addon and `url` a local
 * server answering `ok`, then closed with `server.close()` by the script.
 */
function runWithOkServer(script: string, env: Record<string, string> = {}) {
  const preamble = `
      const { native } = await import(${JSON.stringify(new URL('../index.js', import.meta.url).href)});
      const { createServer } = await import('node:http');
      const server = createServer((q, s) => { q.resume(); q.on('end', () => s.end('ok')); }).listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const url = 'http://127.0.0.1:' + server.address().port + '/';
`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', preamble + script], {
    encoding: 'utf8',
    timeout: 15_000,
    env: { ...process.env, ...env },
  });
}

describe('@moat/native', () => {
  it('loads and exposes its functions, and no key getter', () => {
    expect(loadError).toBeUndefined();
    expect(Object.getOwnPropertyNames(native ?? {}).sort()).toEqual([
      'appendsEnvelope',
      'getDumpable',
      'installActivate',
      'installForget',
      'installOpen',
      'jsonObject',
      'keyId',
      'literalsCompile',
      'literalsCompilePacked',
      'literalsDirectStride',
      'literalsForms',
      'literalsScan',
      'literalsSerialize',
      'literalsVersion',
      'prefilterFiles',
      'regexCompile',
      'regexCompileAsync',
      'request',
      'scrubEnvBlock',
      'secureBuffer',
      'setUndumpable',
      'sha256',
      'stampKey',
      'stampMatches',
      'transportMode',
    ]);
    expect(native?.keyId()).toBe(dev.kid);
  });

  it("hashes with SHA-256: node:crypto's digest for any bytes and any view of them; anything else refused", () => {
    let runs = 0;
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 5000 }), fc.nat(16), (bytes, skip) => {
        runs++;
        const view = bytes.subarray(Math.min(skip, bytes.length));
        expect(native?.sha256?.(view).toString('hex')).toBe(createHash('sha256').update(view).digest('hex'));
      }),
      { numRuns: 300 },
    );
    expect(runs).toBe(300);
    expect(native?.sha256?.(new Uint8Array(0)).toString('hex')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    for (const bad of ['abc', [1, 2], new Uint16Array(2), undefined])
      expect(() => native?.sha256?.(bad as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: 'ERR_NATIVE_OPTIONS' }));
  });

  it('stamps the anchored placeholder with the protocol MAC, same length', async () => {
    for (const hex of [32, 48, 64]) {
      const body = `{"model":"m",${envelope(dev.kid, '0'.repeat(hex))}}`;
      const { stamp, sent } = await send(body);
      expect(stamp).toBe('stamped');
      expect(sent.length).toBe(Buffer.byteLength(body));
      const where = locateEnvelope(new Uint8Array(sent));
      if (where.status !== 'found') throw new Error('no envelope');
      expect(where.envelope.stamp).toBe(
        computeStamp(Buffer.from(dev.key, 'hex'), new Uint8Array(Buffer.from(body)), where.stampStart, where.stampEnd),
      );
    }
  });

  it('an r1 stamp covers the request libcurl sends: its method, the Host it sets, the parsed path, the credential header', async () => {
    const r1 = `"moat_att":"r1.${dev.kid}.1764000000.0011223344556677.${'0'.repeat(32)}"`;
    const cases: Array<[string[], string, string, Partial<RequestComponents>]> = [
      [['x-api-key: sk-ant-0001'], '/v1/messages?beta=true', 'POST', { path: '/v1/messages', credential: 'sk-ant-0001' }],
      [['authorization: Bearer tok-0002'], '/v1/messages', 'POST', { credential: 'tok-0002' }],
      // libcurl removes dot segments before sending: the stamp covers the path it sends.
      [['x-api-key: k'], '/v1/./x/../messages', 'POST', { path: '/v1/messages' }],
      // A Host from JavaScript is dropped: the addon sends and stamps the URL's authority.
      [['host: spoofed.example', 'x-api-key: k'], '/v1/messages', 'PUT', { method: 'PUT', authority: new URL(base).host }],
      [[], '/', 'POST', { credential: '' }],
    ];
    for (const [headers, path, method, expected] of cases) {
      const body = `{"model":"m",${r1}}`;
      const { stamp, sent, request } = await send(body, headers, path, method);
      expect(stamp).toBe('stamped');
      expect(request).toMatchObject(expected);
      const where = locateEnvelope(new Uint8Array(sent));
      if (where.status !== 'found') throw new Error('no envelope');
      const key = Buffer.from(dev.key, 'hex');
      const bytes = new Uint8Array(Buffer.from(body));
      expect(where.envelope.stamp).toBe(computeStamp(key, bytes, where.stampStart, where.stampEnd, request));
      expect(where.envelope.stamp).not.toBe(
        computeStamp(key, bytes, where.stampStart, where.stampEnd, { ...request, credential: 'other' }),
      );
    }
  });

  it('leaves bodies it must not stamp untouched, and says why', async () => {
    const cases: Array<[string, string]> = [
      [`{"model":"m"}`, 'no_envelope'],
      [`{"model":"m",${envelope(dev.kid)} }`, 'no_envelope'],
      [`{${envelope(dev.kid)},"model":"m"}`, 'no_envelope'],
      [`{"model":"m",${envelope(dev.kid, 'a'.repeat(32))}}`, 'not_placeholder'],
      [`{"model":"m",${envelope('someone-else')}}`, 'wrong_kid'],
    ];
    for (const [body, expected] of cases) {
      const { stamp, sent } = await send(body);
      expect(stamp).toBe(expected);
      expect(sent.toString()).toBe(body);
    }
  });

  it('refuses header lines that would smuggle other headers or reframe the message, and sends nothing', () => {
    const before = bodies.length;
    const refused = [
      ['x-probe: one', 'x-evil: a\r\nx-probe: two'],
      ['x-evil: a\nb'],
      ['x-evil: a\0b'],
      ['no colon here'],
      ['bad name: x'],
      [' x-lead: x'],
      ['transfer-encoding: chunked'],
      ['Transfer-Encoding: identity'],
      ['te: trailers'],
      ['upgrade: h2c'],
      ['trailer: x-late'],
      [42],
    ];
    for (const headers of refused) {
      const call = () => native?.request({ method: 'POST', url: `${base}/`, headers, body: Buffer.from('{}') } as never, () => {});
      expect(call, JSON.stringify(headers)).toThrow(expect.objectContaining({ code: 'ERR_NATIVE_HEADER' }));
    }
    expect(bodies.length).toBe(before);
  });

  it('sends its own Host, Content-Length, Connection and Expect whatever JavaScript sets', async () => {
    const headers = ['host: spoofed.example', 'content-length: 1', 'Connection: close', 'expect: 100-continue', 'x-probe: kept'];
    const { rawHeaders } = await send('{"a":1}', headers);
    expect(rawHeaders).toMatch(/x-seen-header: kept/i);
    expect(heads.at(-1)).toMatchObject({ host: new URL(base).host, 'content-length': '7' });
    expect(heads.at(-1)?.connection).not.toBe('close');
    expect(heads.at(-1)?.expect).toBeUndefined();
    expect(bodies.at(-1)?.toString()).toBe('{"a":1}');
  });

  it('refuses options it would otherwise cut short or misread, with typed errors', () => {
    const url = `${base}/`;
    const body = Buffer.from('{"a":1}');
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ method: 'POST', url, body, envelope: 'v1.k.1.00.0000\0","x":"' }, 'ERR_NATIVE_OPTIONS', /options.envelope without a NUL/],
      [{ method: 'POST', url, body, envelope: 7 }, 'ERR_NATIVE_OPTIONS', /options.envelope as a string, got number/],
      [{ method: 'POST', url, body, envelope: 'v1.k"x' }, 'ERR_NATIVE_OPTIONS', /options.envelope as an envelope value/],
      [{ method: 'POST', url: `${url}\0.evil`, body }, 'ERR_NATIVE_OPTIONS', /options.url without a NUL/],
      [{ method: 'PO ST', url, body }, 'ERR_NATIVE_OPTIONS', /options.method as an HTTP method/],
      [{ method: 'P'.repeat(33), url, body }, 'ERR_NATIVE_OPTIONS', /options.method of at most 32 bytes/],
      [{ method: 'POST', url: 'x'.repeat(65537), body }, 'ERR_NATIVE_OPTIONS', /options.url of at most 65536 bytes/],
      [{ method: 'POST', url, body: 12 }, 'ERR_NATIVE_OPTIONS', /options.body as a string or a Buffer, got number/],
      [{ method: 'POST', url, body, caFile: '/tmp/a\0b' }, 'ERR_NATIVE_OPTIONS', /options.caFile without a NUL/],
      [{ method: 'POST', url, body, timeoutMs: '5' }, 'ERR_NATIVE_OPTIONS', /options.timeoutMs as a number, got string/],
      [{ method: 'POST', url, body, headers: 'x: y' }, 'ERR_NATIVE_OPTIONS', /options.headers as an array of strings/],
      [{ method: 'POST', url, body, headers: Array(513).fill('x: y') }, 'ERR_NATIVE_OPTIONS', /at most 512 lines/],
    ];
    const before = bodies.length;
    for (const [options, code, message] of cases) {
      const call = () => native?.request(options as never, () => {});
      expect(call, message.source).toThrow(message);
      expect(call, message.source).toThrow(expect.objectContaining({ code }));
    }
    expect(bodies.length).toBe(before);
  });

  it("lets a getter's exception through and keeps the body it read, whatever later getters do", () => {
    const thrower = ['x-a: 1'];
    Object.defineProperty(thrower, 1, {
      get() {
        throw new Error('from a getter');
      },
    });
    thrower.length = 2;
    expect(() => native?.request({ method: 'POST', url: `${base}/`, headers: thrower, body: Buffer.from('{}') }, () => {})).toThrow(
      'from a getter',
    );
    // An envelope getter that detaches the body's memory: the body is read after it.
    const memory = new ArrayBuffer(16);
    const options = {
      method: 'POST',
      url: `${base}/`,
      body: Buffer.from(memory, 0, 2).fill('{}'),
      get envelope() {
        structuredClone(memory, { transfer: [memory] });
        return `v1.${dev.kid}.1764000000.0011223344556677.${'0'.repeat(32)}`;
      },
    };
    expect(() => native?.request(options as never, () => {})).toThrow(expect.objectContaining({ code: 'ERR_NATIVE_ENVELOPE_BODY' }));
  });

  it('validates its arguments with typed errors', () => {
    expect(() => (native as unknown as { request: (...a: unknown[]) => unknown }).request('x', () => {})).toThrow(
      /expected request\(options: object, onEvent: function\)/,
    );
    expect(() => native?.request({ method: 'POST' } as never, () => {})).toThrow(/expected options.url as a string/);
  });

  it('never holds the key as plain bytes in the binary', () => {
    const binary = readFileSync(new URL('../build/Release/moat_native.node', import.meta.url));
    const key = Buffer.from(dev.key, 'hex');
    expect(binary.indexOf(key)).toBe(-1);
    expect(binary.indexOf(key.subarray(0, 8))).toBe(-1);
    expect(binary.indexOf(Buffer.from(dev.key))).toBe(-1);
  });

  it('sends on the event loop without keeping an idle process alive; MOAT_NATIVE_TRANSPORT=thread takes a thread per request', () => {
    const script = `
      const results = [];
      await Promise.all([1, 2, 3].map(() => new Promise((resolve) => {
        let text = '';
        native.request({ method: 'POST', url, body: Buffer.from('{}') }, (event, a) => {
          if (event === 'data') text += a.toString();
          if (event === 'end' || event === 'error') { results.push(event + ':' + text); resolve(); }
        });
      })));
      server.close();
      console.log(native.transportMode() + ' ' + results.join(','));
      // No process.exit: the process must end by itself once nothing is in flight.`;
    const run = (env: Record<string, string>) => runWithOkServer(script, env);
    const loop = run({});
    expect(loop.status).toBe(0);
    expect(loop.stdout.trim()).toBe('loop end:ok,end:ok,end:ok');
    const thread = run({ MOAT_NATIVE_TRANSPORT: 'thread' });
    expect(thread.status).toBe(0);
    expect(thread.stdout.trim()).toBe('thread end:ok,end:ok,end:ok');
  });

  it("takes the proxy environment as Node's fetch does: ignored unless NODE_USE_ENV_PROXY=1", () => {
    const script = `
      const result = await new Promise((resolve) => {
        let text = '';
        native.request({ method: 'POST', url, body: Buffer.from('{}') }, (event, a) => {
          if (event === 'data') text += a.toString();
          if (event === 'end') resolve('end:' + text);
          if (event === 'error') resolve('error');
        });
      });
      server.close();
      console.log(result);`;
    // A proxy nobody listens on: a request that went through it would fail.
    const dead = {
      http_proxy: 'http://127.0.0.1:9',
      HTTP_PROXY: 'http://127.0.0.1:9',
      ALL_PROXY: 'http://127.0.0.1:9',
      NO_PROXY: '',
      no_proxy: '',
    };
    expect(runWithOkServer(script, dead).stdout.trim()).toBe('end:ok');
    expect(runWithOkServer(script, { ...dead, NODE_USE_ENV_PROXY: '1' }).stdout.trim()).toBe('error');
  });

  it('keeps a connection the server closes while idle from spinning the loop; its socket number serves Node afterwards', () => {
    // A fresh process: the server drops its idle keep-alive connections after each round, so
    // libcurl's cached sockets are closed under it; Node's own sockets then take their numbers.
    const probe = `
      const { native } = await import(${JSON.stringify(new URL('../index.js', import.meta.url).href)});
      const { createServer } = await import('node:http');
      const net = await import('node:net');
      const server = createServer((q, s) => { q.resume(); q.on('end', () => s.end('ok')); });
      server.listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const echo = net.createServer((c) => c.pipe(c)).listen(0, '127.0.0.1');
      await new Promise((r) => echo.once('listening', r));
      const url = 'http://127.0.0.1:' + server.address().port + '/';
      const send = () => new Promise((resolve) => {
        let text = '';
        native.request({ method: 'POST', url, body: Buffer.from('{}') }, (event, a) => {
          if (event === 'data') text += a.toString();
          if (event === 'end' || event === 'error') resolve(event + ':' + text);
        });
      });
      const echoOnce = (n) => new Promise((resolve, reject) => {
        const c = net.connect(echo.address().port, '127.0.0.1', () => c.write('ping' + n));
        c.once('data', (d) => { c.destroy(); resolve(d.toString()); });
        c.once('error', reject);
      });
      const out = [];
      let idleCpu = 0;
      for (let round = 0; round < 3; round++) {
        out.push(...(await Promise.all([1, 2, 3, 4].map(send))));
        server.closeIdleConnections();
        const before = process.cpuUsage();
        await new Promise((r) => setTimeout(r, 300));
        const used = process.cpuUsage(before);
        idleCpu = Math.max(idleCpu, (used.user + used.system) / 1000);
        out.push(...(await Promise.all([1, 2, 3, 4].map(echoOnce))));
      }
      server.close();
      echo.close();
      console.log(JSON.stringify({ out, busy: idleCpu > 150 }));`;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', timeout: 20_000 });
    expect(result.status, result.stderr).toBe(0);
    const { out, busy } = JSON.parse(result.stdout) as { out: string[]; busy: boolean };
    expect(out).toEqual(
      Array.from({ length: 3 }, () => ['end:ok', 'end:ok', 'end:ok', 'end:ok', 'ping1', 'ping2', 'ping3', 'ping4']).flat(),
    );
    // A closed socket left polled would wake the loop without end: 300 ms of idle would burn ~300 ms of CPU.
    expect(busy).toBe(false);
  });

  it("a transfer starts from clean options on a reused handle: one request's timeout, method or headers never carry over", async () => {
    const seen: Array<{ method: string; probe: string | undefined }> = [];
    const slow = createServer((req, res) => {
      seen.push({ method: req.method ?? '', probe: req.headers['x-probe'] as string | undefined });
      req.resume();
      // A PUT is answered too late for its timeout; the others at once (no race with a slow start).
      req.on('end', () => setTimeout(() => res.end('late'), req.method === 'PUT' ? 2000 : 0));
    });
    slow.listen(0, '127.0.0.1');
    await once(slow, 'listening');
    const url = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/`;
    const outcome = (options: Parameters<NonNullable<typeof native>['request']>[0]) =>
      new Promise<string>((resolve) => {
        let text = '';
        native?.request(options, (event, a) => {
          if (event === 'data') text += String(a);
          if (event === 'end') resolve(`end:${text}`);
          if (event === 'error') resolve(String(a).split(':')[0] as string);
        });
      });
    try {
      // Several rounds, so later requests run on handles earlier ones finished with.
      for (let round = 0; round < 3; round++) {
        expect(await outcome({ method: 'PUT', url, headers: ['x-probe: 1'], body: Buffer.from('{}'), timeoutMs: 600 })).toBe('timeout');
        expect(await outcome({ method: 'POST', url, body: Buffer.from('{}') })).toBe('end:late');
        expect(await outcome({ method: 'GET', url })).toBe('end:late');
      }
      expect(seen.map((r) => `${r.method}:${r.probe ?? '-'}`)).toEqual(
        Array.from({ length: 3 }, () => ['PUT:1', 'POST:-', 'GET:-']).flat(),
      );
    } finally {
      slow.closeAllConnections();
      slow.close();
    }
  });

  it('sends from worker threads too: each on its own loop, torn down with its idle connections', () => {
    const script = `
      const { Worker } = await import('node:worker_threads');
      const worker = \`
        const { parentPort, workerData } = await import('node:worker_threads');
        const { native } = await import(workerData.addon);
        const send = () => new Promise((resolve) => {
          let text = '';
          native.request({ method: 'POST', url: workerData.url, body: Buffer.from('{}') }, (event, a) => {
            if (event === 'data') text += a;
            if (event === 'end' || event === 'error') resolve(event + ':' + text);
          });
        });
        parentPort.postMessage([native.transportMode(), ...(await Promise.all([1, 2, 3].map(send)))].join(','));\`;
      const send = () => new Promise((resolve) => {
        let text = '';
        native.request({ method: 'POST', url, body: Buffer.from('{}') }, (event, a) => {
          if (event === 'data') text += a;
          if (event === 'end' || event === 'error') resolve(event + ':' + text);
        });
      });
      const out = [];
      for (let round = 0; round < 2; round++) {
        const workers = [1, 2, 3].map(() => new Worker(worker, { eval: true, workerData: { url, addon: ${JSON.stringify(new URL('../index.js', import.meta.url).href)} } }));
        const messages = workers.map((w) => new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); }));
        const exits = workers.map((w) => new Promise((resolve) => w.once('exit', resolve)));
        out.push((await Promise.all([1, 2, 3, 4].map(send))).join(','), ...(await Promise.all(messages)));
        out.push('exits:' + (await Promise.all(exits)).join(','));
      }
      server.close();
      console.log(JSON.stringify(out));`;
    const result = runWithOkServer(script);
    expect(result.status, result.stderr).toBe(0);
    const round = ['end:ok,end:ok,end:ok,end:ok', ...Array(3).fill('loop,end:ok,end:ok,end:ok'), 'exits:0,0,0'];
    expect(JSON.parse(result.stdout)).toEqual([...round, ...round]);
  });

  it("delivers a transfer's events in order even when a callback throws; the throw reaches uncaughtException", () => {
    const script = `
      const caught = [];
      process.on('uncaughtException', (e) => caught.push(e.message));
      const run = (throwOn) => new Promise((resolve) => {
        const events = [];
        native.request({ method: 'POST', url, body: Buffer.from('{}') }, (event) => {
          events.push(event);
          if (event === 'end' || event === 'error') resolve(events.join(','));
          if (event === throwOn) throw new Error('thrown on ' + event);
        });
      });
      const out = [await run('headers'), await run('data'), await run(undefined)];
      server.close();
      console.log(JSON.stringify({ out, caught }));`;
    const result = runWithOkServer(script);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      out: ['headers,data,end', 'headers,data,end', 'headers,data,end'],
      caught: ['thrown on headers', 'thrown on data'],
    });
  });

  it('sends a request started in any phase of the event loop: a timer, an immediate, an I/O callback, a microtask', async () => {
    const started = (schedule: (go: () => void) => void) =>
      new Promise<string>((resolve) => {
        schedule(() => {
          native?.request({ method: 'POST', url: `${base}/`, body: Buffer.from('{}') }, (event, a) => {
            if (event === 'end') resolve('end');
            if (event === 'error') resolve(String(a));
          });
        });
      });
    const outcomes = await Promise.all([
      started((go) => setTimeout(go, 0)),
      started((go) => setImmediate(go)),
      started((go) => queueMicrotask(go)),
      started((go) => {
        readFile(new URL(import.meta.url), () => go());
      }),
      started((go) => {
        setImmediate(() => setImmediate(go));
      }),
    ]);
    expect(outcomes).toEqual(['end', 'end', 'end', 'end', 'end']);
  });

  it("large bodies sent while the loop is busy are stamped on the addon's own thread, never waiting behind libuv's pool", () => {
    // Every thread of libuv's pool is held by a long key derivation; the stamps must not queue
    // behind it. One body, aborted the moment it is handed over, waits in the stamping queue.
    const script = `
      const { native } = await import(${JSON.stringify(new URL('../index.js', import.meta.url).href)});
      const { readDevKey } = await import(${JSON.stringify(new URL('../dev-key.js', import.meta.url).href)});
      const { computeStamp, locateEnvelope } = await import(${JSON.stringify(import.meta.resolve('@moat/protocol'))});
      const { pbkdf2 } = await import('node:crypto');
      const { readdirSync, readFileSync } = await import('node:fs');
      const { createServer } = await import('node:http');
      const dev = readDevKey();
      const received = [];
      const server = createServer((q, s) => {
        const parts = [];
        q.on('data', (d) => parts.push(d));
        q.on('end', () => { received.push(Buffer.concat(parts)); s.end('ok'); });
      }).listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const url = 'http://127.0.0.1:' + server.address().port + '/';
      const order = [];
      const held = Array.from({ length: 4 }, () => new Promise((resolve) => pbkdf2('p', 's', 3_000_000, 32, 'sha256', () => { order.push('pool'); resolve(); })));
      const big = (i) => Buffer.from('{"model":"m","pad":"' + 'z'.repeat(100_000 + i) + '","moat_att":"v1.' + dev.kid + '.1764000000.' + i.toString(16).padStart(16, '0') + '.' + '0'.repeat(32) + '"}');
      const send = (body, abort) => new Promise((resolve) => {
        const handle = native.request({ method: 'POST', url, body }, (event, a) => {
          if (event === 'end') resolve('end');
          if (event === 'error') resolve(String(a).split(':')[0]);
        });
        if (abort) handle.abort();
      });
      const first = send(Buffer.from('{}'));
      const outcomes = await Promise.all([first, ...[1, 2, 3, 4, 5, 6].map((i) => send(big(i))), send(big(7), true)]);
      order.push('sent');
      const threads = readdirSync('/proc/self/task').map((t) => readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim());
      const stamps = received.filter((b) => b.length > 2).map((b) => {
        const where = locateEnvelope(new Uint8Array(b));
        return where.status === 'found' && where.envelope.stamp === computeStamp(Buffer.from(dev.key, 'hex'), new Uint8Array(b), where.stampStart, where.stampEnd);
      });
      await Promise.all(held);
      server.close();
      console.log(JSON.stringify({ outcomes, order, stampThread: threads.includes('moat-stamp'), stamps, received: received.length }));`;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      outcomes: ['end', 'end', 'end', 'end', 'end', 'end', 'end', 'aborted'],
      order: ['sent', 'pool', 'pool', 'pool', 'pool'],
      stampThread: true,
      stamps: [true, true, true, true, true, true],
      received: 7,
    });
  });

  it('a worker terminated while large bodies wait to be stamped tears down cleanly', () => {
    const script = `
      const { Worker } = await import('node:worker_threads');
      const worker = \`
        const { parentPort, workerData } = await import('node:worker_threads');
        const { native } = await import(workerData.addon);
        const body = Buffer.from('{"pad":"' + 'z'.repeat(1_000_000) + '","moat_att":"v1.' + native.keyId() + '.1764000000.0011223344556677.' + '0'.repeat(32) + '"}');
        native.request({ method: 'POST', url: workerData.url, body: Buffer.from('{}') }, () => {});
        for (let i = 0; i < 32; i++) native.request({ method: 'POST', url: workerData.url, body }, () => {});
        parentPort.postMessage('started');\`;
      const out = [];
      for (let round = 0; round < 3; round++) {
        const w = new Worker(worker, { eval: true, workerData: { url, addon: ${JSON.stringify(new URL('../index.js', import.meta.url).href)} } });
        await new Promise((resolve) => w.once('message', resolve));
        out.push(await w.terminate());
      }
      out.push(await new Promise((resolve) => native.request({ method: 'POST', url, body: Buffer.from('{}') }, (event) => { if (event === 'end' || event === 'error') resolve(event); })));
      server.close();
      console.log(JSON.stringify(out));`;
    const result = runWithOkServer(script);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual([1, 1, 1, 'end']);
  });

  it('a large body aborted the moment it is handed over ends with an aborted error and sends nothing', async () => {
    const before = bodies.length;
    const big = Buffer.from(`{"model":"m","pad":"${'z'.repeat(100_000)}",${envelope(dev.kid)}}`);
    const outcome = await new Promise<string>((resolve) => {
      const handle = native?.request({ method: 'POST', url: `${base}/`, body: big }, (event, a) => {
        if (event === 'end') resolve('end');
        if (event === 'error') resolve(String(a));
      });
      handle?.abort();
    });
    expect(outcome).toMatch(/^aborted/);
    await new Promise((r) => setTimeout(r, 100));
    expect(bodies.length).toBe(before);
    // And sent whole when not aborted, stamped.
    const { stamp, sent } = await send(big.toString());
    expect(stamp).toBe('stamped');
    expect(sent.length).toBe(big.length);
  });

  it('opens libcurl only when the first request goes out, and hardening works without it', () => {
    // A fresh process: this one has sent requests already.
    const probe = `
      const { native } = await import(${JSON.stringify(new URL('../index.js', import.meta.url).href)});
      const { readFileSync } = await import('node:fs');
      const mapped = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').find((l) => l.includes('libcurl.so'))?.split(' ').at(-1);
      const out = { atLoad: mapped() ?? null, undumpable: native.setUndumpable() === 0 && native.getDumpable() === 0 };
      try {
        native.request({ method: 'GET', url: 'http://127.0.0.1:9/' }, () => {});
        out.request = 'sent';
      } catch (e) {
        out.request = e.code + ': ' + e.message;
      }
      out.afterRequest = mapped() ?? null;
      console.log(JSON.stringify(out));
      process.exit(0);`;
    const run = (command: string, args: string[]) => {
      const r = spawnSync(command, args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${command} failed: ${r.stderr}`);
      return JSON.parse(r.stdout) as { atLoad: string | null; undumpable: boolean; request: string; afterRequest: string | null };
    };
    const normal = run(process.execPath, ['--input-type=module', '-e', probe]);
    expect(normal).toMatchObject({ atLoad: null, undumpable: true, request: 'sent' });
    expect(normal.afterRequest).toMatch(/libcurl\.so\.4/);

    // The same with libcurl broken (an empty file bind-mounted over it, in a private mount namespace).
    if (process.getuid?.() !== 0) return;
    const broken = run('unshare', [
      '--mount',
      'sh',
      '-c',
      'mount --bind /dev/null "$0" && exec "$1" --input-type=module -e "$2"',
      realpathSync(normal.afterRequest as string),
      process.execPath,
      probe,
    ]);
    expect(broken).toMatchObject({ atLoad: null, undumpable: true, afterRequest: null });
    expect(broken.request).toMatch(/^ERR_NATIVE_TRANSPORT: libcurl unavailable: .*libcurl/);
  });
});
