import { createHash } from 'node:crypto';
import { dashboardFilters, RECORDED_SIGNALS } from './signals.js';

/**
 * The operators' dashboard: one self-contained page (no external scripts, styles or fonts)
 * that asks for the admin token, then reads the admin API for a chosen time range and shows
 * what an operator acts on — totals, verdicts over time and attestation results with axes,
 * a per-key table sorted by risk (requests, verdicts, fingerprint mismatch rate with its
 * Wilson interval, decoy hits, gateways), and the records behind it with the reasons for
 * each verdict, filtered by key (a click on a key's row), verdict and signal. Every value
 * from the API is written with `textContent`, never as markup. State lives in the URL's
 * fragment, so a view can be linked.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>moat-verifier</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  * { box-sizing: border-box; }
  body { font: 14px system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; justify-content: space-between; }
  header label { font-size: 13px; }
  select, input, button { font: inherit; padding: 6px 8px; border: 1px solid #c5cad3; border-radius: 6px; background: #fff; color: #1d2330; }
  button { cursor: pointer; }
  main { padding: 16px 20px; display: grid; gap: 16px; grid-template-columns: repeat(2, minmax(0, 1fr)); }
  section { background: #fff; border-radius: 8px; padding: 12px 16px; box-shadow: 0 1px 2px #0002; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  .tiles { display: grid; grid-template-columns: repeat(5, minmax(0, 1fr)); gap: 8px; }
  .tile { background: #f1f3f6; border-radius: 6px; padding: 8px 10px; }
  .tile b { display: block; font-size: 22px; }
  .tile span { font-size: 12px; color: #556; }
  .scroll { overflow-x: auto; }
  table { border-collapse: collapse; width: 100%; font-size: 12px; }
  td, th { border-bottom: 1px solid #e3e6ea; padding: 5px 6px; text-align: left; vertical-align: top; }
  th { white-space: nowrap; background: #fafbfc; }
  th[data-sort] { cursor: pointer; text-decoration: underline dotted; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  #keys tbody tr { cursor: pointer; }
  #keys tbody tr:hover, #keys tbody tr.selected { background: #eef2ff; }
  .key-label { font-weight: 600; overflow-wrap: anywhere; }
  #keys td:nth-child(2) { min-width: 200px; }
  td.key-cell { min-width: 140px; overflow-wrap: anywhere; }
  #records td:first-child { white-space: nowrap; }
  .key-id { color: #667; font-size: 11px; overflow-wrap: anywhere; }
  .reasons { overflow-wrap: anywhere; min-width: 260px; }
  .allow { color: #1b7f3b; } .flag { color: #a35f00; } .block { color: #b3261e; }
  .filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 8px; }
  .chip { background: #eef2ff; border: 1px solid #b8c2ef; border-radius: 12px; padding: 2px 4px 2px 10px; display: inline-flex; gap: 6px; align-items: center; }
  .chip button { border: 0; background: transparent; padding: 0 6px; }
  .empty { color: #667; padding: 12px 0; }
  svg text { fill: #1d2330; }
  #login { max-width: 360px; margin: 80px auto; background: #fff; padding: 24px; border-radius: 8px; box-shadow: 0 1px 3px #0003; }
  #login input { width: 100%; margin: 8px 0; }
  #error, #hash-error { color: #b3261e; }
  @media (max-width: 760px) {
    main { grid-template-columns: minmax(0, 1fr); padding: 10px; }
    .tiles { grid-template-columns: repeat(2, minmax(0, 1fr)); }
    header { padding: 10px; }
  }
</style>
</head>
<body>
<header>
  <strong>moat-verifier</strong>
  <span id="controls" hidden>
    <label>Time range
      <select id="range">
        <option value="900000">last 15 minutes</option>
        <option value="3600000">last hour</option>
        <option value="21600000">last 6 hours</option>
        <option value="86400000" selected>last 24 hours</option>
        <option value="604800000">last 7 days</option>
        <option value="all">everything</option>
      </select>
    </label>
    <span id="updated"></span>
  </span>
  <span id="hash-error" role="alert"></span>
</header>
<div id="login">
  <h2>Admin token</h2>
  <form id="login-form"><input id="token" type="password" autocomplete="current-password" placeholder="bearer token"><button type="submit">Sign in</button></form>
  <p id="error"></p>
</div>
<main id="app" hidden>
  <section class="wide"><div class="tiles" id="tiles"></div></section>
  <section><h2>Verdicts over time</h2><svg id="chart-verdicts" width="100%" height="200" role="img" aria-label="verdicts over time"></svg></section>
  <section><h2>Attestation results</h2><svg id="chart-attestation" width="100%" height="200" role="img" aria-label="attestation results"></svg></section>
  <section class="wide">
    <h2>Keys by risk <small>(click a key for its requests)</small></h2>
    <div class="scroll"><table id="keys"><thead><tr>
      <th data-sort="risk" class="num">risk</th><th data-sort="label">key</th><th data-sort="requests" class="num">requests</th>
      <th data-sort="allow" class="num">allow</th><th data-sort="flag" class="num">flag</th><th data-sort="block" class="num">block</th>
      <th data-sort="mismatch" class="num">mismatch rate (95%)</th><th data-sort="decoyHits" class="num">decoy hits</th><th>gateways</th><th data-sort="last">last request</th>
    </tr></thead><tbody></tbody></table></div>
  </section>
  <section class="wide">
    <h2>Requests and why they got their verdict</h2>
    <div class="filters">
      <label>Verdict <select id="filter-verdict"><option value="">any</option><option>allow</option><option>flag</option><option>block</option></select></label>
      <label>Signal <select id="filter-signal"><option value="">any</option></select></label>
      <span id="filter-key"></span>
    </div>
    <div class="scroll"><table id="records"><thead><tr>
      <th>time</th><th>key</th><th>verdict</th>${RECORDED_SIGNALS.map((row) => `<th>${row.label}</th>`).join('')}<th>gateway</th><th class="num">status</th><th>reasons</th>
    </tr></thead><tbody></tbody></table></div>
  </section>
  <section>
    <h2>Installs per key <small>(per-install keys)</small></h2>
    <div class="scroll"><table id="installs"><thead><tr>
      <th>key</th><th class="num">installs</th><th class="num">revoked</th><th class="num">over limit</th><th>newest</th>
    </tr></thead><tbody></tbody></table></div>
  </section>
  <section>
    <h2>Refused enrollments</h2>
    <div class="scroll"><table id="enrollments"><thead><tr>
      <th>time</th><th>key</th><th>outcome</th><th>answer</th><th>release</th>
    </tr></thead><tbody></tbody></table></div>
  </section>
</main>
<script>
const NS = 'http://www.w3.org/2000/svg';
const COLORS = { allow: '#1b7f3b', flag: '#e39b00', block: '#b3261e' };
// From the signal registry: the filters, and the recorded signals shown as columns.
const SIGNALS = ${JSON.stringify(dashboardFilters())};
const RECORD_SIGNALS = ${JSON.stringify(RECORDED_SIGNALS.map((row) => row.name))};
const state = { token: '', range: '86400000', key: '', verdict: '', signal: '', sort: 'risk', desc: true, keys: [] };
let timer;
let started = false;

function el(name, attrs, text) { const e = document.createElementNS(NS, name); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v)); if (text !== undefined) e.textContent = text; return e; }
function cell(tr, text, cls) { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; tr.append(td); return td; }
function fmtTime(ms, withDate) { const d = new Date(ms); const iso = d.toISOString(); return withDate ? iso.slice(5, 10) + ' ' + iso.slice(11, 16) : iso.slice(11, 19); }
/** Risk: blocked and flagged share, the fingerprint mismatch rate's lower bound, decoys brought back, a tampering classification. */
function riskOf(k) {
  const low = k.mismatchRate ? k.mismatchRate.low : 0;
  return (k.block + 0.5 * k.flag) / Math.max(1, k.requests) + low + (k.decoyHits > 0 ? 1 : 0) + (k.classification === 'tampering' ? 1 : 0);
}
function rangeQuery() { return state.range === 'all' ? '' : 'since=' + (Date.now() - Number(state.range)); }
async function api(path) {
  const res = await fetch(path, { headers: { authorization: 'Bearer ' + state.token } });
  if (!res.ok) throw new Error(res.status === 401 ? 'wrong token' : 'HTTP ' + res.status);
  return res.json();
}
function saveHash() {
  const p = new URLSearchParams();
  for (const k of ['range', 'key', 'verdict', 'signal', 'sort']) if (state[k]) p.set(k, state[k]);
  if (!state.desc) p.set('asc', '1');
  history.replaceState(null, '', '#' + p.toString());
}
/** What the fragment may set, each checked: a link is untrusted input, and a bad value is named, not used. */
const HASH_VALUES = {
  range: (v) => [...document.querySelectorAll('#range option')].some((o) => o.value === v),
  key: (v) => /^[A-Za-z0-9_-]{1,64}$/.test(v),
  verdict: (v) => ['allow', 'flag', 'block'].includes(v),
  signal: (v) => SIGNALS.some(({ filter, values }) => values.some((x) => filter + '=' + x === v)),
  sort: (v) => [...document.querySelectorAll('#keys th[data-sort]')].some((th) => th.dataset.sort === v),
};
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const bad = [];
  for (const [k, ok] of Object.entries(HASH_VALUES)) {
    const v = p.get(k);
    if (v === null || v === '') continue;
    if (ok(v)) state[k] = v; else bad.push(k + '=' + v.slice(0, 40));
  }
  state.desc = p.get('asc') !== '1';
  document.getElementById('hash-error').textContent = bad.length ? 'Ignored in the link: ' + bad.join(', ') : '';
}

