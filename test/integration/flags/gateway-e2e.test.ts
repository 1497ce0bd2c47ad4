import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { createFlagsControl, type FlagsControl } from '../../../flags/control.ts';
import { PromotionController } from '../../../flags/controller.ts';
import { FileStateStore } from '../../../flags/controller-state.ts';
import { syncFlags } from '../../../flags/sync.ts';
import { formatObserved, observedStatus } from '../../../flags/observed.ts';
import { resumeRoute, rollbackRoute, trafficActions, type TrafficChange } from '../../../flags/traffic.ts';
import { startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import type { RunningGateway } from '../../../gateway/server.ts';

/** Polls `check` until it is true or the deadline passes. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    if (await check()) return performance.now() - started;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

describe('flags with a real gateway: admin API shift, controller rollback, refresh push', () => {
  let unleash: TestUnleash;
  let legacy: FakeUpstream;
  let service: FakeUpstream;
  let gateway: RunningGateway;
  let control: FlagsControl;
  let flag: string;
  let dir: string;
  before(async () => {
    unleash = await useTestUnleash();
    legacy = await fakeUpstream('legacy');
    service = await fakeUpstream('svc');
    flag = uniqueFlag('e2e');
    dir = mkdtempSync(join(tmpdir(), 'strangler-flags-e2e-'));
    const config = testConfig({
      legacyUrl: legacy.url,
      serviceUrl: service.url,
      route: { flag: { name: flag }, guard: { minRequests: 20, maxFallbacks: 1000, action: 'rollback' }, plan: { steps: [100], holdMs: 1000 } },
      flags: { url: unleash.apiUrl, token: unleash.backendToken, adminToken: unleash.adminToken, environment: unleash.environment, refreshIntervalMs: 1000, disableMetrics: true },
    });
    await syncFlags(createFlagsControl(config));
    gateway = await startTestGateway(config, { port: 0, adminPort: 0, traffic: trafficActions(() => control) });
    control = createFlagsControl({ ...config, flags: { ...config.flags, gateways: [{ url: gateway.adminUrl, token: gateway.adminToken }] } });
  });
  after(async () => {
    await gateway?.close();
    await legacy.stop();
    await service.stop();
    rmSync(dir, { recursive: true, force: true });
    await unleash.stop();
  });

  const target = async (user: string) => {
    const res = await fetch(`${gateway.proxyUrl}/api/orders/1`, { headers: { 'x-user-id': user } });
    await res.arrayBuffer();
    return res.headers.get('x-strangler-target');
  };

  test('POST /admin/routes/:id/shift goes through flags/traffic to Unleash, and the gateway follows', async () => {
    assert.equal(await target('bob'), 'legacy');
    const res = await fetch(`${gateway.adminUrl}/admin/routes/orders/shift`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${gateway.adminToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ percent: 100, reason: 'e2e ramp', actor: 'tester' }),
    });
    assert.equal(res.status, 200);
    const change = (await res.json()) as TrafficChange;
    assert.deepEqual([change.to, change.actor, change.reason], [{ enabled: true, percent: 100 }, 'admin-api:tester', 'e2e ramp']);
    const ms = await until('bob routed to the service', async () => (await target('bob')) === 'service');
    console.log(`# shift 0→100 %: gateway routes to the service after ${Math.round(ms)} ms (refresh pushed, 1 s poll)`);
    const bad = await fetch(`${gateway.adminUrl}/admin/routes/orders/shift`, {
      method: 'POST', headers: { Authorization: `Bearer ${gateway.adminToken}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ percent: 101 }),
    });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'PERCENT_INVALID');
  });

  test('the controller reads real gateway stats, rolls back on errors, and the pushed refresh moves traffic at once', async () => {
    const controller = new PromotionController({ control, store: new FileStateStore(join(dir, 'controller.json')) });
    try {
      service.mode = 'status500';
      for (let i = 0; i < 40; i++) await target(`user-${i}`);
      const started = performance.now();
      const report = await controller.tick();
      assert.equal(report.gatewaysRead, 1);
      const route = report.routes[0];
      assert.equal(route?.verdict.outcome, 'fail', JSON.stringify(route?.verdict));
      assert.equal(route?.action.kind, 'rollback');
      const state = await new UnleashAdminApi({ baseUrl: unleash.url, token: unleash.adminToken }).getFeatureEnvironment('default', flag, unleash.environment);
      assert.equal(state.enabled, false);
      assert.equal(await target('bob'), 'legacy', 'the rollback push applied before the tick returned');
      console.log(`# controller tick (read stats, verdict, /off, push) → gateway on legacy: ${Math.round(performance.now() - started)} ms`);
      const view = await controller.view();
      assert.equal(view.orders?.plan?.state, 'rolled-back');
    } finally {
      service.mode = 'ok';
      await controller.stop();
    }
  });

  test('flags status shows what each gateway observed: share to the service, breaker, error rates, p99', async () => {
    await resumeRoute(control, 'orders', { actor: 'test' });
    await until('bob on the service', async () => (await target('bob')) === 'service');
    for (let i = 0; i < 20; i++) await target(`observer-${i}`);
    const observed = await observedStatus(control);
    const [mine] = observed.orders ?? [];
    assert.ok(mine, 'one row per configured gateway');
    assert.equal(mine.gateway, gateway.adminUrl);
    assert.equal(mine.error, null);
    assert.ok(mine.requests >= 20);
    assert.ok(mine.serviceShare !== null && mine.serviceShare > 0, 'the observed share comes from real traffic');
    assert.equal(mine.breaker, 'closed');
    assert.equal(mine.serves, '100%', 'the percentage the gateway\'s own flag client serves');
    assert.ok(mine.p99Ms?.service !== null);
    const table = formatObserved(observed);
    assert.match(table, /serves\s+requests\s+to service/);
    assert.match(table, new RegExp(`orders\\s+${gateway.adminUrl.replace(/[.]/g, '\\.')}`));
    const down = await observedStatus({ ...control, gateways: [{ url: 'http://127.0.0.1:9', token: null }] });
    assert.match(down.orders?.[0]?.error ?? '', /fetch failed|ECONNREFUSED/);
  });

  test('flags rollback reaches the gateway before it returns (pushed), not a poll later', async () => {
    await resumeRoute(control, 'orders', { actor: 'test' });
    await until('bob back on the service', async () => (await target('bob')) === 'service');
    const started = performance.now();
    const change = await rollbackRoute(control, 'orders', { actor: 'test', reason: 'latency check' });
    const returned = performance.now() - started;
    assert.deepEqual(change.refresh.map((r) => r.ok), [true]);
    assert.equal(await target('bob'), 'legacy');
    console.log(`# rollbackRoute (/off + push) returned after ${Math.round(returned)} ms (push ${change.refresh[0]?.ms} ms); gateway already on legacy`);
  });

  test('regression: only a resume clears a local rollback, not a shift push or a strategy webhook; resume pushes even when Unleash was already on', async () => {
    await resumeRoute(control, 'orders', { actor: 'test' });
    await until('bob back on the service', async () => (await target('bob')) === 'service');
    const push = async (body: Record<string, unknown>) => {
      const res = await fetch(`${gateway.adminUrl}/admin/flags/refresh`, { method: 'POST', headers: { Authorization: `Bearer ${gateway.adminToken}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(res.status, 200);
      return (await res.json()) as { action: string };
    };
    // A rollback that reached the gateways but not Unleash (down, or the admin token refused): Unleash stays on.
    await push({ flag, action: 'rollback' });
    assert.equal(await target('bob'), 'legacy');
    // The webhook for a strategy change (e.g. the title a rollback writes) is a refresh, and refreshes only.
    assert.equal((await push({ type: 'feature-strategy-update', featureName: flag, environment: unleash.environment })).action, 'refresh');
    assert.equal(await target('bob'), 'legacy', 'a strategy webhook kept the rollback');
    await push({ flag, action: 'shift', percent: 100 });
    assert.equal(await target('bob'), 'legacy', 'a shift push kept the rollback');
    // `flags resume`: Unleash is on already (nothing to write), and the resume push still clears the override.
    const resumed = await resumeRoute(control, 'orders', { actor: 'test' });
    assert.equal(resumed.changed, false);
    assert.equal(await target('bob'), 'service', 'resume reached the gateway before it returned');
  });
});
