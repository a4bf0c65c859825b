import { feature } from 'bun:bundle';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { parseArgs } from 'node:util';
import { errorMessage } from '@moat/protocol/support';
import { debugReport } from './internal/debug.js';
import type { ChatSession, LayerStatus, SessionOptions } from './session.js';
import { CLIENT_VERSION } from './version.js';

const USAGE = `usage: moat-chat [options]                 interactive chat
       moat-chat -p "prompt" [options]      one answer (reads stdin when the prompt is -)
       moat-chat login                      store an API key (read from stdin), mode 0600

options:
  --base-url URL        the verifier (default $MOAT_BASE_URL or http://127.0.0.1:8787)
  --model NAME          model (default claude-mock)
  --fallback-model NAME retry on this model when the first is overloaded
  --token-file FILE     read the API key once from FILE and delete it after the first answer
  --thinking            ask for extended thinking
  --timeout SECONDS     give up when the answer does not start, or stalls, this long (default 60)
  --json                one JSON object per answer (with -p)
  --install-dir DIR     where this install's keys live (default $MOAT_INSTALL_DIR, else
                        $MOAT_CONFIG_DIR/installs, else ~/.config/moat-chat/installs)
  --verbose             print each layer's status at start
  -v, --version         print the version`;

const configDir = () => process.env.MOAT_CONFIG_DIR ?? join(homedir(), '.config', 'moat-chat');
const credentialsFile = () => join(configDir(), 'credentials');
/** The per-install key state (protocol 1.2): `--install-dir`, else MOAT_INSTALL_DIR, else beside the credentials. */
const installDir = (values: Values) => values['install-dir'] ?? process.env.MOAT_INSTALL_DIR ?? join(configDir(), 'installs');

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

