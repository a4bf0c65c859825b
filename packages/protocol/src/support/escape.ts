/**
 * Characters that must never reach a terminal, a log line or a text format raw: C0 and C1
 * controls (CR, ESC, BEL, CSI …), DEL, line and paragraph separators, and the bidirectional
 * overrides and isolates that reorder what is shown.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is matched
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * Untrusted text made safe to print: each character of {@link UNSAFE} (line feed included)
 * becomes the six-character text `\uXXXX`, and a backslash becomes `\\`, so the rendering is
 * unambiguous; other text passes unchanged.
 *
 * @example
 * ```ts
 * escapeControl('key\r\u001b[2J'); // 'key\\u000d\\u001b[2J'
 * ```
 */
export function escapeControl(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
