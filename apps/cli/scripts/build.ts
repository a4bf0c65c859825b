/**
 * Builds moat-chat from one codebase: dist/internal/moat-chat.js and
 * dist/external/moat-chat.js (esbuild with the build-flag plugin), and the standalone
 * external executable dist/moat-chat (bun build --compile, native addon embedded). Then
 * moat-scan checks every external output — bundle, executable, npm pack contents — against
 * codenames.txt and fails the build on any finding.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildVariant, validateRegistry } from '@moat/build-guard';
import { auditPack, formatHuman, parseAllowlist, parseCodenames, scanPaths } from '@moat/build-guard/scan';
import registry from '../flags.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const flags = validateRegistry(registry);
const entry = join(root, 'src/main.ts');
const banner = '#!/usr/bin/env node';

for (const variant of ['internal', 'external']) {
  await buildVariant({
    entry,
    outfile: join(root, 'dist', variant, 'moat-chat.js'),
    registry: flags,
    variant,
    external: ['@moat/native'],
    banner,
  });
  console.log(`built dist/${variant}/moat-chat.js`);
}
await buildVariant({
  entry,
  outfile: join(root, 'dist', 'moat-chat'),
  registry: flags,
  variant: 'external',
  bundler: 'bun',
  compile: true,
  bytecode: true,
});
console.log('built dist/moat-chat (standalone, external)');

const codenames = parseCodenames(readFileSync(join(root, 'codenames.txt'), 'utf8'));
const allowlist = parseAllowlist(readFileSync(join(root, 'moat-scan-allow.json'), 'utf8'));
const scan = await scanPaths([join(root, 'dist', 'external'), join(root, 'dist', 'moat-chat')], { codenames, allowlist });
const pack = await auditPack(root, {}, { codenames, allowlist });
const failures = [...scan.findings, ...pack.findings].filter((f) => f.severity !== 'note');
if (failures.length > 0 || scan.errors.length > 0) {
  process.stderr.write(formatHuman({ ...scan, findings: failures }));
  process.stderr.write('moat-chat build: the external variant leaks; see the findings above\n');
  process.exit(1);
}
console.log(
  `moat-scan: external bundle, executable (${(scan.bytes / 1e6).toFixed(0)} MB) and npm pack contents clean of ${codenames.length} codenames`,
);
