/**
 * Sums the results every test runner of the workspace wrote to its package's
 * `test-results/` folder (vitest's JSON reporter, the Python vector runner) and prints one
 * line per runner and a closing `tests: N passed, M failed` line. Exits non-zero when a
 * test failed or no results were found.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

const root = join(import.meta.dirname, '..');
const folders = ['packages', 'apps', 'tools'].flatMap((group) => {
  const dir = join(root, group);
  return existsSync(dir) ? readdirSync(dir).map((name) => join(group, name)) : [];
});
if (existsSync(join(root, 'native', 'package.json'))) folders.push('native');

function countsOf(file: string): Counts {
  const data = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  if (typeof data.numPassedTests === 'number') {
    // vitest JSON reporter
    return {
      passed: data.numPassedTests,
      failed: Number(data.numFailedTests ?? 0),
      skipped: Number(data.numPendingTests ?? 0) + Number(data.numTodoTests ?? 0),
    };
  }
  if (typeof data.passed === 'number') return { passed: data.passed, failed: Number(data.failed ?? 0), skipped: Number(data.skipped ?? 0) };
  throw new Error(`${file}: not a known test-results format`);
}

const total: Counts = { passed: 0, failed: 0, skipped: 0 };
let runners = 0;
for (const folder of folders) {
  const dir = join(root, folder, 'test-results');
  if (!existsSync(dir)) continue;
  for (const name of readdirSync(dir)
    .filter((n) => n.endsWith('.json'))
    .sort()) {
    const c = countsOf(join(dir, name));
    runners++;
    total.passed += c.passed;
    total.failed += c.failed;
    total.skipped += c.skipped;
    console.log(`  ${folder}/test-results/${name}: ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`);
  }
}
if (runners === 0) {
  console.error('no test results found: did the test task run?');
  process.exit(1);
}
console.log(`tests: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped`);
process.exit(total.failed > 0 ? 1 : 0);
