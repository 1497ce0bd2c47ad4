/**
 * The migration dashboard (gateway/admin/dashboard/index.html) in real Chromium, against a stand-in admin server
 * that answers the documented endpoints (GET /admin/routes as RoutesResponse, GET /admin/sync, POST shift /
 * rollback / resume) with the same CSP header as the control plane. Covers login and 401 handling, live polling,
 * the confirm-with-reason flow for each action, the sync panel's n/a and filled states, and no external requests.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { chromiumPath, collectPageErrors } from '../../helpers/browser.ts';
import type { RouteStatus, RoutesResponse, TargetWindowStats } from '../../../gateway/admin/types.ts';
import type { SyncStatus } from '../../../migration-scripts/status.ts';

const TOKEN = 'dash-test-token';
const html = readFileSync(new URL('../../../gateway/admin/dashboard/index.html', import.meta.url), 'utf8');
const CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'";

function targetStats(requests: number, share: number, errors: number, p99Ms: number | null, fallbacks = 0): TargetWindowStats {
  return { requests, errors, errorRate: requests ? errors / requests : 0, fallbacks, p50Ms: p99Ms === null ? null : p99Ms / 4, p99Ms, histogram: { boundsMs: [1, 5, null], counts: [0, 0, 0] }, share };
}

function route(): RouteStatus {
  return {
    id: 'orders',
    match: { pathPrefix: '/api/orders', methods: null },
    legacy: 'monolith',
    service: 'orders-svc',
    flag: { name: 'route.orders', project: 'default', environment: 'development' },
    flagState: { known: true, enabled: true, rolloutPercent: 10, localOverride: null },
    breaker: { state: 'closed', opens: 0 },
    windowMs: 60_000,
    stats: { legacy: targetStats(900, 0.9, 0, 12.5), service: targetStats(100, 0.1, 2, 48, 1) },
    totals: { legacy: { requests: 5000, errors: 1, fallbacks: 0, histogram: [0, 0, 0] }, service: { requests: 400, errors: 3, fallbacks: 2, histogram: [0, 0, 0] } },
    guard: { enabled: true, lastVerdict: 'healthy', lastCheckedAt: '2026-11-21T05:00:00.000Z' },
    plan: { steps: [1, 5, 10, 25, 50, 100], stepIndex: 2, state: 'holding', holdUntil: null },
  };
}

/** Mutable server state the tests steer. */
const state = {
  routes: [route()],
  tokenValid: true,
  sync: null as unknown,
  calls: [] as { path: string; body: unknown }[],
  failNextAction: false,
  gateway: {} as Partial<RoutesResponse['gateway']>,
  /** Extra fields of the next action's answer (as TrafficChange has them: refresh, changed). */
  actionExtra: {} as Record<string, unknown>,
  /** When each GET /admin/routes arrived (ms). */
  routeRequests: [] as number[],
  /** Holds the next GET /admin/routes until release() is called. */
  holdNextRoutes: null as null | { arrived: () => void; release?: () => void },
};

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString();
  return text ? JSON.parse(text) : undefined;
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x');
  if (url.pathname === '/dashboard') {
    res.writeHead(200, { 'content-type': 'text/html', 'content-security-policy': CSP, 'cache-control': 'no-store' }).end(html);
    return;
  }
  if (!url.pathname.startsWith('/admin/')) return send(res, 404, { error: { code: 'ADMIN_NOT_FOUND', message: 'no such page' } });
  if (!state.tokenValid || req.headers.authorization !== `Bearer ${TOKEN}`) return send(res, 401, { error: { code: 'ADMIN_UNAUTHORIZED', message: 'missing or wrong bearer token' } });
  if (req.method === 'GET' && url.pathname === '/admin/routes') {
    state.routeRequests.push(performance.now());
    const hold = state.holdNextRoutes;
    if (hold) {
      state.holdNextRoutes = null;
      await new Promise<void>((resolve) => { hold.release = resolve; hold.arrived(); });
    }
    const body: RoutesResponse = { gateway: { instanceId: 'gw-test', workers: 2, ready: true, degraded: null, flagsSynchronized: true, flagsError: null, ...state.gateway }, routes: state.routes };
    return send(res, 200, body);
  }
  if (req.method === 'GET' && url.pathname === '/admin/sync') {
    return state.sync ? send(res, 200, state.sync) : send(res, 404, { error: { code: 'ADMIN_NOT_FOUND', message: 'this gateway has no sync section in its config' } });
  }
  const action = /^\/admin\/routes\/([^/]+)\/(shift|rollback|resume)$/.exec(url.pathname);
  if (req.method === 'POST' && action) {
    const body = (await readBody(req)) as { percent?: number; reason?: string };
    state.calls.push({ path: url.pathname, body });
    if (state.failNextAction) {
      state.failNextAction = false;
      return send(res, 502, { error: { code: 'UNLEASH_UNREACHABLE', message: 'could not reach Unleash at http://127.0.0.1:1' } });
    }
    const r = state.routes[0]!;
    if (action[2] === 'shift') r.flagState = { ...r.flagState, rolloutPercent: body.percent ?? null };
    if (action[2] === 'rollback') r.flagState = { ...r.flagState, enabled: false };
    if (action[2] === 'resume') r.flagState = { ...r.flagState, enabled: true, localOverride: null };
    const extra = state.actionExtra;
    state.actionExtra = {};
    return send(res, 200, { action: action[2], to: { enabled: r.flagState.enabled, percent: r.flagState.rolloutPercent }, changed: true, refresh: [], ...extra });
  }
  send(res, 404, { error: { code: 'ADMIN_NOT_FOUND', message: `no admin endpoint ${req.method} ${url.pathname}` } });
}

