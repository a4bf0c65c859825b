import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { launchChromium } from '@moat/test-kit/browser';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { base64Text } from './base64-text.js';
import { pdfText, type TextCut } from './pdf-text.js';

const dir = mkdtempSync(join(tmpdir(), 'moat-pdf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A PDF made by Ghostscript from PostScript (lines with PostScript's own escapes): standard fonts, literal strings, Flate streams. */
function ghostscriptPdf(lines: readonly string[]): Buffer {
  const ps = [
    '%!PS',
    '/Courier findfont 11 scalefont setfont',
    ...lines.map((line, i) => `72 ${700 - 16 * i} moveto (${line.replace(/[()]/g, (c) => `\\${c}`)}) show`),
    'showpage',
  ].join('\n');
  writeFileSync(join(dir, 'in.ps'), ps);
  execFileSync('ps2pdf', [join(dir, 'in.ps'), join(dir, 'gs.pdf')]);
  return readFileSync(join(dir, 'gs.pdf'));
}

/** The same PDF rewritten by qpdf with its objects in object streams (PDF 1.5), as many writers now save. */
function objectStreams(pdf: Buffer): Buffer {
  writeFileSync(join(dir, 'plain.pdf'), pdf);
  execFileSync('qpdf', ['--object-streams=generate', '--compress-streams=y', join(dir, 'plain.pdf'), join(dir, 'objstm.pdf')]);
  return readFileSync(join(dir, 'objstm.pdf'));
}

/** A minimal PDF around content streams, each Flate-coded, and extra objects (fonts, CMaps). */
function handMade(contents: readonly string[], extra: ReadonlyArray<[number, string]> = []): Buffer {
  const parts: Buffer[] = [Buffer.from('%PDF-1.4\n')];
  contents.forEach((content, i) => {
    const data = deflateSync(Buffer.from(content, 'latin1'));
    parts.push(
      Buffer.from(`${10 + i} 0 obj\n<</Filter /FlateDecode /Length ${data.length}>> stream\n`),
      data,
      Buffer.from('\nendstream\nendobj\n'),
    );
  });
  for (const [num, body] of extra) parts.push(Buffer.from(`${num} 0 obj\n${body}\nendobj\n`, 'latin1'));
  parts.push(Buffer.from('%%EOF\n'));
  return Buffer.concat(parts);
}

const cmapStream = (num: number, cmap: string) => {
  const data = deflateSync(Buffer.from(`/CIDInit /ProcSet findresource begin\nbegincmap\n${cmap}\nendcmap\nend`, 'latin1'));
  return Buffer.concat([
    Buffer.from(`${num} 0 obj\n<</Filter /FlateDecode /Length ${data.length}>> stream\n`),
    data,
    Buffer.from('\nendstream\nendobj\n'),
  ]);
};

describe('pdfText', () => {
  it('reads what Ghostscript’s PDFs show, in object streams too', () => {
    const pdf = ghostscriptPdf(['The agent called revalidate_secondary_cohorts today.', 'Caf\\351 (and) more: bkt_nbbku65w']);
    for (const file of [pdf, objectStreams(pdf)]) {
      const texts = pdfText(file);
      expect(texts).toContain('The agent called revalidate_secondary_cohorts today.');
      expect(texts).toContain('Café (and) more: bkt_nbbku65w');
    }
  });

  it('reads what Chromium’s PDFs show: hex glyph ids through each font’s ToUnicode map', async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.setContent(
        '<h1>Quarterly notes</h1><p>The agent called revalidate_secondary_cohorts and got <code>bkt_nbbku65w</code> back.</p><p>Résumé ümlaut — done.</p>',
      );
      const texts = pdfText(await page.pdf());

      expect(texts).toContain('Quarterly notes');
      expect(texts.join(' ')).toContain('The agent called revalidate_secondary_cohorts and got');
      expect(texts).toContain('bkt_nbbku65w');
      expect(texts).toContain('Résumé ümlaut — done.');
    } finally {
      await browser.close();
    }
  });

  it('joins a TJ array into words, reads hex strings through the font’s ToUnicode map (bfchar, bfrange, arrays)', () => {
    // Codes 0x0044.. are glyph ids, as browsers write them; the map gives their text.
    const cmap =
      '1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n' +
      '2 beginbfchar\n<0003> <0020>\n<0042> <005F>\nendbfchar\n' +
      '2 beginbfrange\n<0044> <005D> <0061>\n<0100> <0101> [<0041> <0042>]\nendbfrange';
    const hex = (text: string) =>
      [...text]
        .map((c) => (c === ' ' ? '0003' : c === '_' ? '0042' : (c.charCodeAt(0) - 0x61 + 0x44).toString(16).padStart(4, '0')))
        .join('');
    const content = [
      'BT /F1 12 Tf 1 0 0 1 72 700 Tm',
      `<${hex('rotate_keys')}> Tj ET`,
      'BT /F1 12 Tf [<0100> -20 <0101>] TJ ET',
      'BT /F2 12 Tf [(revali) 12 (date_sec) -10 (ondary) -600 (next) ] TJ ET',
      "BT /F2 12 Tf (esc\\141ped\\051) ' ET",
      // Glyph by glyph, as browsers draw monospace text: a wider move is a space.
      'BT /F2 12 Tf 1 0 0 1 72 600 Tm (a) Tj 7.2 0 Td (b) Tj 7.2 0 Td (_) Tj 7.2 0 Td (c) Tj 14.4 0 Td (d) Tj 0 -14 Td (e) Tj ET',
    ].join('\n');
    const pdf = Buffer.concat([
      handMade(
        [content],
        [
          [2, '<</Type /Page /Resources <</Font <</F1 3 0 R /F2 5 0 R>>>> /Contents 10 0 R>>'],
          [3, '<</Type /Font /Subtype /Type0 /ToUnicode 4 0 R>>'],
          [5, '<</Type /Font /Subtype /Type1 /BaseFont /Helvetica>>'],
        ],
      ),
      cmapStream(4, cmap),
    ]);
    expect(pdfText(pdf)).toEqual(['rotate_keys', 'AB', 'revalidate_secondary next', 'escaped)', 'ab_c d', 'e']);
  });

  it('reads streams in every text coding PDF has (hex, ASCII85, run length, LZW, Flate, chained), as Ghostscript reads them', () => {
    const content = Buffer.from('BT /F1 12 Tf 72 700 Td (the tool rotate_vendor_keys) Tj ET', 'latin1');
    const ascii85 = (bytes: Buffer) => {
      let out = '';
      for (let i = 0; i < bytes.length; i += 4) {
        const chunk = Buffer.concat([bytes.subarray(i, i + 4), Buffer.alloc(4)]).subarray(0, 4);
        let value = chunk.readUInt32BE(0);
        const digits: string[] = [];
        for (let k = 0; k < 5; k++) {
          digits.unshift(String.fromCharCode(33 + (value % 85)));
          value = Math.floor(value / 85);
        }
        out += digits.slice(0, Math.min(4, bytes.length - i) + 1).join('');
      }
      return Buffer.from(`${out}~>`);
    };
    const runLength = (bytes: Buffer) => {
      const parts: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += 128) {
        const run = bytes.subarray(i, i + 128);
        parts.push(Buffer.from([run.length - 1]), run);
      }
      return Buffer.concat([...parts, Buffer.from([128])]);
    };
    // LZW as PDF writes it: 9-bit codes to start, a clear code first, the end code last.
    const lzw = (bytes: Buffer) => {
      const table = new Map<string, number>();
      for (let k = 0; k < 256; k++) table.set(String.fromCharCode(k), k);
      let next = 258;
      let width = 9;
      let bits = '';
      const put = (code: number) => {
        bits += code.toString(2).padStart(width, '0');
      };
      put(256);
      let w = '';
      for (const byte of bytes) {
        const c = String.fromCharCode(byte);
        if (table.has(w + c)) w += c;
        else {
          put(table.get(w) as number);
          table.set(w + c, next++);
          if (next + 1 > 1 << width) width++;
          w = c;
        }
      }
      if (w !== '') put(table.get(w) as number);
      put(257);
      bits = bits.padEnd(Math.ceil(bits.length / 8) * 8, '0');
      return Buffer.from(bits.match(/.{8}/g)?.map((b) => Number.parseInt(b, 2)) ?? []);
    };
    const withStream = (data: Buffer, filter: string) =>
      Buffer.concat([
        Buffer.from(
          '%PDF-1.4\n1 0 obj\n<</Type /Catalog /Pages 2 0 R>>\nendobj\n2 0 obj\n<</Type /Pages /Kids [3 0 R] /Count 1>>\nendobj\n',
        ),
        Buffer.from(
          '3 0 obj\n<</Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources <</Font <</F1 4 0 R>>>> /Contents 5 0 R>>\nendobj\n',
        ),
        Buffer.from('4 0 obj\n<</Type /Font /Subtype /Type1 /BaseFont /Helvetica>>\nendobj\n'),
        Buffer.from(`5 0 obj\n<</Length ${data.length} /Filter ${filter}>>\nstream\n`),
        data,
        Buffer.from('\nendstream\nendobj\ntrailer\n<</Root 1 0 R>>\n%%EOF\n'),
      ]);
    const cases: Array<[string, Buffer]> = [
      ['/ASCIIHexDecode', Buffer.from(`${content.toString('hex')}>`)],
      ['/AHx', Buffer.from(`${content.toString('hex').replace(/(..)/g, '$1 ')}>`)],
      ['/ASCII85Decode', ascii85(content)],
      ['/RunLengthDecode', runLength(content)],
      ['/LZWDecode', lzw(content)],
      ['[/ASCII85Decode /FlateDecode]', ascii85(deflateSync(content))],
      ['[/ASCIIHexDecode /LZWDecode]', Buffer.from(`${lzw(content).toString('hex')}>`)],
    ];
    for (const [filter, data] of cases) {
      const pdf = withStream(data, filter);
      writeFileSync(join(dir, 'coded.pdf'), pdf);
      // Ghostscript reads the same words: the file is a PDF as readers take it, not one only this reader takes.
      const gs = execFileSync('gs', ['-q', '-dNOPAUSE', '-dBATCH', '-sDEVICE=txtwrite', '-sOutputFile=-', join(dir, 'coded.pdf')], {
        encoding: 'utf8',
      });
      expect(gs, filter).toContain('rotate_vendor_keys');
      expect(pdfText(pdf).join(' '), filter).toContain('the tool rotate_vendor_keys');
      // Behind an image's header, as readers take a PDF too.
      expect(
        base64Text('image/png', Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), pdf]).toString('base64')),
        filter,
      ).toContain('rotate_vendor_keys');
    }
  });

  it("reads a simple font's /Differences as readers do: codes renamed to other glyphs show those glyphs, inline or in an encoding object", () => {
    // Codes A… renamed to the glyphs of "rotate_vendor_keys": the bytes say one thing, the page shows another.
    const differences = '[65 /r /o /t /a /e /underscore /v /n /d /k /y /s]';
    const content = Buffer.from('BT /F1 12 Tf 72 700 Td (the tool ABCDCEFGEHIBAFJEKL here) Tj ET', 'latin1');
    const withFont = (font: string, extra = '') =>
      Buffer.concat([
        Buffer.from(
          '%PDF-1.4\n1 0 obj\n<</Type /Catalog /Pages 2 0 R>>\nendobj\n2 0 obj\n<</Type /Pages /Kids [3 0 R] /Count 1>>\nendobj\n' +
            '3 0 obj\n<</Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources <</Font <</F1 4 0 R>>>> /Contents 5 0 R>>\nendobj\n' +
            `4 0 obj\n${font}\nendobj\n${extra}5 0 obj\n<</Length ${content.length}>>\nstream\n`,
        ),
        content,
        Buffer.from('\nendstream\nendobj\ntrailer\n<</Root 1 0 R>>\n%%EOF\n'),
      ]);
    const variants: Array<[string, Buffer]> = [
      [
        'inline',
        withFont(`<</Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding <</Type /Encoding /Differences ${differences}>>>>`),
      ],
      [
        'an encoding object',
        withFont(
          '<</Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding 6 0 R>>',
          `6 0 obj\n<</Type /Encoding /BaseEncoding /WinAnsiEncoding /Differences ${differences}>>\nendobj\n`,
        ),
      ],
    ];
    for (const [where, pdf] of variants) {
      writeFileSync(join(dir, 'differences.pdf'), pdf);
      const gs = execFileSync('gs', ['-q', '-dNOPAUSE', '-dBATCH', '-sDEVICE=txtwrite', '-sOutputFile=-', join(dir, 'differences.pdf')], {
        encoding: 'utf8',
      });
      expect(gs, where).toContain('the tool rotate_vendor_keys here');
      expect(pdfText(pdf).join(' '), where).toContain('the tool rotate_vendor_keys here');
    }
  });

  it('reads names as they spell out: #xx escapes in filters, types and font names', () => {
    const content = deflateSync(Buffer.from('BT /F#31 12 Tf 72 700 Td <0102> Tj ET', 'latin1'));
    const cmap = deflateSync(
      Buffer.from(
        '/CIDInit /ProcSet findresource begin\nbegincmap\n1 begincodespacerange <00> <ff> endcodespacerange\n2 beginbfchar <01> <0068> <02> <0069> endbfchar\nendcmap\nend',
        'latin1',
      ),
    );
    const pdf = Buffer.concat([
      Buffer.from('%PDF-1.4\n3 0 obj\n<</Type /Page /Resources <</F#6fnt <</F1 4 0 R>>>> /Contents 5 0 R>>\nendobj\n'),
      Buffer.from('4 0 obj\n<</Type /Font /Subtype /Type1 /BaseFont /Helvetica /To#55nicode 6 0 R>>\nendobj\n'),
      Buffer.from(`5 0 obj\n<</Length ${content.length} /Filter /Fl#61te#44ecode>>\nstream\n`),
      content,
      Buffer.from(`\nendstream\nendobj\n6 0 obj\n<</Length ${cmap.length} /Filter /#46lateDecode>>\nstream\n`),
      cmap,
      Buffer.from('\nendstream\nendobj\n%%EOF\n'),
    ]);
    expect(pdfText(pdf)).toEqual(['hi']);
  });

  it('reads text drawn out of reading order as a reader shows it: halves swapped, in two text objects, letters right to left', () => {
    const name = 'rotate_vendor_keys';
    const head = 'rotate_vendor_';
    const tail = 'keys';
    const page = (content: string) =>
      Buffer.concat([
        Buffer.from(
          '%PDF-1.4\n1 0 obj\n<</Type /Catalog /Pages 2 0 R>>\nendobj\n2 0 obj\n<</Type /Pages /Kids [3 0 R] /Count 1>>\nendobj\n' +
            '3 0 obj\n<</Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources <</Font <</F1 4 0 R>>>> /Contents 5 0 R>>\nendobj\n' +
            '4 0 obj\n<</Type /Font /Subtype /Type1 /BaseFont /Courier>>\nendobj\n' +
            `5 0 obj\n<</Length ${content.length}>>\nstream\n${content}\nendstream\nendobj\ntrailer\n<</Root 1 0 R>>\n%%EOF\n`,
        ),
      ]);
    // Courier: 7.2 points a character at 12.
    const at = (n: number) => 72 + n * 7.2;
    const variants: Array<[string, string]> = [
      ['halves swapped', `BT /F1 12 Tf 1 0 0 1 ${at(head.length)} 700 Tm (${tail}) Tj 1 0 0 1 72 700 Tm (see ${head}) Tj ET`],
      ['two text objects', `BT /F1 12 Tf 72 700 Td (see ${head}) Tj ET BT /F1 12 Tf ${at(4 + head.length)} 700 Td (${tail} now) Tj ET`],
      [
        'letters right to left',
        `BT /F1 12 Tf ${[...name]
          .map((c, k) => ({ c, k }))
          .reverse()
          .map(({ c, k }) => `1 0 0 1 ${at(k)} 700 Tm (${c}) Tj`)
          .join(' ')} ET`,
      ],
    ];
    for (const [where, content] of variants) {
      const pdf = page(content);
      writeFileSync(join(dir, 'order.pdf'), pdf);
      const gs = execFileSync('gs', ['-q', '-dNOPAUSE', '-dBATCH', '-sDEVICE=txtwrite', '-sOutputFile=-', join(dir, 'order.pdf')], {
        encoding: 'utf8',
      });
      // Ghostscript shows the name whole: what a reader, and a model, reads.
      expect(gs.replace(/\s+/g, ''), where).toContain(name);
      expect(
        pdfText(pdf)
          .join(' ')
          .split(/[^A-Za-z0-9_]+/),
        where,
      ).toContain(name);
    }
    // Drawn in reading order, nothing more is read.
    expect(pdfText(page(`BT /F1 12 Tf 72 700 Td (one) Tj (two) Tj ET`))).toEqual(['one two']);
  });

  it('reads text placed glyph by glyph with a text matrix each, as one line', () => {
    const glyphs = [...'call rotate_vendor_keys'].map((c, i) => `1 0 0 1 ${72 + 7 * i} 700 Tm (${c}) Tj`).join(' ');
    expect(pdfText(handMade([`BT /F1 12 Tf ${glyphs} 1 0 0 1 72 680 Tm (next) Tj ET`]))).toEqual(['call rotate_vendor_keys', 'next']);
  });

  it('stays within its bounds: a zip bomb, a truncated stream, the characters asked for', () => {
    const bomb = handMade([`BT (${'a'.repeat(20_000_000)}) Tj ET`, 'BT (after the bomb) Tj ET']);
    expect(bomb.length).toBeLessThan(100_000);
    const texts = pdfText(bomb, { maxInflatedBytes: 1_000_000 });
    expect(texts.join('').length).toBeLessThan(1_000_000);
    const truncated = handMade(['BT (cut short) Tj ET']);
    expect(pdfText(truncated.subarray(0, truncated.indexOf('endstream') - 4))).toEqual([]);
    expect(pdfText(handMade(['BT (one two three four) Tj ET']), { maxChars: 7 })).toEqual(['one two']);
  });

  it('reads hostile bytes in one pass: long digit runs, unclosed dictionaries, sections, strings and streams', () => {
    // Each of these took a search from every position to the end (quadratic) before its bound.
    const hostile = [
      Buffer.from(`%PDF-1.4\n${'1'.repeat(2_000_000)}`),
      Buffer.from(`%PDF-1.4\n1 0 obj\n${'/Font<<'.repeat(300_000)}`),
      Buffer.from(`%PDF-1.4\n${'1 0 obj\n'.repeat(250_000)}`),
      Buffer.from(`%PDF-1.4\n1 0 obj\n<<>>${'stream\n'.repeat(300_000)}endstream`),
      handMade([`begincmap ${'beginbfchar <0041'.repeat(100_000)}`]),
      handMade([`begincmap beginbfrange ${'<00> <ff> ['.repeat(300_000)}`]),
      handMade([`BT ${'[('.repeat(200_000)} TJ ${'<'.repeat(200_000)}`]),
    ];
    for (const pdf of hostile) expect(Array.isArray(pdfText(pdf))).toBe(true);
  });

  it('shares one inflate budget over the PDFs of one read: a request of many zip bombs inflates what the budget allows, no more', () => {
    const bomb = (word: string) => handMade([`BT (${'a'.repeat(8_000_000)}) Tj ET`, `BT (${word}) Tj ET`]);
    const shared = { inflateLeft: 20_000_000 };
    const found = Array.from({ length: 6 }, (_, i) => pdfText(bomb(`word${i}`), { shared }).some((t) => t === `word${i}`));
    // Two bombs fit in 20 MB; the third finds the budget too small, which spends it: from then on nothing is inflated.
    expect(found).toEqual([true, true, false, false, false, false]);
    expect(shared.inflateLeft).toBe(0);
  });

  it('says where it was cut: a stream past 16 MiB, a spent budget, an encrypted file, the characters asked for; nothing for a whole read', () => {
    const read = (pdf: Buffer, limits: Parameters<typeof pdfText>[1] = {}) => {
      const cuts = new Set<TextCut>();
      const texts = pdfText(pdf, { ...limits, cuts });
      return { texts, cuts: [...cuts].sort() };
    };
    const plain = ghostscriptPdf(['nothing was cut here']);
    expect(read(plain)).toEqual({ texts: ['nothing was cut here'], cuts: [] });
    expect(read(objectStreams(plain)).cuts).toEqual([]);
    // One stream of 20 MB: decoded to 16 MiB, the rest cut; the stream after it is still read.
    const big = read(handMade([`BT (${'a'.repeat(20_000_000)}) Tj ET`, 'BT (after the big one) Tj ET']));
    expect(big.cuts).toEqual(['pdf_stream_cap']);
    expect(big.texts).toContain('after the big one');
    // A budget smaller than the stream, then none left for the next.
    expect(read(handMade(['BT (first words) Tj ET', 'BT (second words) Tj ET']), { shared: { inflateLeft: 10 } }).cuts).toEqual([
      'pdf_inflate_budget',
    ]);
    expect(read(handMade(['BT (one two three four) Tj ET', 'BT (five six) Tj ET']), { maxChars: 7 }).cuts).toEqual(['chars']);
    // Encrypted by qpdf: with the empty user password (which any reader opens) and AES, read
    // decrypted; with RC4 (not in this runtime) or a user password, not read, and said so.
    writeFileSync(join(dir, 'plain.pdf'), plain);
    const encrypted = (...args: string[]) => {
      execFileSync('qpdf', ['--allow-weak-crypto', '--encrypt', ...args, '--', join(dir, 'plain.pdf'), join(dir, 'enc.pdf')]);
      return read(readFileSync(join(dir, 'enc.pdf')));
    };
    const whole = { texts: ['nothing was cut here'], cuts: [] };
    expect(encrypted('', '', '256')).toEqual(whole); // AES-256, revision 6
    expect(encrypted('', 'owner', '256')).toEqual(whole); // an owner password changes nothing for readers
    expect(encrypted('', '', '128', '--use-aes=y')).toEqual(whole); // AES-128, revision 4
    expect(encrypted('', '', '128', '--use-aes=y', '--cleartext-metadata')).toEqual(whole);
    writeFileSync(join(dir, 'plain.pdf'), objectStreams(plain));
    expect(encrypted('', '', '256')).toEqual(whole); // object streams, encrypted
    writeFileSync(join(dir, 'plain.pdf'), plain);
    // Names spelt with #xx escapes mean what they spell: `/Encr#79pt` is `/Encrypt`.
    const respelt = (pdf: Buffer) => Buffer.from(pdf.toString('latin1').replaceAll('/Encrypt', '/Encr#79pt'), 'latin1');
    encrypted('', '', '256');
    expect(read(respelt(readFileSync(join(dir, 'enc.pdf'))))).toEqual(whole);
    encrypted('', '', '128', '--use-aes=n');
    expect(read(respelt(readFileSync(join(dir, 'enc.pdf'))))).toEqual({ texts: [], cuts: ['pdf_encrypted'] });
    for (const args of [
      ['', '', '128', '--use-aes=n'], // RC4
      ['', '', '40'], // RC4, 40 bits
      ['user', 'owner', '256'], // a user password: not meant to be read by anyone without it
      ['user', 'owner', '128', '--use-aes=y'],
    ])
      expect(encrypted(...args), args.join(' ')).toEqual({ texts: [], cuts: ['pdf_encrypted'] });
  });

  it('throws nothing on any bytes, a real PDF (plain or encrypted) cut or altered anywhere included', () => {
    const pdf = ghostscriptPdf(['some words here']);
    writeFileSync(join(dir, 'plain.pdf'), pdf);
    execFileSync('qpdf', ['--encrypt', '', '', '256', '--', join(dir, 'plain.pdf'), join(dir, 'enc.pdf')]);
    const encrypted = readFileSync(join(dir, 'enc.pdf'));
    const altered = (original: Buffer) =>
      fc.tuple(fc.nat(original.length - 1), fc.nat(255), fc.nat(original.length)).map(([at, byte, cut]) => {
        const copy = Buffer.from(original);
        copy[at] = byte;
        return copy.subarray(0, cut);
      });
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.concat([Buffer.from('%PDF-1.4\nstream\n'), Buffer.from(b)])),
          fc.string().map((t) => handMade([t])),
          fc
            .string({ maxLength: 300 })
            .map((dict) => Buffer.from(`%PDF-1.4\ntrailer << /Encrypt << /Filter /Standard ${dict} >> >>\nstream\nxx\nendstream\n`)),
          altered(pdf),
          altered(encrypted),
        ),
        (bytes) => {
          expect(Array.isArray(pdfText(bytes))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('base64Text', () => {
  const words = 'the decoy revalidate_secondary_cohorts and bkt_nbbku65w';
  it('reads text whatever media type it claims or lacks: UTF-8, UTF-16 with and without a byte order mark, a PDF', () => {
    const utf16le = Buffer.from(words, 'utf16le');
    const utf16be = Buffer.from(utf16le).swap16();
    const cases: Array<[unknown, Buffer]> = [
      ['text/plain', Buffer.from(words)],
      ['application/octet-stream', Buffer.from(words)],
      [undefined, Buffer.from(words)],
      ['application/x-ndjson', Buffer.from(`{"a":"${words}"}\n`)],
      ['text/plain; charset=utf-16', Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le])],
      ['text/plain', Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be])],
      ['text/plain; charset=UTF-16LE', utf16le],
      ['application/octet-stream', utf16le],
      ['text/plain', utf16be],
      ['application/pdf', ghostscriptPdf([words])],
      ['text/plain', ghostscriptPdf([words])],
      ['text/plain; charset=iso-8859-1', Buffer.from(`${words} caf\xe9`, 'latin1')],
    ];
    for (const [type, bytes] of cases) expect(base64Text(type, bytes.toString('base64')), String(type)).toContain(words);
  });

  it('decodes no image and no binary payload', () => {
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from(words)]);
    expect(base64Text('image/png', png.toString('base64'))).toBeUndefined();
    expect(base64Text('application/octet-stream', Buffer.from([0, 1, 2, 3, 0xff, 0xfe, 7, 8]).toString('base64'))).toBeUndefined();
    expect(
      base64Text('application/octet-stream', Buffer.from(`\u0001\u0002\u0003${'\u0004'.repeat(10)}x`).toString('base64')),
    ).toBeUndefined();
    expect(base64Text('text/plain', '')).toBeUndefined();
    fc.assert(
      fc.property(fc.string(), fc.uint8Array({ maxLength: 300 }), (type, bytes) => {
        const text = base64Text(type, Buffer.from(bytes).toString('base64'));
        expect(text === undefined || typeof text === 'string').toBe(true);
      }),
    );
  });
});
