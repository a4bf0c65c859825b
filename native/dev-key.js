// The development attestation key that `scripts/gen-key.mjs` made for a local build (never
// a release key): where it is, and its key id and bytes, for a local verifier and tests.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Path of the development key file (`MOAT_DEV_KEY_FILE`, or `.moat-dev-key.json` beside this package). */
export const devKeyFile = process.env.MOAT_DEV_KEY_FILE ?? fileURLToPath(new URL('./.moat-dev-key.json', import.meta.url));

/** The development key, or `undefined` when this build was made with a release key (no file). */
export function readDevKey() {
  let text;
  try {
    text = readFileSync(devKeyFile, 'utf8');
  } catch {
    return undefined;
  }
  const { kid, key } = JSON.parse(text);
  return { kid, key };
}
