/**
 * Per-install keys (protocol 1.2, SPEC §5.4), the attestation layer's part: at an endpoint
 * whose discovery advertises `install_keys`, the first Moat call enrolls this install — the
 * addon makes (or loads) an X25519 key pair, the client fetches a one-time challenge and
 * sends the enrollment stamped `r1` with the release key — and from then on every call there
 * is stamped `i1` with the install's own key, which never enters JavaScript. Fails open:
 * any enrollment failure leaves the call with `r1`, warns once, reports `layer_degraded`,
 * and enrollment is tried again after a back-off, not on every call.
 */
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  type DiscoveryEnrollment,
  enrollmentRequestBody,
  parseChallengeAnswer,
  parseEnrollmentAnswer,
} from '@moat/protocol';
import { errorMessage, type NativeBinding, type Warner, waitAtMost } from '@moat/protocol/support';
import { callSignal, degradedEvent, type MoatCall } from '../compose.js';
import { type Endpoint, endpointBase, underBase } from '../endpoint.js';

/** Options of the install keys (see `attestationLayer`'s `installKeys`). */
export interface InstallKeyOptions {
  /** Directory of the install state files, one per endpoint (base URL) and API key (default {@link defaultInstallDir}). */
  readonly stateDir?: string | undefined;
  /**
   * `auto` (default): the private key is sealed by the OS keystore where one answers (Linux
   * kernel keyring, macOS Keychain); `file`: by the file's permissions alone. Default from
   * `MOAT_INSTALL_KEYSTORE`.
   */
  readonly keystore?: 'auto' | 'file' | undefined;
  /**
   * How long a call waits for its install's enrollment before it goes with the release stamp
   * (`r1`), ms (default 3 000); the enrollment goes on, and the calls after it stamp `i1`.
   */
  readonly waitMs?: number | undefined;
  /** Wait after a first failed enrollment, ms (default 60 000); doubled per failure up to `maxRetryMs` (1 h). */
  readonly retryMs?: number | undefined;
  readonly maxRetryMs?: number | undefined;
  /** The fetch the challenge goes through (default: the global `fetch`). */
  readonly fetch?: typeof fetch | undefined;
  /** Clock in Unix milliseconds (tests). */
  readonly now?: (() => number) | undefined;
}

/**
 * The default install state directory: `MOAT_INSTALL_DIR`, else `$XDG_CONFIG_HOME/moat/installs`,
 * else `~/.config/moat/installs` (made 0700 on first use).
 */
export function defaultInstallDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MOAT_INSTALL_DIR) return env.MOAT_INSTALL_DIR;
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'moat', 'installs');
}

/** The addon's install functions, where it has them (addons before protocol 1.2 do not). */
type InstallAddon = Required<Pick<NativeBinding, 'installOpen' | 'installActivate' | 'installForget'>>;

function installAddon(native: unknown): InstallAddon | undefined {
  const n = native as Partial<InstallAddon> | undefined;
  return typeof n?.installOpen === 'function' &&
    typeof n.installActivate === 'function' &&
    typeof n.installForget === 'function'
    ? (n as InstallAddon)
    : undefined;
}

/** An enrollment that did not happen, and how long to wait before the next (a `retry-after`). */
class EnrollmentFailure extends Error {
  override readonly name = 'EnrollmentFailure';
  constructor(
    message: string,
    readonly retryAfterMs = 0,
  ) {
    super(message);
  }
}

/**
 * The name an install is kept under: its endpoint's base URL (the origin, for an endpoint at
 * the root; two verifiers mounted under two paths of one host are two endpoints) and a digest
 * of the API key it enrolled with, since the verifier binds an install to one API key (an app
 * that switches keys has one install per key).
 */
export function installName(base: string, credential: string): string {
  return `${base}#${createHash('sha256').update(credential).digest('hex').slice(0, 16)}`;
}

