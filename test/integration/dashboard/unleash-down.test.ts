/**
 * The dashboard's traffic buttons against the REAL control plane while the Unleash Admin API does not answer (it
 * accepts connections and stalls, as a hung or overloaded Unleash does; flags.requestTimeoutMs 5 s). Regression tests:
 * the page gave up after its 4 s poll timeout and showed "signal timed out", hiding the server's error code and that a
 * rollback had already acted on this gateway; the dialog could be closed while the change was on its way; and when
 * the gateway went away the last figures stayed on screen at full strength.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium, type Browser, type Page } from 'playwright-core';
import { chromiumPath, collectPageErrors } from '../../helpers/browser.ts';
import { silentLogger } from '../../../common/logger.ts';
import { trafficFromConfig } from '../../../gateway/admin/traffic.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import { featuresFile, startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';

const HOSTILE = '<img src=x data-testid="injected" onerror="document.title=1">';
let legacy: FakeUpstream;
let service: FakeUpstream;
let unleash: FakeUpstream;
let gateway: RunningGateway | undefined;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

const card = () => page.getByTestId('route-orders');

/** Opens the dialog with `open`, confirms with a reason, and checks the dialog stays open and locked while sending. */
async function confirmWhileUnleashStalls(open: () => Promise<void>, reason: string): Promise<string> {
  await open();
  await page.getByTestId('confirm-reason').fill(reason);
  const received = unleash.nextRequest();
  await page.getByTestId('confirm-submit').click();
  await received; // the change is on its way: the control plane is waiting on Unleash
  assert.ok(await page.getByTestId('confirm-cancel').isDisabled(), 'no Cancel while the change is on its way');
  assert.ok(await page.getByTestId('confirm-submit').isDisabled(), 'no second Confirm');
  await page.keyboard.press('Escape');
  assert.ok(await page.getByTestId('confirm-dialog').isVisible(), 'Escape does not hide the outcome');
  await page.getByTestId('confirm-error').filter({ hasText: 'Failed' }).waitFor({ timeout: 30_000 });
  return (await page.getByTestId('confirm-error').textContent()) ?? '';
}

before(async () => {
  legacy = await fakeUpstream('legacy');
  service = await fakeUpstream('svc');
  unleash = await fakeUpstream('unleash');
  unleash.mode = 'stall';
  const config = testConfig({
    legacyUrl: legacy.url,
    serviceUrl: service.url,
    route: { match: { pathPrefix: '/api/orders', host: `shop.example${HOSTILE}` } },
    flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 10 } }), adminUrl: unleash.url, adminToken: 'admin-secret-token', requestTimeoutMs: 5_000 },
  });
  gateway = await startTestGateway(config, { instanceId: `gw-${HOSTILE}`, ...trafficFromConfig(config, silentLogger) });
  browser = await chromium.launch({ executablePath: chromiumPath() });
  page = await browser.newPage();
  collectPageErrors(page, pageErrors);
});

after(async () => {
  await browser?.close();
  await gateway?.close();
  await legacy?.stop();
  await service?.stop();
  await unleash?.stop();
});

describe('dashboard while Unleash stalls', () => {
  test('sign in; values from the config are shown as text', async () => {
    await page.goto(`${gateway!.adminUrl}/dashboard`);
    await page.getByTestId('token-input').fill(gateway!.adminToken);
    await page.getByTestId('login-submit').click();
    await card().waitFor();
    assert.equal((await card().getByTestId('route-match').textContent())?.trim(), `ANY /api/orders* @ shop.example${HOSTILE}`);
    assert.equal(await page.getByTestId('gateway-instance').textContent(), `gw-${HOSTILE}`);
    assert.equal(await page.getByTestId('injected').count(), 0);
  });

  test('issue: a shift that waited on Unleash showed "signal timed out" after 4 s instead of the server\'s error', async () => {
    await card().getByTestId('step-50').click();
    const error = await confirmWhileUnleashStalls(() => card().getByTestId('shift-button').click(), `canary ${HOSTILE}`);
    assert.match(error, /^Failed: 502 UNLEASH_UNREACHABLE .*no answer within 5000 ms/);
    assert.equal(await page.getByTestId('injected').count(), 0);
    assert.ok(await page.getByTestId('confirm-submit').isEnabled(), 'after a failure Confirm can be sent again');
    assert.ok(await page.getByTestId('confirm-cancel').isEnabled());
    await page.getByTestId('confirm-cancel').click();
    await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
  });

  test('issue: a rollback that acted here but could not switch Unleash off was reported as a timeout', async () => {
    const error = await confirmWhileUnleashStalls(() => card().getByTestId('rollback-button').click(), 'errors up');
    assert.match(error, /^Failed: 502 UNLEASH_UNREACHABLE .*Unleash was not switched off/);
    await page.getByTestId('confirm-cancel').click();
    await card().getByTestId('flag-override').filter({ hasText: 'local override → legacy' }).waitFor({ timeout: 5_000 });
  });

  test('issue: when the gateway goes away the page greys out the last figures and says they are stale', async () => {
    await page.getByTestId('poll-status').filter({ hasText: /^live$/ }).waitFor({ timeout: 5_000 });
    assert.equal(await page.locator('main.stale').count(), 0);
    await gateway!.close();
    gateway = undefined;
    await page.getByTestId('poll-status').filter({ hasText: /^stale: admin API unreachable/ }).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('main.stale').count(), 1);
  });

  test('the page raised no errors', () => {
    assert.deepEqual(pageErrors, []);
  });
});
