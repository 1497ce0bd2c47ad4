/**
 * The migration dashboard in real Chromium against the REAL control plane: a gateway (test/helpers/gateway.ts) in
 * front of two fake upstreams, its flag on the shared real Unleash (created by `syncFlags`, flags as code), traffic
 * actions wired as `strangler gateway` wires them (trafficFromConfig). The operator's path: open /dashboard, nothing
 * readable before login (and the admin API refuses without the token), sign in, read the orders route, shift to
 * 50 % through the UI (confirmation + reason), see ~50 % of users reach the service, roll back through the UI,
 * see 100 % on legacy, resume. Screenshots: test-results/dashboard.png (each run) and docs/dashboard.png (the README's;
 * rewritten only when missing or with STRANGLER_UPDATE_SCREENSHOTS=1).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { chromiumPath, collectPageErrors } from '../../helpers/browser.ts';
import { silentLogger } from '../../../common/logger.ts';
import { createFlagsControl } from '../../../flags/control.ts';
import { syncFlags } from '../../../flags/sync.ts';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { trafficFromConfig } from '../../../gateway/admin/traffic.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import type { RoutesResponse } from '../../../gateway/admin/types.ts';
import { startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';

const root = fileURLToPath(new URL('../../../', import.meta.url));

const escapeRe = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

let unleash: TestUnleash;
let legacy: FakeUpstream;
let service: FakeUpstream;
let gateway: RunningGateway;
let flag: string;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];
const foreignRequests: string[] = [];
let halfCounts: Record<string, number> = {};

/** Waits (locator-based; the page's CSP forbids string evaluation) until the element's whole text is `want`. */
async function waitText(selector: string, want: string, timeout = 15_000): Promise<void> {
  await page.locator(selector).filter({ hasText: new RegExp(`^\\s*${escapeRe(want)}\\s*$`) }).first().waitFor({ timeout });
}
const card = () => page.getByTestId('route-orders');
const cardText = async (testId: string) => (await card().getByTestId(testId).textContent())?.trim();

