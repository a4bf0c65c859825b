// The headers of the Node that runs this, for node-gyp: without them node-gyp downloads
// headers (no network on build machines) or takes whatever `nodedir` an npm config names
// (possibly another Node's). Printed as a path (CLI) or returned by nodeHeadersDir().
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A directory holding `include/node/node_api.h` of the running Node, or `undefined`. */
export function nodeHeadersDir() {
  const prefix = dirname(dirname(realpathSync(process.execPath)));
  const candidates = [
    prefix, // official tarballs and most installs: <prefix>/bin/node, <prefix>/include/node
    join(prefix, 'node_modules', `node-${process.platform}-${process.arch}`), // the npm "node" package
  ];
  return candidates.find((dir) => existsSync(join(dir, 'include', 'node', 'node_api.h')));
}

/** `env` with `npm_config_nodedir` pointing at the running Node's headers, unless they cannot be found. */
export function withNodeHeaders(env = process.env) {
  const dir = nodeHeadersDir();
  return dir === undefined ? env : { ...env, npm_config_nodedir: dir };
}

if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = nodeHeadersDir();
  if (dir !== undefined) process.stdout.write(`${dir}\n`);
  else process.exitCode = 1;
}
