/**
 * A short printable rendering of an unexpected input, for the "got …" of error messages:
 * never throws and never serializes more than a short string, so a BigInt, a cycle, a huge
 * or a hostile value (a proxy, a getter) cannot turn a refusal into another error.
 */
export function describeValue(value: unknown): string {
  try {
    if (value === null || value === undefined) return String(value);
    if (Array.isArray(value)) return `array(${value.length})`;
    if (typeof value === 'string') {
      const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value;
      return JSON.stringify(shown);
    }
    if (typeof value === 'object') return 'object';
    if (typeof value === 'function') return 'function';
    return `${typeof value} ${String(value)}`;
  } catch {
    return 'an unreadable value';
  }
}
