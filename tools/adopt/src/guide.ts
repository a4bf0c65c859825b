/**
 * docs/adopt.md read as a script: its steps (`<!-- step: NAME [file=F] [background] [later] -->`
 * before a fenced block) and the package names it tells people to install and `npx`.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './registry.js';

/** One step of the guide: its name, the fence's language, the block, and what the marker says. */
export interface GuideStep {
  readonly name: string;
  readonly lang: string;
  readonly body: string;
  /** Where the block is saved (`file=app.mts`), for a snippet or a file. */
  readonly file?: string | undefined;
  /** A long-running command (the verifier), started and left running. */
  readonly background: boolean;
}

/** The guide's text. */
export const guide = (): string => readFileSync(join(root, 'docs', 'adopt.md'), 'utf8');

/** Every step, in the guide's order. */
export function steps(text = guide()): GuideStep[] {
  const out: GuideStep[] = [];
  for (const m of text.matchAll(/<!-- step: ([a-z-]+)((?: [a-z]+(?:=[^\s>]+)?)*) -->\n```(\w*)\n([\s\S]*?)```/g)) {
    const flags = (m[2] ?? '').trim().split(/\s+/);
    const file = flags.find((f) => f.startsWith('file='))?.slice('file='.length);
    out.push({ name: m[1] as string, lang: m[3] as string, body: m[4] as string, file, background: flags.includes('background') });
  }
  return out;
}

/** Every fenced block of the guide, marked as a step or not. */
export function fencedBlocks(text = guide()): Array<{ lang: string; body: string }> {
  return [...text.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1] as string, body: m[2] as string }));
}

/** The commands `npx` runs in the guide's shell blocks (the word after `npx` and its options). */
export function npxCommands(text = guide()): string[] {
  return fencedBlocks(text)
    .filter((b) => b.lang === 'sh')
    .flatMap((b) => [...b.body.matchAll(/(?:^|\s)npx\s+((?:-\S+\s+)*)(\S+)/gm)].map((m) => m[2] as string));
}

/** The packages the guide's `npm install` lines install. */
export function installedPackages(text = guide()): string[] {
  return fencedBlocks(text)
    .filter((b) => b.lang === 'sh')
    .flatMap((b) => [...b.body.matchAll(/^npm (?:install|i|add)\b(.*)$/gm)])
    .flatMap((m) => (m[1] as string).trim().split(/\s+/))
    .filter((w) => w !== '' && !w.startsWith('-'))
    .map((w) => w.replace(/(?<=.)@[^/]*$/, ''));
}

/** Every `@moat/…` package name the guide mentions, anywhere. */
export function moatNames(text = guide()): string[] {
  return [...new Set([...text.matchAll(/@moat\/[a-z0-9-]+/g)].map((m) => m[0]))];
}
