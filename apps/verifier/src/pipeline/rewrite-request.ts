import { type Decoy, decoyPeriod, decoyResult, decoyTools, findDecoyCall, stripFailedBlocks } from '@moat/distill-guard/server';
import {
  ANTI_DISTILLATION_MEMBER,
  blockSignatureOf,
  ENVELOPE_MEMBER,
  findAttribution,
  POLICY_FLAGS,
  withoutBlockSignature,
} from '@moat/protocol';
import type { ContentBlock, MessageParam, MessagesRequest } from '@moat/protocol/messages';
import type { VerifierConfig } from '../config.js';
import type { Flags, PolicyAttributes } from '../flags.js';
import { JsonText, rewriteMembers } from '../json-body.js';
import type { Storage } from '../storage.js';
import type { Evidence } from './evidence.js';
import type { ReadRequest } from './read.js';

/** Moat's own top-level members: never forwarded. */
export const MOAT_MEMBERS: ReadonlySet<string> = new Set([ENVELOPE_MEMBER, ANTI_DISTILLATION_MEMBER]);

/** What goes upstream, and what a continuation round needs. */
export interface ForwardPlan {
  /** The body for the upstream: the client's bytes with Moat's members cut out and the edits spliced in. */
  readonly bytes: Buffer;
  /** Decoy tools added to this request (empty when none). */
  readonly decoys: readonly Decoy[];
  /** The forwarded conversation, to continue after a turn the verifier answers itself. */
  readonly messages: readonly MessageParam[];
  /** The body for the same request with another conversation (decoy continuation rounds). */
  withMessages(messages: readonly MessageParam[]): Buffer;
}

/** Whether a request asks for decoys (`"anti_distillation": ["fake_tools"]`). */
export function asksForDecoys(body: MessagesRequest): boolean {
  return Array.isArray(body.anti_distillation) && body.anti_distillation.includes('fake_tools');
}

/**
 * Whether a request gets decoys — all three gates: the client asked (its compile-time and
 * remote flags), its entry point is one that gets decoys, and the policy allows.
 */
export function decoysAllowed(
  body: MessagesRequest,
  evidence: Pick<Evidence, 'client'>,
  attributes: PolicyAttributes,
  services: { readonly config: Pick<VerifierConfig, 'decoyEntrypoints'>; readonly flags: Flags },
): boolean {
  return (
    asksForDecoys(body) &&
    services.config.decoyEntrypoints.includes(evidence.client.ep ?? '') &&
    services.flags.value(POLICY_FLAGS.decoys, true, attributes) === true
  );
}

/**
 * Stage 6: the request the upstream gets. Moat's members (the envelope, `anti_distillation`)
 * and the attribution block are cut out of the client's own bytes — everything else arrives
 * byte for byte, so prompt caching and members the verifier does not know survive. Members
 * are re-serialized only where they change: signed blocks that failed are stripped, decoy
 * tools added (`injectDecoys`), the client's results for decoy calls replaced, and the
 * upstream's own signatures restored on blocks Moat re-signed.
 */
export async function rewriteRequest(
  read: ReadRequest,
  evidence: Evidence,
  options: { readonly keyId: string; readonly injectDecoys: boolean; readonly secret: Uint8Array; readonly storage: Storage },
): Promise<ForwardPlan> {
  const { body } = read;
  const replace = new Map<string, unknown>();
  let messages: MessageParam[] = body.messages;
  if (evidence.thinking.signal === 'invalid') messages = stripFailedBlocks(body, evidence.thinking.failures).messages;
  let decoys: Decoy[] = [];
  if (options.injectDecoys) {
    const real = body.tools ?? [];
    decoys = decoysFor(options.secret, options.keyId, decoyPeriod(), real);
    replace.set('tools', toolsWithDecoys(real, decoys));
  }
  messages = answerDecoyResults(messages, decoys, options.secret);
  messages = await restoreUpstreamSignatures(messages, options.storage);
  if (messages !== body.messages) replace.set('messages', messages);
  const edits = { drop: MOAT_MEMBERS, replace, dropFirstSystemElement: findAttribution(body).status === 'present' };
  return {
    bytes: rewriteMembers(read.raw, read.layout, edits),
    decoys,
    messages,
    withMessages: (next) => rewriteMembers(read.raw, read.layout, { ...edits, replace: new Map([...replace, ['messages', next]]) }),
  };
}

/** The JSON text of a decoy set's tools (the sets are cached and frozen: serialized once per set). */
const decoyToolsText = new WeakMap<readonly Decoy[], string>();

