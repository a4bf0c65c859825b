// Test and bench helper: Claude Code's own binary, as `npm install @anthropic-ai/claude-code` leaves it.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** The binary of the platform package `@anthropic-ai/claude-code` installs for this machine, if any. */
export function claudeBinary(): string | undefined {
  try {
    const wrapper = createRequire(import.meta.url).resolve('@anthropic-ai/claude-code/package.json');
    const platform = `@anthropic-ai/claude-code-${process.platform}-${process.arch}`;
    const dir = dirname(createRequire(wrapper).resolve(`${platform}/package.json`));
    const binary = join(dir, process.platform === 'win32' ? 'claude.exe' : 'claude');
    return existsSync(binary) ? binary : undefined;
  } catch {
    return undefined;
  }
}
