import { createHash } from 'node:crypto';
import { type ParseResult, ProtocolError, toResult } from './errors.js';
import { describeValue } from './internal/describe.js';
import { KEY_ID_PATTERN } from './key-id.js';
import { utf8Into, utf8Length } from './text.js';

/** Longest `signature` value accepted, in UTF-8 bytes. */
export const SIGNATURE_MAX_BYTES = 256;

/** Response block types that carry a Moat signature. */
export const SIGNED_BLOCK_TYPES = ['thinking', 'redacted_thinking', 'connector_text'] as const;
/** One of {@link SIGNED_BLOCK_TYPES}. */
export type SignedBlockType = (typeof SIGNED_BLOCK_TYPES)[number];

/** The member of each signed block type whose value is signed. */
export const SIGNED_CONTENT_MEMBER: Readonly<Record<SignedBlockType, string>> = {
  thinking: 'thinking',
  redacted_thinking: 'data',
  connector_text: 'text',
};

/** Signature algorithms: `hs256` (HMAC-SHA-256, verifier-only) and `ed25519` (publicly verifiable). */
export const SIGNATURE_ALGORITHMS = ['hs256', 'ed25519'] as const;
export type SignatureAlgorithm = (typeof SIGNATURE_ALGORITHMS)[number];

/** `k`: bound to key id, API-key identity, model and content; `c`: also to the conversation. */
export const SIGNATURE_SCOPES = ['k', 'c'] as const;
export type SignatureScope = (typeof SIGNATURE_SCOPES)[number];

const SIGNATURE_BYTES: Readonly<Record<SignatureAlgorithm, number>> = { hs256: 32, ed25519: 64 };
const B64URL_RE = /^[A-Za-z0-9_-]*$/;

/** A parsed `signature` value `ms1.<alg>.<kid>.<scope>.<base64url>`. */
export interface BlockSignature {
  readonly alg: SignatureAlgorithm;
  readonly kid: string;
  readonly scope: SignatureScope;
  /** The raw signature or MAC bytes. */
  readonly sig: Uint8Array;
}

/** Whether a block type is one Moat signs. */
export function isSignedBlockType(type: unknown): type is SignedBlockType {
  return (SIGNED_BLOCK_TYPES as readonly unknown[]).includes(type);
}

/** Base64url without padding (RFC 4648 §5). */
export function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

function decodeBase64url(text: string, expectedBytes: number): Uint8Array {
  if (!B64URL_RE.test(text)) {
    throw new ProtocolError('ERR_SIGNATURE_ENCODING', 'base64url characters [A-Za-z0-9_-] without padding', describeValue(text));
  }
  const expectedChars = Math.ceil((expectedBytes * 4) / 3);
  if (text.length !== expectedChars) {
    throw new ProtocolError(
      'ERR_SIGNATURE_LENGTH',
      `${expectedChars} base64url characters (${expectedBytes} bytes)`,
      `${text.length} characters`,
    );
  }
  const bytes = new Uint8Array(Buffer.from(text, 'base64url'));
  // Reject non-canonical encodings (non-zero trailing bits): one signature, one spelling.
  if (base64url(bytes) !== text) {
    throw new ProtocolError('ERR_SIGNATURE_ENCODING', 'canonical base64url (unused trailing bits zero)', describeValue(text));
  }
  return bytes;
}

/**
 * Parses a block `signature` value.
 *
 * @throws {ProtocolError} with an `ERR_SIGNATURE_*` code.
 */
export function parseBlockSignature(value: unknown): BlockSignature {
  if (typeof value !== 'string') throw new ProtocolError('ERR_SIGNATURE_TYPE', 'a string', describeValue(value));
  const bytes = utf8Length(value);
  if (bytes > SIGNATURE_MAX_BYTES) {
    throw new ProtocolError('ERR_SIGNATURE_SYNTAX', `at most ${SIGNATURE_MAX_BYTES} UTF-8 bytes`, `${bytes} bytes`);
  }
  const parts = value.split('.');
  if (parts.length !== 5 || parts[0] !== 'ms1') {
    throw new ProtocolError('ERR_SIGNATURE_SYNTAX', 'ms1.<alg>.<kid>.<scope>.<signature>', describeValue(value));
  }
  const [, alg, kid, scope, sig] = parts as [string, string, string, string, string];
  if (!(SIGNATURE_ALGORITHMS as readonly string[]).includes(alg)) {
    throw new ProtocolError('ERR_SIGNATURE_ALGORITHM', 'hs256 or ed25519', describeValue(alg));
  }
  if (!KEY_ID_PATTERN.test(kid)) throw new ProtocolError('ERR_SIGNATURE_KID', 'a key id matching [A-Za-z0-9_-]{1,32}', describeValue(kid));
  if (!(SIGNATURE_SCOPES as readonly string[]).includes(scope)) {
    throw new ProtocolError('ERR_SIGNATURE_SCOPE', 'k or c', describeValue(scope));
  }
  const algorithm = alg as SignatureAlgorithm;
  return { alg: algorithm, kid, scope: scope as SignatureScope, sig: decodeBase64url(sig, SIGNATURE_BYTES[algorithm]) };
}