const OPTIONS = {
  p: { type: 'string', short: 'p' },
  'base-url': { type: 'string' },
  model: { type: 'string' },
  'fallback-model': { type: 'string' },
  'token-file': { type: 'string' },
  thinking: { type: 'boolean' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  verbose: { type: 'boolean' },
  'install-dir': { type: 'string' },
  version: { type: 'boolean', short: 'v' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>['values'];

/** Environment variables that may hold the API key, in order. */
const KEY_ENV = ['MOAT_API_KEY', 'ANTHROPIC_API_KEY'];

/** Fails with exit code 2 and a message on stderr. */
function usageError(message: string): number {
  process.stderr.write(`moat-chat: ${message}\n`);
  return 2;
}

const noKey = () => usageError('no API key: run `moat-chat login`, set MOAT_API_KEY, or pass --token-file');

/** `moat-chat login`: the API key from stdin into the credentials file, mode 0600. */
async function login(): Promise<number> {
  const key = await readStdin();
  const printable = /^[\x21-\x7e]{8,512}$/;
  if (!printable.test(key)) return usageError('expected an API key of 8-512 printable characters on stdin');
  const file = credentialsFile();
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  process.stdout.write(`moat-chat: API key stored in ${file}\n`);
  return 0;
}

/** `--timeout` in milliseconds; `undefined` (said on stderr) when it is not a positive number. */
function timeoutOf(value: string | undefined): number | undefined {
  const seconds = value === undefined ? 60 : Number(value);
  if (Number.isFinite(seconds) && seconds > 0) return Math.round(seconds * 1000);
  usageError(`--timeout: expected a number of seconds above 0, got ${JSON.stringify(value)}`);
  return undefined;
}

type Vault = Awaited<ReturnType<typeof import('@moat/harden')['openTokenFile']>>;

/** The API key: a read-once token file, the environment (scrubbed), or the login file; or an exit code. */
type Warn = (message: string) => void;

/** The API key and, for a token file, its vault (committed after the first answer). */
interface ApiKey {
  readonly apiKey: string;
  readonly vault?: Vault | undefined;
}

async function readApiKey(values: Values, warn: Warn): Promise<ApiKey | number> {
  const { openTokenFile, tokensFromEnv } = await import('@moat/harden');
  const tokenFile = values['token-file'];
  try {
    if (tokenFile !== undefined) {
      const vault = await openTokenFile(tokenFile, { onWarning: warn });
      return { apiKey: vault.use((t) => t.toString()), vault };
    }
    const vaults = await tokensFromEnv(KEY_ENV, { onWarning: warn });
    const v = vaults.get('MOAT_API_KEY') ?? vaults.get('ANTHROPIC_API_KEY');
    return { apiKey: v?.use((t) => t.toString()) ?? readFileSync(credentialsFile(), 'utf8').trim() };
  } catch (error) {
    return tokenFile === undefined ? noKey() : usageError(errorMessage(error));
  }
}

/** Called after the first answer (a read-once token file is deleted then). */
type Done = () => Promise<void>;

/** One layer's status, as `--verbose` prints it. */
const statusLine = (s: LayerStatus) => `${s.layer.padEnd(18)} ${s.state.padEnd(9)} ${s.detail}`;

/** A slash command's answer, or `undefined` when the line is a message for the model. */
function command(line: string, session: ChatSession): string | undefined {
  if (line === '/help') return `commands: /model NAME, /quit${feature('DEBUG_COMMANDS') ? ', /debug' : ''}`;
  if (line.startsWith('/model')) {
    const name = line.slice(6).trim();
    if (name === '') return `model: ${session.model}`;
    session.model = name;
    return `model: ${name}`;
  }
  if (feature('DEBUG_COMMANDS')) {
    if (line === '/debug') return debugReport(session);
  }
  if (line.startsWith('/')) return `unknown command ${line.split(' ')[0]}`;
  return undefined;
}

/** `-p`: one answer (or one command's), printed as text or as one JSON object. */
async function oneShot(values: Values, session: ChatSession, warnings: string[], answered: Done): Promise<number> {
  const prompt = values.p === '-' ? await readStdin() : (values.p ?? '');
  const answer = command(prompt, session);
  if (answer !== undefined) {
    process.stdout.write(`${answer}\n`);
    return answer.startsWith('unknown command') ? 1 : 0;
  }
  const result = await session.send(prompt, values.json ? () => {} : (d) => process.stdout.write(d));
  await answered();
  if (values.json) {
    const { text, model, fellBack } = result;
    process.stdout.write(`${JSON.stringify({ text, model, fellBack, warnings })}\n`);
  } else process.stdout.write('\n');
  return 0;
}

/** The session's options from the command line. */
function sessionOptions(values: Values, apiKey: string, timeoutMs: number, warn: Warn): SessionOptions {
  return {
    baseUrl: values['base-url'] ?? process.env.MOAT_BASE_URL ?? 'http://127.0.0.1:8787',
    apiKey,
    model: values.model ?? 'claude-mock',
    fallbackModel: values['fallback-model'],
    // biome-ignore lint/complexity/noUselessTernary: Bun allows feature() only as an if or ternary condition.
    antiDistillation: feature('ANTI_DISTILLATION') ? true : false,
    thinking: values.thinking === true,
    timeoutMs,
    installDir: installDir(values),
    warn,
  };
}

async function main(argv: string[]): Promise<number> {
  let values: Values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true }));
  } catch (error) {
    process.stderr.write(`moat-chat: ${errorMessage(error)}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`moat-chat ${CLIENT_VERSION} (${process.env.USER_TYPE})\n`);
    return 0;
  }
  const warnings: string[] = [];
  const warn = (m: string) => {
    warnings.push(m);
    if (values.verbose) process.stderr.write(`warning: ${m}\n`);
  };
  if (positionals[0] === 'login') return login();
  const fromEnv = KEY_ENV.some((n) => process.env[n]);
  if (values['token-file'] === undefined && !fromEnv && !existsSync(credentialsFile())) return noKey();
  const timeoutMs = timeoutOf(values.timeout);
  if (timeoutMs === undefined) return 2;

  // The prompt goes up before the layers load (their code, the native addon, hardening and
  // the flag fetch take a few ms more); no line is handled until they are up.
  const interactive = values.p === undefined;
  const prompt = interactive ? openPrompt() : undefined;
  const [key, { ChatSession }] = await Promise.all([readApiKey(values, warn), import('./session.js')]);
  if (typeof key === 'number') {
    prompt?.rl.close();
    return key;
  }
  const { vault } = key;
  const starting = ChatSession.start(sessionOptions(values, key.apiKey, timeoutMs, warn));
  let session: ChatSession | undefined;
  const ready = async (): Promise<ChatSession> => {
    if (session !== undefined) return session;
    session = await starting;
    if (values.verbose) for (const s of session.status) process.stderr.write(`${statusLine(s)}\n`);
    return session;
  };
  const answered = async () => {
    await vault?.commit();
  };
  try {
    if (prompt !== undefined) return await repl(prompt, ready, answered);
    return await oneShot(values, await ready(), warnings, answered);
  } catch (error) {
    process.stderr.write(`moat-chat: ${errorMessage(error)}\n`);
    return 1;
  } finally {
    vault?.dispose();
    await (session ?? (await starting.catch(() => undefined)))?.close();
  }
}

interface Prompt {
  readonly rl: Interface;
  readonly lines: AsyncIterableIterator<string>;
}

/** The REPL's readline, prompting at once; lines typed meanwhile queue in `lines`. */
function openPrompt(): Prompt {
  const rl = createInterface({
    input: process.stdin,
    output: process.stdout,
    prompt: '> ',
    historySize: 500,
    terminal: process.stdin.isTTY === true,
  });
  const lines = rl[Symbol.asyncIterator]();
  // Piped input works too: one question per line, and the end of input ends the session.
  rl.prompt();
  return { rl, lines };
}

async function repl({ rl, lines }: Prompt, ready: () => Promise<ChatSession>, started: Done): Promise<number> {
  let current: AbortController | undefined;
  let closed = false;
  rl.once('close', () => {
    closed = true;
  });
  const prompt = () => {
    if (!closed) rl.prompt();
  };
  rl.on('SIGINT', () => {
    if (current !== undefined) {
      current.abort();
      process.stdout.write('\n[cancelled]\n');
    } else rl.close();
  });
  for await (const raw of lines) {
    const line = raw.trim();
    if (line === '') {
      prompt();
      continue;
    }
    if (line === '/quit' || line === '/exit') break;
    const session = await ready();
    const answer = command(line, session);
    if (answer !== undefined) process.stdout.write(`${answer}\n`);
    else {
      current = new AbortController();
      try {
        await session.send(line, (d) => process.stdout.write(d), current.signal);
        process.stdout.write('\n');
        await started();
      } catch (error) {
        if (!current.signal.aborted) process.stdout.write(`error: ${errorMessage(error)}\n`);
      }
      current = undefined;
    }
    prompt();
  }
  rl.close();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exit(code);
  },
  (error: unknown) => {
    process.stderr.write(`moat-chat: ${errorMessage(error)}\n`);
    process.exit(1);
  },
);