/** Sends one GET per user through the gateway and counts where each landed. */
async function traffic(users: number, tag: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  await Promise.all(Array.from({ length: users }, async (_, i) => {
    const res = await fetch(`${gateway.proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': `${tag}-${i}` }, signal: AbortSignal.timeout(5_000) });
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    const target = res.headers.get('x-strangler-target') ?? 'none';
    counts[target] = (counts[target] ?? 0) + 1;
  }));
  return counts;
}

/** Confirms the open dialog with a reason and waits for it to close. */
async function confirmWith(reason: string): Promise<void> {
  const dialog = page.getByTestId('confirm-dialog');
  await dialog.waitFor();
  assert.ok(await page.getByTestId('confirm-submit').isDisabled(), 'confirm needs a reason first');
  await page.getByTestId('confirm-reason').fill(reason);
  await page.getByTestId('confirm-submit').click();
  await dialog.waitFor({ state: 'hidden', timeout: 15_000 });
}

before(async () => {
  unleash = await useTestUnleash();
  legacy = await fakeUpstream('legacy');
  service = await fakeUpstream('svc');
  flag = uniqueFlag('dashboard');
  const config = testConfig({
    legacyUrl: legacy.url,
    serviceUrl: service.url,
    route: { flag: { name: flag } },
    flags: { url: unleash.apiUrl, token: unleash.backendToken, adminToken: unleash.adminToken, environment: unleash.environment, refreshIntervalMs: 1000, disableMetrics: true },
  });
  await syncFlags(createFlagsControl(config), {});
  gateway = await startTestGateway(config, { port: 0, adminPort: 0, ...trafficFromConfig(config, silentLogger) });
  browser = await chromium.launch({ executablePath: chromiumPath(), headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('request', (r) => { if (!r.url().startsWith(gateway.adminUrl)) foreignRequests.push(r.url()); });
  collectPageErrors(page, pageErrors);
});

after(async () => {
  await browser?.close();
  await gateway?.close();
  await legacy?.stop();
  await service?.stop();
  await unleash?.stop();
});

describe('dashboard against the real control plane', () => {
  test('before login nothing is readable, and the admin API answers 401 without the token', async () => {
    await page.goto(`${gateway.adminUrl}/dashboard`);
    await page.getByTestId('login').waitFor();
    assert.ok(await page.getByTestId('dashboard').isHidden());
    assert.equal(await page.getByTestId('route-orders').count(), 0, 'no route card before login');
    const body = await page.content();
    assert.ok(!body.includes(flag), 'the flag name is not in the page before login');
    assert.ok(!body.includes(service.url) && !body.includes(legacy.url), 'no upstream address in the page before login');
    for (const path of ['/admin/routes', '/admin/routes/orders', '/admin/config', '/metrics']) {
      const res = await fetch(`${gateway.adminUrl}${path}`);
      assert.equal(res.status, 401, path);
      const json = (await res.json()) as { error: { code: string } };
      assert.equal(json.error.code, 'ADMIN_UNAUTHORIZED');
    }
    const wrong = await fetch(`${gateway.adminUrl}/admin/routes/orders/shift`, { method: 'POST', headers: { authorization: 'Bearer nope', 'content-type': 'application/json' }, body: JSON.stringify({ percent: 100, reason: 'x' }) });
    assert.equal(wrong.status, 401);
    // A wrong token in the UI is refused too.
    await page.getByTestId('token-input').fill('not-the-token');
    await page.getByTestId('login-submit').click();
    await page.getByTestId('login-error').filter({ hasText: 'rejected' }).waitFor();
    assert.equal(await page.getByTestId('route-orders').count(), 0);
  });

  test('after login the orders route is shown as this gateway sees it', async () => {
    await page.getByTestId('token-input').fill(gateway.adminToken);
    await page.getByTestId('login-submit').click();
    await card().waitFor();
    await waitText('[data-testid="poll-status"]', 'live');
    assert.equal(await cardText('route-id'), 'orders');
    assert.equal(await cardText('route-match'), 'ANY /api/orders*');
    assert.equal(await cardText('route-upstreams'), 'legacy → svc');
    assert.equal(await cardText('flag-name'), `default/${flag} (${unleash.environment})`);
    assert.equal(await cardText('flag-enabled'), 'on');
    assert.equal(await cardText('configured-percent'), '0%');
    assert.equal(await cardText('breaker-state'), 'closed');
    assert.equal(await page.getByTestId('gateway-ready').textContent(), 'yes');
    assert.equal(await page.getByTestId('gateway-flags').textContent(), 'synchronized');
    assert.equal(await page.getByTestId('sync-status').textContent(), 'n/a', 'no sync section: n/a');
    const counts = await traffic(40, 'warmup');
    assert.deepEqual(counts, { legacy: 40 });
    await waitText('[data-testid="route-orders"] [data-testid="share-legacy"]', '100.0%');
  });

  test('shift to 50 % through the UI: Unleash changes, ~50 % of users reach the service, the page shows it', async () => {
    await card().getByTestId('step-50').click();
    assert.equal(await cardText('shift-value'), '50%');
    await card().getByTestId('shift-button').click();
    assert.match((await page.getByTestId('confirm-text').textContent()) ?? '', /Send 50% of orders traffic to svc \(now 0%\)/);
    await confirmWith('dashboard e2e: canary at 50 %');
    await waitText('[data-testid="route-orders"] [data-testid="configured-percent"]', '50%');
    const state = await new UnleashAdminApi({ baseUrl: unleash.url, token: unleash.adminToken }).getFeatureEnvironment('default', flag, unleash.environment);
    assert.equal(state.strategies[0]?.parameters?.rollout, '50', 'the rollout changed in Unleash');
    assert.match(state.strategies[0]?.title ?? '', /dashboard e2e: canary at 50 %/, 'the reason is recorded on the strategy');
    const counts = await traffic(400, 'half');
    const toService = (counts.service ?? 0) / 400;
    halfCounts = counts;
    console.log(`dashboard: at 50 % ${JSON.stringify(counts)} (service share ${toService})`);
    assert.ok(toService > 0.4 && toService < 0.6, `service share at 50 %: ${toService}`);
    assert.equal(service.received.length, counts.service ?? 0, 'every service answer came from the service upstream');
    // The observed share on the page follows the gateway's own stats.
    const view = (await (await fetch(`${gateway.adminUrl}/admin/routes`, { headers: { authorization: `Bearer ${gateway.adminToken}` } })).json()) as RoutesResponse;
    const want = `${((view.routes[0]?.stats.service.share ?? 0) * 100).toFixed(1)}%`;
    await waitText('[data-testid="route-orders"] [data-testid="share-service"]', want);
    mkdirSync(`${root}test-results`, { recursive: true });
    await page.screenshot({ path: `${root}test-results/dashboard.png`, fullPage: true });
    // The README's picture: written when missing or asked for, so a test run does not dirty the work tree.
    if (!existsSync(`${root}docs/dashboard.png`) || process.env.STRANGLER_UPDATE_SCREENSHOTS === '1') copyFileSync(`${root}test-results/dashboard.png`, `${root}docs/dashboard.png`);
  });

  test('roll back through the UI: every user on legacy at once; resume restores 50 %', async () => {
    await card().getByTestId('rollback-button').click();
    await confirmWith('dashboard e2e: roll back');
    // The admin API answered only after the push reached this gateway, so traffic is on legacy already.
    assert.deepEqual(await traffic(200, 'after-rollback'), { legacy: 200 });
    await waitText('[data-testid="route-orders"] [data-testid="flag-enabled"]', 'off');
    assert.ok(await card().getByTestId('rollback-button').isDisabled());
    await page.screenshot({ path: `${root}test-results/dashboard-rolled-back.png`, fullPage: true });

    await card().getByTestId('resume-button').click();
    assert.match((await page.getByTestId('confirm-text').textContent()) ?? '', /\(50%\)/);
    await confirmWith('dashboard e2e: resume');
    await waitText('[data-testid="route-orders"] [data-testid="flag-enabled"]', 'on');
    // The same users land where they did before the rollback (sticky buckets, same percentage).
    assert.deepEqual(await traffic(400, 'half'), halfCounts);
  });

  test('no request left the admin origin and the page raised no errors', () => {
    assert.deepEqual(foreignRequests, []);
    assert.deepEqual(pageErrors, []);
  });
});
