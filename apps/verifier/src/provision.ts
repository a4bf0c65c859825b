/**
 * `moat-verifier provision`: creates once what a client and its verifier must share — the
 * app's release attestation key and key id, the fingerprint salt, the client's product name —
 * and writes both sides' files from it: the verifier's config file and the client's build
 * settings (`moat.client.json`, which `@moat/native` compiles its key from and `@moat/client`
 * reads its salt and product from). Both files hold secrets: they are created mode 0600 and
 * listed in `.gitignore`. A rotation (`--rotate`) makes a new key id and key for the next
 * release and keeps the earlier keys in the verifier's keyring (optionally revoked), so the
 * releases in users' hands keep verifying.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { isKeyId } from '@moat/protocol';
import { errorMessage } from '@moat/protocol/support';
import { newEnrollmentKeys } from './config.js';
import { VerifierConfigError } from './errors.js';

/** The client's build settings file, as `@moat/client` and `@moat/native` read it. */
export interface ClientSettingsFile {
  /** The product name in the user agent (`<product>/<version>`), the verifier's `userAgentProduct`. */
  readonly userAgentProduct: string;
  /** The fingerprint salt, the verifier's `fingerprintSalt`. */
  readonly salt: string;
  /** This release's attestation key id and key (hex), compiled into `@moat/native`. */
  readonly attestationKid: string;
  readonly attestationKey: string;
}

/** What {@link provision} takes. */
export interface ProvisionOptions {
  /** The verifier's config file (created, or updated in place). */
  readonly configFile: string;
  /** The client's settings file (default `moat.client.json` beside the config file). */
  readonly clientFile?: string | undefined;
  /** The client's product name; required the first time, kept after. */
  readonly product?: string | undefined;
  /** Make a new release key (the earlier ones stay in the verifier's keyring). */
  readonly rotate?: boolean | undefined;
  /** With `rotate`: list the earlier key ids in `revokedKids` (they verify, flagged). */
  readonly revokePrevious?: boolean | undefined;
}

/** What {@link provision} did. */
export interface ProvisionResult {
  readonly configFile: string;
  readonly clientFile: string;
  readonly kid: string;
  /** Whether a new key was made (first provisioning or a rotation). */
  readonly newKey: boolean;
  readonly gitignore: string;
}

const PRODUCT_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A JSON object file with whole-line `//` comments, or `{}` when there is none. */
function readJsonObject(file: string, setting: string): Record<string, unknown> {
  if (!existsSync(file)) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8').replace(/^\s*\/\/.*$/gm, ''));
  } catch (error) {
    throw new VerifierConfigError(setting, `a JSON object in ${file}`, errorMessage(error));
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new VerifierConfigError(setting, `a JSON object in ${file}`, Array.isArray(parsed) ? 'an array' : typeof parsed);
  return parsed as Record<string, unknown>;
}

/** A release key id: `k` + the UTC date + 6 random hex digits (unique, sortable, within [A-Za-z0-9_-]{1,32}). */
function newKid(): string {
  const kid = `k${new Date().toISOString().slice(0, 10).replaceAll('-', '')}_${randomBytes(3).toString('hex')}`;
  if (!isKeyId(kid)) throw new VerifierConfigError('attestationKid', 'a key id', kid);
  return kid;
}

/** Adds the lines `.gitignore` lacks (the secret files, relative to its folder). */
function ignore(dir: string, files: readonly string[]): string {
  const file = join(dir, '.gitignore');
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const have = new Set(text.split('\n').map((l) => l.trim()));
  const add = files.map((f) => relative(dir, f)).filter((f) => !have.has(f) && !have.has(`/${f}`));
  if (add.length > 0) {
    const lead = text === '' || text.endsWith('\n') ? '' : '\n';
    writeFileSync(file, `${text}${lead}# Moat secrets (moat-verifier provision): never commit\n${add.join('\n')}\n`);
  }
  return file;
}

/** The client settings file's content, checked (a partial one from an earlier run is an error, not lost). */
function readClientFile(file: string): Partial<ClientSettingsFile> {
  const raw = readJsonObject(file, 'client settings');
  for (const [name, value] of Object.entries(raw))
    if (typeof value !== 'string') throw new VerifierConfigError(`client settings ${name}`, 'a string', JSON.stringify(value).slice(0, 40));
  return raw as Partial<ClientSettingsFile>;
}

/**
 * Creates or updates both sides' shared settings (see the module comment). Idempotent: run
 * again without `rotate`, it keeps every existing value and only fills what is missing.
 *
 * @throws {VerifierConfigError} naming the setting at fault (a bad product name, a config file that is not JSON).
 */
export function provision(options: ProvisionOptions): ProvisionResult {
  const configFile = options.configFile;
  const clientFile = options.clientFile ?? join(dirname(configFile), 'moat.client.json');
  const config = readJsonObject(configFile, 'config file');
  const client = readClientFile(clientFile);
  const product = options.product ?? client.userAgentProduct ?? (config.userAgentProduct as string | undefined);
  if (product === undefined || !PRODUCT_RE.test(product))
    throw new VerifierConfigError(
      '--product',
      'your client\'s product name ([A-Za-z0-9._-], e.g. "acme-chat")',
      JSON.stringify(product ?? null),
    );
  const salt = client.salt ?? (config.fingerprintSalt as string | undefined) ?? randomBytes(16).toString('base64url');
  const keys = Array.isArray(config.attestationKeys) ? [...(config.attestationKeys as Array<{ kid: string; key: string }>)] : [];
  const current = client.attestationKid === undefined ? undefined : keys.find((k) => k.kid === client.attestationKid);
  const newKey = options.rotate === true || client.attestationKey === undefined || current === undefined;
  const kid = newKey ? newKid() : (client.attestationKid as string);
  const key = newKey ? randomBytes(32).toString('hex') : (client.attestationKey as string);
  if (newKey) {
    const revoked = new Set(Array.isArray(config.revokedKids) ? (config.revokedKids as string[]) : []);
    if (options.revokePrevious === true) for (const k of keys) revoked.add(k.kid);
    keys.push({ kid, key });
    config.revokedKids = [...revoked];
  }
  config.fingerprintSalt = salt;
  config.userAgentProduct = product;
  // Per-install keys: the verifier's X25519 enrollment key, made once (clients read its public half from discovery).
  if (!Array.isArray(config.enrollmentKeys) || config.enrollmentKeys.length === 0)
    config.enrollmentKeys = JSON.parse(newEnrollmentKeys()) as unknown;
  config.attestationKeys = keys;
  const settings: ClientSettingsFile = { userAgentProduct: product, salt, attestationKid: kid, attestationKey: key };
  const head = '// Written by `moat-verifier provision`; holds secrets: never commit it.\n';
  writeFileSync(configFile, `${head}${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  writeFileSync(clientFile, `${JSON.stringify(settings, null, 2)}\n`, { mode: 0o600 });
  const gitignore = ignore(dirname(configFile), [configFile, clientFile, join(dirname(configFile), '.moat-verifier')]);
  return { configFile, clientFile, kid, newKey, gitignore };
}