/** Like {@link parseBlockSignature}, but returns a {@link ParseResult} instead of throwing. */
export function tryParseBlockSignature(value: unknown): ParseResult<BlockSignature> {
  return toResult(() => parseBlockSignature(value));
}

/** Serializes a block signature; the result always parses back to the same value. */
export function serializeBlockSignature(signature: BlockSignature): string {
  const value = `ms1.${signature.alg}.${signature.kid}.${signature.scope}.${base64url(signature.sig)}`;
  parseBlockSignature(value);
  return value;
}

/** Length-prefixed concatenation: for each item, u32 big-endian byte length, then UTF-8 bytes. */
export function lengthPrefixed(items: readonly string[]): Uint8Array {
  // One allocation at the upper bound (a UTF-16 unit never takes more than 3 UTF-8 bytes),
  // each item encoded in place: twice as fast as encoding items one by one, and signing runs
  // once per streamed block.
  let bound = 0;
  for (const item of items) bound += 4 + 3 * item.length;
  const out = new Uint8Array(bound);
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const item of items) {
    const written = utf8Into(item, out.subarray(offset + 4));
    view.setUint32(offset, written);
    offset += 4 + written;
  }
  return out.subarray(0, offset);
}

/** Separates Moat's signature from the original `data` of a `redacted_thinking` block (§8.1). */
export const REDACTED_SIGNATURE_SEPARATOR = '~';

/**
 * Splits a `redacted_thinking` block's `data` into Moat's signature and the original data
 * (§8.1): `data = signature "~" original` when it starts with `ms1.` and has a `~` within
 * its first 257 UTF-8 bytes; otherwise there is no signature and the data is the original.
 *
 * @throws {ProtocolError} `ERR_BLOCK_CONTENT` when `data` is not a string.
 */
export function splitRedactedData(data: string): { readonly signature?: string; readonly data: string } {
  if (typeof data !== 'string') throw new ProtocolError('ERR_BLOCK_CONTENT', 'redacted_thinking data as a string', describeValue(data));
  if (!data.startsWith('ms1.')) return { data };
  const at = data.indexOf(REDACTED_SIGNATURE_SEPARATOR);
  // "Within its first 257 bytes": the signature before it is at most 256 UTF-8 bytes (§8.2).
  if (at <= 0 || utf8Length(data.slice(0, at)) > 256) return { data };
  return { signature: data.slice(0, at), data: data.slice(at + 1) };
}

/**
 * The Moat signature a block carries: the `signature` member, or for `redacted_thinking`
 * (whose API shape has no such member) the part of `data` before `~` (§8.1). `undefined`
 * when there is none.
 */
export function blockSignatureOf(block: unknown): unknown {
  if (typeof block !== 'object' || block === null) return undefined;
  const b = block as Record<string, unknown>;
  if (b.type === 'redacted_thinking') return typeof b.data === 'string' ? splitRedactedData(b.data).signature : undefined;
  return b.signature;
}

/** The block with Moat's `signature` where §8.1 puts it (for `redacted_thinking`: in front of its `data`). */
export function withBlockSignature<T extends object>(block: T, signature: string): T {
  const b = block as Record<string, unknown>;
  if (b.type === 'redacted_thinking' && typeof b.data === 'string') {
    const { signature: _member, ...rest } = b;
    return { ...rest, data: `${signature}${REDACTED_SIGNATURE_SEPARATOR}${splitRedactedData(b.data).data}` } as T;
  }
  return { ...b, signature } as T;
}

/**
 * The block as its producer made it, without Moat's signature: the `signature` member left
 * out, a `redacted_thinking` block's `data` unwrapped.
 */
export function withoutBlockSignature<T extends object>(block: T): T {
  const { signature: _member, ...rest } = block as Record<string, unknown>;
  if (rest.type === 'redacted_thinking' && typeof rest.data === 'string') return { ...rest, data: splitRedactedData(rest.data).data } as T;
  return rest as T;
}