/** Per endpoint (base URL) and API key: the active install, the enrollment under way, the back-off. */
interface InstallState {
  /** The name the addon keeps it under ({@link installName}). */
  readonly name: string;
  installId?: string | undefined;
  enrolling?: Promise<void> | undefined;
  failures: number;
  retryAt: number;
  /** The state directory was looked at for an enrollment of an earlier run (the pin). */
  pinChecked: boolean;
  /** Re-enrolled once after the verifier refused the install. */
  reenrolled: boolean;
  detail: string;
}

/** The answer's `retry-after` in ms (seconds or an HTTP date), 0 when absent. */
function retryAfterMs(res: Response, now: number): number {
  const value = res.headers.get('retry-after');
  if (value === null) return 0;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? 0 : Math.max(0, at - now);
}

/** The credential headers of a call, for the enrollment requests (they are bound to the same API key). */
function credentialHeaders(call: MoatCall): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const name of ['x-api-key', 'authorization']) {
    const value = call.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  return headers;
}

/** A refusal of the install itself: blocked on `attestation=unknown_key|revoked` or `install=revoked`. */
const INSTALL_REFUSED =
  /\battestation=(?:unknown_key|revoked)\b|\binstall=(?:revoked|unknown)\b|"code"\s*:\s*"(?:unknown_key|revoked)"/;

/** What the attestation layer asks of the install keys. */
export interface InstallKeys {
  /** Readies the install for a call (enrolling first when the endpoint advertises `install_keys`). Never throws. */
  prepare(e: Endpoint, call: MoatCall, native: unknown, send: typeof fetch): Promise<void>;
  /** The enrolled install that stamps a request to `url` with `credential` (the attested transport's `installFor`). */
  installFor(url: URL, credential: string): { install: string; installId: string } | undefined;
  /**
   * After an answer to an `i1`-stamped call: when the verifier refused the install (unknown or
   * revoked), forgets it and enrolls again, once; true when the call should be sent again.
   */
  refused(e: Endpoint, call: MoatCall, res: Response, native: unknown, send: typeof fetch): Promise<boolean>;
  /** A line for the layer's status at `e`, or undefined when installs play no part there. */
  status(e: Endpoint): string | undefined;
}

/** What one enrollment needs: the addon, the endpoint, the call whose API key it goes under, the r1 transport. */
interface EnrollContext {
  readonly addon: InstallAddon;
  readonly e: Endpoint;
  readonly enrollment: DiscoveryEnrollment;
  readonly call: MoatCall;
  readonly send: typeof fetch;
}

/** The install keys of one client: one state per endpoint (base URL) and API key. */
class InstallKeyStore implements InstallKeys {
  readonly #dir: string;
  readonly #keystore: 'auto' | 'file';
  readonly #now: () => number;
  readonly #retryMs: number;
  readonly #maxRetryMs: number;
  readonly #waitMs: number;
  readonly #fetch: typeof fetch | undefined;
  readonly #warn: Warner;
  readonly #installs = new Map<string, InstallState>();
  /** The latest install used per endpoint (base URL), for the status line. */
  readonly #latest = new Map<string, InstallState>();

  constructor(options: InstallKeyOptions, warn: Warner) {
    this.#dir = options.stateDir ?? defaultInstallDir();
    this.#keystore = options.keystore ?? (process.env.MOAT_INSTALL_KEYSTORE === 'file' ? 'file' : 'auto');
    this.#now = options.now ?? Date.now;
    this.#retryMs = options.retryMs ?? 60_000;
    this.#maxRetryMs = options.maxRetryMs ?? 3_600_000;
    this.#waitMs = options.waitMs ?? 3_000;
    this.#fetch = options.fetch;
    this.#warn = warn;
  }

