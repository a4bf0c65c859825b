import { MoatError } from '@moat/protocol/support';
import { storableValue } from './record-text.js';

/** The store cannot be used now (down, locked, timed out, full, read-only): retry later. */
export class StoreUnavailableError extends MoatError<'ERR_STORE_UNAVAILABLE'> {
  override readonly name = 'StoreUnavailableError';
}

/** The store refused what it was given (its content, not its state): retrying will not help. */
export class StoreContentError extends MoatError<'ERR_STORE_CONTENT'> {
  override readonly name = 'StoreContentError';
}

// SQLite result codes that are about the statement's values, not the database's state.
const SQLITE_CONTENT = /^SQLITE_(CONSTRAINT|MISMATCH|TOOBIG|RANGE)/;

/**
 * Whether a store error is about the content written (PostgreSQL SQLSTATE class 22 "data
 * exception" or 23 "integrity constraint violation"; SQLite constraint, type and size errors;
 * a value the driver cannot bind) — or else about the store itself.
 */
export function isContentError(error: unknown): boolean {
  if (error instanceof StoreContentError) return true;
  if (error instanceof StoreUnavailableError) return false;
  // better-sqlite3 says a closed or busy connection with a TypeError too: the store's state, not the value.
  if (error instanceof TypeError && /database connection is (not open|busy)/.test(error.message)) return false;
  if (error instanceof TypeError || error instanceof RangeError) return true; // a value the driver cannot bind
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  if (/^2[23][0-9A-Z]{3}$/.test(code)) return true;
  return SQLITE_CONTENT.test(code);
}

/** `error` as a {@link StoreContentError} or a {@link StoreUnavailableError}, keeping it as the cause. */
export function storeError(error: unknown, what: string): StoreContentError | StoreUnavailableError {
  if (error instanceof StoreContentError || error instanceof StoreUnavailableError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return isContentError(error)
    ? new StoreContentError('ERR_STORE_CONTENT', `expected the store to take ${what}, got a refusal: ${message}`, { cause: error })
    : new StoreUnavailableError('ERR_STORE_UNAVAILABLE', `expected the store to answer ${what}, got: ${message}`, { cause: error });
}

// Arguments that are never stored as text: the API key is only hashed.
const RAW_ARGUMENTS: ReadonlySet<PropertyKey> = new Set(['lookupApiKey']);
// Members that are stores of their own.
const SUBSTORES: ReadonlySet<PropertyKey> = new Set(['installs']);

/**
 * The storage behind one boundary: every string going in (records, labels, reasons, telemetry
 * events, query filters) is made storable ({@link storableValue}), and every failure comes
 * out typed — {@link StoreContentError} for what the store refuses to keep,
 * {@link StoreUnavailableError} for everything else — so callers answer 503 or quarantine
 * without knowing the backend. Other members (backend-specific ones too) pass through.
 */
export function storeBoundary<S extends object>(storage: S): S {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(storage, {
    get(target, name) {
      // The target as receiver: getters read its private fields.
      const value = Reflect.get(target, name);
      // A part of the store with its own methods (the installs) is behind the same boundary.
      if (SUBSTORES.has(name) && typeof value === 'object' && value !== null) {
        let part = wrapped.get(name);
        if (part === undefined) {
          part = storeBoundary(value);
          wrapped.set(name, part);
        }
        return part;
      }
      if (typeof value !== 'function' || name === 'constructor') return value;
      let fn = wrapped.get(name);
      if (fn === undefined) {
        const label = String(name);
        fn = (...args: unknown[]) => {
          const input = RAW_ARGUMENTS.has(name) ? args : args.map((a) => storableValue(a));
          let result: unknown;
          try {
            result = (value as (...a: unknown[]) => unknown).apply(target, input);
          } catch (error) {
            throw storeError(error, label);
          }
          return result instanceof Promise ? result.catch((error: unknown) => Promise.reject(storeError(error, label))) : result;
        };
        wrapped.set(name, fn);
      }
      return fn;
    },
    set(target, name, value) {
      return Reflect.set(target, name, value);
    },
  });
}