/**
 * The signed content of a block: the value of its content member (`thinking`, `data` or
 * `text`; a `redacted_thinking` block's data without Moat's signature in front). Only values
 * are signed, never JSON layout, so re-serialization cannot break it.
 *
 * @throws {ProtocolError} `ERR_BLOCK_TYPE` or `ERR_BLOCK_CONTENT`.
 */
export function signedBlockContent(block: unknown): { type: SignedBlockType; content: string } {
  const record = typeof block === 'object' && block !== null ? (block as Record<string, unknown>) : undefined;
  const type = record?.type;
  if (!isSignedBlockType(type)) {
    throw new ProtocolError('ERR_BLOCK_TYPE', SIGNED_BLOCK_TYPES.join(' | '), describeValue(type));
  }
  const content = record?.[SIGNED_CONTENT_MEMBER[type]];
  if (typeof content !== 'string') {
    throw new ProtocolError('ERR_BLOCK_CONTENT', `a string "${SIGNED_CONTENT_MEMBER[type]}" member`, describeValue(content));
  }
  return { type, content: type === 'redacted_thinking' ? splitRedactedData(content).data : content };
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/** The strings of one content block that the conversation digest covers. */
function blockItems(block: unknown): string[] {
  if (typeof block !== 'object' || block === null) return ['b', ''];
  const b = block as Record<string, unknown>;
  const type = str(b.type);
  switch (type) {
    case 'text':
    case 'connector_text':
      return ['b', type, str(b.text)];
    case 'thinking':
      return ['b', type, str(b.thinking)];
    case 'redacted_thinking':
      return ['b', type, splitRedactedData(str(b.data)).data];
    case 'tool_use':
      return ['b', type, str(b.id), str(b.name)];
    case 'tool_result': {
      const items = ['b', type, str(b.tool_use_id)];
      if (typeof b.content === 'string') items.push(b.content);
      else if (Array.isArray(b.content)) {
        for (const inner of b.content) {
          if (typeof inner === 'object' && inner !== null && (inner as Record<string, unknown>).type === 'text') {
            items.push(str((inner as Record<string, unknown>).text));
          }
        }
      }
      return items;
    }
    default:
      return ['b', type];
  }
}

/**
 * Digest of a conversation prefix (the `messages` that produced a block), over values only:
 * role and, per content block, its type and text-like members. 64 lowercase hex digits.
 */
export function conversationDigest(messages: readonly unknown[]): string {
  const items: string[] = ['moat-ctx/1'];
  for (const message of messages) {
    const m = typeof message === 'object' && message !== null ? (message as Record<string, unknown>) : {};
    items.push('m', str(m.role));
    if (typeof m.content === 'string') items.push(...blockItems({ type: 'text', text: m.content }));
    else if (Array.isArray(m.content)) for (const block of m.content) items.push(...blockItems(block));
  }
  return createHash('sha256').update(lengthPrefixed(items)).digest('hex');
}

/** What a block signature binds. */
export interface SigningContext {
  readonly alg: SignatureAlgorithm;
  readonly kid: string;
  /** The verifier's stable identity for the API key (never the key itself). */
  readonly apiKeyId: string;
  readonly model: string;
  /** {@link conversationDigest} of the producing prefix for scope `c`; omitted for scope `k`. */
  readonly context?: string | undefined;
}

/**
 * The exact bytes a block signature is computed over:
 * `lengthPrefixed(["moat-sig/1", alg, kid, scope, apiKeyId, model, type, content, context])`,
 * where scope is `c` when a context digest is given and `k` otherwise.
 *
 * @throws {ProtocolError} when the block is not a signed type or lacks its content.
 */
export function signingInput(block: unknown, ctx: SigningContext): Uint8Array {
  const { type, content } = signedBlockContent(block);
  // §8.3: a context names an algorithm and key id a signature can carry (§8.2).
  if (ctx.alg !== 'hs256' && ctx.alg !== 'ed25519')
    throw new ProtocolError('ERR_SIGNATURE_ALGORITHM', 'hs256 or ed25519', describeValue(ctx.alg));
  if (!KEY_ID_PATTERN.test(ctx.kid))
    throw new ProtocolError('ERR_SIGNATURE_KID', 'a key id matching [A-Za-z0-9_-]{1,32}', describeValue(ctx.kid));
  const scope: SignatureScope = ctx.context === undefined ? 'k' : 'c';
  return lengthPrefixed(['moat-sig/1', ctx.alg, ctx.kid, scope, ctx.apiKeyId, ctx.model, type, content, ctx.context ?? '']);
}
