import { createHmac } from 'node:crypto';
import { conversationDigest, ProtocolError, parseBlockSignature, signingInput, withoutBlockSignature } from '@moat/protocol';
import { ed25519 } from '@noble/curves/ed25519.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockKeyring, invalidBlockError, StreamSigner, signResponse, stripFailedBlocks, verifyRequestBlocks } from './signing.js';

const hmacSecret = new Uint8Array(32).fill(0x11);
const seed = new Uint8Array(32).fill(0x22);
const keyring = new BlockKeyring(
  [
    { kid: 'h1', alg: 'hs256', secret: hmacSecret },
    { kid: 'e1', alg: 'ed25519', seed },
  ],
  'h1',
);
const edKeyring = new BlockKeyring([{ kid: 'e1', alg: 'ed25519', seed }], 'e1');
const ctx = { apiKeyId: 'key_a', model: 'model-1' };
const block = { type: 'thinking', thinking: 'The user wants 2 + 2; that is 4.' };

describe.each([
  ['hs256', keyring],
  ['ed25519', edKeyring],
] as const)('%s block signatures', (_alg, ring) => {
  const signature = ring.sign(block, ctx);
  const signed = { ...block, signature };

  it('verify for the same key and model', () => {
    expect(ring.verify(signed, ctx)).toEqual({ ok: true });
  });
  it('fail for another API key, another model, edited content', () => {
    expect(ring.verify(signed, { ...ctx, apiKeyId: 'key_b' })).toEqual({ ok: false, reason: 'bad_signature' });
    expect(ring.verify(signed, { ...ctx, model: 'model-2' })).toEqual({ ok: false, reason: 'bad_signature' });
    expect(ring.verify({ ...signed, thinking: `${block.thinking} ` }, ctx)).toEqual({ ok: false, reason: 'bad_signature' });
    expect(ring.verify({ ...signed, type: 'connector_text', text: block.thinking }, ctx).ok).toBe(false);
  });
  it('fail when forged, truncated, unsigned or from an unknown key', () => {
    const parsed = parseBlockSignature(signature);
    const forged = `${signature.slice(0, -2)}${signature.endsWith('AA') ? 'AB' : 'AA'}`;
    expect(ring.verify({ ...block, signature: forged }, ctx).ok).toBe(false);
    expect(ring.verify({ ...block, signature: signature.slice(0, -4) }, ctx)).toEqual({ ok: false, reason: 'malformed' });
    expect(ring.verify(block, ctx)).toEqual({ ok: false, reason: 'unsigned' });
    expect(ring.verify({ ...block, signature: signature.replace(`.${parsed.kid}.`, '.zz.') }, ctx)).toEqual({
      ok: false,
      reason: 'unknown_key',
    });
  });
  it('survive JSON re-serialization (values are signed, not layout)', () => {
    const reserialized = JSON.parse(JSON.stringify({ signature, zzz: 1, thinking: block.thinking, type: 'thinking' }, null, 4));
    expect(ring.verify(reserialized, ctx)).toEqual({ ok: true });
  });
});

