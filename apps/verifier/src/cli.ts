#!/usr/bin/env node
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { errorMessage, errorStack } from '@moat/protocol/support';
import { configTemplate, dataDirDefaults, loadConfig, SETTINGS } from './config.js';
import { VerifierConfigError } from './errors.js';
import { provision } from './provision.js';
import { createVerifier, openStorage } from './server.js';

const USAGE = `usage: moat-verifier [--config FILE] [--data-dir DIR] [--port N]   run the verifier
       moat-verifier init [--config FILE]                   write a commented config file
       moat-verifier provision --product NAME [--config FILE] [--client-file FILE] [--rotate [--revoke-previous]]
                                       create the release key, salt and product name client and verifier share
       moat-verifier keys add --label NAME [--config FILE]  create an API key (printed once)
       moat-verifier keys revoke --id ID [--config FILE]    revoke an API key (every replica within 5 s)
       moat-verifier admin-token [--data-dir DIR]           print the admin token

With no settings at all it starts on the embedded defaults: a data directory
(--data-dir, MOAT_VERIFIER_DATA_DIR, or ./.moat-verifier) holding generated secrets
(secrets.json, mode 0600, reused on the next start), the SQLite database and the record
spool. Settings come from MOAT_VERIFIER_* environment variables over the config file over
those defaults (see init). --port sets the port over all of them; PORT (hosting platforms set it)
over the config file when MOAT_VERIFIER_PORT is unset:
${Object.keys(SETTINGS)
  .join(', ')
  .replace(/(.{1,88})(?:, |$)/g, '  $1\n')
  .trimEnd()}`;

/** The data directory's defaults, when the settings name no admin token or a data directory is asked for. */
async function defaultsFor(values: { config?: string; 'data-dir'?: string }): Promise<ReturnType<typeof dataDirDefaults> | undefined> {
  const dir = values['data-dir'] ?? process.env.MOAT_VERIFIER_DATA_DIR;
  const fileHasToken =
    values.config !== undefined && existsSync(values.config) && readFileSync(values.config, 'utf8').includes('"adminToken"');
  if (dir === undefined && (process.env.MOAT_VERIFIER_ADMIN_TOKEN !== undefined || fileHasToken)) return undefined;
  // A development build of @moat/native leaves its key for the local verifier.
  const devKey = await import('@moat/native/dev-key').then((m: { devKeyFile: string }) => m.devKeyFile).catch(() => undefined);
  return dataDirDefaults(resolve(dir ?? '.moat-verifier'), devKey);
}

interface Values {
  config?: string;
  'data-dir'?: string;
  label?: string;
  id?: string;
  help?: boolean;
  port?: string;
  product?: string;
  'client-file'?: string;
  rotate?: boolean;
  'revoke-previous'?: boolean;
}

/** `moat-verifier provision`: the shared settings of both sides, and what to do next. */
function runProvision(values: Values): number {
  const result = provision({
    configFile: values.config ?? 'moat-verifier.config.json',
    clientFile: values['client-file'],
    product: values.product,
    rotate: values.rotate,
    revokePrevious: values['revoke-previous'],
  });
  process.stdout.write(
    `${result.newKey ? 'new' : 'kept'} release key ${result.kid}\n` +
      `wrote ${result.configFile} (the verifier's settings) and ${result.clientFile} (your client build's settings);\n` +
      `both hold secrets and are listed in ${result.gitignore}. Build @moat/native with this key: npm rebuild @moat/native\n`,
  );
  return 0;
}

/** The environment the settings are read from: `--port` over everything, `PORT` when MOAT_VERIFIER_PORT is unset. */
function settingsEnv(values: Values): NodeJS.ProcessEnv {
  const port = values.port ?? process.env.MOAT_VERIFIER_PORT ?? process.env.PORT;
  return port === undefined ? process.env : { ...process.env, MOAT_VERIFIER_PORT: port };
}

