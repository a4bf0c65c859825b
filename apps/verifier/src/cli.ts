#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { errorMessage, errorStack } from '@moat/protocol/support';
import { loadConfig } from './config.js';
import { VerifierConfigError } from './errors.js';
import { createVerifier, openStorage } from './server.js';

const USAGE = `usage: moat-verifier [--config FILE]            run the verifier
       moat-verifier keys add --label NAME [--config FILE]   create an API key (printed once)

Settings come from the JSON config file and MOAT_VERIFIER_* environment variables
(environment wins): host, port, database, upstream ("mock" or a URL), upstreamKey,
flagsFile, adminToken, fingerprintSalt, attestationKeys / attestationKeyFile, revokedKids,
serverSecret, signingSecret, signingKid, windowSec, maxBodyBytes, clientKey.`;

async function main(argv: string[]): Promise<number> {
  let parsed: { values: { config?: string; label?: string; help?: boolean }; positionals: string[] };
  try {
    parsed = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, label: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
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
  const config = loadConfig(process.env, parsed.values.config);
  if (parsed.positionals[0] === 'keys' && parsed.positionals[1] === 'add') {
    const storage = await openStorage(config);
    const key = await storage.createApiKey(parsed.values.label ?? 'unnamed');
    await storage.close();
    process.stdout.write(`${JSON.stringify(key)}\n`);
    return 0;
  }
  if (parsed.positionals.length > 0) {
    process.stderr.write(`moat-verifier: unknown command ${parsed.positionals.join(' ')}\n${USAGE}\n`);
    return 2;
  }
  const verifier = await createVerifier(config);
  const url = await verifier.listen();
  process.stdout.write(`moat-verifier listening on ${url}\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await verifier.close();
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
    process.exitCode = 2;
  },
);
