import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
