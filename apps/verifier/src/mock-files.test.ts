import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ApiError } from './errors.js';
import { filePart, MockFileStore } from './mock-files.js';

const upload = (
  bytes: string,
  boundary = 'b0undary',
  head = 'Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain',
) => Buffer.from(`--${boundary}\r\n${head}\r\n\r\n${bytes}\r\n--${boundary}--\r\n`);

describe('the mock Files API', () => {
  it('reads the file part of an upload: its name, media type and exact bytes', () => {
    expect(filePart(upload('a\r\nb'), 'multipart/form-data; boundary=b0undary')).toEqual({
      filename: 'a.txt',
      mimeType: 'text/plain',
      bytes: Buffer.from('a\r\nb'),
    });
    expect(filePart(upload('x', 'q q'), 'multipart/form-data; boundary="q q"').bytes.toString()).toBe('x');
  });

  it('refuses what is no upload 400 naming what it expected, and throws nothing else on any bytes', () => {
    expect(() => filePart(upload('x'), 'application/json')).toThrow(/expected multipart\/form-data with a boundary/);
    expect(() =>
      filePart(upload('x', 'b0undary', 'Content-Disposition: form-data; name="purpose"'), 'multipart/form-data; boundary=b0undary'),
    ).toThrow(/file: Field required/);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.string({ maxLength: 12 }), (bytes, boundary) => {
        try {
          filePart(Buffer.from(bytes), `multipart/form-data; boundary=${boundary}`);
        } catch (error) {
          expect(error).toBeInstanceOf(ApiError);
          expect((error as ApiError).status).toBe(400);
        }
      }),
    );
  });

  it('keeps files until deleted, lists them newest first, and answers an unknown one 404', () => {
    const store = new MockFileStore();
    const a = store.upload(upload('one'), 'multipart/form-data; boundary=b0undary');
    const b = store.upload(upload('two'), 'multipart/form-data; boundary=b0undary');
    expect(store.list().data.map((f) => f.id)).toEqual([b.id, a.id]);
    expect(store.content(a.id).toString()).toBe('one');
    expect(store.delete(a.id)).toEqual({ id: a.id, type: 'file_deleted' });
    expect(() => store.metadata(a.id)).toThrow(expect.objectContaining({ status: 404 }));
  });
});
