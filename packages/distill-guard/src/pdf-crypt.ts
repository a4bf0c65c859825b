import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { escapedName, hexBytes, literalString, unescapeNames } from './pdf-strings.js';

/**
 * Decrypts the streams of a PDF encrypted with the standard security handler under the empty
 * user password — what every reader opens without asking, so what an encrypted document shows
 * anyone. AES only (`AESV2`, `AESV3`: revisions 4 to 6): RC4 (revisions 2 and 3, `V2`) is not
 * in this runtime's OpenSSL, and a document with a user password cannot be read by design.
 */
export interface PdfDecryptor {
  /** The stream's data decrypted, `undefined` when it does not decrypt (not encrypted, another key). */
  decrypt(data: Buffer, objnum: number, gen: number): Buffer | undefined;
}

/** The padding string of the standard security handler (ISO 32000-1, 7.6.3.3, algorithm 2). */
const PASSWORD_PAD = Buffer.from('28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a', 'hex');

// Bounded runs only: the dictionary is read from a few KiB of the file at most.
// The names as a file may spell them (`/Encr#79pt` is `/Encrypt`).
const ENCRYPT = escapedName('Encrypt');
const ENCRYPT_REF_RE = new RegExp(`/${ENCRYPT}[ \\t\\r\\n]{0,16}(\\d{1,10})[ \\t\\r\\n]{1,16}(\\d{1,5})[ \\t\\r\\n]{1,16}R`);
const ENCRYPT_INLINE_RE = new RegExp(`/${ENCRYPT}[ \\t\\r\\n]{0,16}<<`);
const ID_RE = new RegExp(`/${escapedName('ID')}[ \\t\\r\\n]{0,16}\\[[ \\t\\r\\n]{0,16}(<[0-9a-fA-F \\t\\r\\n]{0,512}>|\\()`);

/**
 * How a PDF is encrypted: `undefined` when it is not, `'unsupported'` when it is and this
 * reader cannot decrypt it (RC4, another handler, a user password), else its decryptor.
 */
