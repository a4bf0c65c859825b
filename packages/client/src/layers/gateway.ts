import { GatewayDetector } from '@moat/gateway-detect/client';
import { CLIENT_FLAGS } from '@moat/protocol';
import type { WarningSink } from '@moat/protocol/support';
import type { MoatLayer } from '../compose.js';
import type { Endpoint } from '../endpoint.js';

/**
 * Gateway detection (layer 6): every answer's headers and the request's URL are matched
 * against the known AI gateways; at a Moat endpoint the detections go to its telemetry.
 * Never changes a request. The endpoint's `moat-kill-gateway-detect` switches it off there.
 */
export function gatewayLayer(options: { readonly onWarning?: WarningSink } = {}): MoatLayer {
  const { onWarning } = options;
  const passive = new GatewayDetector({ onWarning });
  const detectors = new WeakMap<Endpoint, GatewayDetector | null>();
  const killed = (e: Endpoint) => e.flag(CLIENT_FLAGS.killGatewayDetect, false);
  return {
    name: 'gateway-detect',
    phase: 'observe',
    setup: (e) => {
      detectors.set(e, killed(e) ? null : new GatewayDetector({ telemetry: e.telemetry, onWarning }));
    },
    intercept: (next) => async (call) => {
      const response = await next(call);
      const detector = call.endpoint === undefined ? passive : detectors.get(call.endpoint);
      detector?.observe({ headers: response.headers, url: call.url.href });
      return response;
    },
    status: (e) => {
      if (killed(e)) return { layer: 'gateway-detect', state: 'off', detail: 'kill switch' };
      const detail = e.telemetry === undefined ? 'no telemetry endpoint' : 'telemetry on';
      return { layer: 'gateway-detect', state: 'on', detail };
    },
  };
}
