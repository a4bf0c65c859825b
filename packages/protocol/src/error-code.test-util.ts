import { ProtocolError } from './errors.js';

/** The code of the {@link ProtocolError} `run` throws, or `ok` when it returns; any other error is thrown on. */
export function codeOf(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    if (error instanceof ProtocolError) return error.code;
    throw error;
  }
  return 'ok';
}
