// Runs a build command (node-gyp-build, node-gyp, prebuildify) with npm_config_nodedir set to
// the running Node's own headers, so a build never depends on the shell it started in.
import { spawnSync } from 'node:child_process';
import { withNodeHeaders } from './node-headers.mjs';

const [command, ...args] = process.argv.slice(2);
if (command === undefined) {
  process.stderr.write('usage: node scripts/with-headers.mjs COMMAND [ARGS…]\n');
  process.exit(2);
}
const result = spawnSync(command, args, { stdio: 'inherit', env: withNodeHeaders(), shell: process.platform === 'win32' });
process.exit(result.status ?? 1);
