// Worker thread of scanPaths: scans its share of the files and posts the report back.
import { parentPort, workerData } from 'node:worker_threads';
import { type ScanOptions, scanPaths } from './scanner.js';

const { paths, options } = workerData as { paths: string[]; options: ScanOptions };
const report = await scanPaths(paths, {
  ...options,
  workers: 1,
  onProgress: (p) => parentPort?.postMessage({ type: 'progress', ...p }),
});
parentPort?.postMessage({ type: 'done', report });
