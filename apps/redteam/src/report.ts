import type { ScenarioResult } from './scenarios.js';

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] as string);

/** The trust report as a terminal table. */
export function formatTable(results: readonly ScenarioResult[]): string {
  const rows = results.map((r) => [r.skipped ? 'SKIP' : r.pass ? 'PASS' : 'FAIL', r.title, r.expected, r.skipped ?? r.observed, r.verdict]);
  const head = ['', 'scenario', 'expected', 'observed', 'verdict'];
  const width = head.map((h, i) => Math.min(i === 3 ? 70 : 48, Math.max(h.length, ...rows.map((r) => (r[i] as string).length))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (c.length > (width[i] as number) ? `${c.slice(0, (width[i] as number) - 1)}…` : c.padEnd(width[i] as number)))
      .join('  ');
  const passed = results.filter((r) => r.pass && !r.skipped).length;
  const skipped = results.filter((r) => r.skipped).length;
  return [
    line(head),
    line(width.map((w) => '─'.repeat(w))),
    ...rows.map(line),
    '',
    `${passed} of ${results.length - skipped} scenarios as expected${skipped > 0 ? `, ${skipped} skipped` : ''}`,
  ].join('\n');
}

/** The trust report as an HTML page, with the verifier's counts as bar charts. */
export function formatHtml(
  results: readonly ScenarioResult[],
  summary: { verdicts: Record<string, number>; attestation: Record<string, number>; total: number },
  dashboard?: string,
): string {
  const bars = (title: string, data: Record<string, number>) => {
    const entries = Object.entries(data);
    const max = Math.max(1, ...entries.map(([, v]) => v));
    const rects = entries
      .map(([k, v], i) => {
        const h = Math.round((120 * v) / max);
        return `<rect x="${10 + i * 70}" y="${140 - h}" width="50" height="${h}" fill="#4a5fc1"/><text x="${35 + i * 70}" y="${135 - h}" text-anchor="middle" font-size="11">${v}</text><text x="${35 + i * 70}" y="158" text-anchor="middle" font-size="11">${esc(k)}</text>`;
      })
      .join('');
    return `<section><h2>${esc(title)}</h2><svg width="${Math.max(200, 20 + entries.length * 70)}" height="165">${rects}</svg></section>`;
  };
  const rows = results
    .map(
      (r) =>
        `<tr class="${r.skipped ? 'skip' : r.pass ? 'pass' : 'fail'}"><td>${r.skipped ? 'SKIP' : r.pass ? 'PASS' : 'FAIL'}</td><td>${esc(r.title)}</td><td>${esc(r.expected)}</td><td>${esc(r.skipped ?? r.observed)}</td><td>${esc(r.verdict)}</td></tr>`,
    )
    .join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Moat trust report</title><style>
body{font:14px system-ui,sans-serif;margin:24px;color:#1d2330}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:6px;text-align:left;vertical-align:top}
.pass td:first-child{color:#1b7f3b;font-weight:bold}.fail td:first-child{color:#b3261e;font-weight:bold}.skip td:first-child{color:#888}section{display:inline-block;margin:12px 24px 0 0}
</style></head><body><h1>Moat trust report</h1><p>${new Date().toISOString()} · ${summary.total} requests recorded by the verifier${dashboard ? ` · dashboard: <a href="${esc(dashboard)}">${esc(dashboard)}</a>` : ''}</p>
<table><thead><tr><th></th><th>scenario</th><th>expected</th><th>observed</th><th>verdict</th></tr></thead><tbody>${rows}</tbody></table>
${bars('Verdicts', summary.verdicts)}${bars('Attestation', summary.attestation)}</body></html>
`;
}
