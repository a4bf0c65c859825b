/**
 * Where a `bun build --compile` executable keeps the program it was built from: the `.bun`
 * section (ELF, PE) or the `__BUN` segment (Mach-O). Everything else in the file is Bun's own
 * runtime, whose sources hold source-map-like text of its own (its HMR runtime's map, a
 * `sourceMappingURL=data:` string): the source-map audit reads the program's bytes only, so
 * every Bun executable does not fail it. Codenames are searched in the whole file.
 */

/** A byte range of a file, `[start, end)`. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** Reads `length` bytes at `offset` (fewer at the end of the file). */
export type ReadAt = (offset: number, length: number) => Buffer;

const BUN_SECTION = '.bun';
const BUN_SEGMENT = '__BUN';
/** More section headers or load commands than any real executable has: a file that says so is not read as one. */
const MAX_ENTRIES = 65_535;

const within = (range: ByteRange, size: number): ByteRange | undefined =>
  range.end > range.start && range.end <= size ? range : undefined;

function elf(read: ReadAt, size: number): ByteRange | undefined {
  const head = read(0, 64);
  // 64-bit little-endian only: what Bun builds for Linux.
  if (head.length < 64 || head[4] !== 2 || head[5] !== 1) return undefined;
  const shoff = Number(head.readBigUInt64LE(0x28));
  const shentsize = head.readUInt16LE(0x3a);
  const shnum = head.readUInt16LE(0x3c);
  const shstrndx = head.readUInt16LE(0x3e);
  if (shentsize < 64 || shnum === 0 || shnum > MAX_ENTRIES || shstrndx >= shnum || shoff + shnum * shentsize > size) return undefined;
  const headers = read(shoff, shnum * shentsize);
  const header = (i: number) => headers.subarray(i * shentsize, i * shentsize + 64);
  const names = header(shstrndx);
  const namesAt = Number(names.readBigUInt64LE(24));
  const namesSize = Number(names.readBigUInt64LE(32));
  if (namesAt + namesSize > size || namesSize > 1 << 20) return undefined;
  const table = read(namesAt, namesSize);
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    const nameAt = h.readUInt32LE(0);
    const end = table.indexOf(0, nameAt);
    if (end === -1 || table.toString('latin1', nameAt, end) !== BUN_SECTION) continue;
    const start = Number(h.readBigUInt64LE(24));
    return within({ start, end: start + Number(h.readBigUInt64LE(32)) }, size);
  }
  return undefined;
}

function pe(read: ReadAt, size: number): ByteRange | undefined {
  const dos = read(0, 64);
  if (dos.length < 64) return undefined;
  const at = dos.readUInt32LE(0x3c);
  const coff = read(at, 24);
  if (coff.length < 24 || coff.readUInt32LE(0) !== 0x00004550) return undefined; // "PE\0\0"
  const sections = coff.readUInt16LE(6);
  const table = at + 24 + coff.readUInt16LE(20);
  const rows = read(table, sections * 40);
  for (let i = 0; i + 40 <= rows.length; i++) {
    const row = rows.subarray(i * 40, i * 40 + 40);
    if (row.length < 40) break;
    const name = row.toString('latin1', 0, 8).replace(/\0+$/, '');
    if (name !== BUN_SECTION) continue;
    const start = row.readUInt32LE(20);
    return within({ start, end: start + row.readUInt32LE(16) }, size);
  }
  return undefined;
}

function macho(read: ReadAt, size: number): ByteRange | undefined {
  const head = read(0, 32);
  if (head.length < 32) return undefined;
  const ncmds = head.readUInt32LE(16);
  const sizeofcmds = head.readUInt32LE(20);
  if (ncmds > MAX_ENTRIES || 32 + sizeofcmds > size) return undefined;
  const commands = read(32, sizeofcmds);
  for (let at = 0, i = 0; i < ncmds && at + 8 <= commands.length; i++) {
    const cmd = commands.readUInt32LE(at);
    const cmdsize = commands.readUInt32LE(at + 4);
    if (cmdsize < 8) return undefined;
    // LC_SEGMENT_64: segname at 8, fileoff at 40, filesize at 48.
    if (cmd === 0x19 && at + 56 <= commands.length && commands.toString('latin1', at + 8, at + 24).replace(/\0+$/, '') === BUN_SEGMENT) {
      const start = Number(commands.readBigUInt64LE(at + 40));
      return within({ start, end: start + Number(commands.readBigUInt64LE(at + 48)) }, size);
    }
    at += cmdsize;
  }
  return undefined;
}

/**
 * The program's bytes in a Bun standalone executable (ELF, PE or 64-bit Mach-O), or
 * `undefined` for any other file (and for a header that does not hold together).
 */
export function bunProgramRange(read: ReadAt, size: number): ByteRange | undefined {
  const magic = read(0, 4);
  if (magic.length < 4) return undefined;
  try {
    if (magic.readUInt32BE(0) === 0x7f454c46) return elf(read, size);
    if (magic[0] === 0x4d && magic[1] === 0x5a) return pe(read, size);
    if (magic.readUInt32LE(0) === 0xfeedfacf) return macho(read, size);
  } catch {
    // A header whose offsets point past what was read: not an executable to read this way.
  }
  return undefined;
}
