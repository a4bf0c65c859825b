import { describe, expect, it } from 'vitest';
import { GroupCommit } from './group-commit.js';

describe('GroupCommit', () => {
  it('commits a burst in transactions of at most 1024 writes, each settled once, in order', async () => {
    const sizes: number[] = [];
    const group = new GroupCommit<number, number>((batch) => {
      sizes.push(batch.length);
      return batch.map((n) => ({ ok: true as const, value: n * 2 }));
    });
    const results = await Promise.all(Array.from({ length: 2500 }, (_, i) => group.write(i)));
    expect(results).toEqual(Array.from({ length: 2500 }, (_, i) => i * 2));
    expect(sizes).toEqual([1024, 1024, 452]);
    expect(group.stats).toEqual({ commits: 3, writes: 2500 });
  });

  it('flush commits everything queued, however much', async () => {
    let written = 0;
    const group = new GroupCommit<number, void>((batch) => {
      written += batch.length;
      return batch.map(() => ({ ok: true as const, value: undefined }));
    });
    const pending = Array.from({ length: 3000 }, (_, i) => group.write(i));
    await group.flush();
    expect(written).toBe(3000);
    await Promise.all(pending);
  });
});
