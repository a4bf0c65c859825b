/**
 * The message of a caught value, whatever was thrown: an `Error`'s message, a string as it
 * is, anything else as `String(value)`.
 *
 * @example
 * ```ts
 * try { JSON.parse(text); } catch (e) { warn(`not JSON: ${errorMessage(e)}`); }
 * ```
 */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (typeof error === 'string') return error;
  try {
    return String(error);
  } catch {
    return 'unprintable error';
  }
}

/** The `code` of a caught error (`ENOENT`, `ERR_…`), or `undefined` when it has none. */
export function errorCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null || !('code' in error)) return undefined;
  const code = (error as { code: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** A caught value's stack when it has one (for a CLI's last-resort report), else its message. */
export function errorStack(error: unknown): string {
  return error instanceof Error && typeof error.stack === 'string' ? error.stack : errorMessage(error);
}
