import {
  findAttribution,
  fingerprintRequest,
  type MessagesRequest,
  ProtocolError,
  serializeAttribution,
  tryParseAttribution,
  withAttribution,
} from '@moat/protocol';
import { createWarner, errorMessage } from '@moat/protocol/support';

/** Options of {@link tagFingerprint}. */
export interface TagFingerprintOptions {
  /** Deployment salt, the same constant the verifier uses. */
  readonly salt: string;
  /** Client version, written as `cv` and hashed into the fingerprint. */
  readonly version: string;
  /** Entrypoint (`cli`, `sdk`, …), written as `ep` when the block has none yet. */
  readonly entrypoint?: string;
  /** Called once per failure instead of throwing (fail-open). */
  readonly onWarning?: ((message: string) => void) | undefined;
}

/** Result of {@link tagFingerprint}: the request to send and what happened. */
export type TagFingerprintResult<T> =
  | { readonly status: 'tagged'; readonly request: T & { system: unknown[] }; readonly fp: string }
  | { readonly status: 'skipped'; readonly request: T; readonly reason: string };

/**
 * Writes fingerprint v1 of `request` into its attribution block (`system[0]`), creating the
 * block if there is none and keeping every other field of an existing one. The fingerprint
 * depends only on the first user message, so every turn of a conversation gets the same
 * block and prompt-prefix caching is untouched.
 *
 * Fails open: if the block cannot be written (an unparsable existing block, a version that
 * is not a valid `cv`), the request is returned unchanged with `status: 'skipped'` and the
 * reason, and `onWarning` is called; nothing is thrown.
 *
 * @example
 * ```ts
 * const { request } = tagFingerprint({ model: 'm', max_tokens: 64, messages: [{ role: 'user', content: 'Hello there, assistant!' }] },
 *   { salt: 'deployment-salt', version: '1.4.2', entrypoint: 'cli' });
 * request.system[0]; // { type: 'text', text: 'x-moat: v=1; cv=1.4.2; fp=…; ep=cli;' }
 * ```
 */
export function tagFingerprint<T extends MessagesRequest>(request: T, options: TagFingerprintOptions): TagFingerprintResult<T> {
  try {
    const fp = fingerprintRequest(request, { salt: options.salt, version: options.version });
    const existing = findAttribution(request);
    let ep = options.entrypoint;
    let extensions: ReadonlyArray<readonly [string, string]> = [];
    if (existing.status === 'present') {
      const parsed = tryParseAttribution(existing.text);
      if (!parsed.ok) throw parsed.error;
      if (parsed.value.cv !== options.version) {
        throw new ProtocolError('ERR_ATTRIBUTION_FIELD_VALUE', `cv=${options.version} in the existing block`, `cv=${parsed.value.cv}`);
      }
      ep = parsed.value.ep ?? ep;
      extensions = parsed.value.extensions;
    }
    const block = serializeAttribution({ cv: options.version, fp, ep, extensions });
    return { status: 'tagged', request: withAttribution(request, block), fp };
  } catch (error) {
    const reason = errorMessage(error);
    createWarner('fingerprint', options.onWarning)(`request sent without a fingerprint (${reason})`);
    return { status: 'skipped', request, reason };
  }
}