async function main(argv: string[]): Promise<number> {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' },
        'data-dir': { type: 'string' },
        label: { type: 'string' },
        id: { type: 'string' },
        port: { type: 'string' },
        product: { type: 'string' },
        'client-file': { type: 'string' },
        rotate: { type: 'boolean' },
        'revoke-previous': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    process.stderr.write(`moat-verifier: ${errorMessage(error)}\n${USAGE}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (parsed.positionals[0] === 'init') {
    const file = parsed.values.config ?? 'moat-verifier.config.json';
    if (existsSync(file)) {
      process.stderr.write(`moat-verifier: ${file} exists; not overwritten\n`);
      return 1;
    }
    writeFileSync(file, configTemplate(), { mode: 0o600 });
    process.stdout.write(`wrote ${file}; start with: moat-verifier --config ${file}\n`);
    return 0;
  }
  if (parsed.positionals[0] === 'provision') return runProvision(parsed.values);
  const defaults = await defaultsFor(parsed.values);
  if (parsed.positionals[0] === 'admin-token') {
    if (defaults === undefined) {
      process.stderr.write('moat-verifier: the admin token is set in your environment or config file, not in a data directory\n');
      return 1;
    }
    process.stdout.write(`${defaults.env.MOAT_VERIFIER_ADMIN_TOKEN}\n`);
    return 0;
  }
  const config = loadConfig(settingsEnv(parsed.values), parsed.values.config, defaults?.env);
  if (parsed.positionals[0] === 'keys' && parsed.positionals[1] === 'add') {
    const storage = await openStorage(config);
    const key = await storage.createApiKey(parsed.values.label ?? 'unnamed');
    await storage.close();
    process.stdout.write(`${JSON.stringify(key)}\n`);
    return 0;
  }
  if (parsed.positionals[0] === 'keys' && parsed.positionals[1] === 'revoke') {
    const id = parsed.values.id;
    if (id === undefined || id === '') {
      process.stderr.write(`moat-verifier: keys revoke: expected --id ID (an id from GET /admin/keys), got none\n`);
      return 2;
    }
    const storage = await openStorage(config);
    const revoked = await storage.revokeApiKey(id);
    await storage.close();
    if (!revoked) {
      process.stderr.write(`moat-verifier: keys revoke: no live API key has the id ${id}\n`);
      return 1;
    }
    process.stdout.write(`${JSON.stringify({ revoked: id })}\n`);
    return 0;
  }
  if (parsed.positionals.length > 0) {
    process.stderr.write(`moat-verifier: unknown command ${parsed.positionals.join(' ')}\n${USAGE}\n`);
    return 2;
  }
  const verifier = await createVerifier(config);
  let url: string;
  try {
    url = await verifier.listen();
  } catch (error) {
    // What the start opened (the store, the spool, the mock model) is closed before saying why.
    await verifier.close().catch(() => {});
    throw error;
  }
  process.stdout.write(`moat-verifier listening on ${url}\n`);
  if (defaults !== undefined) {
    process.stdout.write(
      `dashboard: ${url}/dashboard (admin token: \`moat-verifier admin-token\`, or ${defaults.secretsFile})\n` +
        `upstream: ${config.upstream === 'mock' ? 'the embedded mock model' : config.upstream}; data: ${dirname(defaults.secretsFile)}${defaults.created ? ' (new secrets generated)' : ''}\n`,
    );
    if (config.attestationKeys.length === 0)
      process.stdout.write('no attestation keys: attested requests will be unknown_key (set attestationKeys or attestationKeyFile)\n');
  }
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    const started = Date.now();
    process.stdout.write(`moat-verifier stopping (${signal}): finishing the requests in flight, ${config.shutdownGraceMs} ms at most\n`);
    await verifier.close();
    process.stdout.write(`moat-verifier stopped after ${Date.now() - started} ms\n`);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return new Promise<number>(() => {});
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`moat-verifier: ${error instanceof VerifierConfigError ? error.message : errorStack(error)}\n`);
    // A start that failed exits, whatever it left open: a supervisor sees a failed process, not a hung one.
    process.exit(2);
  },
);
