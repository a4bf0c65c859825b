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

/** The PDF of {@link pdfOf}, encrypted by qpdf with empty passwords (AES-256): any reader opens it, its streams are ciphertext. */
export function encryptedPdfOf(line: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'moat-pdf-'));
  try {
    writeFileSync(join(dir, 'plain.pdf'), pdfOf(line));
    execFileSync('qpdf', ['--encrypt', '', '', '256', '--', join(dir, 'plain.pdf'), join(dir, 'enc.pdf')]);
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
