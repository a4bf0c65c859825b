import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalTarget, TargetError, underPrefix, withoutPrefix } from './target.js';

const refused = (raw: string) => {
  try {
    canonicalTarget(raw);
  } catch (error) {
    if (error instanceof TargetError) return error.reason;
    throw error;
  }
  return undefined;
};

describe('canonicalTarget', () => {
  it('merges slashes and decodes unreserved escapes, keeping the query as received', () => {
    expect(canonicalTarget('/v1/messages?beta=true')).toEqual({ path: '/v1/messages', query: '?beta=true' });
    expect(canonicalTarget('/v1//messages')).toEqual({ path: '/v1/messages', query: '' });
    expect(canonicalTarget('//v1///%6Dessages')).toEqual({ path: '/v1/messages', query: '' });
    expect(canonicalTarget('/v1/messages/%63ount%5Ftokens?a=%2F')).toEqual({
      path: '/v1/messages/count_tokens',
      query: '?a=%2F',
    });
  });

  it('keeps a trailing slash and the case, so such variants name no route', () => {
    expect(canonicalTarget('/v1/messages/').path).toBe('/v1/messages/');
    expect(canonicalTarget('/V1/Messages').path).toBe('/V1/Messages');
  });

  it('refuses what an upstream could read another way', () => {
    const cases: Array<[string, string]> = [
      ['http://verifier/v1/messages', 'ERR_TARGET_FORM'],
      ['*', 'ERR_TARGET_FORM'],
      ['v1/messages', 'ERR_TARGET_FORM'],
      ['/v1/messages;x', 'ERR_TARGET_CHARACTER'],
      ['/v1/messages%3Bx', 'ERR_TARGET_ESCAPE'],
      ['/v1%2Fmessages', 'ERR_TARGET_ESCAPE'],
      ['/v1%5cmessages', 'ERR_TARGET_ESCAPE'],
      ['/v1/%256Dessages', 'ERR_TARGET_ESCAPE'],
      ['/v1/messages%3F', 'ERR_TARGET_ESCAPE'],
      ['/v1/messages%', 'ERR_TARGET_ESCAPE'],
      ['/v1/messages%zz', 'ERR_TARGET_ESCAPE'],
      ['/v1/x/../messages', 'ERR_TARGET_DOT_SEGMENT'],
      ['/v1/./messages', 'ERR_TARGET_DOT_SEGMENT'],
      ['/v1/%2e%2E/messages', 'ERR_TARGET_DOT_SEGMENT'],
      ['/../v1/models', 'ERR_TARGET_DOT_SEGMENT'],
      ['/v1\\messages', 'ERR_TARGET_CHARACTER'],
      ['/v1/messages:batch', 'ERR_TARGET_CHARACTER'],
      ['/v1/mess ages', 'ERR_TARGET_CHARACTER'],
      ['/v1/messäges', 'ERR_TARGET_CHARACTER'],
      ['//[', 'ERR_TARGET_CHARACTER'],
      ['/v1/messages?x#y', 'ERR_TARGET_QUERY'],
    ];
    for (const [raw, reason] of cases) expect(refused(raw), raw).toBe(reason);
    expect(() => canonicalTarget('/v1/messages;x')).toThrow(
      /request target: expected a path of .*, got ";" in "\/v1\/messages;x"$/,
    );
  });

  it('is idempotent, total, and never yields a path a decoding or slash-merging upstream reads differently', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: 'binary', maxLength: 40 }),
          fc
            .array(fc.constantFrom('/', '//', 'v1', 'messages', '%6D', '%2F', '%2e', '.', '..', ';x', '?', '%', 'a'), {
              maxLength: 10,
            })
            .map((p) => p.join('')),
        ),
        (raw) => {
          let target: ReturnType<typeof canonicalTarget>;
          try {
            target = canonicalTarget(raw);
          } catch (error) {
            return error instanceof TargetError;
          }
          const again = canonicalTarget(target.path + target.query);
          return (
            again.path === target.path &&
            again.query === target.query &&
            decodeURIComponent(target.path) === target.path &&
            !/\/\/|;|(^|\/)\.\.?(\/|$)/.test(target.path)
          );
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('withoutPrefix', () => {
  it('routes a target under the mount as the path after it, and leaves any other target alone', () => {
    const t = (path: string, query = '') => ({ path, query });
    expect(withoutPrefix(t('/anthropic/v1/messages', '?beta=true'), '/anthropic')).toEqual(
      t('/v1/messages', '?beta=true'),
    );
    expect(withoutPrefix(t('/anthropic'), '/anthropic')).toEqual(t('/'));
    expect(withoutPrefix(t('/anthropic-x/v1/messages'), '/anthropic')).toEqual(t('/anthropic-x/v1/messages'));
    expect(withoutPrefix(t('/v1/messages'), '/anthropic')).toEqual(t('/v1/messages'));
    expect(withoutPrefix(t('/Anthropic/v1/messages'), '/anthropic')).toEqual(t('/Anthropic/v1/messages'));
    expect(withoutPrefix(t('/anthropic/v1/messages'), undefined)).toEqual(t('/anthropic/v1/messages'));
  });

  it('gives back exactly the path after the prefix, for any segments (property)', () => {
    const segment = fc.stringMatching(/^[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,8}$/);
    const path = fc.array(segment, { minLength: 1, maxLength: 4 }).map((s) => `/${s.join('/')}`);
    fc.assert(
      fc.property(path, path, (prefix, rest) => {
        expect(underPrefix(`${prefix}${rest}`, prefix)).toBe(true);
        expect(withoutPrefix({ path: `${prefix}${rest}`, query: '' }, prefix).path).toBe(rest);
        // A longer last segment is another path, not under the prefix.
        expect(underPrefix(`${prefix}x${rest}`, prefix)).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });
});