describe('keyring', () => {
  it('matches the protocol: HMAC-SHA-256 and Ed25519 over the signing input', () => {
    const input = signingInput(block, { alg: 'hs256', kid: 'h1', ...ctx });
    const mac = createHmac('sha256', hmacSecret).update(input).digest();
    expect(Buffer.from(parseBlockSignature(keyring.sign(block, ctx)).sig)).toEqual(mac);
    const edSig = parseBlockSignature(edKeyring.sign(block, ctx)).sig;
    const edInput = signingInput(block, { alg: 'ed25519', kid: 'e1', ...ctx });
    expect(ed25519.verify(edSig, edInput, ed25519.getPublicKey(seed))).toBe(true);
  });

  it('lets a partner verify Ed25519 signatures with the public key alone', () => {
    const publicKey = edKeyring.publicKey('e1') as Uint8Array;
    expect(Buffer.from(publicKey)).toEqual(Buffer.from(ed25519.getPublicKey(seed)));
    const partner = new BlockKeyring([{ kid: 'e1', alg: 'ed25519', publicKey }]);
    const signature = edKeyring.sign(block, ctx);
    expect(partner.verify({ ...block, signature }, ctx)).toEqual({ ok: true });
    expect(partner.verify({ ...block, signature }, { ...ctx, model: 'other' }).ok).toBe(false);
    expect(() => partner.sign(block, ctx)).toThrow(/verify-only/);
  });

  it('binds scope-c signatures to the conversation', () => {
    const conversation = [{ role: 'user', content: 'What is 2 + 2?' }];
    const signature = keyring.sign(block, { ...ctx, conversation });
    expect(parseBlockSignature(signature).scope).toBe('c');
    expect(keyring.verify({ ...block, signature }, { ...ctx, conversation })).toEqual({ ok: true });
    expect(keyring.verify({ ...block, signature }, { ...ctx, conversation: [{ role: 'user', content: 'Other' }] }).ok).toBe(false);
    expect(keyring.verify({ ...block, signature }, ctx).ok).toBe(false);
    expect(conversationDigest(conversation)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('refuses weak or missing key material', () => {
    expect(() => new BlockKeyring([{ kid: 'h', alg: 'hs256', secret: new Uint8Array(8) }], 'h')).toThrow(/at least 32 bytes/);
    expect(() => new BlockKeyring([{ kid: 'e', alg: 'ed25519', publicKey: ed25519.getPublicKey(seed) }], 'e')).toThrow(/signing material/);
    expect(() => keyring.sign({ type: 'text', text: 'x' }, ctx)).toThrow(ProtocolError);
  });

  it('property: any mutation of a valid signature fails', () => {
    const signature = keyring.sign(block, ctx);
    fc.assert(
      fc.property(fc.nat(signature.length - 1), fc.string({ minLength: 1, maxLength: 1 }), (at, ch) => {
        fc.pre(signature[at] !== ch);
        const mutated = signature.slice(0, at) + ch + signature.slice(at + 1);
        expect(keyring.verify({ ...block, signature: mutated }, ctx).ok).toBe(false);
      }),
    );
  });

  it('property: arbitrary signature values never throw', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.jsonValue()), (signature) => {
        const r = keyring.verify({ ...block, signature }, ctx);
        expect(typeof r.ok).toBe('boolean');
      }),
    );
  });
});

describe('requests and responses', () => {
  const response = {
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'model-1',
    content: [
      { type: 'thinking', thinking: 'Adding.', signature: 'upstream-sig-1' },
      { type: 'redacted_thinking', data: 'EmwKAhgB' },
      { type: 'text', text: '4' },
    ],
  };

  it('signs a response and keeps the upstream signatures aside', () => {
    const { response: signed, upstreamSignatures } = signResponse(response, ctx, keyring);
    expect(upstreamSignatures).toEqual(new Map([[0, 'upstream-sig-1']]));
    expect(signed.content[2]).toEqual({ type: 'text', text: '4' });
    for (const b of signed.content.slice(0, 2)) expect(keyring.verify(b, ctx)).toEqual({ ok: true });
  });

  it('verifies blocks sent back, names the failing block, and strips it on request', () => {
    const { response: signed } = signResponse(response, ctx, keyring);
    const history = (model: string, apiKeyId: string) => ({
      request: {
        model,
        messages: [
          { role: 'user', content: 'Q' },
          { role: 'assistant', content: signed.content },
          { role: 'user', content: 'Q2' },
        ],
      },
      apiKeyId,
    });
    const same = history('model-1', 'key_a');
    expect(verifyRequestBlocks(same.request, same.apiKeyId, keyring)).toEqual({ signal: 'valid', checked: 2, failures: [] });
    const other = history('model-2', 'key_a');
    const check = verifyRequestBlocks(other.request, other.apiKeyId, keyring);
    expect(check.signal).toBe('invalid');
    expect(check.failures).toEqual([
      { messageIndex: 1, blockIndex: 0, type: 'thinking', reason: 'bad_signature' },
      { messageIndex: 1, blockIndex: 1, type: 'redacted_thinking', reason: 'bad_signature' },
    ]);
    expect(invalidBlockError(check.failures[0] as never).error.message).toMatch(
      /^messages\.1\.content\.0: Invalid `signature` in `thinking` block/,
    );
    const stripped = stripFailedBlocks(other.request, check.failures);
    expect(stripped.messages[1]).toEqual({ role: 'assistant', content: [{ type: 'text', text: '4' }] });
    expect(verifyRequestBlocks(stripped, 'key_a', keyring).signal).toBe('none');
    expect(verifyRequestBlocks({ model: 'model-1', messages: [{ role: 'user', content: 'Q' }] }, 'key_a', keyring).signal).toBe('none');
  });

  it('signs thinking in a stream as it passes, replacing the upstream signature_delta', () => {
    const signer = new StreamSigner(ctx, keyring);
    const events = [
      { event: 'message_start', data: { type: 'message_start', message: { id: 'msg_1', content: [] } } },
      { event: 'content_block_start', data: { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '' } } },
      {
        event: 'content_block_delta',
        data: { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'Adding ' } },
      },
      {
        event: 'content_block_delta',
        data: { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'numbers.' } },
      },
      {
        event: 'content_block_delta',
        data: { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'upstream' } },
      },
      { event: 'content_block_stop', data: { type: 'content_block_stop', index: 0 } },
      { event: 'content_block_start', data: { type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } } },
      { event: 'content_block_delta', data: { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: '4' } } },
      { event: 'content_block_stop', data: { type: 'content_block_stop', index: 1 } },
      { event: 'message_stop', data: { type: 'message_stop' } },
    ];
    const out = events.flatMap((e) => signer.handle(e));
    expect(out.map((e) => `${e.event}:${(e.data.delta as { type?: string } | undefined)?.type ?? ''}`)).toEqual([
      'message_start:',
      'content_block_start:',
      'content_block_delta:thinking_delta',
      'content_block_delta:thinking_delta',
      'content_block_delta:signature_delta',
      'content_block_stop:',
      'content_block_start:',
      'content_block_delta:text_delta',
      'content_block_stop:',
      'message_stop:',
    ]);
    const signature = (out[4]?.data.delta as { signature?: string } | undefined)?.signature;
    expect(keyring.verify({ type: 'thinking', thinking: 'Adding numbers.', signature }, ctx)).toEqual({ ok: true });
    expect(signer.upstreamSignatures.get(0)).toBe('upstream');
    expect(signer.issuedSignatures.get(0)).toBe(signature);
    expect([...signer.issuedSignatures.keys()]).toEqual([0]);
  });
});