  #stateOf(base: string, credential: string): InstallState {
    const name = installName(base, credential);
    let s = this.#installs.get(name);
    if (s === undefined) {
      s = { name, failures: 0, retryAt: 0, pinChecked: false, reenrolled: false, detail: '' };
      this.#installs.set(name, s);
    }
    this.#latest.set(base, s);
    return s;
  }

  /** One warning per endpoint, a `layer_degraded` event per failure, and the back-off. */
  #failed(e: Endpoint, s: InstallState, error: unknown): void {
    s.failures += 1;
    const backoff = Math.min(this.#retryMs * 2 ** (s.failures - 1), this.#maxRetryMs);
    const wait = Math.max(backoff, error instanceof EnrollmentFailure ? error.retryAfterMs : 0);
    s.retryAt = this.#now() + wait;
    s.detail = `enrollment failed (${errorMessage(error)}); r1 until ${new Date(s.retryAt).toISOString()}`;
    this.#warn(
      `install enrollment at ${e.base} failed (${errorMessage(error)}); requests go with the release stamp (r1)`,
      `install:${e.base}`,
    );
    e.report(degradedEvent('attest', `install enrollment: ${errorMessage(error)}`));
  }

  /** The state of a run before: an install enrolled at this endpoint keeps stamping i1 (the pin). */
  #pinned(addon: InstallAddon, s: InstallState): void {
    s.pinChecked = true;
    let opened: ReturnType<InstallAddon['installOpen']>;
    try {
      opened = addon.installOpen(this.#dir, s.name, { create: false, keystore: this.#keystore });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      // A state that no longer opens pins nothing: the enrollment that follows replaces it, now.
      if (code === 'ERR_NATIVE_INSTALL_SEALED' || code === 'ERR_NATIVE_INSTALL_STATE') return;
      throw error;
    }
    if (opened?.enrolled === true) s.installId = opened.installId;
  }

  /** Opens the install state; one that cannot be used (a keystore key gone, a corrupt file) is replaced. */
  #open(addon: InstallAddon, name: string) {
    try {
      return addon.installOpen(this.#dir, name, { keystore: this.#keystore });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code !== 'ERR_NATIVE_INSTALL_SEALED' && code !== 'ERR_NATIVE_INSTALL_STATE') throw error;
      this.#warn(
        `install state for ${name} unusable (${errorMessage(error)}); enrolling a new install`,
        `install-state:${name}`,
      );
      addon.installForget(name, this.#dir);
      return addon.installOpen(this.#dir, name, { keystore: this.#keystore });
    }
  }

  /** Challenge, enrollment (stamped r1 through `send`), activation in the addon. */
  async #enroll(s: InstallState, { addon, e, enrollment, call, send }: EnrollContext): Promise<void> {
    const opened = this.#open(addon, s.name);
    if (opened === null) throw new EnrollmentFailure('no install state could be made');
    if (opened.enrolled && opened.installId !== undefined) {
      s.installId = opened.installId;
      return;
    }
    const headers = credentialHeaders(call);
    const base = this.#fetch ?? globalThis.fetch;
    const challengeUrl = underBase(e.base, enrollment.challenge);
    const enrollUrl = underBase(e.base, enrollment.enroll);
    // The paths come from the endpoint's discovery: the key goes nowhere but the endpoint itself.
    if (challengeUrl.origin !== e.origin || enrollUrl.origin !== e.origin)
      throw new EnrollmentFailure(`the enrollment paths name another origin than ${e.origin}`);
    const asked = await base(challengeUrl, { method: 'POST', headers, signal: AbortSignal.timeout(10_000) });
    if (!asked.ok) throw new EnrollmentFailure(`challenge answered ${asked.status}`, retryAfterMs(asked, this.#now()));
    const { challenge } = parseChallengeAnswer(await asked.json());
    const res = await send(enrollUrl.href, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: enrollmentRequestBody({ installKey: opened.publicKey, challenge, ekid: enrollment.kid }),
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status !== 201 && res.status !== 200) {
      const text = await res.text().catch(() => '');
      const why = `enrollment answered ${res.status} ${text.slice(0, 160)}`.trim();
      throw new EnrollmentFailure(why, retryAfterMs(res, this.#now()));
    }
    const answer = parseEnrollmentAnswer(await res.json());
    if (answer.ekid !== enrollment.kid)
      throw new EnrollmentFailure(`expected the enrollment under key ${enrollment.kid}, got one under ${answer.ekid}`);
    addon.installActivate(s.name, answer.installId, answer.ekid, enrollment.key, challenge);
    s.installId = answer.installId;
    s.failures = 0;
    s.detail = '';
  }

  async prepare(e: Endpoint, call: MoatCall, native: unknown, send: typeof fetch): Promise<void> {
    const addon = installAddon(native);
    const s = this.#stateOf(e.base, call.apiKey ?? '');
    if (addon === undefined) {
      // An addon from before protocol 1.2 cannot enroll: r1, said once.
      if (native !== undefined && e.enrollment !== undefined && !s.pinChecked) {
        s.pinChecked = true;
        this.#failed(
          e,
          s,
          new EnrollmentFailure('the native addon has no install keys (an addon before protocol 1.2)'),
        );
      }
      return;
    }
    let enrolling: Promise<void>;
    try {
      if (s.installId === undefined && !s.pinChecked) this.#pinned(addon, s);
      const enrollment = e.enrollment;
      if (s.installId !== undefined || enrollment === undefined) return;
      if (s.enrolling === undefined && this.#now() < s.retryAt) return;
      // The enrollment settles on its own (its failure is counted there), whoever still waits for it.
      s.enrolling ??= this.#enroll(s, { addon, e, enrollment, call, send })
        .catch((error: unknown) => {
          if (s.installId === undefined) this.#failed(e, s, error);
        })
        .finally(() => {
          s.enrolling = undefined;
        });
      enrolling = s.enrolling;
    } catch (error) {
      if (s.installId === undefined) this.#failed(e, s, error);
      return;
    }
    // A call waits a little for its install (then it goes with r1), and never past the app's cancellation.
    await waitAtMost(enrolling, this.#waitMs, callSignal(call));
  }

  installFor(url: URL, credential: string): { install: string; installId: string } | undefined {
    const s = this.#installs.get(installName(endpointBase(url), credential));
    return s?.installId === undefined ? undefined : { install: s.name, installId: s.installId };
  }

  async refused(e: Endpoint, call: MoatCall, res: Response, native: unknown, send: typeof fetch): Promise<boolean> {
    const addon = installAddon(native);
    const s = this.#installs.get(installName(e.base, call.apiKey ?? ''));
    if (addon === undefined || s?.installId === undefined || (res.status !== 401 && res.status !== 403)) return false;
    const text = await res
      .clone()
      .text()
      .catch(() => '');
    if (!INSTALL_REFUSED.test(text)) return false;
    s.installId = undefined;
    // Refused, the install is not used again whatever its file says (the pin is not read again).
    s.pinChecked = true;
    try {
      addon.installForget(s.name, this.#dir);
    } catch (error) {
      // A state file that cannot be removed: the call still goes again, with the release stamp.
      this.#warn(
        `the refused install's state for ${s.name} could not be removed (${errorMessage(error)}); requests go with the release stamp (r1)`,
        `install-forget:${s.name}`,
      );
      s.reenrolled = true;
      s.retryAt = this.#now() + this.#maxRetryMs;
      return true;
    }
    if (s.reenrolled) {
      const again = `the verifier at ${e.base} refused the install again; requests go with the release stamp (r1)`;
      this.#warn(again, `install-refused:${e.base}`);
      return false;
    }
    s.reenrolled = true;
    s.retryAt = 0;
    this.#warn(
      `the verifier at ${e.base} refused the install (unknown or revoked); enrolling again`,
      `install-reenroll:${e.base}`,
    );
    await this.prepare(e, call, native, send);
    return s.installId !== undefined;
  }

  status(e: Endpoint): string | undefined {
    const s = this.#latest.get(e.base);
    if (s?.installId !== undefined) return `install ${s.installId} (i1)`;
    if (s?.detail) return s.detail;
    return e.enrollment === undefined ? undefined : 'install not enrolled yet';
  }
}

/** The install keys of one client (one state per endpoint (base URL) and API key). */
export function createInstallKeys(options: InstallKeyOptions, warn: Warner): InstallKeys {
  return new InstallKeyStore(options, warn);
}
