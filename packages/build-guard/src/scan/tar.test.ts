import { describe, expect, it } from 'vitest';
import { TarReader } from './tar.js';

/** A ustar header block with a valid checksum. */
function header(name: string, size: number, type: string): Buffer {
  const block = Buffer.alloc(512);
  block.write(name, 0);
  block.write(size.toString(8).padStart(11, '0'), 124);
  block[156] = type.charCodeAt(0);
  block.write('ustar\u000000', 257, 'latin1');
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return block;
}

/** An archive of one file, `x`, named by a GNU long-name entry holding `longName`. */
function longNamed(longName: Buffer): Buffer {
  const pad = Buffer.alloc((512 - (longName.length % 512)) % 512);
  const file = [header('short.txt', 1, '0'), Buffer.from('x'), Buffer.alloc(511)];
  return Buffer.concat([header('././@LongLink', longName.length, 'L'), longName, pad, ...file, Buffer.alloc(1024)]);
}

function paths(archive: Buffer): string[] {
  const seen: string[] = [];
  const reader = new TarReader({
    entry(entry) {
      seen.push(entry.path);
      return { write() {}, end() {} };
    },
  });
  reader.write(archive);
  reader.end();
  return seen;
}

describe('TarReader', () => {
  it('takes a GNU long name without its trailing NULs', () => {
    expect(paths(longNamed(Buffer.from('package/dist/index.js\0')))).toEqual(['package/dist/index.js']);
    expect(paths(longNamed(Buffer.from('a\0b\0\0\0')))).toEqual(['a\0b']);
    expect(paths(longNamed(Buffer.from('\0\0')))).toEqual(['']);
  });

  it('reads a long name of a megabyte of NULs then a letter, keeping inner NULs', () => {
    const n = 1 << 20;
    expect(paths(longNamed(Buffer.from(`${'\0'.repeat(n)}x`)))).toEqual([`${'\0'.repeat(n)}x`]);
    expect(paths(longNamed(Buffer.from(`x${'\0'.repeat(n)}`)))).toEqual(['x']);
  });
});
