import { tagFingerprint } from '@moat/fingerprint/client';
import { CLIENT_FLAGS } from '@moat/protocol';
import type { MessagesRequest } from '@moat/protocol/messages';
import type { MoatLayer } from '../compose.js';
import type { Endpoint } from '../endpoint.js';

/** What the attribution block says about the client. */
export interface AttributionOptions {
  /** The deployment's fingerprint salt. */
  readonly salt: string;
  readonly clientVersion: string;
  readonly entrypoint: string;
  readonly onWarning?: ((message: string) => void) | undefined;
}

function fingerprintOn(e: Endpoint): boolean {
  if (!e.features.includes('fingerprint')) return false;
  return e.flag(CLIENT_FLAGS.attribution, true) && !e.flag(CLIENT_FLAGS.killFingerprint, false);
}

/**
 * The attribution block with the fingerprint of the first user message (layer 3), where the
 * endpoint takes it and neither `moat-attribution` nor `moat-kill-fingerprint` says no.
 */
export function fingerprintLayer(options: AttributionOptions): MoatLayer {
  const { salt, clientVersion: version, entrypoint, onWarning } = options;
  const tag = { salt, version, entrypoint, onWarning };
  return {
    name: 'fingerprint',
    phase: 'tag',
    intercept: (next) => (call) => {
      if (call.body === undefined || call.endpoint === undefined || !fingerprintOn(call.endpoint)) return next(call);
      const { request } = tagFingerprint(call.body as unknown as Record<string, unknown>, tag);
      return next({ ...call, body: request as unknown as MessagesRequest });
    },
    status: (e) =>
      fingerprintOn(e)
        ? { layer: 'fingerprint', state: 'on', detail: `salt ${options.salt.slice(0, 4)}…` }
        : { layer: 'fingerprint', state: 'off', detail: 'flag off or endpoint without fingerprint' },
  };
}

/**
 * The product token `<product>/<clientVersion>` in the user agent of Moat calls, so the
 * verifier sees a relay that replaces the user agent (`ua_mismatch`).
 */
export function userAgentLayer(options: { readonly product: string; readonly clientVersion: string }): MoatLayer {
  const product = `${options.product}/${options.clientVersion}`;
  return {
    name: 'user-agent',
    phase: 'tag',
    intercept: (next) => (call) => {
      if (call.endpoint === undefined) return next(call);
      const agent = call.headers.get('user-agent');
      if (agent?.split(/\s+/).includes(product)) return next(call);
      const headers = new Headers(call.headers);
      headers.set('user-agent', agent === null ? product : `${agent} ${product}`);
      return next({ ...call, headers });
    },
  };
}
