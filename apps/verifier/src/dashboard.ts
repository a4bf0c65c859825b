/**
 * The operators' dashboard: one self-contained page (no external scripts or fonts) that
 * asks for the admin token, then reads the admin API and draws SVG charts — verdicts over
 * time, attestation results, per-key mismatch rate with its Wilson interval, gateway traffic
 * and decoy hits.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>moat-verifier</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 12px 24px; display: flex; justify-content: space-between; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; padding: 16px 24px; }
  section { background: #fff; border-radius: 8px; padding: 12px 16px; box-shadow: 0 1px 2px #0002; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  #login { max-width: 360px; margin: 80px auto; background: #fff; padding: 24px; border-radius: 8px; box-shadow: 0 1px 3px #0003; }
  input { width: 100%; padding: 8px; margin: 8px 0; box-sizing: border-box; }
  button { padding: 8px 16px; }
  table { border-collapse: collapse; width: 100%; font-size: 12px; }
  td, th { border-bottom: 1px solid #e3e6ea; padding: 4px 6px; text-align: left; }
  .allow { color: #1b7f3b; } .flag { color: #b26a00; } .block { color: #b3261e; }
  #error { color: #b3261e; }
</style>
</head>
<body>
<header><strong>moat-verifier</strong><span id="total"></span></header>
<div id="login">
  <h2>Admin token</h2>
  <form id="login-form"><input id="token" type="password" autocomplete="current-password" placeholder="bearer token"><button type="submit">Sign in</button></form>
  <p id="error"></p>
</div>
<main id="app" hidden>
  <section><h2>Verdicts over time</h2><svg id="chart-verdicts" width="100%" height="180"></svg></section>
  <section><h2>Attestation results</h2><svg id="chart-attestation" width="100%" height="180"></svg></section>
  <section><h2>Mismatch rate per key (Wilson 95%)</h2><svg id="chart-keys" width="100%" height="180"></svg></section>
  <section><h2>Gateway traffic</h2><svg id="chart-gateways" width="100%" height="180"></svg></section>
  <section><h2>Decoys: requests served them, model calls answered, requests that brought one back</h2><svg id="chart-decoys" width="100%" height="180"></svg></section>
  <section><h2>Recent requests</h2><table id="records"><thead><tr><th>time</th><th>key</th><th>verdict</th><th>attestation</th><th>fingerprint</th><th>gateway</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
const NS = 'http://www.w3.org/2000/svg';
const COLORS = { allow: '#1b7f3b', flag: '#e39b00', block: '#b3261e' };
function el(name, attrs, text) { const e = document.createElementNS(NS, name); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; }
function bars(svg, entries, color) {
  svg.replaceChildren();
  const w = svg.clientWidth || 400, h = 180, max = Math.max(1, ...entries.map((e) => e[1]));
  const bw = Math.max(8, Math.min(60, (w - 20) / Math.max(1, entries.length) - 8));
  entries.forEach(([label, value], i) => {
    const bh = (h - 40) * value / max, x = 10 + i * (bw + 8);
    svg.append(el('rect', { x, y: h - 20 - bh, width: bw, height: bh, fill: typeof color === 'function' ? color(label) : color, 'data-label': label, 'data-value': value, class: 'bar' }));
    svg.append(el('text', { x: x + bw / 2, y: h - 6, 'text-anchor': 'middle', 'font-size': 10 }, label));
    svg.append(el('text', { x: x + bw / 2, y: h - 24 - bh, 'text-anchor': 'middle', 'font-size': 10 }, String(value)));
  });
  if (entries.length === 0) svg.append(el('text', { x: 10, y: 90 }, 'no data yet'));
}
function verdictsOverTime(svg, records) {
  svg.replaceChildren();
  const buckets = new Map();
  for (const r of records) { const m = Math.floor(r.ts / 60000); const b = buckets.get(m) || { allow: 0, flag: 0, block: 0 }; b[r.verdict]++; buckets.set(m, b); }
  const keys = [...buckets.keys()].sort((a, b) => a - b).slice(-30);
  const w = svg.clientWidth || 400, h = 180, max = Math.max(1, ...keys.map((k) => { const b = buckets.get(k); return b.allow + b.flag + b.block; }));
  const bw = Math.min(48, Math.max(6, (w - 20) / Math.max(1, keys.length) - 4));
  keys.forEach((k, i) => {
    let y = h - 20; const b = buckets.get(k);
    for (const v of ['allow', 'flag', 'block']) { const bh = (h - 40) * b[v] / max; y -= bh; if (bh > 0) svg.append(el('rect', { x: 10 + i * (bw + 4), y, width: bw, height: bh, fill: COLORS[v], class: 'bar', 'data-label': v, 'data-value': b[v] })); }
    svg.append(el('text', { x: 10 + i * (bw + 4), y: h - 6, 'font-size': 9 }, new Date(k * 60000).toISOString().slice(11, 16)));
  });
}
function intervals(svg, keys) {
  svg.replaceChildren();
  const rows = keys.filter((k) => k.fingerprint && k.fingerprint.n > 0);
  const w = svg.clientWidth || 400, h = 180;
  rows.forEach((k, i) => {
    const f = k.fingerprint, x = 20 + i * 60, y = (v) => h - 20 - (h - 40) * v;
    svg.append(el('line', { x1: x, x2: x, y1: y(f.wilson.low), y2: y(f.wilson.high), stroke: '#555', 'stroke-width': 2 }));
    svg.append(el('circle', { cx: x, cy: y(f.rate), r: 4, fill: f.classification === 'tampering' ? COLORS.block : f.classification === 'suspicious' ? COLORS.flag : COLORS.allow, class: 'point', 'data-label': k.label }));
    svg.append(el('text', { x: x - 18, y: h - 6, 'font-size': 9 }, k.label.slice(0, 10)));
  });
  if (rows.length === 0) svg.append(el('text', { x: 10, y: 90 }, 'no data yet'));
}
async function api(path, token) {
  const res = await fetch(path, { headers: { authorization: 'Bearer ' + token } });
  if (!res.ok) throw new Error(res.status === 401 ? 'wrong token' : 'HTTP ' + res.status);
  return res.json();
}
async function load(token) {
  const [summary, recs, keys] = await Promise.all([api('/admin/summary', token), api('/admin/records?limit=1000', token), api('/admin/keys', token)]);
  document.getElementById('total').textContent = summary.total + ' requests';
  verdictsOverTime(document.getElementById('chart-verdicts'), recs.records);
  bars(document.getElementById('chart-attestation'), Object.entries(summary.attestation), (l) => (l === 'valid' ? COLORS.allow : l === 'missing' || l === 'unavailable' ? COLORS.flag : COLORS.block));
  intervals(document.getElementById('chart-keys'), keys.keys);
  bars(document.getElementById('chart-gateways'), Object.entries(summary.gateways), '#4a5fc1');
  const decoys = recs.records.filter((r) => r.decoys > 0).length;
  bars(document.getElementById('chart-decoys'), [['served', decoys], ['called', summary.decoyCalls || 0], ['brought back', summary.decoyHits || 0]], '#7b4ac1');
  const tbody = document.querySelector('#records tbody');
  tbody.replaceChildren(...recs.records.slice(0, 50).map((r) => { const tr = document.createElement('tr'); for (const v of [new Date(r.ts).toISOString().slice(11, 19), r.keyId, r.verdict, r.attestation, r.fingerprint, r.gateway.join(',')]) { const td = document.createElement('td'); td.textContent = v ?? ''; if (v === r.verdict) td.className = v; tr.append(td); } return tr; }));
}
document.getElementById('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const token = document.getElementById('token').value;
  try { await load(token); sessionStorage.setItem('moat-admin', token); document.getElementById('login').hidden = true; document.getElementById('app').hidden = false; await load(token); setInterval(() => load(token).catch(() => {}), 5000); }
  catch (err) { document.getElementById('error').textContent = 'Sign-in failed: ' + err.message; }
});
</script>
</body>
</html>
`;
