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
