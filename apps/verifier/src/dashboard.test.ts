import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createAttestedFetch } from '@moat/attest/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { devKeyFile, readDevKey } from '@moat/native/dev-key';
import { launchChromium } from '@moat/test-kit/browser';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { enroll } from './enroll.test-util.js';
import { createVerifier } from './server.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;

/** The page's document, as the predicates below use it (they run in the page, which has a DOM). */
type PageDocument = {
  querySelector(selector: string): { textContent: string | null } | null;
  querySelectorAll(selector: string): { length: number };
};
const LONG_LABEL = 'production-ingest-pipeline-eu-west-1-nightly-batch';

describe('dashboard in headless Chromium', () => {
  it('a time range, keys sorted by risk, a click-through to one key with the reasons, filters; screenshots at two widths', {
    timeout: 120_000,
  }, async () => {
    const verifier = await createVerifier(
      loadConfig(devEnvironment({ adminToken: ADMIN, salt: 'dash-salt', attestationKeyFile: devKeyFile })),
      { logLevel: 'silent' },
    );
    const base = await verifier.listen();
    const steady = await verifier.storage.createApiKey(LONG_LABEL);
    const scraper = await verifier.storage.createApiKey('scraper');
    const body = (text: string) =>
      JSON.stringify(
        tagFingerprint(
          { model: 'claude-mock', max_tokens: 32, messages: [{ role: 'user', content: text }] },
          { salt: 'dash-salt', version: '1.4.2', entrypoint: 'cli' },
        ).request,
      );
    const attested = createAttestedFetch();
    for (let i = 0; i < 3; i++)
      await (
        await attested(`${base}/v1/messages`, {
          method: 'POST',
          headers: { 'x-api-key': steady.key, 'user-agent': 'moat-chat/1.4.2' },
          body: body(`genuine request number ${i}`),
        })
      ).arrayBuffer();
    // The scraper: a plain fetch through a relay (flagged), and a made-up stamp (blocked).
    await (
      await fetch(`${base}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': scraper.key, 'x-litellm-call-id': 'c1' },
        body: body('spoofed through a relay'),
      })
    ).arrayBuffer();
    const forged = body('a forged stamp').replace(
      /}$/,
      `,"moat_att":"r1.k1.${Math.floor(Date.now() / 1000)}.0011223344556677.${'ab'.repeat(16)}"}`,
    );
    await (await fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': scraper.key }, body: forged })).arrayBuffer();
    // Per-install keys: the scraper enrolls one install, then one with a challenge it never got (refused).
    const devKey = readDevKey();
    if (devKey === undefined) throw new Error('no development key');
    const release = { scheme: 'r1' as const, kid: devKey.kid, key: Buffer.from(devKey.key, 'hex') };
    expect((await enroll(base, scraper.key, release)).status).toBe(201);
    expect((await enroll(base, scraper.key, release, { challenge: randomBytes(32).toString('base64url') })).status).toBe(409);
    // A request two days ago: outside the default 24-hour range.
    const [newest] = await verifier.storage.queryRecords({ limit: 1 });
    await verifier.storage.insertRecord({ ...(newest as NonNullable<typeof newest>), id: 'old-one', ts: Date.now() - 2 * 86_400_000 });

    // The admin API refuses bad filters with the reason.
    const admin = (path: string) => fetch(`${base}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } });
    for (const [path, reason] of [
      ['/admin/records?verdict=maybe', /verdict: expected one of allow, flag, block/],
      ['/admin/records?since=yesterday', /since: expected an integer/],
      ['/admin/activity?since=2000&until=1000', /until: expected a time after since/],
      ['/admin/records?attestation=fine', /attestation: expected one of valid/],
    ] as const) {
      const res = await admin(path);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(reason);
    }

    const browser = await launchChromium();
    const shots = new URL('../test-results/', import.meta.url);
    mkdirSync(shots, { recursive: true });
    const tile = (page: Page, name: string) => page.textContent(`.tile[data-tile="${name}"] b`);
    // The page and the admin API's answers: no inline code but the page's own, no framing, no caching.
    const served = await fetch(`${base}/dashboard`);
    const csp = served.headers.get('content-security-policy') ?? '';
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/]+=*'/);
    for (const res of [served, await admin('/admin/summary'), await fetch(`${base}/admin/summary`)]) {
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      expect(res.headers.get('cache-control')).toBe('no-store');
    }
    const violations: string[] = [];
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      page.on('console', (m) => {
        if (/Content.Security.Policy/i.test(m.text())) violations.push(m.text());
      });
      await page.goto(`${base}/dashboard`);
      await page.fill('#token', 'wrong-token-value');
      await page.click('button[type=submit]');
      await page.waitForSelector('#error:has-text("wrong token")');
      await page.fill('#token', ADMIN);
      await page.click('button[type=submit]');
      await page.waitForSelector('#app:not([hidden])');
      await page.waitForSelector('#keys tbody tr[data-key]');

      // The default range (24 hours) leaves out the two-day-old request; "everything" has it.
      expect(await tile(page, 'requests')).toBe('5');
      expect(await tile(page, 'blocked')).toBe('1');
      await page.selectOption('#range', 'all');
      await page.waitForFunction(
        (n) =>
          (globalThis as unknown as { document: PageDocument }).document.querySelector('.tile[data-tile="requests"] b')?.textContent === n,
        '6',
      );
      await page.selectOption('#range', '86400000');
      await page.waitForFunction(
        (n) =>
          (globalThis as unknown as { document: PageDocument }).document.querySelector('.tile[data-tile="requests"] b')?.textContent === n,
        '5',
      );

      // Charts with axes.
      expect(await page.$$eval('#chart-verdicts text.tick', (t) => t.length)).toBe(3);
      expect(await page.$$eval('#chart-verdicts text.xlabel', (t) => t.length)).toBe(3);
      const attestation = await page.$$eval('#chart-attestation rect.bar', (rects) =>
        Object.fromEntries(rects.map((r) => [r.getAttribute('data-label'), Number(r.getAttribute('data-value'))])),
      );
      expect(attestation).toEqual({ valid: 3, missing: 1, unknown_key: 1 });

      // Keys by risk: the scraper first; the long label whole; the mismatch interval shown.
      expect(await page.$$eval('#keys tbody tr', (rows) => rows.map((r) => r.getAttribute('data-key')))).toEqual([scraper.id, steady.id]);
      expect(await page.textContent(`#keys tr[data-key="${steady.id}"] .key-label`)).toBe(LONG_LABEL);
      expect(await page.textContent(`#keys tr[data-key="${steady.id}"] td.mismatch`)).toMatch(/^0% \[0–\d+%\] of 3$/);
      expect(await page.textContent(`#keys tr[data-key="${scraper.id}"]`)).toContain('litellm');
      // Sorting by another column, then back.
      await page.click('#keys th[data-sort="requests"]');
      expect(await page.$$eval('#keys tbody tr', (rows) => rows.map((r) => r.getAttribute('data-key')))).toEqual([steady.id, scraper.id]);
      await page.click('#keys th[data-sort="risk"]');
      // Installs per key and refused enrollments.
      expect(await page.$$eval('#installs tbody tr', (rows) => rows.map((r) => r.textContent?.slice(0, 9)))).toEqual(['scraper10']);
      expect(await page.textContent('#enrollments tbody tr')).toContain('challenge409 ERR_ENROLL_CHALLENGE');
      await page.screenshot({ path: new URL('dashboard-1280.png', shots).pathname, fullPage: true });

      // Click-through: one key's requests, each with the reasons for its verdict.
      await page.click(`#keys tr[data-key="${scraper.id}"]`);
      await page.waitForSelector('#filter-key .chip');
      await page.waitForFunction(
        (n) =>
          (globalThis as unknown as { document: PageDocument }).document.querySelectorAll('#records tbody tr[data-verdict]').length === n,
        2,
      );
      expect(await page.$$eval('#records td.key-cell', (cells) => [...new Set(cells.map((c) => c.textContent))])).toEqual(['scraper']);
      const reasons = await page.$$eval('#records td.reasons', (cells) => cells.map((c) => c.textContent));
      expect(reasons.some((r) => r?.includes('block:attestation=unknown_key'))).toBe(true);
      expect(reasons.some((r) => r?.includes('flag:attestation=missing'))).toBe(true);
      expect(page.url()).toContain(`key=${scraper.id}`);

      // Filters: verdict, then a signal; the key filter cleared.
      await page.selectOption('#filter-verdict', 'block');
      await page.waitForFunction(
        (n) =>
          (globalThis as unknown as { document: PageDocument }).document.querySelectorAll('#records tbody tr[data-verdict]').length === n,
        1,
      );
      expect(await page.$$eval('#records tbody tr', (rows) => rows.map((r) => r.getAttribute('data-verdict')))).toEqual(['block']);
      await page.selectOption('#filter-verdict', '');
      await page.click('#filter-key .chip button');
      await page.selectOption('#filter-signal', 'attestation=valid');
      await page.waitForFunction(
        (n) =>
          (globalThis as unknown as { document: PageDocument }).document.querySelectorAll('#records tbody tr[data-verdict]').length === n,
        3,
      );
      expect(await page.$$eval('#records td.key-cell', (cells) => [...new Set(cells.map((c) => c.textContent))])).toEqual([LONG_LABEL]);

      // A crafted link: the bad value is named, the view still loads, the saved token stays.
      await page.goto('about:blank');
      await page.goto(`${base}/dashboard#range=x&verdict=block&sort=constructor`);
      await page.waitForSelector('#hash-error:has-text("Ignored in the link: range=x, sort=constructor")');
      await page.waitForSelector('#app:not([hidden])');
      await page.waitForSelector('#records tbody tr[data-verdict="block"]');
      expect(await page.evaluate('sessionStorage.getItem("moat-admin")')).toBe(ADMIN);
      expect(await page.textContent('#error')).toBe('');
      expect(violations).toEqual([]);

      // A phone-sized screen: everything stacks, nothing overflows the page sideways.
      const phone = await browser.newPage({ viewport: { width: 390, height: 844 } });
      await phone.goto(`${base}/dashboard`);
      await phone.fill('#token', ADMIN);
      await phone.click('button[type=submit]');
      await phone.waitForSelector('#keys tbody tr[data-key]');
      expect(await phone.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
      expect(await phone.textContent(`#keys tr[data-key="${steady.id}"] .key-label`)).toBe(LONG_LABEL);
      await phone.screenshot({ path: new URL('dashboard-390.png', shots).pathname, fullPage: true });
    } finally {
      await browser.close();
      await verifier.close();
    }
  });
});
