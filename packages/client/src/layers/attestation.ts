import { type AttestedFetchOptions, createAttestedFetch } from '@moat/attest/client';
import { CLIENT_FLAGS } from '@moat/protocol';
import { loadNativeAddon } from '@moat/protocol/support';
import type { LayerStatus, MoatLayer } from '../compose.js';
import type { Endpoint } from '../endpoint.js';

function attests(e: Endpoint): boolean {
  if (!e.features.includes('attestation')) return false;
  return e.flag(CLIENT_FLAGS.envelope, true) && !e.flag(CLIENT_FLAGS.killAttestation, false);
}

/** Origins (`https://api.example.com`) known to bind requests: see {@link MoatFetchOptions.requestBinding}. */
export interface BindingPins {
  has(origin: string): boolean;
  add(origin: string): unknown;
}

/** Options of {@link attestationLayer}: the attested transport's, minus what the layer decides per endpoint. */
export type AttestationLayerOptions = Omit<AttestedFetchOptions, 'onUnattested' | 'bindRequestFor' | 'envelopeFor'> & {
  /**
   * `discover` (default): an origin binds requests once its discovery advertised
   * `request_binding`, and stays pinned; `always`: every Moat origin binds requests.
   */
  readonly requestBinding?: 'discover' | 'always' | undefined;
  /** Where pinned origins are kept (default: in memory). */
  readonly bindingPins?: BindingPins | undefined;
};

/**
 * The attestation stamp (layer 2), always the last layer: at an endpoint that attests (and
 * whose `moat-envelope` / `moat-kill-attestation` flags agree) the call goes out through
 * the native attested transport, which appends the envelope and stamps the exact bytes
 * below JavaScript; requests that go out unattested are reported to the endpoint's
 * telemetry. Stamps bind the request (protocol 1.1) where the endpoint advertises it.
 */
export function attestationLayer(options: AttestationLayerOptions = {}): MoatLayer {
  const { requestBinding, bindingPins, ...transportOptions } = options;
  const endpoints = new Map<string, Endpoint>();
  // Pinned: a later discovery document without request_binding (a relay's edit) does not unbind an origin.
  const pins: BindingPins = bindingPins ?? new Set<string>();
  const statuses = new WeakMap<Endpoint, LayerStatus>();
  let attested: typeof fetch | undefined;
  const transport = (): typeof fetch => {
    attested ??= createAttestedFetch({
      ...transportOptions,
      onUnattested: (reason, url) => {
        const ts = Math.floor(Date.now() / 1000);
        endpoints.get(new URL(url).origin)?.report({ type: 'attestation_unavailable', ts, reason });
      },
      bindRequestFor: (target) => requestBinding === 'always' || pins.has(target.origin),
    }) as typeof fetch;
    return attested;
  };
  return {
    name: 'attest',
    phase: 'stamp',
    setup: async (e) => {
      const origin = new URL(e.origin).origin;
      endpoints.set(origin, e);
      if (e.features.includes('request_binding')) pins.add(origin);
      if (!attests(e)) return;
      const { native, reason } =
        transportOptions.native === undefined
          ? await loadNativeAddon(() => import('@moat/native'))
          : { native: transportOptions.native, reason: 'the native transport is switched off' };
      statuses.set(
        e,
        native === undefined || native === null
          ? { layer: 'attest', state: 'degraded', detail: `unattested: ${reason}` }
          : { layer: 'attest', state: 'on', detail: `key ${native.keyId()}` },
      );
    },
    intercept: (next) => (call) =>
      call.endpoint !== undefined && attests(call.endpoint) ? next({ ...call, transport: transport() }) : next(call),
    status: (e) =>
      statuses.get(e) ?? {
        layer: 'attest',
        state: 'off',
        detail: e.features.includes('attestation') ? 'flag off' : 'endpoint does not attest',
      },
  };
}
