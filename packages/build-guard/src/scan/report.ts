import packageJson from '../../package.json' with { type: 'json' };
import { formPhrase } from './needles.js';
import type { Finding, ScanReport } from './scanner.js';

/** The scanner's version in a SARIF log: this package's own (bundled in at build time). */
const TOOL_VERSION: string = packageJson.version;

/** Options of {@link formatHuman}. */
export interface HumanReportOptions {
  /** Every location of every group (default: the first {@link FIRST_LOCATIONS}). */
  readonly verbose?: boolean;
}

/** Locations shown per group unless verbose. */
export const FIRST_LOCATIONS = 3;

const RANK = { error: 0, warning: 1, note: 2 } as const;

/** Every distinct codename among `findings`, quoted, in order of first appearance. */
function codenameList(findings: readonly Finding[]): string {
  return [...new Set(findings.flatMap((f) => (f.codename === undefined ? [] : [f.codename])))].map((c) => JSON.stringify(c)).join(', ');
}

/**
 * What a group's heading says: its one message; for codenames, every codename the group holds
 * (one file's leaks of several codenames in one form are one group, and each name counts).
 */
function groupHeading(group: readonly Finding[]): { text: string; perFinding: boolean } {
  const first = group[0] as Finding;
  const messages = new Set(group.map((f) => f.message));
  if (messages.size === 1) return { text: first.message, perFinding: false };
  if (first.encoding !== undefined && group.every((f) => f.encoding === first.encoding && f.codename !== undefined)) {
    const names = new Set(group.map((f) => f.codename)).size;
    return { text: `internal codename${names > 1 ? 's' : ''} ${codenameList(group)} ${formPhrase(first.encoding)}`, perFinding: true };
  }
  const others = messages.size - 1;
  return { text: `${first.message} (and ${others} other ${others === 1 ? 'message' : 'messages'})`, perFinding: true };
}

/**
 * The report people read: a one-line verdict first, then every distinct codename found, then
 * the findings grouped by file and rule — the rule's message once (every codename of the
 * group), how many times it was found and the first few locations (`verbose` for all) —
 * worst first; unreadable inputs last. One shipped source map is one group, not a thousand
 * lines. SARIF and JSON stay complete.
 */
export function formatHuman(report: ScanReport, options: HumanReportOptions = {}): string {
  const counts = { error: 0, warning: 0, note: 0 };
  for (const f of report.findings) counts[f.severity]++;
  const groups = new Map<string, Finding[]>();
  for (const f of report.findings) {
    const key = `${f.path}\u0000${f.ruleId}`;
    const list = groups.get(key);
    if (list === undefined) groups.set(key, [f]);
    else list.push(f);
  }
  const failed = counts.error + counts.warning > 0 || report.errors.length > 0;
  const lines = [
    `moat-scan: ${failed ? 'FAIL' : 'PASS'} — ${report.files} files, ${(report.bytes / 1e6).toFixed(1)} MB: ${counts.error} errors, ${counts.warning} warnings, ${counts.note} notes in ${groups.size} groups` +
      (report.suppressed > 0 ? `, ${report.suppressed} allowlisted` : '') +
      (report.errors.length > 0 ? `, ${report.errors.length} unreadable inputs` : ''),
  ];
  const codenames = codenameList(report.findings);
  if (codenames !== '') lines.push(`codenames found: ${codenames}`);
  const ordered = [...groups.values()].sort(
    (a, b) =>
      RANK[(a[0] as Finding).severity] - RANK[(b[0] as Finding).severity] ||
      b.length - a.length ||
      ((a[0] as Finding).path < (b[0] as Finding).path ? -1 : 1),
  );
  for (const group of ordered) {
    const first = group[0] as Finding;
    const heading = groupHeading(group);
    lines.push(
      `${first.severity.padEnd(7)} ${first.path}  ${heading.text}  [${first.ruleId}]${group.length > 1 ? ` ×${group.length}` : ''}`,
    );
    const shown = options.verbose === true ? group : group.slice(0, FIRST_LOCATIONS);
    for (const f of shown) {
      if (f.offset === undefined && f.context === undefined) continue;
      lines.push(
        `        ${f.offset === undefined ? '' : `@${f.offset}`}${f.context === undefined ? '' : `  …${f.context}…`}${heading.perFinding ? `  ${f.message}` : ''}`,
      );
    }
    if (shown.length < group.length) lines.push(`        … ${group.length - shown.length} more (--verbose for all)`);
  }
  for (const e of report.errors) lines.push(`error   ${e.path}  cannot read: ${e.message}`);
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
  'moat/scan/findings-omitted': 'A file holds more findings than are listed (at most 10,000 per file are kept).',
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
