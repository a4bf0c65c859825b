import { createPrivateKey, createPublicKey, type KeyObject, sign, timingSafeEqual, verify } from 'node:crypto';
import {
  blockSignatureOf,
  conversationDigest,
  isSignedBlockType,
  parseBlockSignature,
  type SignatureAlgorithm,
  type SigningContext,
  serializeBlockSignature,
  signingInput,
  tryParseBlockSignature,
  withBlockSignature,
  withoutBlockSignature,
} from '@moat/protocol';
import { MessageAssembler, type StreamEvent } from '@moat/protocol/messages';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { DistillGuardError } from './errors.js';

/** A block-signing key: HMAC (verifier-only) or Ed25519 (publicly verifiable). */
export type BlockSigningKey =
  | { readonly kid: string; readonly alg: 'hs256'; readonly secret: Uint8Array }
  | { readonly kid: string; readonly alg: 'ed25519'; readonly seed?: Uint8Array; readonly publicKey?: Uint8Array };

/** Why a block did not verify. */
export type BlockFailure = 'unsigned' | 'malformed' | 'unknown_key' | 'bad_signature' | 'not_signable';

/** What a signature is bound to besides the block. */
export interface BlockContext {
  /** The verifier's identity for the API key (never the key itself). */
  readonly apiKeyId: string;
  readonly model: string;
  /** The request's `messages` before the block's turn: binds the block to its conversation (scope `c`). */
  readonly conversation?: readonly unknown[];
}

interface LoadedKey {
  readonly kid: string;
  readonly alg: SignatureAlgorithm;
  /** HMAC with the key already absorbed: each MAC clones it instead of re-deriving the pads. */
  readonly hmac?: ReturnType<typeof hmac.create>;
  readonly privateKey?: KeyObject;
  readonly publicKey?: KeyObject;
}

// DER prefixes of RFC 8410 Ed25519 keys: PKCS#8 around a 32-byte seed, SPKI around a public key.
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

function ed25519Keys(seed?: Uint8Array, publicKey?: Uint8Array): { privateKey?: KeyObject; publicKey: KeyObject } {
  if (seed !== undefined) {
    if (seed.length !== 32) throw new DistillGuardError('ERR_SIGNING_KEY', `expected a 32-byte Ed25519 seed, got ${seed.length} bytes`);
    const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' });
    return { privateKey, publicKey: createPublicKey(privateKey) };
  }
  if (publicKey === undefined || publicKey.length !== 32)
    throw new DistillGuardError(
      'ERR_SIGNING_KEY',
      `expected an Ed25519 seed or a 32-byte public key, got ${publicKey === undefined ? 'neither' : `${publicKey.length} bytes`}`,
    );
  return { publicKey: createPublicKey({ key: Buffer.concat([SPKI_ED25519, publicKey]), format: 'der', type: 'spki' }) };
}

/**
 * The keys that sign and verify response blocks. One key is active for signing; older keys
 * still verify (rotation), and removing a key revokes every signature made with it. HMAC
 * runs on `@noble/hashes`, Ed25519 on `node:crypto` — each the faster in
 * `bench/distill-guard.bench.ts`; HMAC comparisons are constant-time.
 *
 * @example
 * ```ts
 * const keyring = new BlockKeyring([{ kid: 's2026a', alg: 'hs256', secret }], 's2026a');
 * block.signature = keyring.sign(block, { apiKeyId: 'key_7f3a', model: 'claude-x' });
 * keyring.verify(block, { apiKeyId: 'key_7f3a', model: 'claude-x' }); // { ok: true }
 * ```
 */
export class BlockKeyring {
  readonly #keys = new Map<string, LoadedKey>();
  readonly #active: LoadedKey | undefined;

