// Test helper: a request sent byte for byte as given, as a relay or an attacker would send it.
import { request } from 'node:http';

// biome-ignore lint/suspicious/noExplicitAny: the tests read whichever members the answer has.
type Answer = { status: number; json: Record<string, any> };

/**
 * POSTs `body` to `${base}/v1/messages` with exactly these headers (an attacker picks any
 * `Host`) and reads the JSON answer.
 */
export function postRaw(
  base: string,
  body: Buffer | string,
  headers: Record<string, string | string[] | undefined>,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}/v1/messages`,
      { method: 'POST', headers: { ...headers, 'content-length': Buffer.byteLength(body) } },
      async (res) => {
        const chunks: Buffer[] = [];
        for await (const c of res) chunks.push(c as Buffer);
        resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
