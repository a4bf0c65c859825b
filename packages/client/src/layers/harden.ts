import { type HardenOptions, type HardenReport, harden, hardenStatusEvent } from '@moat/harden';
import { CLIENT_FLAGS } from '@moat/protocol';
import type { LayerStatus, MoatLayer } from '../compose.js';

/**
 * Process hardening (layer 5), for apps that own their process (a CLI, not a library in
 * someone's server): the first endpoint that does not switch it off (`moat-kill-harden`)
 * hardens the process once; every endpoint receives the hardening status as telemetry.
 * Never changes a request.
 */
const KILLED: LayerStatus = { layer: 'harden', state: 'off', detail: 'kill switch' };

export function hardenLayer(options: HardenOptions = {}): MoatLayer {
  let hardened: Promise<HardenReport> | undefined;
  let status: LayerStatus = KILLED;
  return {
    name: 'harden',
    phase: 'observe',
    setup: async (e) => {
      if (e.flag(CLIENT_FLAGS.killHarden, false)) return;
      hardened ??= harden(options);
      const report = await hardened;
      status = {
        layer: 'harden',
        state: report.skipped.length === 0 ? 'on' : 'degraded',
        detail: report.skipped.map((x) => `${x.step}:${x.reason}`).join(', ') || `dumpable=${report.dumpable}`,
      };
      e.report(hardenStatusEvent(report));
    },
    intercept: (next) => next,
    status: (e) => (e.flag(CLIENT_FLAGS.killHarden, false) ? KILLED : status),
  };
}
