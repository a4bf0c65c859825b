/**
 * Summarizes a `node --cpu-prof` profile: the functions with the most self time and the most
 * total time (time with them on the stack, each counted once per sample), in ms and %.
 *
 *   node bench/cpu-profile.ts FILE.cpuprofile [rows] [filter]
 *
 * `filter` keeps frames whose URL contains it (e.g. `verifier`), for the total-time table.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { functionName: string; url: string; lineNumber: number };
  readonly children?: number[];
}
interface Profile {
  readonly nodes: ProfileNode[];
  readonly samples: number[];
  readonly timeDeltas: number[];
}

const [file, rowsArg, filter] = process.argv.slice(2);
if (file === undefined) throw new Error('usage: node bench/cpu-profile.ts FILE.cpuprofile [rows] [filter]');
const rows = Number(rowsArg ?? 30);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const nameOf = (n: ProfileNode) => {
  const url = n.callFrame.url.replace(/^.*\/(node_modules\/\.pnpm\/[^/]+\/node_modules\/|packages\/|apps\/)/, '');
  return `${n.callFrame.functionName || '(anonymous)'} ${url}:${n.callFrame.lineNumber + 1}`;
};
const self = new Map<string, number>();
const total = new Map<string, number>();
let all = 0;
profile.samples.forEach((id, i) => {
  const dt = (profile.timeDeltas[i] ?? 0) / 1000;
  all += dt;
  const leaf = byId.get(id) as ProfileNode;
  self.set(nameOf(leaf), (self.get(nameOf(leaf)) ?? 0) + dt);
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const node = byId.get(at) as ProfileNode;
    const name = nameOf(node);
    if (seen.has(name) || (filter !== undefined && !node.callFrame.url.includes(filter))) continue;
    seen.add(name);
    total.set(name, (total.get(name) ?? 0) + dt);
  }
});
const print = (title: string, m: Map<string, number>) => {
  console.log(`\n${title} (of ${all.toFixed(0)} ms)`);
  for (const [name, ms] of [...m].sort((a, b) => b[1] - a[1]).slice(0, rows))
    console.log(`${ms.toFixed(0).padStart(8)} ms ${((100 * ms) / all).toFixed(1).padStart(5)}%  ${name}`);
};
print('self time', self);
print('total time', total);