  /**
   * @param activeKid the key that signs; omit it for a verify-only keyring (a partner
   *   platform holding Ed25519 public keys).
   */
  constructor(keys: readonly BlockSigningKey[], activeKid?: string) {
    for (const key of keys) {
      if (key.alg === 'hs256') {
        if (key.secret.length < 32)
          throw new DistillGuardError(
            'ERR_SIGNING_KEY',
            `expected an HMAC secret of at least 32 bytes for ${key.kid}, got ${key.secret.length}`,
          );
        this.#keys.set(key.kid, { kid: key.kid, alg: 'hs256', hmac: hmac.create(sha256, key.secret) });
      } else {
        this.#keys.set(key.kid, { kid: key.kid, alg: 'ed25519', ...ed25519Keys(key.seed, key.publicKey) });
      }
    }
    if (activeKid === undefined) return;
    const active = this.#keys.get(activeKid);
    if (active === undefined || (active.alg === 'ed25519' && active.privateKey === undefined)) {
      throw new DistillGuardError(
        'ERR_SIGNING_KEY',
        `expected the active key ${activeKid} to be in the keyring with signing material, got ${active === undefined ? 'no such key' : 'a public key only'}`,
      );
    }
    this.#active = active;
  }

  /** The raw Ed25519 public key of `kid`, for partners who verify without the server. */
  publicKey(kid: string): Uint8Array | undefined {
    const key = this.#keys.get(kid)?.publicKey;
    if (key === undefined) return undefined;
    const jwk = key.export({ format: 'jwk' }) as { x: string };
    return new Uint8Array(Buffer.from(jwk.x, 'base64url'));
  }

