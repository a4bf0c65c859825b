/**
 * `@moat/protocol/support` — small runtime helpers every Moat package shares: the fail-open
 * warning sink, the message of a caught value, the known name a typo meant, an unexpected value described for an error, untrusted text made printable, a bounded LRU map, a wait bounded by a deadline and a
 * signal, and the optional native addon loader. Not part of the wire contract; kept here because layers may depend on
 * `@moat/protocol` and nothing else.
 *
 * @packageDocumentation
 */
export { closestName } from './closest.js';
export { describeValue } from './describe.js';
export { errorCode, errorMessage, errorStack } from './error-message.js';
export { escapeControl } from './escape.js';
export { LruMap, LruMapError, type LruMapOptions } from './lru.js';
export { MoatError } from './moat-error.js';
export {
  loadNativeAddon,
  type NativeBinding,
  type NativeEvent,
  type NativeInstall,
  type NativeInstallOpenOptions,
  type NativeLoad,
  type NativeRequestOptions,
  STAMP_RESULTS,
} from './native.js';
export { waitAtMost } from './wait.js';
export { createWarner, type Warner, type WarningSink } from './warner.js';
