import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';

/** A one-page PDF showing `line`, made by Ghostscript (ps2pdf): Flate-coded content, a standard font. */
export function pdfOf(line: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'moat-pdf-'));
  try {
    writeFileSync(join(dir, 'in.ps'), `%!PS\n/Helvetica findfont 11 scalefont setfont\n72 700 moveto (${line}) show\nshowpage\n`);
    execFileSync('ps2pdf', [join(dir, 'in.ps'), join(dir, 'out.pdf')]);
    return readFileSync(join(dir, 'out.pdf'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The PDF of {@link pdfOf}, encrypted by qpdf with empty passwords: any reader opens it, its
 * streams are ciphertext — AES-256 by default, RC4 (128 bits) with `'rc4'`.
 */
export function encryptedPdfOf(line: string, cipher: 'aes-256' | 'rc4' = 'aes-256'): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'moat-pdf-'));
  try {
    writeFileSync(join(dir, 'plain.pdf'), pdfOf(line));
    const how = cipher === 'rc4' ? ['--allow-weak-crypto', '--encrypt', '', '', '128', '--use-aes=n'] : ['--encrypt', '', '', '256'];
    execFileSync('qpdf', [...how, '--', join(dir, 'plain.pdf'), join(dir, 'enc.pdf')]);
    return readFileSync(join(dir, 'enc.pdf'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A PDF of one Flate stream that inflates to `padding` bytes shown before `line` (a few KiB on the wire). */
export function paddedPdf(padding: number, line: string): Buffer {
  const data = deflateSync(Buffer.from(`BT (${'a'.repeat(padding)}) Tj ET BT (${line}) Tj ET`, 'latin1'));
  return Buffer.concat([
    Buffer.from(`%PDF-1.4\n1 0 obj\n<</Filter /FlateDecode /Length ${data.length}>> stream\n`),
    data,
    Buffer.from('\nendstream\nendobj\n%%EOF\n'),
  ]);
}

/**
 * A PDF of one unfiltered content stream placing `glyphs` letters one by one (`1 0 Td (a) Tj`),
 * then showing `line`: slow to read for its size (about 14 bytes a glyph), none of it compressed.
 */
export function glyphPdf(glyphs: number, line: string): Buffer {
  const content = Buffer.from(`BT /F1 1 Tf ${'1 0 Td (a) Tj '.repeat(glyphs)}ET BT /F1 1 Tf 0 -20 Td (${line}) Tj ET`, 'latin1');
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>',
  ].map((o) => Buffer.from(o, 'latin1'));
  objects.push(Buffer.concat([Buffer.from(`<< /Length ${content.length} >>\nstream\n`), content, Buffer.from('\nendstream')]));
  const parts: Buffer[] = [Buffer.from('%PDF-1.7\n')];
  let length = parts[0]?.length ?? 0;
  const offsets: number[] = [];
  for (const [i, o] of objects.entries()) {
    offsets.push(length);
    const part = Buffer.concat([Buffer.from(`${i + 1} 0 obj\n`), o, Buffer.from('\nendobj\n')]);
    parts.push(part);
    length += part.length;
  }
  const xref = offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`).join('');
  parts.push(
    Buffer.from(
      `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${xref}trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${length}\n%%EOF\n`,
    ),
  );
  return Buffer.concat(parts);
}