/** `tools` as forwarded: the client's own, then the decoys (their JSON text made once per decoy set). */
export function toolsWithDecoys(real: readonly unknown[], decoys: readonly Decoy[]): JsonText {
  let text = decoyToolsText.get(decoys);
  if (text === undefined) {
    text = JSON.stringify(decoys.map((d) => d.tool)).slice(1, -1);
    if (Object.isFrozen(decoys)) decoyToolsText.set(decoys, text);
  }
  if (real.length === 0) return new JsonText(`[${text}]`);
  return new JsonText(`${JSON.stringify(real).slice(0, -1)}${text === '' ? '' : ','}${text}]`);
}

/** Keys' decoys of the current period, per secret: they depend on nothing else (at most this many keys kept). */
const decoyCache = new WeakMap<Uint8Array, { period: number; byKey: Map<string, Decoy[]> }>();
const DECOY_CACHE_KEYS = 10_000;

/**
 * The decoys of `keyId` in `period`, made once per key and period: `decoyTools` draws the
 * same names with or without `avoid` unless one of them is a real tool's name, and only then
 * is the set drawn again, avoiding it. The cached decoys are frozen (shared by requests).
 */
export function decoysFor(secret: Uint8Array, keyId: string, period: number, real: ReadonlyArray<{ name?: unknown }>): Decoy[] {
  let cache = decoyCache.get(secret);
  if (cache === undefined || cache.period !== period) {
    cache = { period, byKey: new Map() };
    decoyCache.set(secret, cache);
  }
  let decoys = cache.byKey.get(keyId);
  if (decoys === undefined) {
    decoys = deepFreeze(decoyTools({ secret, apiKeyId: keyId, period }));
    if (cache.byKey.size >= DECOY_CACHE_KEYS) cache.byKey.clear();
    cache.byKey.set(keyId, decoys);
  }
  if (real.length === 0) return decoys;
  const names = new Set(real.map((t) => String(t.name)));
  if (!decoys.some((d) => names.has(d.tool.name))) return decoys;
  return decoyTools({ secret, apiKeyId: keyId, period, avoid: [...names] });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Replaces the client's results for decoy calls with plausible ones (the client cannot run decoys). */
function answerDecoyResults(messages: MessageParam[], decoys: readonly Decoy[], secret: Uint8Array): MessageParam[] {
  if (decoys.length === 0) return messages;
  const calls = new Map<string, { id: string; name: string; input?: unknown }>();
  for (const m of messages) {
    if (!Array.isArray(m.content)) continue;
    for (const b of m.content as Array<ContentBlock & { id?: unknown; name?: unknown }>)
      if (b.type === 'tool_use' && typeof b.id === 'string' && findDecoyCall(b, decoys) !== undefined)
        calls.set(b.id, b as { id: string; name: string });
  }
  if (calls.size === 0) return messages;
  return messages.map((m) => {
    if (!Array.isArray(m.content)) return m;
    return {
      ...m,
      content: m.content.map((b) => {
        const id = (b as { tool_use_id?: unknown }).tool_use_id;
        const call = b.type === 'tool_result' && typeof id === 'string' ? calls.get(id) : undefined;
        return call === undefined ? b : (decoyResult(call, secret) as ContentBlock);
      }),
    };
  });
}

/** Puts the upstream's own signatures back on blocks Moat re-signed, before they go to it. */
async function restoreUpstreamSignatures(messages: MessageParam[], storage: Storage): Promise<MessageParam[]> {
  let changed = false;
  const out: MessageParam[] = [];
  for (const m of messages) {
    if (!Array.isArray(m.content) || !m.content.some((b) => isMoatSigned(b))) {
      out.push(m);
      continue;
    }
    const content: ContentBlock[] = [];
    for (const b of m.content) {
      if (!isMoatSigned(b)) content.push(b);
      else {
        changed = true;
        // redacted_thinking goes back with its original data; the others with the upstream's own signature.
        content.push(
          b.type === 'redacted_thinking'
            ? withoutBlockSignature(b)
            : ({ ...b, signature: (await storage.upstreamSignature(String(blockSignatureOf(b)))) ?? '' } as ContentBlock),
        );
      }
    }
    out.push({ ...m, content });
  }
  return changed ? out : messages;
}

function isMoatSigned(block: ContentBlock): boolean {
  const signature = blockSignatureOf(block);
  return typeof signature === 'string' && signature.startsWith('ms1.');
}
