import { createSecretKey, type KeyObject } from 'node:crypto';
import type { InstallKeyResolver } from '@moat/attest/server';
import { GatewayStats } from '@moat/gateway-detect/server';
import { deriveInstallKey, x25519PublicKey } from '@moat/protocol';
import { LruMap } from '@moat/protocol/support';
import type { VerifierConfig } from './config.js';
import type { InstallRow, InstallStore } from './installs.js';

/** One enrollment key pair: its kid, private key bytes and public key (base64url). */
export interface EnrollmentKey {
  readonly kid: string;
  readonly privateKey: Uint8Array;
  readonly publicKey: string;
  readonly retired: boolean;
}

/**
 * The verifier's enrollment key pairs (setting `enrollmentKeys`), newest first. The first
 * active one is advertised; every one listed still derives the keys of the installs it
 * enrolled, so a retired key stops new enrollments without ending old installs.
 */
export class EnrollmentKeyring {
  readonly #keys = new Map<string, EnrollmentKey>();

  constructor(keys: VerifierConfig['enrollmentKeys']) {
    for (const k of keys) {
      const privateKey = Buffer.from(k.key, 'hex');
      this.#keys.set(k.kid, {
        kid: k.kid,
        privateKey,
        publicKey: x25519PublicKey(privateKey),
        retired: k.retired === true,
      });
    }
  }

  /** What discovery advertises: the newest active key, `undefined` when enrollment is off. */
  advertised(): { readonly kid: string; readonly key: string } | undefined {
    for (const k of this.#keys.values()) if (!k.retired) return { kid: k.kid, key: k.publicKey };
    return undefined;
  }

  /** Whether new installs may enroll under `kid`. */
  isActive(kid: string): boolean {
    return this.#keys.get(kid)?.retired === false;
  }

  /** The key pair of `kid`, active or retired. */
  get(kid: string): EnrollmentKey | undefined {
    return this.#keys.get(kid);
  }
}

/** An install as the stamp check needs it: its row and its derived key. */
export interface ResolvedInstall {
  readonly row: InstallRow;
  readonly key: KeyObject;
}

interface CacheEntry {
  row: InstallRow;
  readonly key: KeyObject;
  /** When the row was read (Unix ms): re-read after the refresh interval, for revocations made elsewhere. */
  read: number;
}

/** Options of {@link InstallKeys}. */
export interface InstallKeysOptions {
  readonly maxEntries: number;
  /** How long a row is trusted before it is read again: the bound on a revocation made by another replica. */
  readonly refreshMs?: number;
  readonly now?: () => number;
}

/**
 * `K_i` for the installs that stamp: derived on demand from the install's row (X25519 with
 * the enrollment private key, HKDF), kept in a bounded LRU. A row is read again after
 * `refreshMs` (default 5 s), so an install revoked on another replica is refused here within
 * that time; one revoked on this replica is refused at once ({@link revoked}).
 */
export class InstallKeys {
  readonly #entries: LruMap<string, CacheEntry>;
  readonly #keyring: EnrollmentKeyring;
  readonly #store: Pick<InstallStore, 'install'>;
  readonly #refreshMs: number;
  readonly #now: () => number;

  constructor(keyring: EnrollmentKeyring, store: Pick<InstallStore, 'install'>, options: InstallKeysOptions) {
    this.#keyring = keyring;
    this.#store = store;
    this.#entries = new LruMap({ maxSize: options.maxEntries });
    this.#refreshMs = options.refreshMs ?? 5_000;
    this.#now = options.now ?? Date.now;
  }

  /** Installs held derived now. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The install `iid` and its key; `undefined` when it is not enrolled (or its enrollment key
   * is gone from the settings). Throws when the store cannot be read.
   */
  async resolve(iid: string): Promise<ResolvedInstall | undefined> {
    const now = this.#now();
    const hit = this.#entries.get(iid);
    if (hit !== undefined && now - hit.read < this.#refreshMs) return hit;
    const row = await this.#store.install(iid);
    if (row === undefined) {
      this.#entries.delete(iid);
      return undefined;
    }
    if (hit !== undefined) {
      hit.row = row;
      hit.read = now;
      return hit;
    }
    const enrollment = this.#keyring.get(row.ekid);
    if (enrollment === undefined) return undefined;
    const key = deriveInstallKey({
      privateKey: enrollment.privateKey,
      peerPublicKey: Buffer.from(row.installKey, 'base64url'),
      challenge: Buffer.from(row.challenge, 'base64url'),
      installId: row.iid,
      ekid: row.ekid,
      installPublicKey: row.installKey,
    });
    const entry: CacheEntry = { row, key: createSecretKey(key), read: now };
    this.#entries.set(iid, entry);
    return entry;
  }

  /** Applies a revocation made on this replica at once. */
  revoked(row: InstallRow): void {
    const hit = this.#entries.peek(row.iid);
    if (hit !== undefined) hit.row = row;
  }
}

/** What the pipeline and the enrollment routes share about per-install keys. */
export interface Enrollment {
  readonly keyring: EnrollmentKeyring;
  readonly keys: InstallKeys;
  /** Address fan-in per install id (the gateway layer's, keyed by install instead of API key). */
  readonly fanIn: GatewayStats;
  /** The `i1` key lookup for `verifyAttestation`. */
  readonly resolver: InstallKeyResolver;
}

/** The enrollment services of a configuration over its store. */
export function createEnrollment(
  config: VerifierConfig,
  store: Pick<InstallStore, 'install'>,
  secret: Uint8Array,
): Enrollment {
  const keyring = new EnrollmentKeyring(config.enrollmentKeys);
  const keys = new InstallKeys(keyring, store, { maxEntries: config.installKeyCacheSize });
  const resolver: InstallKeyResolver = async (iid) => {
    const found = await keys.resolve(iid);
    return found === undefined ? undefined : { key: found.key, revoked: found.row.revokedAt !== null };
  };
  return { keyring, keys, fanIn: new GatewayStats({ addressSecret: secret }), resolver };
}
