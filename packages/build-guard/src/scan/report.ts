import type { Finding, ScanReport } from './scanner.js';

const TOOL_VERSION = '0.0.0';

/** Human-readable report: one line per finding with path, offset, encoding and context. */
export function formatHuman(report: ScanReport): string {
  const lines: string[] = [];
  for (const f of report.findings) {
    const where = f.offset === undefined ? f.path : `${f.path}@${f.offset}`;
    lines.push(`${f.severity.padEnd(7)} ${where}  ${f.message}  [${f.ruleId}]`);
    if (f.context !== undefined) lines.push(`        …${f.context}…`);
  }
  for (const e of report.errors) lines.push(`error   ${e.path}  cannot read: ${e.message}`);
  const counts = { error: 0, warning: 0, note: 0 };
  for (const f of report.findings) counts[f.severity]++;
  lines.push(
    `moat-scan: ${report.files} files, ${(report.bytes / 1e6).toFixed(1)} MB: ${counts.error} errors, ${counts.warning} warnings, ${counts.note} notes` +
      (report.suppressed > 0 ? `, ${report.suppressed} allowlisted` : '') +
      (report.errors.length > 0 ? `, ${report.errors.length} unreadable inputs` : ''),
  );
  return `${lines.join('\n')}\n`;
}

/** The report as JSON. */
export function formatJson(report: ScanReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

const RULE_TEXT: Record<string, string> = {
  'moat/sourcemap/map-file': 'A source map file is shipped.',
  'moat/sourcemap/sources-content': 'A shipped source map contains the original sources.',
  'moat/sourcemap/embedded-sources-content': 'A shipped file embeds original sources (sourcesContent).',
  'moat/sourcemap/inline': 'A shipped file carries an inline source map.',
  'moat/sourcemap/inline-sources-content': 'An inline source map contains the original sources.',
  'moat/sourcemap/url': 'A sourceMappingURL comment points at a source map.',
  'moat/sourcemap/source-path': 'A bundle names the source files it was built from.',
};

function ruleText(id: string): string {
  if (id.startsWith('moat/codename/')) return `An internal codename appears (${id.slice('moat/codename/'.length)}).`;
  if (id.startsWith('moat/pack/')) return `npm pack would publish a file the policy forbids (${id.slice('moat/pack/'.length)}).`;
  return RULE_TEXT[id] ?? id;
}

function artifactUri(path: string): string {
  // Archive members: the archive is the artifact; the member path goes into the message.
  const file = path.split('!')[0] as string;
  return file.startsWith('/') ? `file://${encodeURI(file)}` : encodeURI(file.replaceAll('\\', '/'));
}

/** SARIF 2.1.0 log for code-scanning UIs. */
export function formatSarif(report: ScanReport): string {
  const ruleIds = [...new Set(report.findings.map((f) => f.ruleId))].sort();
  const level = (f: Finding) => f.severity;
  const log = {
    $schema: 'https://json.schemastore.org/sarif-2.1.0.json',
    version: '2.1.0',
    runs: [
      {
        tool: {
          driver: {
            name: 'moat-scan',
            informationUri: 'https://www.npmjs.com/package/@moat/build-guard',
            version: TOOL_VERSION,
            rules: ruleIds.map((id) => ({ id, shortDescription: { text: ruleText(id) } })),
          },
        },
        results: report.findings.map((f) => ({
          ruleId: f.ruleId,
          ruleIndex: ruleIds.indexOf(f.ruleId),
          level: level(f),
          message: { text: f.path.includes('!') ? `${f.message} (in ${f.path.split('!').slice(1).join('!')})` : f.message },
          locations: [
            {
              physicalLocation: {
                artifactLocation: { uri: artifactUri(f.path) },
                ...(f.offset === undefined || f.path.includes('!')
                  ? {}
                  : { region: { byteOffset: f.offset, ...(f.length === undefined ? {} : { byteLength: f.length }) } }),
              },
            },
          ],
          ...(f.codename === undefined ? {} : { properties: { codename: f.codename, encoding: f.encoding } }),
        })),
        invocations: [
          {
            executionSuccessful: report.errors.length === 0,
            toolExecutionNotifications: report.errors.map((e) => ({
              level: 'error',
              message: { text: `cannot read ${e.path}: ${e.message}` },
            })),
          },
        ],
      },
    ],
  };
  return `${JSON.stringify(log, null, 2)}\n`;
}
