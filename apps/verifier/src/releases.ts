import type { AttestationResult } from '@moat/attest/server';
import type { Feature } from '@moat/protocol';
import type { ReleaseFeatures } from './config.js';

/** `a` compared with `b` as dotted numbers (`1.10.0` after `1.9.3`); a missing part is 0, a non-number part is lower. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+-]/);
  const pb = b.split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = Number(pa[i] ?? 0);
    const y = Number(pb[i] ?? 0);
    const nx = Number.isSafeInteger(x) ? x : -1;
    const ny = Number.isSafeInteger(y) ? y : -1;
    if (nx !== ny) return nx < ny ? -1 : 1;
  }
  return 0;
}

/**
 * The features a release speaks by the release table: the union of every row that names its
 * stamping key id, its exact client version, or a lowest version at or below it.
 */
export function releaseFeatures(
  table: readonly ReleaseFeatures[],
  release: { readonly kid?: string | undefined; readonly cv?: string | undefined },
): Set<Feature> {
  const out = new Set<Feature>();
  for (const row of table) {
    const named =
      (row.kid !== undefined && row.kid === release.kid) ||
      (row.cv !== undefined && row.cv === release.cv) ||
      (row.minCv !== undefined && release.cv !== undefined && compareVersions(release.cv, row.minCv) >= 0);
    if (named) for (const feature of row.features) out.add(feature);
  }
  return out;
}

/**
 * Whether the release that made a stamp has `feature`, as far as the table can tell: named by
 * its key id or version, or — when the request carries no attribution block, so no version
 * (a relay trimmed it, or a stamp made outside the client) — whether any release the table
 * names by version has it: nothing shows the stamp comes from an older one.
 */
export function releaseMayHave(
  table: readonly ReleaseFeatures[],
  release: { readonly kid?: string | undefined; readonly cv?: string | undefined },
  feature: Feature,
): boolean {
  if (releaseFeatures(table, release).has(feature)) return true;
  return release.cv === undefined && table.some((row) => row.kid === undefined && row.features.includes(feature));
}

/**
 * No downgrade by discovery: a genuine `v1` stamp (body only) from a release the table says
 * binds requests (protocol 1.1) did not come from that release's normal path — a relay that
 * removed `request_binding` from discovery made it stamp `v1` to re-send the bytes under its own
 * key — so it is `invalid`. The stamp covers the attribution block, so its `cv` is the client's own;
 * a `v1` stamp with no attribution block is `invalid` too where the table names binding
 * releases by version (nothing shows it comes from an older one).
 */
export function requireRequestBinding(
  attestation: AttestationResult,
  cv: string | undefined,
  table: readonly ReleaseFeatures[],
): AttestationResult {
  if (attestation.signal !== 'valid' || attestation.binding !== 'body' || table.length === 0) return attestation;
  if (releaseFeatures(table, { kid: attestation.kid, cv }).has('request_binding'))
    return {
      ...attestation,
      signal: 'invalid',
      binding: 'none',
      reason: `v1 stamp from a release that binds requests (${attestation.kid}${cv === undefined ? '' : `, cv ${cv}`})`,
    };
  // No attribution block, so no `cv` to look up: a table that names binding releases by
  // version cannot be consulted, and a relay that trimmed `attribution` from discovery would
  // go through. The stamp cannot show it comes from a release older than those.
  if (cv === undefined && table.some((row) => row.kid === undefined && row.features.includes('request_binding')))
    return {
      ...attestation,
      signal: 'invalid',
      binding: 'none',
      reason: `v1 stamp without an attribution block (${attestation.kid}): its release cannot be told, and releases by version bind requests`,
    };
  return attestation;
}
