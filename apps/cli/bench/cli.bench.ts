/**
 * Cold start of the standalone external executable to its first prompt, against a Bun
 * hello-world executable built the same way, and time to the first token through the
 * verifier against the same request sent straight to the verifier's mock path without any
 * client layer (plain fetch, no tags). Best of 10 runs each, in the same run.
 *
 * Run: pnpm --filter @moat/cli bench (after a build).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { devKeyFile } from '@moat/native/dev-key';
import { createVerifier, devEnvironment, loadConfig } from '@moat/verifier';

const require = createRequire(import.meta.url);
const bun = join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe');
const dir = mkdtempSync(join(tmpdir(), 'moat-cli-bench-'));
writeFileSync(join(dir, 'hello.ts'), 'console.log("> ");\n');
// A second reference: a program that does nothing but open a readline prompt, as moat-chat does.
writeFileSync(
  join(dir, 'prompt.ts'),
  `import { createInterface } from 'node:readline';
const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: '> ', terminal: false });
rl.prompt();
`,
);
for (const name of ['hello', 'prompt'])
  spawnSync(bun, ['build', '--compile', '--bytecode', join(dir, `${name}.ts`), `--outfile=${join(dir, name)}`], { stdio: 'ignore' });
const executable = new URL('../dist/moat-chat', import.meta.url).pathname;

const verifier = await createVerifier(loadConfig(devEnvironment({ attestationKeyFile: devKeyFile })), { logLevel: 'silent' });
const base = await verifier.listen();
const { key } = await verifier.storage.createApiKey('bench');

/** Milliseconds from spawn until `marker` appears on stdout. */
function timeTo(command: string, args: string[], marker: string, env: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes(marker)) {
        resolve(performance.now() - start);
        child.kill();
      }
    });
    child.on('error', reject);
    child.on('close', () => reject(new Error(`${command} exited before printing ${JSON.stringify(marker)}: ${out}`)));
  }).catch((e) => {
    throw e;
  }) as Promise<number>;
}

async function best(fn: () => Promise<number>, runs = 10): Promise<number> {
  let min = Number.POSITIVE_INFINITY;
  for (let i = 0; i < runs; i++) min = Math.min(min, await fn());
  return min;
}

const hello = await best(() => timeTo(join(dir, 'hello'), [], '> '));
const bareprompt = await best(() => timeTo(join(dir, 'prompt'), [], '> '));
const chatStart = await best(() => timeTo(executable, ['--base-url', base], '> ', { MOAT_API_KEY: key }));
const ttft = await best(() => timeTo(executable, ['-p', 'Time to first token', '--base-url', base], 'Echo', { MOAT_API_KEY: key }));
const direct = await best(async () => {
  const start = performance.now();
  const res = await fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': key, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'claude-mock',
      max_tokens: 64,
      stream: true,
      messages: [{ role: 'user', content: 'Time to first token' }],
    }),
  });
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  let text = '';
  while (!text.includes('text_delta')) text += new TextDecoder().decode((await reader.read()).value);
  const ms = performance.now() - start;
  await reader.cancel();
  return ms;
});

console.log(
  `moat-chat benchmarks (${process.version}, Bun ${spawnSync(bun, ['--version'], { encoding: 'utf8' }).stdout.trim()}, best of 10)`,
);
console.log('| measure | moat-chat | baseline | ratio |');
console.log('|---|---:|---:|---:|');
console.log(
  `| cold start to first prompt | ${chatStart.toFixed(0)} ms | Bun hello-world executable ${hello.toFixed(0)} ms | ${(chatStart / hello).toFixed(2)}× |`,
);
console.log(
  `| cold start to first prompt | ${chatStart.toFixed(0)} ms | Bun executable that only opens a readline prompt ${bareprompt.toFixed(0)} ms | ${(chatStart / bareprompt).toFixed(2)}× |`,
);
console.log(
  `| one-shot: spawn to first token through the verifier | ${ttft.toFixed(0)} ms | an in-process plain fetch to the first token ${direct.toFixed(0)} ms | ${(ttft / direct).toFixed(1)}× |`,
);
await verifier.close();
