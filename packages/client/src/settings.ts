import { readFileSync } from 'node:fs';
import { errorMessage } from '@moat/protocol/support';
import { MoatClientError } from './errors.js';

/** What a client needs of `moat-verifier provision`'s client settings at run time (never the key). */
export interface ClientSettings {
  /** The fingerprint salt (the verifier's `fingerprintSalt`). */
  readonly salt: string;
  /** The product name in the user agent (the verifier's `userAgentProduct`). */
  readonly userAgentProduct: string;
}

/** The default settings file: `MOAT_CLIENT_SETTINGS`, else `moat.client.json` in the working directory. */
export const defaultSettingsFile = (): string => process.env.MOAT_CLIENT_SETTINGS ?? 'moat.client.json';

/**
 * Reads the client settings `moat-verifier provision` wrote (the file `@moat/native`'s build
 * compiles its release key from): the salt and the product name, to spread into
 * {@link createMoatFetch}'s options. The attestation key in the same file is left alone: it
 * reaches the app only compiled into `@moat/native`.
 *
 * @example
 * ```ts
 * const moatFetch = createMoatFetch({ ...readClientSettings(), clientVersion: '1.4.2' });
 * ```
 * @throws {MoatClientError} `ERR_SETTINGS` when the file is missing or lacks `salt` or `userAgentProduct`.
 */
export function readClientSettings(file: string = defaultSettingsFile()): ClientSettings {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new MoatClientError(
      'ERR_SETTINGS',
      `expected the client settings of \`moat-verifier provision\` at ${file}, got ${errorMessage(error)}`,
    );
  }
  const { salt, userAgentProduct } = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  if (typeof salt !== 'string' || typeof userAgentProduct !== 'string')
    throw new MoatClientError(
      'ERR_SETTINGS',
      `expected salt and userAgentProduct strings in ${file}, got ${typeof salt} and ${typeof userAgentProduct}`,
    );
  return { salt, userAgentProduct };
}
