import { type AttestedFetchOptions, createAttestedFetch } from '@moat/attest/client';
import { CLIENT_FLAGS } from '@moat/protocol';
import { createWarner, loadNativeAddon } from '@moat/protocol/support';
import type { LayerStatus, MoatLayer } from '../compose.js';
import { type Endpoint, endpointBase } from '../endpoint.js';
import { createInstallKeys, type InstallKeyOptions } from './install-keys.js';

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
export type AttestationLayerOptions = Omit<AttestedFetchOptions, 'onUnattested' | 'bindRequestFor' | 'envelopeFor' | 'installFor'> & {
  /**
   * `discover` (default): an origin binds requests once its discovery advertised
   * `request_binding`, and stays pinned; `always`: every Moat origin binds requests.
   */
  readonly requestBinding?: 'discover' | 'always' | undefined;
  /** Where pinned origins are kept (default: in memory). */
  readonly bindingPins?: BindingPins | undefined;
  /**
   * Per-install keys (protocol 1.2): where the endpoint advertises `install_keys`, enroll this
   * install on first use and stamp `i1` with its own key; an origin enrolled once keeps `i1`.
   * Options (state directory, keystore, back-off), or `false` to stamp `r1` only (default on).
   */
  readonly installKeys?: InstallKeyOptions | false | undefined;
};

/**
 * The attestation stamp (layer 2), always the last layer: at an endpoint that attests (and
 * whose `moat-envelope` / `moat-kill-attestation` flags agree) the call goes out through
 * the native attested transport, which appends the envelope and stamps the exact bytes
 * below JavaScript; requests that go out unattested are reported to the endpoint's
 * telemetry. Stamps bind the request (protocol 1.1) where the endpoint advertises it.
 */
export function attestationLayer(options: AttestationLayerOptions = {}): MoatLayer {
  const { requestBinding, bindingPins, installKeys, ...transportOptions } = options;
  /** Per endpoint (base URL): where a request that went out unattested is reported. */
  const endpoints = new Map<string, Endpoint>();
  // Pinned: a later discovery document without request_binding (a relay's edit) does not unbind an origin.
  const pins: BindingPins = bindingPins ?? new Set<string>();
  const statuses = new WeakMap<Endpoint, LayerStatus>();
  const installs =
    installKeys === false ? undefined : createInstallKeys(installKeys ?? {}, createWarner('attest', transportOptions.onWarning));
  let addon: unknown;
  let attested: typeof fetch | undefined;
  let enrolling: typeof fetch | undefined;
  const onUnattested = (reason: string, url: string) => {
    const ts = Math.floor(Date.now() / 1000);
    endpoints.get(endpointBase(new URL(url)))?.report({ type: 'attestation_unavailable', ts, reason });
  };
  const transport = (): typeof fetch => {
    attested ??= createAttestedFetch({
      ...transportOptions,
      onUnattested,
      bindRequestFor: (target) => requestBinding === 'always' || pins.has(target.origin),
      ...(installs === undefined ? {} : { installFor: (target: URL, credential: string) => installs.installFor(target, credential) }),
    }) as typeof fetch;
    return attested;
  };
  // Enrollment requests: stamped r1 with the release key, whatever the origin's pins say.
  const enrollTransport = (): typeof fetch => {
    enrolling ??= createAttestedFetch({ ...transportOptions, onUnattested, bindRequestFor: () => true }) as typeof fetch;
    return enrolling;
  };
  return {
    name: 'attest',
    phase: 'stamp',
    setup: async (e) => {
      const origin = new URL(e.origin).origin;
      endpoints.set(e.base, e);
      if (e.features.includes('request_binding')) pins.add(origin);
      if (!attests(e)) return;
      const { native, reason } =
        transportOptions.native === undefined
          ? await loadNativeAddon(() => import('@moat/native'))
          : { native: transportOptions.native, reason: 'the native transport is switched off' };
      addon = native ?? undefined;
      statuses.set(
        e,
        native === undefined || native === null
          ? { layer: 'attest', state: 'degraded', detail: `unattested: ${reason}` }
          : { layer: 'attest', state: 'on', detail: `key ${native.keyId()}` },
      );
    },
    intercept: (next) => async (call) => {
      const e = call.endpoint;
      if (e === undefined || !attests(e)) return next(call);
      if (installs === undefined) return next({ ...call, transport: transport() });
      await installs.prepare(e, call, addon, enrollTransport());
      const res = await next({ ...call, transport: transport() });
      if ((res.status !== 401 && res.status !== 403) || !(await installs.refused(e, call, res, addon, enrollTransport()))) return res;
      // Enrolled again: the refused answer is dropped and the call goes once more, stamped i1.
      await res.body?.cancel().catch(() => {});
      return next({ ...call, transport: transport() });
    },
    status: (e) => {
      const base = statuses.get(e) ?? {
        layer: 'attest',
        state: 'off',
        detail: e.features.includes('attestation') ? 'flag off' : 'endpoint does not attest',
      };
      const install = base.state === 'off' ? undefined : installs?.status(e);
      return install === undefined ? base : { ...base, detail: `${base.detail}; ${install}` };
    },
  };
}
