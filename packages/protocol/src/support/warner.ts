/** Where a layer's warnings go: the application's handler (a logger, `console.warn`). */
export type WarningSink = ((message: string) => void) | undefined;

/** Warns, never throws; a `key` makes a warning once-only. */
export type Warner = (message: string, onceKey?: string) => void;

/**
 * The fail-open warning channel of a client layer: prefixes every message with
 * `moat <layer>: `, gives a warning that has a `onceKey` only the first time, and swallows
 * whatever the application's handler throws, so a broken handler never breaks a request.
 *
 * @example
 * ```ts
 * const warn = createWarner('attest', options.onWarning);
 * warn('native addon missing; sending unattested', 'addon');
 * ```
 */
export function createWarner(layer: string, sink: WarningSink): Warner {
  const given = new Set<string>();
  return (message, onceKey) => {
    if (onceKey !== undefined) {
      if (given.has(onceKey)) return;
      given.add(onceKey);
    }
    try {
      sink?.(`moat ${layer}: ${message}`);
    } catch {
      // A throwing warning handler must not break the layer.
    }
  };
}
