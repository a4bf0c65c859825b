import { type AttestedFetchOptions, createAttestedFetch } from '@moat/attest/client';
import { CLIENT_FLAGS } from '@moat/protocol';
import { loadNativeAddon } from '@moat/protocol/support';
import type { LayerStatus, MoatLayer } from '../compose.js';
import type { Endpoint } from '../endpoint.js';

function attests(e: Endpoint): boolean {
  if (!e.features.includes('attestation')) return false;
  return e.flag(CLIENT_FLAGS.envelope, true) && !e.flag(CLIENT_FLAGS.killAttestation, false);
}

/** Options of {@link attestationLayer}: the attested transport's, minus what the layer decides per endpoint. */
export type AttestationLayerOptions = Omit<AttestedFetchOptions, 'onUnattested' | 'bindRequestFor' | 'envelopeFor'>;

/**
 * The attestation stamp (layer 2), always the last layer: at an endpoint that attests (and
 * whose `moat-envelope` / `moat-kill-attestation` flags agree) the call goes out through
 * the native attested transport, which appends the envelope and stamps the exact bytes
 * below JavaScript; requests that go out unattested are reported to the endpoint's
 * telemetry. Stamps bind the request (protocol 1.1) where the endpoint advertises it.
 */
export function attestationLayer(options: AttestationLayerOptions = {}): MoatLayer {
  const endpoints = new Map<string, Endpoint>();
  const statuses = new WeakMap<Endpoint, LayerStatus>();
  let attested: typeof fetch | undefined;
  const transport = (): typeof fetch => {
    attested ??= createAttestedFetch({
      ...options,
      onUnattested: (reason, url) => {
        const ts = Math.floor(Date.now() / 1000);
        endpoints.get(new URL(url).origin)?.report({ type: 'attestation_unavailable', ts, reason });
      },
      bindRequestFor: (target) => endpoints.get(target.origin)?.features.includes('request_binding') ?? false,
    }) as typeof fetch;
    return attested;
  };
  return {
    name: 'attest',
    phase: 'stamp',
    setup: async (e) => {
      endpoints.set(new URL(e.origin).origin, e);
      if (!attests(e)) return;
      const { native, reason } =
        options.native === undefined
          ? await loadNativeAddon(() => import('@moat/native'))
          : { native: options.native, reason: 'the native transport is switched off' };
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
