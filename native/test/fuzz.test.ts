import { describe, expect, it } from 'vitest';
import { runFuzz } from './fuzz.ts';

// The fuzz harness (test/fuzz.ts) in its short form on whichever build is loaded: the
// sanitizer job (scripts/sanitize.sh) runs it at length against the ASan + UBSan build.
describe('the fuzz harness', () => {
  it('runs every target from a fixed seed without a finding', async () => {
    const report = await runFuzz({ cases: 300, seed: 20_261_206 });
    expect(Object.keys(report.cases).sort()).toEqual(
      [
        'hostileArrays',
        'installState',
        'jsonObject',
        'literals',
        'literalsForms',
        'prefilterFiles',
        'regexCompile',
        'regexCompileAsync',
        'request',
        'stampMatches',
      ].sort(),
    );
    expect(report.cases.request).toBe(300);
    expect(report.total).toBe(300 * 6 + 30 * 4);
  });
});
