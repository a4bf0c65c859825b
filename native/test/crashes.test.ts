// Three ways the addon once took its host process down, each run in a child process (so
// this runner survives a crash) on both transports: the event loop's and the thread's.
import { spawnSync } from 'node:child_process';
import { describe, expect, it, vi } from 'vitest';

// A scenario may run six times (see `run`), each up to its 20 s watchdog.
vi.setConfig({ testTimeout: 200_000 });

const addon = JSON.stringify(new URL('../index.js', import.meta.url).href);

/** Exit code of a script whose workers stalled (see `run`). */
const STALLED = 75;

/**
 * Runs `script` as an ES module in a fresh Node process with the transport `mode`. Now and
 * then Node itself loses a worker: its thread ends, but its `exit` never reaches the main
 * thread. With no addon loaded at all, a worker that only posts one message and ends stalled
 * 3 times in 30 runs on an idle machine, more under load. The script's watchdog then exits
 * with STALLED and the scenario runs again, at most six times (three stalls in a row failed a
 * CI run). A crash is never retried.
 */
function run(script: string, mode: 'loop' | 'thread') {
  const watchdog = `setTimeout(() => process.exit(${STALLED}), 20_000).unref();\n`;
  for (let attempt = 1; ; attempt++) {
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', watchdog + script], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, MOAT_NATIVE_TRANSPORT: mode },
    });
    if (result.status !== STALLED || attempt === 6) return result;
  }
}

/** A local server; `held` collects responses the script answers itself (`hold: true`). */
const server = (hold: boolean) => `
  const { createServer } = await import('node:http');
  const held = [];
  let arrived = 0, holding = ${hold};
  const server = createServer((q, s) => { arrived++; q.resume(); q.on('end', () => (holding ? held.push(s) : s.end('ok'))); });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const url = 'http://127.0.0.1:' + server.address().port + '/';
`;

describe.each(['loop', 'thread'] as const)('the addon survives (%s transport)', (mode) => {
  it('lookups that fail while other requests are in flight', () => {
    // libcurl closes its resolver's socket itself: the poll on it must stop there, or libuv
    // aborts on the closed descriptor. `.invalid` never resolves (RFC 6761).
    const script = `
      const { native } = await import(${addon});
      ${server(false)}
      const send = (u) => new Promise((resolve) => native.request({ method: 'POST', url: u, body: Buffer.from('{}'), connectTimeoutMs: 3000 },
        (e) => { if (e === 'end' || e === 'error') resolve(e); }));
      const good = [], bad = [];
      for (let round = 0; round < 6; round++) {
        const both = [];
        for (let i = 0; i < 8; i++) both.push(send('http://nonexistent' + i + '.invalid/').then((e) => bad.push(e)), send(url).then((e) => good.push(e)));
        await Promise.all(both);
      }
      server.close();
      console.log(JSON.stringify({ mode: native.transportMode(), good: [...new Set(good)], bad: [...new Set(bad)], n: good.length + bad.length }));`;
    const result = run(script, mode);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ mode, good: ['end'], bad: ['error'], n: 96 });
  });

  it('an addon loaded only by workers that exit', () => {
    // The main thread never loads the addon: when the last worker exits, Node unloads it, and
    // anything still queued to run in it (a handle's close callback) must not be left behind.
    const script = `
      const { Worker } = await import('node:worker_threads');
      ${server(false)}
      const worker = \`
        const { parentPort, workerData } = await import('node:worker_threads');
        const { native } = await import(workerData.addon);
        const send = () => new Promise((resolve) => native.request({ method: 'POST', url: workerData.url, body: Buffer.from('{}') },
          (e) => { if (e === 'end' || e === 'error') resolve(e); }));
        parentPort.postMessage([native.transportMode(), ...(await Promise.all([1, 2, 3].map(send)))].join(','));\`;
      const out = [];
      for (let round = 0; round < 3; round++) {
        const w = new Worker(worker, { eval: true, workerData: { url, addon: ${addon} } });
        out.push(await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); }));
        out.push(await new Promise((resolve) => w.once('exit', resolve)));
      }
      await new Promise((r) => setTimeout(r, 100));
      server.close();
      console.log(JSON.stringify(out));`;
    const result = run(script, mode);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual(
      Array(3)
        .fill([`${mode},end,end,end`, 0])
        .flat(),
    );
  });

  it.each([false, true])('workers terminated mid-request (main thread loads the addon: %s)', (mainLoads) => {
    // The requests are in flight when the worker goes; their answers arrive afterwards, on
    // transfers whose JavaScript side is gone.
    const script = `
      ${mainLoads ? `const { native } = await import(${addon});` : ''}
      const { Worker } = await import('node:worker_threads');
      ${server(true)}
      const worker = \`
        const { parentPort, workerData } = await import('node:worker_threads');
        const { native } = await import(workerData.addon);
        for (let i = 0; i < 8; i++) native.request({ method: 'POST', url: workerData.url, body: Buffer.from('{"i":' + i + '}') }, () => {});
        parentPort.postMessage('started');\`;
      const out = [];
      for (let round = 0; round < 4; round++) {
        const before = arrived;
        const w = new Worker(worker, { eval: true, workerData: { url, addon: ${addon} } });
        await new Promise((resolve) => w.once('message', resolve));
        while (arrived < before + 8) await new Promise((r) => setTimeout(r, 5));
        out.push(await w.terminate());
        for (const s of held.splice(0)) s.end('x'.repeat(100_000));
        await new Promise((r) => setTimeout(r, 50));
      }
      ${
        mainLoads
          ? `holding = false;
             out.push(await new Promise((resolve) => native.request({ method: 'GET', url }, (e) => { if (e === 'end' || e === 'error') resolve(e); })));`
          : ''
      }
      server.close();
      console.log(JSON.stringify(out));`;
    const result = run(script, mode);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual([1, 1, 1, 1, ...(mainLoads ? ['end'] : [])]);
  });
});
