import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { receivedRequest } from './evidence.js';

const req = (url: string) => ({ method: 'POST', url, headers: { host: 'gw.example', 'x-api-key': 'sk-1' } }) as unknown as IncomingMessage;
const paths = (url: string, config: Parameters<typeof receivedRequest>[1]) =>
  receivedRequest(req(url), config).map((c) => `${c.authority}${c.path}`);

describe('receivedRequest with a publicPathPrefix', () => {
  it('a target under the prefix is the path sent; one outside it was sent as it is or under the prefix', () => {
    const prefix = { publicPathPrefix: '/anthropic' };
    expect(paths('/anthropic/v1/messages?beta=true', prefix)).toEqual(['gw.example/anthropic/v1/messages']);
    expect(paths('/v1/messages?beta=true', prefix)).toEqual(['gw.example/v1/messages', 'gw.example/anthropic/v1/messages']);
    expect(paths('/anthropic-x/v1/messages', prefix)).toEqual([
      'gw.example/anthropic-x/v1/messages',
      'gw.example/anthropic/anthropic-x/v1/messages',
    ]);
    expect(paths('/v1/messages', {})).toEqual(['gw.example/v1/messages']);
  });

  it('every path once per public authority', () => {
    const config = { publicPathPrefix: '/a', publicAuthorities: ['api.example', 'gw.partner'] };
    expect(paths('/v1/messages', config)).toEqual([
      'api.example/v1/messages',
      'gw.partner/v1/messages',
      'api.example/a/v1/messages',
      'gw.partner/a/v1/messages',
    ]);
  });
});