describe('redacted_thinking', () => {
  const data = 'EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP';

  it('carries the signature in front of its data, never in a signature member the API does not define', () => {
    const { response } = signResponse({ content: [{ type: 'redacted_thinking', data }] }, ctx, keyring);
    const block = response.content[0] as Record<string, unknown>;
    expect(Object.keys(block).sort()).toEqual(['data', 'type']);
    expect(block.data).toMatch(/^ms1\.hs256\.h1\.k\.[A-Za-z0-9_-]{43}~/);
    expect(String(block.data).endsWith(`~${data}`)).toBe(true);
    // Sent back with the same key and model it verifies; the upstream gets the original data.
    const request = {
      model: 'model-1',
      messages: [
        { role: 'user', content: 'q' },
        { role: 'assistant', content: [block] },
      ],
    };
    expect(verifyRequestBlocks(request, 'key_a', keyring).signal).toBe('valid');
    expect(verifyRequestBlocks(request, 'key_b', keyring).signal).toBe('invalid');
    expect(withoutBlockSignature(block)).toEqual({ type: 'redacted_thinking', data });
    // Edited data fails.
    const edited = { ...block, data: String(block.data).replace(/.$/, 'Q') };
    expect(
      verifyRequestBlocks({ ...request, messages: [request.messages[0], { role: 'assistant', content: [edited] }] }, 'key_a', keyring)
        .signal,
    ).toBe('invalid');
  });

  it('in a stream, arrives whole in content_block_start and is signed there the same way', () => {
    const signer = new StreamSigner(ctx, keyring);
    signer.handle({
      event: 'message_start',
      data: { type: 'message_start', message: { id: 'm', content: [], usage: { output_tokens: 0 } } },
    });
    const [start] = signer.handle({
      event: 'content_block_start',
      data: { type: 'content_block_start', index: 0, content_block: { type: 'redacted_thinking', data } },
    });
    const block = (start as unknown as { data: { content_block: Record<string, unknown> } }).data.content_block;
    expect(block.signature).toBeUndefined();
    expect(String(block.data).endsWith(`~${data}`)).toBe(true);
    expect(signer.issuedSignatures.get(0)).toBe(String(block.data).split('~')[0]);
  });
});
