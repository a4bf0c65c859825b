import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bunProgramRange } from './executable.js';

const reader = (file: Buffer) => (offset: number, length: number) => file.subarray(offset, offset + length);

/** A PE file with one `.bun` section of `size` bytes at `at` (the headers only, as Bun's Windows builds lay them out). */
function pe(at: number, size: number, name = '.bun'): Buffer {
  const file = Buffer.alloc(at + size);
  file.write('MZ', 0, 'latin1');
  file.writeUInt32LE(0x80, 0x3c);
  file.writeUInt32LE(0x00004550, 0x80);
  file.writeUInt16LE(2, 0x80 + 6);
  file.writeUInt16LE(0xf0, 0x80 + 20);
  const table = 0x80 + 24 + 0xf0;
  file.write('.text', table, 'latin1');
  file.write(name, table + 40, 'latin1');
  file.writeUInt32LE(size, table + 40 + 16);
  file.writeUInt32LE(at, table + 40 + 20);
  return file;
}

/** A 64-bit Mach-O file with a `__TEXT` and a `__BUN` segment of `size` bytes at `at`. */
function macho(at: number, size: number): Buffer {
  const file = Buffer.alloc(at + size);
  file.writeUInt32LE(0xfeedfacf, 0);
  file.writeUInt32LE(2, 16);
  file.writeUInt32LE(144, 20);
  for (const [i, name, off, len] of [
    [0, '__TEXT', 0, 16],
    [1, '__BUN', at, size],
  ] as const) {
    const cmd = 32 + i * 72;
    file.writeUInt32LE(0x19, cmd);
    file.writeUInt32LE(72, cmd + 4);
    file.write(name, cmd + 8, 'latin1');
    file.writeBigUInt64LE(BigInt(off), cmd + 40);
    file.writeBigUInt64LE(BigInt(len), cmd + 48);
  }
  return file;
}

describe('bunProgramRange', () => {
  it('finds the program of a Bun executable: the .bun section (PE), the __BUN segment (Mach-O)', () => {
    const p = pe(4096, 512);
    expect(bunProgramRange(reader(p), p.length)).toEqual({ start: 4096, end: 4608 });
    const m = macho(8192, 100);
    expect(bunProgramRange(reader(m), m.length)).toEqual({ start: 8192, end: 8292 });
  });

  it('finds none in other files, and none where a header points past the file', () => {
    const other = pe(4096, 512, '.data');
    expect(bunProgramRange(reader(other), other.length)).toBeUndefined();
    const cut = pe(4096, 512);
    expect(bunProgramRange(reader(cut), 4000)).toBeUndefined();
    for (const text of ['', 'MZ', '\x7fELF', 'plain text that is no executable', '\xcf\xfa\xed\xfe'])
      expect(bunProgramRange(reader(Buffer.from(text, 'latin1')), text.length), JSON.stringify(text)).toBeUndefined();
  });

  it('never throws and never names a range past the file, whatever follows a magic number (property)', () => {
    fc.assert(
      fc.property(fc.constantFrom('\x7fELF\x02\x01', 'MZ', '\xcf\xfa\xed\xfe'), fc.uint8Array({ maxLength: 600 }), (magic, rest) => {
        const file = Buffer.concat([Buffer.from(magic, 'latin1'), rest]);
        const range = bunProgramRange(reader(file), file.length);
        if (range !== undefined) expect(range.end).toBeLessThanOrEqual(file.length);
      }),
      { numRuns: 3_000 },
    );
  });
});
