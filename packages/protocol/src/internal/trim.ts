// Package-internal: not exported from any entry point.

/** Space and horizontal tab: HTTP's optional whitespace (RFC 9110 §5.6.3). */
export const isSpaceOrTab = (code: number): boolean => code === 0x20 || code === 0x09;

/** C0 controls and space: what the URL Standard trims from both ends of a URL. */
export const isC0ControlOrSpace = (code: number): boolean => code <= 0x20;

/**
 * `text` without the UTF-16 code units `trimmed` accepts at either end. An index scan, not a
 * regular expression: `/[ \t]+$/` backtracks over every run of such units that does not end
 * the text, quadratic in its length, and these texts come from clients.
 */
export function trimWhere(text: string, trimmed: (code: number) => boolean): string {
  let start = 0;
  let end = text.length;
  while (start < end && trimmed(text.charCodeAt(start))) start++;
  while (end > start && trimmed(text.charCodeAt(end - 1))) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}