  #context(ctx: BlockContext, key: LoadedKey): SigningContext {
    return {
      alg: key.alg,
      kid: key.kid,
      apiKeyId: ctx.apiKeyId,
      model: ctx.model,
      ...(ctx.conversation === undefined ? {} : { context: conversationDigest(ctx.conversation) }),
    };
  }

  #mac(key: LoadedKey, input: Uint8Array): Uint8Array {
    // Measured (bench/distill-guard.bench.ts): @noble/hashes HMAC beats node:crypto's per-call
    // setup on kilobyte inputs; node:crypto's Ed25519 is over ten times faster than @noble/curves.
    if (key.alg === 'hs256') return (key.hmac as ReturnType<typeof hmac.create>).clone().update(input).digest();
    return new Uint8Array(sign(null, input, key.privateKey as KeyObject));
  }

  /**
   * Signs a thinking / redacted_thinking / connector_text block with the active key.
   *
   * @throws {ProtocolError} `ERR_BLOCK_TYPE` or `ERR_BLOCK_CONTENT` for a block that is not signable.
   */
  sign(block: unknown, ctx: BlockContext): string {
    const key = this.#active;
    if (key === undefined)
      throw new DistillGuardError('ERR_SIGNING_KEY', 'expected a keyring with an active signing key, got a verify-only one');
    const context = this.#context(ctx, key);
    const sig = this.#mac(key, signingInput(block, context));
    return serializeBlockSignature({ alg: key.alg, kid: key.kid, scope: context.context === undefined ? 'k' : 'c', sig });
  }

  /** Checks a block's `signature` against the request's own API key and model. Never throws. */
  verify(block: unknown, ctx: BlockContext): { ok: true } | { ok: false; reason: BlockFailure } {
    const raw = blockSignatureOf(block);
    if (raw === undefined || raw === '') return { ok: false, reason: 'unsigned' };
    const parsed = tryParseBlockSignature(raw);
    if (!parsed.ok) return { ok: false, reason: 'malformed' };
    const key = this.#keys.get(parsed.value.kid);
    if (key === undefined || key.alg !== parsed.value.alg) return { ok: false, reason: 'unknown_key' };
    // A scope-c signature needs the conversation; a scope-k one must not be checked with it.
    const context = this.#context(parsed.value.scope === 'c' ? ctx : { apiKeyId: ctx.apiKeyId, model: ctx.model }, key);
    if (parsed.value.scope === 'c' && context.context === undefined) return { ok: false, reason: 'bad_signature' };
    let input: Uint8Array;
    try {
      input = signingInput(block, context);
    } catch {
      return { ok: false, reason: 'not_signable' };
    }
    const sig = parsed.value.sig;
    const good =
      key.alg === 'hs256'
        ? timingSafeEqual(Buffer.from(this.#mac(key, input)), Buffer.from(sig))
        : verify(null, input, key.publicKey as KeyObject, sig);
    return good ? { ok: true } : { ok: false, reason: 'bad_signature' };
  }
}

/** One signed block of a request that failed verification. */
export interface RequestBlockFailure {
  readonly messageIndex: number;
  readonly blockIndex: number;
  readonly type: string;
  readonly reason: BlockFailure;
}

/** Outcome of {@link verifyRequestBlocks}: the protocol's thinking signal and the failures. */
export interface RequestBlocksCheck {
  readonly signal: 'valid' | 'invalid' | 'none';
  readonly checked: number;
  readonly failures: readonly RequestBlockFailure[];
}

/**
 * Verifies every signed block that a request sends back (earlier assistant turns) against
 * the request's own API key and target model: a block signed for another key or model, or
 * edited, fails. `none` when there are no signed blocks.
 */
export function verifyRequestBlocks(request: unknown, apiKeyId: string, keyring: BlockKeyring): RequestBlocksCheck {
  const r = typeof request === 'object' && request !== null ? (request as { model?: unknown; messages?: unknown }) : {};
  const model = typeof r.model === 'string' ? r.model : '';
  const messages = Array.isArray(r.messages) ? r.messages : [];
  const failures: RequestBlockFailure[] = [];
  let checked = 0;
  messages.forEach((message: unknown, messageIndex: number) => {
    const content = typeof message === 'object' && message !== null ? (message as { content?: unknown }).content : undefined;
    if (!Array.isArray(content)) return;
    content.forEach((block: unknown, blockIndex: number) => {
      const type = typeof block === 'object' && block !== null ? (block as { type?: unknown }).type : undefined;
      if (!isSignedBlockType(type)) return;
      checked++;
      const result = keyring.verify(block, { apiKeyId, model, conversation: messages.slice(0, messageIndex) });
      if (!result.ok) failures.push({ messageIndex, blockIndex, type, reason: result.reason });
    });
  });
  return { signal: checked === 0 ? 'none' : failures.length === 0 ? 'valid' : 'invalid', checked, failures };
}

/** The Anthropic-style 400 error for a request whose signed block failed, naming the block. */
export function invalidBlockError(failure: RequestBlockFailure): {
  type: 'error';
  error: { type: 'invalid_request_error'; message: string };
} {
  return {
    type: 'error',
    error: {
      type: 'invalid_request_error',
      message: `messages.${failure.messageIndex}.content.${failure.blockIndex}: Invalid \`signature\` in \`${failure.type}\` block (${failure.reason}): it was not issued for this API key and model`,
    },
  };
}

/** A copy of `request` without the failed blocks (an emptied turn keeps a text placeholder). */
export function stripFailedBlocks<T>(request: T, failures: readonly RequestBlockFailure[]): T {
  if (failures.length === 0) return request;
  const r = request as { messages?: unknown[] };
  const drop = new Set(failures.map((f) => `${f.messageIndex}:${f.blockIndex}`));
  const messages = (r.messages ?? []).map((message, i) => {
    const m = message as { content?: unknown };
    if (!Array.isArray(m.content)) return message;
    const kept = m.content.filter((_, j) => !drop.has(`${i}:${j}`));
    if (kept.length === m.content.length) return message;
    return { ...m, content: kept.length > 0 ? kept : [{ type: 'text', text: '(earlier reasoning omitted)' }] };
  });
  return { ...(request as object), messages } as T;
}

/**
 * Signs every signed-type block of a (non-streaming) Messages response. Returns the signed
 * copy and the upstream's own signatures by block index: a verifier in front of a real
 * upstream keeps those and restores them before forwarding the blocks back upstream.
 */
export function signResponse<T>(
  response: T,
  ctx: BlockContext,
  keyring: BlockKeyring,
): { response: T; upstreamSignatures: Map<number, string> } {
  const r = response as { content?: unknown };
  const upstreamSignatures = new Map<number, string>();
  if (!Array.isArray(r.content)) return { response, upstreamSignatures };
  const content = r.content.map((block: unknown, index: number) => {
    const b = block as { type?: unknown; signature?: unknown };
    if (typeof block !== 'object' || block === null || !isSignedBlockType(b.type)) return block;
    // redacted_thinking has no signature member in the API: only the other types bring the upstream's own.
    if (b.type !== 'redacted_thinking' && typeof b.signature === 'string' && b.signature !== '') upstreamSignatures.set(index, b.signature);
    const rest = withoutBlockSignature(block);
    return withBlockSignature(rest, keyring.sign(rest, ctx));
  });
  return { response: { ...(response as object), content } as T, upstreamSignatures };
}

/** One server-sent event of the Messages stream, parsed (the Messages model's type). */
export type { StreamEvent };

/**
 * Signs signed-type blocks in a Messages SSE stream as it passes, without buffering the
 * response: the stream is assembled as it goes (the Messages model's assembler), the
 * upstream's `signature_delta` is held back (and kept in `upstreamSignatures`), and Moat's
 * signature over the assembled block goes out as a `signature_delta` just before
 * `content_block_stop`. `redacted_thinking` arrives whole in `content_block_start` and is
 * signed there.
 */
export class StreamSigner {
  /** The upstream's own signatures, by block index (to restore when blocks go back upstream). */
  readonly upstreamSignatures = new Map<number, string>();
  /** Moat's signatures sent in their place, by block index. */
  readonly issuedSignatures = new Map<number, string>();
  readonly #assembler = new MessageAssembler({ parseToolInput: false });
  constructor(
    readonly ctx: BlockContext,
    readonly keyring: BlockKeyring,
  ) {}

  /**
   * Handles one event; returns the events to send on, in order.
   *
   * @throws {MessagesError} for a stream that breaks the Messages event order.
   */
  handle(ev: StreamEvent): StreamEvent[] {
    this.#assembler.push(ev);
    const data = ev.data;
    if (ev.event !== 'content_block_start' && ev.event !== 'content_block_delta' && ev.event !== 'content_block_stop') return [ev];
    const index = data.index as number;
    const block = this.#assembler.block(index) as { type: string; signature?: unknown } | undefined;
    if (block === undefined || !isSignedBlockType(block.type)) return [ev];
    if (ev.event === 'content_block_start') {
      if (block.type !== 'redacted_thinking') return [ev];
      const { signature, rest } = this.#unsigned(index, block);
      return [{ event: ev.event, data: { ...data, content_block: withBlockSignature(rest, signature) } }];
    }
    if (ev.event === 'content_block_delta') {
      // The upstream's signature is replaced by Moat's at the block's end.
      return (data.delta as { type?: unknown }).type === 'signature_delta' ? [] : [ev];
    }
    if (block.type === 'redacted_thinking') return [ev];
    const { signature } = this.#unsigned(index, block);
    return [
      { event: 'content_block_delta', data: { type: 'content_block_delta', index, delta: { type: 'signature_delta', signature } } },
      ev,
    ];
  }

  /** Keeps the upstream's signature of block `index` and signs the block without it. */
  #unsigned(index: number, block: { type: string; signature?: unknown }): { signature: string; rest: Record<string, unknown> } {
    const theirs = block.type === 'redacted_thinking' ? undefined : block.signature;
    if (typeof theirs === 'string' && theirs !== '') this.upstreamSignatures.set(index, theirs);
    const rest = withoutBlockSignature(block) as Record<string, unknown>;
    const signature = this.keyring.sign(rest, this.ctx);
    this.issuedSignatures.set(index, signature);
    return { signature, rest };
  }
}

export { parseBlockSignature };