export function pdfDecryptor(raw: string): PdfDecryptor | 'unsupported' | undefined {
  const found = encryptDictionary(raw);
  if (found === undefined) return undefined;
  if (found === 'unknown') return 'unsupported';
  const dict = unescapeNames(found);
  if (!/\/Filter[ \t\r\n]{0,16}\/Standard\b/.test(dict)) return 'unsupported';
  const v = intOf(dict, 'V');
  const r = intOf(dict, 'R');
  const method = /\/CFM[ \t\r\n]{0,16}\/(\w{1,16})/.exec(dict)?.[1];
  // Streams left unencrypted by their crypt filter.
  if (/\/StmF[ \t\r\n]{0,16}\/Identity\b/.test(dict)) return { decrypt: () => undefined };
  const u = stringOf(dict, 'U');
  if (u === undefined) return 'unsupported';
  try {
    if (v === 5 && (r === 5 || r === 6) && method === 'AESV3') {
      const ue = stringOf(dict, 'UE');
      if (ue === undefined || u.length < 48 || ue.length < 32) return 'unsupported';
      const hash = r === 6 ? hash2B : (password: Buffer, salt: Buffer) => sha('sha256', Buffer.concat([password, salt]));
      const empty = Buffer.alloc(0);
      // The empty password opens it only when it validates against U.
      if (!hash(empty, u.subarray(32, 40), empty).equals(u.subarray(0, 32))) return 'unsupported';
      const intermediate = hash(empty, u.subarray(40, 48), empty);
      const decipher = createDecipheriv('aes-256-cbc', intermediate, Buffer.alloc(16)).setAutoPadding(false);
      const fileKey = Buffer.concat([decipher.update(ue.subarray(0, 32)), decipher.final()]);
      return aesDecryptor(() => fileKey, 'aes-256-cbc');
    }
    if (v === 4 && r === 4 && method === 'AESV2') {
      const o = stringOf(dict, 'O');
      const p = intOf(dict, 'P');
      const id = idOf(raw);
      if (o === undefined || p === undefined || id === undefined) return 'unsupported';
      const length = 16;
      const md5 = createHash('md5').update(PASSWORD_PAD).update(o.subarray(0, 32));
      const permissions = Buffer.alloc(4);
      permissions.writeInt32LE(p | 0);
      md5.update(permissions).update(id);
      if (/\/EncryptMetadata[ \t\r\n]{0,16}false\b/.test(dict)) md5.update(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      let key = md5.digest();
      for (let i = 0; i < 50; i++) key = createHash('md5').update(key.subarray(0, length)).digest();
      const fileKey = key.subarray(0, length);
      const objectKey = (objnum: number, gen: number) => {
        const ids = Buffer.from([objnum & 0xff, (objnum >> 8) & 0xff, (objnum >> 16) & 0xff, gen & 0xff, (gen >> 8) & 0xff]);
        return createHash('md5')
          .update(fileKey)
          .update(ids)
          .update('sAlT')
          .digest()
          .subarray(0, Math.min(length + 5, 16));
      };
      return aesDecryptor(objectKey, 'aes-128-cbc');
    }
  } catch {
    return 'unsupported';
  }
  return 'unsupported';
}

/** AES-CBC with the IV in the data's first 16 bytes and PKCS #5 padding (ISO 32000-1, 7.6.2). */
function aesDecryptor(keyOf: (objnum: number, gen: number) => Buffer, cipher: 'aes-128-cbc' | 'aes-256-cbc'): PdfDecryptor {
  return {
    decrypt(data, objnum, gen) {
      if (data.length < 32 || data.length % 16 !== 0) return undefined;
      try {
        const decipher = createDecipheriv(cipher, keyOf(objnum, gen), data.subarray(0, 16));
        return Buffer.concat([decipher.update(data.subarray(16)), decipher.final()]);
      } catch {
        // Bad padding: another key, or data that was never encrypted.
        return undefined;
      }
    },
  };
}

/** The hash of revision 6 (ISO 32000-2, 7.6.4.3.4, algorithm 2.B). */
function hash2B(password: Buffer, salt: Buffer, userKey: Buffer): Buffer {
  let k = sha('sha256', Buffer.concat([password, salt, userKey]));
  let e: Buffer = Buffer.from([0]);
  for (let round = 0; round < 64 || (e.at(-1) ?? 0) > round - 32; round++) {
    const k1 = Buffer.concat(Array.from({ length: 64 }, () => Buffer.concat([password, k, userKey])));
    e = createCipheriv('aes-128-cbc', k.subarray(0, 16), k.subarray(16, 32)).setAutoPadding(false).update(k1);
    // The first 16 bytes as a number, mod 3: 256 ≡ 1 (mod 3), so the sum of the bytes mod 3.
    let sum = 0;
    for (let i = 0; i < 16; i++) sum += e[i] as number;
    k = sha((['sha256', 'sha384', 'sha512'] as const)[sum % 3] as string, e);
  }
  return k.subarray(0, 32);
}

const sha = (algorithm: string, data: Buffer): Buffer => createHash(algorithm).update(data).digest();

/** The encryption dictionary's text: inline in the trailer, or its object's; `unknown` when it is referenced and not found. */
function encryptDictionary(raw: string): string | 'unknown' | undefined {
  const ref = ENCRYPT_REF_RE.exec(raw);
  if (ref !== null) {
    const at = new RegExp(`(?<!\\d)${ref[1]}[ \\t\\r\\n]{1,16}${ref[2]}[ \\t\\r\\n]{1,16}obj\\b`).exec(raw);
    if (at === null) return 'unknown';
    return dictionaryAt(raw, raw.indexOf('<<', at.index));
  }
  const inline = ENCRYPT_INLINE_RE.exec(raw);
  return inline === null ? undefined : dictionaryAt(raw, inline.index + inline[0].length - 2);
}

/** The balanced `<< … >>` dictionary that opens at `open`, 8 KiB at most. */
function dictionaryAt(raw: string, open: number): string | 'unknown' {
  if (open < 0) return 'unknown';
  let depth = 0;
  const end = Math.min(raw.length, open + 8192);
  for (let i = open; i < end; i++) {
    if (raw.startsWith('<<', i)) {
      depth++;
      i++;
    } else if (raw.startsWith('>>', i)) {
      depth--;
      i++;
      if (depth === 0) return raw.slice(open, i + 1);
    }
  }
  return 'unknown';
}

function intOf(dict: string, name: string): number | undefined {
  const m = new RegExp(`/${name}[ \\t\\r\\n]{0,16}(-?\\d{1,12})\\b`).exec(dict);
  return m === null ? undefined : Number(m[1]);
}

/** A string entry's bytes: hex (`<…>`) or literal (`(…)`, with its escapes). */
function stringOf(dict: string, name: string): Buffer | undefined {
  const m = new RegExp(`/${name}[ \\t\\r\\n]{0,16}([<(])`).exec(dict);
  if (m === null) return undefined;
  return stringAt(dict, m.index + m[0].length - 1);
}

function idOf(raw: string): Buffer | undefined {
  const m = ID_RE.exec(raw);
  if (m === null) return undefined;
  return stringAt(raw, m.index + m[0].length - (m[1] as string).length);
}

/** The bytes of the hex or literal string that opens at `open`. */
function stringAt(s: string, open: number): Buffer | undefined {
  if (s[open] === '(') return Buffer.from(literalString(s, open)[0], 'latin1');
  const close = s.indexOf('>', open);
  return close === -1 || close - open > 1024 ? undefined : hexBytes(s.slice(open + 1, close));
}
