import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createAttestedFetch } from '@moat/attest/client';
import { tagFingerprint } from '@moat/fingerprint/client';
import { devKeyFile } from '@moat/native/dev-key';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { devEnvironment, loadConfig } from './config.js';
import { createVerifier } from './server.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;

describe('dashboard in headless Chromium', () => {
  it('signs in with the admin token, shows the data, and is captured as a screenshot', { timeout: 120_000 }, async () => {
    const verifier = await createVerifier(
      loadConfig(
        devEnvironment({
          adminToken: ADMIN,
          salt: 'dash-salt',
          attestationKeyFile: devKeyFile,
        }),
      ),
      { logLevel: 'silent' },
    );
    const base = await verifier.listen();
    const { key } = await verifier.storage.createApiKey('dashboard-key');
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
        await attested(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': key }, body: body(`genuine request number ${i}`) })
      ).arrayBuffer();
    await (
      await fetch(`${base}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': key, 'x-litellm-call-id': 'c1' },
        body: body('spoofed through a relay'),
      })
    ).arrayBuffer();

    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--disable-sync',
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(`${base}/dashboard`);
      await page.fill('#token', 'wrong-token-value');
      await page.click('button[type=submit]');
      await page.waitForSelector('#error:has-text("wrong token")');
      await page.fill('#token', ADMIN);
      await page.click('button[type=submit]');
      await page.waitForSelector('#app:not([hidden])');
      await page.waitForSelector('#chart-attestation rect.bar');
      const attestation = await page.$$eval('#chart-attestation rect.bar', (rects) =>
        Object.fromEntries(rects.map((r) => [r.getAttribute('data-label'), Number(r.getAttribute('data-value'))])),
      );
      expect(attestation).toEqual({ valid: 3, missing: 1 });
      expect(await page.$$eval('#chart-gateways rect.bar', (rects) => rects.map((r) => r.getAttribute('data-label')))).toEqual(['litellm']);
      expect(await page.$$eval('#chart-keys circle.point', (c) => c.map((x) => x.getAttribute('data-label')))).toEqual(['dashboard-key']);
      expect(await page.textContent('#total')).toBe('4 requests');
      expect(await page.$$eval('#records tbody tr', (rows) => rows.length)).toBe(4);
      mkdirSync(new URL('../test-results/', import.meta.url), { recursive: true });
      await page.screenshot({ path: new URL('../test-results/dashboard.png', import.meta.url).pathname, fullPage: true });
    } finally {
      await browser.close();
      await verifier.close();
    }
  });
});
