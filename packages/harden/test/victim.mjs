// A process holding a token, for the attack tests: optionally hardened and scrubbed. It
// prints one JSON line (its pid, report and what a child sees) and waits to be attacked.
import { spawnSync } from 'node:child_process';
import { harden, tokensFromEnv } from '../dist/index.js';

const args = new Set(process.argv.slice(2));
const warnings = [];
const onWarning = (m) => warnings.push(m);
const report = args.has('--harden') ? await harden({ onWarning }) : null;
let childSees = null;
if (args.has('--scrub')) {
  const vaults = await tokensFromEnv(['SECRET_TOKEN'], { onWarning });
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.env.SECRET_TOKEN))'], { encoding: 'utf8' });
  childSees = child.stdout;
  vaults.get('SECRET_TOKEN')?.use((t) => t.length); // the token is still usable in-process
}
console.log(JSON.stringify({ pid: process.pid, report, childSees, warnings, runtime: typeof Bun === 'undefined' ? 'node' : 'bun' }));
setInterval(() => {}, 1 << 30);