/** Axes: y ticks at 0, half and max; x labels under the first, middle and last column. */
function axes(svg, w, h, pad, max, xLabels) {
  svg.append(el('line', { x1: pad.l, x2: pad.l, y1: pad.t, y2: h - pad.b, stroke: '#99a' }));
  svg.append(el('line', { x1: pad.l, x2: w - pad.r, y1: h - pad.b, y2: h - pad.b, stroke: '#99a' }));
  for (const v of [0, Math.round(max / 2), max]) {
    const y = h - pad.b - (h - pad.t - pad.b) * v / max;
    svg.append(el('line', { x1: pad.l - 4, x2: pad.l, y1: y, y2: y, stroke: '#99a' }));
    svg.append(el('text', { x: pad.l - 6, y: y + 3, 'text-anchor': 'end', 'font-size': 10, class: 'tick' }, String(v)));
  }
  xLabels.forEach(([x, label], i) => svg.append(el('text', { x, y: h - pad.b + 14, 'text-anchor': i === 0 ? 'start' : i === xLabels.length - 1 ? 'end' : 'middle', 'font-size': 10, class: 'xlabel' }, label)));
}
function verdictsOverTime(svg, records, since, until) {
  svg.replaceChildren();
  const w = svg.clientWidth || 480, h = 200, pad = { l: 40, r: 10, t: 10, b: 24 };
  if (records.length === 0) { svg.append(el('text', { x: pad.l, y: 100 }, 'no requests in this range')); return; }
  const start = since ?? Math.min(...records.map((r) => r.ts)), end = until, n = 24;
  const size = Math.max(1000, Math.ceil((end - start) / n));
  const buckets = Array.from({ length: n }, () => ({ allow: 0, flag: 0, block: 0 }));
  for (const r of records) { const i = Math.min(n - 1, Math.max(0, Math.floor((r.ts - start) / size))); buckets[i][r.verdict]++; }
  const max = Math.max(1, ...buckets.map((b) => b.allow + b.flag + b.block));
  const bw = (w - pad.l - pad.r) / n;
  buckets.forEach((b, i) => {
    let y = h - pad.b;
    for (const v of ['allow', 'flag', 'block']) {
      const bh = (h - pad.t - pad.b) * b[v] / max; y -= bh;
      if (bh > 0) svg.append(el('rect', { x: pad.l + i * bw + 1, y, width: Math.max(1, bw - 2), height: bh, fill: COLORS[v], class: 'bar', 'data-label': v, 'data-value': b[v] }));
    }
  });
  const long = end - start >= 6 * 3600000;
  axes(svg, w, h, pad, max, [[pad.l, fmtTime(start, long)], [pad.l + (n / 2) * bw, fmtTime(start + (n / 2) * size, long)], [w - pad.r, fmtTime(end, long)]]);
}
function attestationBars(svg, counts) {
  svg.replaceChildren();
  svg.setAttribute('height', '200');
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const w = svg.clientWidth || 480, h = 200, pad = { l: 92, r: 40, t: 6 };
  if (entries.length === 0) { svg.append(el('text', { x: 10, y: 100 }, 'no requests in this range')); return; }
  const max = Math.max(1, ...entries.map((e) => e[1]));
  const rowH = Math.min(28, (h - pad.t) / entries.length);
  svg.setAttribute('height', String(Math.max(60, pad.t * 2 + rowH * entries.length)));
  entries.forEach(([label, value], i) => {
    const y = pad.t + i * rowH, bw = (w - pad.l - pad.r) * value / max;
    const color = label === 'valid' ? COLORS.allow : label === 'missing' || label === 'unavailable' || label === 'revoked' ? COLORS.flag : COLORS.block;
    svg.append(el('text', { x: pad.l - 6, y: y + rowH / 2 + 4, 'text-anchor': 'end', 'font-size': 11 }, label));
    svg.append(el('rect', { x: pad.l, y: y + 3, width: Math.max(1, bw), height: rowH - 6, fill: color, class: 'bar', 'data-label': label, 'data-value': value }));
    svg.append(el('text', { x: pad.l + bw + 4, y: y + rowH / 2 + 4, 'font-size': 11 }, String(value)));
  });
}
function tiles(summary, hits) {
  const t = document.getElementById('tiles');
  t.replaceChildren(...[['requests', summary.total], ['allowed', summary.verdicts.allow || 0], ['flagged', summary.verdicts.flag || 0], ['blocked', summary.verdicts.block || 0], ['unfinished', summary.unfinished || 0], ['decoy hits', hits]].map(([name, value]) => {
    const d = document.createElement('div'); d.className = 'tile'; d.dataset.tile = name;
    const b = document.createElement('b'); b.textContent = String(value);
    const s = document.createElement('span'); s.textContent = name;
    d.append(b, s); return d;
  }));
}
function renderKeys() {
  const body = document.querySelector('#keys tbody');
  const value = (k) => state.sort === 'label' ? (k.label || k.keyId) : state.sort === 'mismatch' ? (k.mismatchRate ? k.mismatchRate.rate : 0) : state.sort === 'risk' ? k.risk : k[state.sort];
  const rows = [...state.keys].sort((a, b) => { const x = value(a), y = value(b); const c = x < y ? -1 : x > y ? 1 : 0; return state.desc ? -c : c; });
  if (rows.length === 0) { const tr = document.createElement('tr'); cell(tr, 'no key sent requests in this range', 'empty').colSpan = 10; body.replaceChildren(tr); return; }
  body.replaceChildren(...rows.map((k) => {
    const tr = document.createElement('tr'); tr.dataset.key = k.keyId; if (k.keyId === state.key) tr.className = 'selected';
    cell(tr, k.risk.toFixed(2), 'num');
    const name = cell(tr, ''); const l = document.createElement('div'); l.className = 'key-label'; l.textContent = k.label || '(no label)';
    const id = document.createElement('div'); id.className = 'key-id'; id.textContent = k.keyId + (k.classification ? ' · ' + k.classification : ''); name.append(l, id);
    cell(tr, String(k.requests), 'num'); cell(tr, String(k.allow), 'num allow'); cell(tr, String(k.flag), 'num flag'); cell(tr, String(k.block), 'num block');
    const w = k.mismatchRate;
    cell(tr, w === null ? '–' : (100 * w.rate).toFixed(0) + '% [' + (100 * w.low).toFixed(0) + '–' + (100 * w.high).toFixed(0) + '%] of ' + (k.match + k.mismatch), 'num mismatch');
    cell(tr, String(k.decoyHits), 'num'); cell(tr, k.gateways.join(', ') || '–'); cell(tr, fmtTime(k.last, true));
    tr.addEventListener('click', () => { state.key = state.key === k.keyId ? '' : k.keyId; saveHash(); refresh(); });
    return tr;
  }));
}
function renderRecords(records) {
  const body = document.querySelector('#records tbody');
  if (records.length === 0) { const tr = document.createElement('tr'); cell(tr, 'no requests match', 'empty').colSpan = 6 + RECORD_SIGNALS.length; body.replaceChildren(tr); return; }
  const labels = new Map(state.keys.map((k) => [k.keyId, k.label]));
  body.replaceChildren(...records.map((r) => {
    const tr = document.createElement('tr'); tr.dataset.verdict = r.verdict;
    cell(tr, fmtTime(r.ts, state.range !== '900000' && state.range !== '3600000'));
    cell(tr, (labels.get(r.keyId) || r.keyId || '–'), 'key-cell');
    cell(tr, r.verdict, r.verdict); for (const name of RECORD_SIGNALS) cell(tr, r[name]); cell(tr, r.gateway.join(', ') || '–');
    cell(tr, r.status === null ? '–' : String(r.status), 'num');
    cell(tr, r.reasons.join('; ') || 'no signal above monitor', 'reasons');
    return tr;
  }));
}
function rowsOrEmpty(selector, items, columns, render) {
  const body = document.querySelector(selector + ' tbody');
  if (items.length === 0) { const tr = document.createElement('tr'); cell(tr, 'none', 'empty').colSpan = columns; body.replaceChildren(tr); return; }
  body.replaceChildren(...items.map((item) => { const tr = document.createElement('tr'); render(tr, item); return tr; }));
}
function renderInstalls(keys) {
  const labels = new Map(state.keys.map((k) => [k.keyId, k.label]));
  rowsOrEmpty('#installs', keys, 5, (tr, k) => {
    cell(tr, labels.get(k.keyId) || k.keyId, 'key-cell'); cell(tr, String(k.installs), 'num');
    cell(tr, String(k.revoked), 'num'); cell(tr, String(k.overLimit), 'num' + (k.overLimit > 0 ? ' flag' : '')); cell(tr, fmtTime(k.newest, true));
  });
}
function renderEnrollments(records) {
  const refused = records.filter((e) => e.outcome !== 'created' && e.outcome !== 'over_limit').slice(0, 50);
  const labels = new Map(state.keys.map((k) => [k.keyId, k.label]));
  rowsOrEmpty('#enrollments', refused, 5, (tr, e) => {
    cell(tr, fmtTime(e.ts, true)); cell(tr, labels.get(e.keyId) || e.keyId || '–', 'key-cell'); cell(tr, e.outcome, 'block');
    cell(tr, e.reason || '–'); cell(tr, e.releaseKid || '–');
  });
}
function renderKeyChip() {
  const chip = document.getElementById('filter-key');
  chip.replaceChildren();
  if (!state.key) return;
  const k = state.keys.find((x) => x.keyId === state.key);
  const span = document.createElement('span'); span.className = 'chip'; span.textContent = 'key: ' + (k && k.label ? k.label + ' (' + state.key + ')' : state.key);
  const x = document.createElement('button'); x.type = 'button'; x.textContent = '×'; x.title = 'all keys';
  x.addEventListener('click', () => { state.key = ''; saveHash(); refresh(); });
  span.append(x); chip.append(span);
}
async function refresh() {
  const range = rangeQuery(), until = Date.now();
  const q = new URLSearchParams(range); q.set('limit', '200');
  if (state.key) q.set('key', state.key);
  if (state.verdict) q.set('verdict', state.verdict);
  if (state.signal) { const [layer, value] = state.signal.split('='); q.set(layer, value); }
  const all = new URLSearchParams(range); all.set('limit', '1000');
  const enrolled = new URLSearchParams(range); enrolled.set('limit', '500');
  if (state.key) enrolled.set('key', state.key);
  const [summary, activity, records, timeline, installs, enrollments] = await Promise.all([
    api('/admin/summary?' + range), api('/admin/activity?' + range), api('/admin/records?' + q), api('/admin/records?' + all),
    api('/admin/installs?limit=100'), api('/admin/enrollments?' + enrolled),
  ]);
  state.keys = activity.keys.map((k) => ({ ...k, risk: riskOf(k) }));
  tiles(summary, activity.keys.reduce((a, k) => a + k.decoyHits, 0));
  verdictsOverTime(document.getElementById('chart-verdicts'), timeline.records, state.range === 'all' ? undefined : until - Number(state.range), until);
  attestationBars(document.getElementById('chart-attestation'), summary.attestation);
  renderKeys(); renderKeyChip(); renderRecords(records.records);
  renderInstalls(installs.keys); renderEnrollments(enrollments.enrollments);
  document.getElementById('updated').textContent = 'updated ' + fmtTime(until);
}
function start() {
  if (started) return;
  started = true;
  readHash();
  document.getElementById('range').value = state.range;
  document.getElementById('filter-verdict').value = state.verdict;
  const signal = document.getElementById('filter-signal');
  for (const { filter, label, values } of SIGNALS) for (const v of values) { const o = document.createElement('option'); o.value = filter + '=' + v; o.textContent = label + ' = ' + v; signal.append(o); }
  signal.value = state.signal;
  document.getElementById('range').addEventListener('change', (e) => { state.range = e.target.value; saveHash(); refresh(); });
  document.getElementById('filter-verdict').addEventListener('change', (e) => { state.verdict = e.target.value; saveHash(); refresh(); });
  signal.addEventListener('change', (e) => { state.signal = e.target.value; saveHash(); refresh(); });
  for (const th of document.querySelectorAll('#keys th[data-sort]')) th.addEventListener('click', () => {
    state.desc = state.sort === th.dataset.sort ? !state.desc : true; state.sort = th.dataset.sort; saveHash(); renderKeys();
  });
  timer = setInterval(() => { if (state.token) refresh().catch(() => {}); }, 10000);
}
async function signIn(token) {
  state.token = token;
  await refresh();
  sessionStorage.setItem('moat-admin', token);
  document.getElementById('login').hidden = true;
  document.getElementById('app').hidden = false;
  document.getElementById('controls').hidden = false;
  await refresh(); // the charts measure their width once visible
}
readHash();
document.getElementById('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try { start(); await signIn(document.getElementById('token').value); }
  catch (err) { document.getElementById('error').textContent = 'Sign-in failed: ' + err.message; }
});
const saved = sessionStorage.getItem('moat-admin');
// Only a refused token is forgotten; any other failure is shown and the token kept.
if (saved) { start(); signIn(saved).catch((err) => {
  if (err.message === 'wrong token') sessionStorage.removeItem('moat-admin');
  document.getElementById('error').textContent = 'Sign-in failed: ' + err.message;
}); }
</script>
</body>
</html>
`;

/** The CSP source of an inline element's text: its SHA-256, so nothing else inline runs. */
function hashSource(html: string, tag: 'script' | 'style'): string {
  const text = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(html)?.[1];
  if (text === undefined) throw new Error(`the dashboard has no inline ${tag}`);
  return `'sha256-${createHash('sha256').update(text).digest('base64')}'`;
}

/**
 * The dashboard's Content-Security-Policy: its one script and one style by hash (no
 * `unsafe-inline`: an injected script or style does not run), data from its own origin only,
 * no framing by any origin, no plugins, no base or form targets elsewhere.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  `script-src ${hashSource(DASHBOARD_HTML, 'script')}`,
  `style-src ${hashSource(DASHBOARD_HTML, 'style')}`,
  "connect-src 'self'",
  "img-src 'self' data:",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');