let server: Server;
let base: string;
let browser: Browser;
let page: Page;
const foreignRequests: string[] = [];
const pageErrors: string[] = [];

const text = async (testId: string, scope = '[data-testid="route-orders"]') => (await page.locator(`${scope} [data-testid="${testId}"]`).first().textContent())?.trim();

const escapeRe = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Waits are locator-based: the page's CSP (no 'unsafe-eval') rightly refuses string-evaluated waitForFunction.
/** Waits until the element's text equals `want` (the page polls every second; deadline 5 s). */
async function waitText(selector: string, want: string): Promise<void> {
  await page.locator(selector).filter({ hasText: new RegExp(`^\\s*${escapeRe(want)}\\s*$`) }).first().waitFor({ timeout: 5_000 });
}

/** Waits until the element's text contains `part`. */
async function waitMatch(selector: string, part: string): Promise<void> {
  await page.locator(selector).filter({ hasText: part }).first().waitFor({ timeout: 5_000 });
}

before(async () => {
  server = createServer((req, res) => { handle(req, res).catch((err: unknown) => send(res, 500, { error: { message: String(err) } })); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await chromium.launch({ executablePath: chromiumPath() });
  page = await browser.newPage();
  page.on('request', (r) => { if (!r.url().startsWith(base)) foreignRequests.push(r.url()); });
  collectPageErrors(page, pageErrors);
});

after(async () => {
  await browser?.close();
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
});

/** One direction of GET /admin/sync's SyncStatus, as migration-scripts/status.ts builds it. */
const direction = (source: 'legacy' | 'service', lagEvents: number, lagSeconds: number): SyncStatus['directions'][number] => ({
  ...(source === 'legacy' ? { direction: 'legacy-to-service', source, target: 'service' } as const : { direction: 'service-to-legacy', source, target: 'legacy' } as const),
  capturePending: 0, undecoded: null, broken: null, captureGaps: [], kafkaBacklog: lagEvents, kafkaError: null, lagEvents, lagSeconds,
  relay: { lastPosition: 10, ackedPosition: 10, published: 10, updatedAt: null }, lastAppliedPosition: 10,
  applied: 10, duplicates: 0, stale: 0, echoes: 0, conflicts: 0, parked: 0, parkedNow: 0, lastEventAt: null, lastAppliedAt: null, lastLagMs: 4,
});

describe('migration dashboard', () => {
  test('without a token it shows the login; a wrong token is rejected and not kept', async () => {
    await page.goto(`${base}/dashboard`);
    assert.ok(await page.getByTestId('login').isVisible());
    assert.ok(await page.getByTestId('dashboard').isHidden());
    await page.getByTestId('token-input').fill('wrong');
    await page.getByTestId('login-submit').click();
    await waitMatch('[data-testid="login-error"]', 'rejected');
    assert.equal(await page.evaluate("sessionStorage.getItem('strangler.adminToken')"), null);
  });

  test('the right token shows each route: percentages, shares, errors, p99, breaker, guard, plan; sync n/a', async () => {
    await page.getByTestId('token-input').fill(TOKEN);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('route-orders').waitFor();
    assert.equal(await page.evaluate("sessionStorage.getItem('strangler.adminToken')"), TOKEN);
    assert.equal(await text('configured-percent'), '10%');
    assert.equal(await text('flag-enabled'), 'on');
    assert.equal(await text('share-legacy'), '90.0%');
    assert.equal(await text('share-service'), '10.0%');
    assert.equal(await text('error-rate-service'), '2.0%');
    assert.equal(await text('p99-service'), '48 ms');
    assert.equal(await text('p99-legacy'), '13 ms');
    assert.equal(await text('fallbacks-service'), '1');
    assert.equal(await text('total-legacy'), '5,000');
    assert.equal(await text('breaker-state'), 'closed');
    assert.equal(await text('guard-status'), `on · last verdict healthy at ${await page.evaluate("new Date('2026-11-21T05:00:00.000Z').toLocaleTimeString()")}`);
    assert.equal(await text('plan-status'), 'holding · step 3/6 (10%) of [1, 5, 10, 25, 50, 100]');
    assert.equal(await text('route-match'), 'ANY /api/orders*');
    assert.equal(await text('gateway-instance', 'header'), 'gw-test');
    await waitText('[data-testid="poll-status"]', 'live');
    assert.equal(await text('sync-lag-legacy-to-service', 'body'), 'n/a');
    assert.equal(await text('sync-last-verify', 'body'), 'n/a');
    assert.equal(await text('sync-status', 'body'), 'n/a');
  });

  test('polling shows changes within a second or two (breaker opens, sync appears)', async () => {
    state.routes[0]!.breaker = { state: 'open', opens: 3 };
    state.sync = {
      at: '2026-11-21T05:10:30.000Z',
      directions: [direction('legacy', 12, 0.34), direction('service', 0, 0.005)],
      backfill: [],
      lastVerify: { ok: false, at: '2026-11-21T05:10:00.000Z', ms: 90, tables: [{ table: 'orders', match: false, diffs: 2 }] },
    } satisfies SyncStatus;
    await waitText('[data-testid="route-orders"] [data-testid="breaker-state"]', 'open');
    assert.equal(await text('breaker-opens'), 'opened 3×');
    await waitText('[data-testid="sync-lag-legacy-to-service"]', '12 events · 340 ms');
    assert.equal(await text('sync-lag-service-to-legacy', 'body'), '0 events · 5.0 ms');
    assert.match((await text('sync-last-verify', 'body')) ?? '', /^mismatch \(2\) at /);
  });

  test('issue: a refused config reload was not shown; server strings are shown as text, never as HTML', async () => {
    const injected = '<img src=x data-testid="injected" onerror="document.title=1">';
    state.gateway = { reloadError: `strangler.yaml: 1 problem\n  - routes[0].legacy: expected an id from upstreams, found "${injected}"`, degraded: `Unleash refused the token: ${injected}` };
    await waitMatch('[data-testid="gateway-reload-error"]', 'config reload refused (the last good config still serves): strangler.yaml: 1 problem');
    assert.ok(await page.getByTestId('gateway-reload-error').isVisible());
    assert.match((await text('gateway-reload-error', 'header')) ?? '', /found "<img src=x/);
    assert.match((await text('gateway-degraded', 'header')) ?? '', /refused the token: <img/);
    assert.equal(await page.getByTestId('injected').count(), 0);
    state.gateway = {};
    await page.getByTestId('gateway-reload-error').waitFor({ state: 'hidden', timeout: 5_000 });
  });

  test('the sync panel reads the real GET /admin/sync shape (SyncStatus)', async () => {
    const status: SyncStatus = {
      at: '2026-11-21T05:20:00.000Z',
      directions: [direction('legacy', 7, 0.25), direction('service', 0, 0)],
      backfill: [],
      lastVerify: { ok: true, at: '2026-11-21T05:15:00.000Z', ms: 120, tables: [{ table: 'orders', match: true, diffs: 0 }] },
    };
    state.sync = status;
    await waitText('[data-testid="sync-lag-legacy-to-service"]', '7 events · 250 ms');
    assert.equal(await text('sync-lag-service-to-legacy', 'body'), '0 events · 0.0 ms');
    assert.match((await text('sync-last-verify', 'body')) ?? '', /^match at /);
    assert.equal(await text('sync-status', 'body'), 'ok');

    // Kafka unreadable: the lag shown is what the databases know, a lower bound, and the panel says so.
    state.sync = { ...status, directions: [{ ...direction('legacy', 7, 0.25), kafkaBacklog: null, kafkaError: 'KafkaJSNumberOfRetriesExceeded: connect ECONNREFUSED' }, direction('service', 0, 0)] };
    await waitText('[data-testid="sync-lag-legacy-to-service"]', '≥ 7 events · 250 ms');
    assert.equal(await text('sync-status', 'body'), 'kafka unreadable');
  });

  test('shift: step button, confirmation with a required reason, POST {percent, reason}, page follows', async () => {
    const card = page.getByTestId('route-orders');
    await card.getByTestId('step-25').click();
    assert.equal(await text('shift-value'), '25%');
    await card.getByTestId('shift-button').click();
    const dialog = page.getByTestId('confirm-dialog');
    await dialog.waitFor();
    assert.match((await page.getByTestId('confirm-text').textContent()) ?? '', /Send 25% of orders traffic to orders-svc \(now 10%\)/);
    assert.ok(await page.getByTestId('confirm-submit').isDisabled(), 'no reason yet');
    await page.getByTestId('confirm-reason').fill('   ');
    assert.ok(await page.getByTestId('confirm-submit').isDisabled(), 'blank reason does not count');
    await page.getByTestId('confirm-reason').fill('error rate flat for 30 min');
    await page.getByTestId('confirm-submit').click();
    await dialog.waitFor({ state: 'hidden' });
    assert.deepEqual(state.calls.at(-1), { path: '/admin/routes/orders/shift', body: { percent: 25, reason: 'error rate flat for 30 min' } });
    await waitText('[data-testid="route-orders"] [data-testid="configured-percent"]', '25%');
    assert.equal(await card.getByTestId('shift-slider').inputValue(), '25');
  });

  test('the slider sets any percentage; a failed action keeps the dialog open with the server message', async () => {
    const card = page.getByTestId('route-orders');
    await card.getByTestId('shift-slider').fill('37');
    assert.equal(await text('shift-value'), '37%');
    await card.getByTestId('shift-button').click();
    state.failNextAction = true;
    await page.getByTestId('confirm-reason').fill('try 37');
    await page.getByTestId('confirm-submit').click();
    await waitMatch('[data-testid="confirm-error"]', 'UNLEASH_UNREACHABLE could not reach Unleash');
    assert.ok(await page.getByTestId('confirm-dialog').isVisible());
    assert.equal(await card.getByTestId('shift-slider').inputValue(), '37', 'a poll does not reset the slider the user moved');
    await page.getByTestId('confirm-cancel').click();
    await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
  });

  test('roll back: cancel sends nothing; confirm sends the reason; resume likewise', async () => {
    const card = page.getByTestId('route-orders');
    const before = state.calls.length;
    await card.getByTestId('rollback-button').click();
    await page.getByTestId('confirm-reason').fill('changed my mind');
    await page.getByTestId('confirm-cancel').click();
    assert.equal(state.calls.length, before);

    await card.getByTestId('rollback-button').click();
    await page.getByTestId('confirm-reason').fill('p99 doubled');
    await page.getByTestId('confirm-submit').click();
    await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
    assert.deepEqual(state.calls.at(-1), { path: '/admin/routes/orders/rollback', body: { reason: 'p99 doubled' } });
    await waitText('[data-testid="route-orders"] [data-testid="flag-enabled"]', 'off');
    assert.ok(await card.getByTestId('rollback-button').isDisabled());

    await card.getByTestId('resume-button').click();
    await page.getByTestId('confirm-reason').fill('fix deployed');
    await page.getByTestId('confirm-submit').click();
    await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
    assert.deepEqual(state.calls.at(-1), { path: '/admin/routes/orders/resume', body: { reason: 'fix deployed' } });
    await waitText('[data-testid="route-orders"] [data-testid="flag-enabled"]', 'on');
  });

  test('issue: a local override (the rollback reached this gateway, not Unleash) could not be lifted: Resume was disabled while Unleash showed the flag on', async () => {
    const card = page.getByTestId('route-orders');
    state.routes[0]!.flagState = { ...state.routes[0]!.flagState, enabled: true, localOverride: 'legacy' };
    await waitText('[data-testid="route-orders"] [data-testid="flag-override"]', 'local override → legacy');
    assert.equal(await text('flag-enabled'), 'on');
    assert.equal(await card.getByTestId('resume-button').isDisabled(), false, 'resume lifts the override');
    assert.equal(await card.getByTestId('rollback-button').isDisabled(), false, 'rolling back again (to switch Unleash off) stays possible');
    await card.getByTestId('resume-button').click();
    assert.match((await page.getByTestId('confirm-text').textContent()) ?? '', /^Lift this gateway's local override to legacy/);
    await page.getByTestId('confirm-reason').fill('Unleash is back');
    await page.getByTestId('confirm-submit').click();
    await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
    assert.deepEqual(state.calls.at(-1), { path: '/admin/routes/orders/resume', body: { reason: 'Unleash is back' } });
    await page.locator('[data-testid="route-orders"] [data-testid="flag-override"]').waitFor({ state: 'hidden', timeout: 5_000 });
    assert.ok(await card.getByTestId('resume-button').isDisabled(), 'on, no override: nothing to resume');
  });

  test('a route without a service shows no flag (not "unknown") and offers no traffic controls', async () => {
    state.routes.push({ ...route(), id: 'pages', service: '', flagState: { known: false, enabled: false, rolloutPercent: null, localOverride: null } });
    const card = '[data-testid="route-pages"]';
    await page.locator(card).waitFor({ timeout: 5_000 });
    assert.equal(await text('flag-enabled', card), 'none');
    assert.equal(await text('flag-name', card), '– (no service: always legacy)');
    for (const id of ['shift-button', 'rollback-button', 'resume-button', 'shift-slider', 'step-50']) {
      assert.equal(await page.locator(`${card} [data-testid="${id}"]`).isDisabled(), true, `${id} disabled`);
    }
    assert.equal(await page.locator('[data-testid="route-orders"] [data-testid="shift-button"]').isDisabled(), false, 'the routed card keeps its controls');
    state.routes.pop();
  });

  test('issue: a shift on a rolled-back route said "shifted to N%" though every request stays on legacy until resume', async () => {
    const card = page.getByTestId('route-orders');
    state.routes[0]!.flagState = { ...state.routes[0]!.flagState, enabled: false, localOverride: null };
    await waitText('[data-testid="route-orders"] [data-testid="flag-enabled"]', 'off');
    await card.getByTestId('step-50').click();
    await card.getByTestId('shift-button').click();
    assert.match((await page.getByTestId('confirm-text').textContent()) ?? '', /^Record 50% for orders .*Traffic does not move: the flag is off \(rolled back\), so every request stays on legacy until Resume/);
    await page.getByTestId('confirm-reason').fill('prepare 50 for the resume');
    await page.getByTestId('confirm-submit').click();
    await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
    await waitMatch('[data-testid="toast"]', 'orders: 50% recorded; the route stays on legacy until Resume');
    state.routes[0]!.flagState = { ...state.routes[0]!.flagState, enabled: true };
    await waitText('[data-testid="route-orders"] [data-testid="flag-enabled"]', 'on');
  });

  test('issue: gateways a change was not pushed to were not shown (the toast said only "rolled back")', async () => {
    const card = page.getByTestId('route-orders');
    state.actionExtra = { refresh: [{ url: 'http://10.0.0.7:9901', ok: true, ms: 3 }, { url: 'http://10.0.0.9:9901', ok: false, error: 'ECONNREFUSED', ms: 2 }], localPush: { ok: false, error: 'worker 2 did not answer within 5000 ms' } };
    await card.getByTestId('rollback-button').click();
    await page.getByTestId('confirm-reason').fill('errors');
    await page.getByTestId('confirm-submit').click();
    await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
    await waitMatch('[data-testid="toast"]', 'orders: rolled back to legacy; not pushed to 1 of 2 gateways (http://10.0.0.9:9901: ECONNREFUSED)');
    assert.match((await page.getByTestId('toast').textContent()) ?? '', /this gateway's workers did not all confirm \(worker 2 did not answer within 5000 ms\)/);
    state.routes[0]!.flagState = { ...state.routes[0]!.flagState, enabled: true };
    await waitText('[data-testid="route-orders"] [data-testid="flag-enabled"]', 'on');
  });

  test('issue: a broken sync direction (slot lost) and parked events were shown as "ok"', async () => {
    const injected = '<img src=x data-testid="injected" onerror="document.title=1">';
    state.sync = {
      at: '2026-11-21T05:30:00.000Z',
      directions: [
        { ...direction('legacy', 0, 0), broken: { code: 'SYNC_SLOT_LOST', message: `slot strangler_legacy is gone ${injected}` } },
        { ...direction('service', 3, 1.5), parkedNow: 2 },
      ],
      backfill: [],
      lastVerify: null,
    } satisfies SyncStatus;
    await waitText('[data-testid="sync-status"]', 'broken: SYNC_SLOT_LOST');
    assert.equal(await text('sync-lag-legacy-to-service', 'body'), 'BROKEN · ≥ 0 events · 0.0 ms');
    assert.equal(await text('sync-lag-service-to-legacy', 'body'), '3 events · 1500 ms · 2 parked');
    const problems = (await text('sync-problems', 'body')) ?? '';
    assert.match(problems, /legacy-to-service: BROKEN SYNC_SLOT_LOST: slot strangler_legacy is gone <img/);
    assert.match(problems, /service-to-legacy: 2 events parked/);
    assert.equal(await page.getByTestId('injected').count(), 0);
    state.sync = { ...(state.sync as SyncStatus), directions: [direction('legacy', 0, 0), direction('service', 0, 0)] };
    await waitText('[data-testid="sync-status"]', 'ok');
    assert.ok(await page.getByTestId('sync-problems').isHidden());
  });

  test('issue: signing out and in while a poll was in flight left two polling chains (twice the requests)', async () => {
    let arrived!: () => void;
    const held = new Promise<void>((resolve) => { arrived = resolve; });
    const hold: NonNullable<typeof state.holdNextRoutes> = { arrived };
    state.holdNextRoutes = hold;
    await held;
    await page.getByTestId('logout').click();
    await page.getByTestId('token-input').fill(TOKEN);
    await page.getByTestId('login-submit').click();
    await waitText('[data-testid="poll-status"]', 'live');
    hold.release?.();
    const before = state.routeRequests.length;
    await page.waitForTimeout(3_500); // a fixed window: looking at how the polls in it are spaced
    const at = state.routeRequests.slice(before);
    const gaps = at.slice(1).map((t, i) => Math.round(t - at[i]!));
    // One chain schedules its next poll 1 s after the last settled; a second chain interleaves polls between those.
    assert.ok(gaps.length >= 2 && Math.min(...gaps) >= 900, `one polling chain, one poll a second: gaps ${gaps.join(', ')} ms`);
  });

  test('a 401 while polling (token revoked) returns to the login and forgets the token', async () => {
    state.tokenValid = false;
    await page.getByTestId('login').waitFor({ timeout: 5_000 });
    assert.match((await page.getByTestId('login-error').textContent()) ?? '', /401/);
    assert.equal(await page.evaluate("sessionStorage.getItem('strangler.adminToken')"), null);
    state.tokenValid = true;
  });

  test('no request left the admin origin and the page raised no errors', () => {
    assert.deepEqual(foreignRequests, []);
    assert.deepEqual(pageErrors, []);
  });
});
