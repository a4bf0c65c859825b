import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, matchesGlob } from 'node:path';
import { promisify } from 'node:util';
import { errorMessage } from '@moat/protocol/support';
import { BuildGuardError } from '../errors.js';
import { type Finding, type ScanOptions, type ScanReport, scanPaths } from './scanner.js';

const run = promisify(execFile);

/** What `npm pack` may publish. */
export interface PackPolicy {
  /** Allow files under `src/` (default false: ship the build, not the sources). */
  readonly allowSrc?: boolean;
  /** Largest unpacked size in bytes (default 10 MB). */
  readonly maxUnpackedBytes?: number;
  /** Globs of paths that are allowed despite the rules below. */
  readonly allow?: readonly string[];
}

const SECRET_FILES: Array<[RegExp, string]> = [
  [/(^|\/)\.env(\.|$)/, 'environment file'],
  [/\.(pem|key|p12|pfx|jks|keystore)$/, 'key or certificate file'],
  [/(^|\/)id_(rsa|ed25519|ecdsa|dsa)(\.pub)?$/, 'SSH key'],
  [/(^|\/)\.npmrc$/, '.npmrc (may hold a registry token)'],
  [/(^|\/)\.(git|svn|hg)\//, 'version-control metadata'],
];

/**
 * Audits what `npm pack` would publish from `dir` — the failure that exposed a real product's
 * whole source through a shipped source map: packs the package with scripts disabled into a
 * temporary folder, checks the file list against the policy (no `*.map`, no `src/` unless
 * allowed, no `.env`, keys or `.npmrc`, a size limit), then scans the tarball itself for
 * codenames and source maps.
 *
 * @throws {BuildGuardError} `ERR_SCAN_INPUT` when `npm pack` fails.
 */
export async function auditPack(
  dir: string,
  policy: PackPolicy,
  scan: ScanOptions,
): Promise<ScanReport & { readonly tarball: string; readonly packed: number }> {
  const out = await mkdtemp(join(tmpdir(), 'moat-pack-'));
  try {
    let stdout: string;
    try {
      ({ stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], {
        cwd: dir,
        maxBuffer: 64 * 1024 * 1024,
      }));
    } catch (error) {
      throw new BuildGuardError(
        'ERR_SCAN_INPUT',
        `expected npm pack to succeed in ${dir}, got ${(error as { stderr?: string }).stderr?.trim() || errorMessage(error)}`,
      );
    }
    const [info] = JSON.parse(stdout) as Array<{ filename: string; unpackedSize: number; files: Array<{ path: string; size: number }> }>;
    if (info === undefined)
      throw new BuildGuardError('ERR_SCAN_INPUT', `expected npm pack --json to describe a tarball, got ${stdout.slice(0, 200)}`);
    const tarball = join(out, info.filename.replace(/^@/, '').replace('/', '-'));
    const policyFindings: Finding[] = [];
    const allowed = (p: string) => (policy.allow ?? []).some((g) => matchesGlob(p, g));
    for (const file of info.files) {
      if (allowed(file.path)) continue;
      const at = join(dir, file.path);
      if (file.path.endsWith('.map'))
        policyFindings.push({
          ruleId: 'moat/pack/source-map',
          severity: 'error',
          path: at,
          message: 'npm pack would publish a source map',
        });
      if (!policy.allowSrc && /^src\//.test(file.path))
        policyFindings.push({
          ruleId: 'moat/pack/source-file',
          severity: 'error',
          path: at,
          message: 'npm pack would publish a source file under src/',
        });
      if (/\.(test|spec)\.[cm]?[jt]sx?$/.test(file.path))
        policyFindings.push({
          ruleId: 'moat/pack/test-file',
          severity: 'warning',
          path: at,
          message: 'npm pack would publish a test file',
        });
      for (const [re, what] of SECRET_FILES) {
        if (re.test(file.path))
          policyFindings.push({
            ruleId: 'moat/pack/secret-file',
            severity: 'error',
            path: at,
            message: `npm pack would publish a ${what}`,
          });
      }
    }
    const limit = policy.maxUnpackedBytes ?? 10_000_000;
    if (info.unpackedSize > limit) {
      policyFindings.push({
        ruleId: 'moat/pack/size',
        severity: 'error',
        path: dir,
        message: `unpacked size ${info.unpackedSize} bytes exceeds the limit of ${limit}`,
      });
    }
    // npm pack puts every file under package/: its findings name the package's own files.
    const inTarball = `${tarball}!package/`;
    const packageDir = join(dir, '.');
    const scanned = await scanPaths([tarball], {
      ...scan,
      pathPrefixes: { [inTarball]: packageDir === '.' ? '' : `${packageDir}/` },
    });
    return {
      ...scanned,
      findings: [...policyFindings, ...scanned.findings],
      tarball: info.filename,
      packed: info.files.length,
    };
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}
