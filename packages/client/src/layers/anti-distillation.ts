import { AntiDistillationGate } from '@moat/distill-guard/client';
import { CLIENT_FLAGS } from '@moat/protocol';
import type { MoatLayer } from '../compose.js';
import type { Endpoint } from '../endpoint.js';

/** The gates the app decides itself. */
export interface AntiDistillationLayerOptions {
  /** Gate 1: the compile-time flag (`feature('ANTI_DISTILLATION')` in a first-party CLI). */
  readonly compileTime: boolean;
  /** Gate 2: the running entrypoint; the gate opens for `cli` only. */
  readonly entrypoint: string;
  readonly onWarning?: ((message: string) => void) | undefined;
}

/**
 * Anti-distillation (layer 4): asks for decoys (`anti_distillation`) when the three gates
 * pass — compile time, entrypoint, and the endpoint's `moat-anti-distillation` flag, read
 * in the endpoint's one flag fetch. `moat-kill-anti-distillation` switches it off.
 */
export function antiDistillationLayer(options: AntiDistillationLayerOptions): MoatLayer {
  const gates = new WeakMap<Endpoint, AntiDistillationGate>();
  const killed = (e: Endpoint) => e.flag(CLIENT_FLAGS.killAntiDistillation, false);
  return {
    name: 'anti-distillation',
    phase: 'tag',
    setup: async (e) => {
      if (killed(e)) return;
      const gate = await AntiDistillationGate.create({
        compileTime: options.compileTime && e.features.includes('anti_distillation'),
        entrypoint: options.entrypoint,
        remote: { value: e.flag(CLIENT_FLAGS.antiDistillation, false), source: e.flagsRead ? 'network' : 'default' },
        onWarning: options.onWarning,
      });
      gates.set(e, gate);
    },
    intercept: (next) => (call) => {
      const gate = call.endpoint === undefined ? undefined : gates.get(call.endpoint);
      if (call.body === undefined || gate === undefined) return next(call);
      return next({ ...call, body: gate.apply(call.body) });
    },
    status: (e) => {
      const d = gates.get(e)?.decision();
      if (d === undefined) return { layer: 'anti-distillation', state: 'off', detail: 'kill switch' };
      const { compileTime, entrypoint, remote } = d.gates;
      const detail = `compile=${compileTime} entrypoint=${entrypoint} remote=${remote} (${d.remoteSource})`;
      return { layer: 'anti-distillation', state: d.enabled ? 'on' : 'off', detail };
    },
  };
}
