import { isUtf8 } from 'node:buffer';
import { type PdfTextLimits, pdfText, type TextCut } from './pdf-text.js';

/** The first bytes of the image formats the API takes (PNG, JPEG, GIF, WebP's RIFF). */
const IMAGE_MAGIC = [Buffer.from([0x89, 0x50, 0x4e, 0x47]), Buffer.from([0xff, 0xd8, 0xff]), Buffer.from('GIF8'), Buffer.from('RIFF')];

/** What {@link base64Text} and {@link documentText} may spend. */
export interface DocumentTextOptions {
  /** Characters returned at most (default: no bound but the PDF reader's own, 1 MiB). */
  readonly maxChars?: number;
  /** Bytes the PDFs of one request may still inflate together, counted down (see {@link PdfTextLimits}). */
  readonly shared?: { inflateLeft: number };
  /** Where the read was cut ({@link TextCut}), added to as it goes. */
  readonly cuts?: Set<TextCut>;
}

/** Whether bytes are a PDF: its header in the first KiB, where readers look for it (anything may come before). */
const isPdf = (bytes: Buffer): boolean => bytes.subarray(0, 1024).includes('%PDF-');

/** The type and subtype of a media type, and its `charset` parameter, lower-cased. */
function mediaTypeOf(mediaType: unknown): { type: string; charset: string } {
  if (typeof mediaType !== 'string') return { type: '', charset: '' };
  const [type, ...params] = mediaType.split(';');
  const charset = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('charset='));
  return { type: (type as string).trim().toLowerCase(), charset: (charset ?? '').slice(8).replace(/^"|"$/g, '') };
}

/** Whether a media type names text (parameters and letter case aside): `text/*`, JSON, XML, YAML, NDJSON. */
function isTextType(type: string): boolean {
  return (
    type.startsWith('text/') ||
    /^application\/(json|xml|yaml|x-yaml|x-ndjson|ndjson|jsonl|javascript|x-sh|sql)$/.test(type) ||
    type.endsWith('+json') ||
    type.endsWith('+xml') ||
    type.endsWith('+yaml')
  );
}

/** The UTF-16 a byte order mark names, if the bytes start with one. */
const byteOrderMark = (bytes: Uint8Array): 'utf-16le' | 'utf-16be' | undefined =>
  bytes[0] === 0xff && bytes[1] === 0xfe ? 'utf-16le' : bytes[0] === 0xfe && bytes[1] === 0xff ? 'utf-16be' : undefined;

/**
 * Which UTF-16 bytes are in, if they are: the one their byte order mark names, else the one
 * where the zero bytes of Latin text fall.
 */
export function utf16Of(bytes: Uint8Array): 'utf-16le' | 'utf-16be' | undefined {
  return byteOrderMark(bytes) ?? utf16Order(bytes);
}

/** UTF-16 without a byte order mark, by where its zero bytes fall: little-endian, big-endian, or neither. */
function utf16Order(bytes: Uint8Array): 'utf-16le' | 'utf-16be' | undefined {
  const n = Math.min(bytes.length, 4096) & ~1;
  if (n < 4) return undefined;
  let even = 0;
  let odd = 0;
  for (let i = 0; i < n; i += 2) {
    if (bytes[i] === 0) even++;
    if (bytes[i + 1] === 0) odd++;
  }
  // Mostly Latin text in UTF-16 has a zero in nearly every other byte.
  if (odd > 0.3 * (n / 2) && even < 0.05 * (n / 2)) return 'utf-16le';
  if (even > 0.3 * (n / 2) && odd < 0.05 * (n / 2)) return 'utf-16be';
  return undefined;
}

/** Whether decoded text reads as text: no NUL, few other control characters. */
function looksLikeText(text: string): boolean {
  let control = 0;
  const n = Math.min(text.length, 65_536);
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0) return false;
    if (c < 0x20 && c !== 9 && c !== 10 && c !== 13 && c !== 12) control++;
  }
  return control <= n / 100;
}

/**
 * The text a base64 payload carries, whatever media type it claims or lacks: UTF-16 (a byte
 * order mark, a `charset=utf-16…`, or its zero bytes), a PDF's shown text ({@link pdfText}),
 * or UTF-8 that reads as text — a declared text type, or any type (`application/octet-stream`,
 * none) whose bytes are text. Images and other binary payloads give `undefined`. At most
 * `options.maxChars` characters are returned; the PDFs of one request share `options.shared`.
 *
 * @example
 * ```ts
 * base64Text('text/plain; charset=utf-16', data); // the document's words
 * base64Text('application/pdf', pdfBase64);       // what the PDF shows
 * ```
 */
export function base64Text(mediaType: unknown, data: string, options: DocumentTextOptions = {}): string | undefined {
  // An image is not decoded whole to learn it is one: its first bytes say so (a PDF may sit behind an image's header, as readers take it).
  const head = Buffer.from(data.slice(0, 1368), 'base64');
  if (!isPdf(head) && IMAGE_MAGIC.some((magic) => head.subarray(0, magic.length).equals(magic))) return undefined;
  return documentText(mediaType, Buffer.from(data, 'base64'), options);
}

/**
 * The text a document's bytes carry (an uploaded file, a decoded payload), read as
 * {@link base64Text} reads a base64 one: UTF-16, a PDF's shown text, UTF-8 that reads as text;
 * `undefined` for images and other binary bytes.
 *
 * @example
 * ```ts
 * documentText('application/pdf', readFileSync('report.pdf')); // what the PDF shows
 * ```
 */
export function documentText(mediaType: unknown, document: Uint8Array, options: DocumentTextOptions = {}): string | undefined {
  const maxChars = options.maxChars ?? Number.POSITIVE_INFINITY;
  const bytes = Buffer.from(document.buffer, document.byteOffset, document.byteLength);
  const { type, charset } = mediaTypeOf(mediaType);
  if (bytes.length === 0) return undefined;
  const cap = (text: string) => {
    if (text.length <= maxChars) return text;
    options.cuts?.add('chars');
    return text.slice(0, maxChars);
  };
  if (isPdf(bytes)) {
    const texts = pdfText(bytes, {
      ...(Number.isFinite(maxChars) ? { maxChars } : {}),
      ...(options.shared === undefined ? {} : { shared: options.shared }),
      ...(options.cuts === undefined ? {} : { cuts: options.cuts }),
    });
    return texts.length === 0 ? undefined : texts.join('\n');
  }
  if (IMAGE_MAGIC.some((magic) => bytes.subarray(0, magic.length).equals(magic))) return undefined;
  const declared = charset.startsWith('utf-16') ? (charset === 'utf-16be' ? 'utf-16be' : 'utf-16le') : undefined;
  const order = byteOrderMark(bytes) ?? declared ?? utf16Order(bytes);
  if (order !== undefined) {
    const text = new TextDecoder(order).decode(bytes);
    return looksLikeText(text) ? cap(text) : undefined;
  }
  // Not UTF-8: a declared text type in another charset (Latin-1 and the like) is still read, byte for character.
  if (!isUtf8(bytes)) return isTextType(type) ? cap(bytes.toString('latin1')) : undefined;
  const text = bytes.toString('utf8');
  return isTextType(type) || looksLikeText(text) ? cap(text) : undefined;
}
