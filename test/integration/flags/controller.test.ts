import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { createFlagsControl, type FlagsControl } from '../../../flags/control.ts';
import { PromotionController } from '../../../flags/controller.ts';
import { FileStateStore, PostgresStateStore, type PlanRecord, type StateStore } from '../../../flags/controller-state.ts';
import { resumeRoute, shiftRoute } from '../../../flags/traffic.ts';
import { syncFlags } from '../../../flags/sync.ts';
import { createTestDatabase, useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import { waitFor } from '../../helpers/wait.ts';
import type { RoutesResponse } from '../../../gateway/admin/types.ts';
import { routeStatus as fakeRoute } from '../../unit/flags/route-status.ts';
import { FakeGateway, flagsConfig, liveRollout } from './fixtures.ts';

const HEALTHY = { legacy: { requests: 900, errors: 9, latencyMs: 20 }, service: { requests: 100, errors: 1, latencyMs: 22 } };
/** The stand-in gateways' stats window (admin.statsWindowMs); plans hold each step at least this long. */
const WINDOW_MS = 1000;
const FAILING = { legacy: { requests: 900, errors: 9, latencyMs: 20 }, service: { requests: 100, errors: 30, latencyMs: 22 } };

/** A controller on the test's state store whose clock each tick(at) sets; tick returns the (one) route's report. */
function clockedController(control: FlagsControl, databaseUrl: string) {
  let now = 0;
  const controller = new PromotionController({ control, store: new PostgresStateStore(databaseUrl), now: () => now });
  const tick = async (at: number) => {
    now = at;
    return (await controller.tick()).routes[0]!;
  };
  return { controller, tick };
}

describe('promotion controller against real Unleash, PostgreSQL and a stand-in gateway', () => {
  let unleash: TestUnleash;
  let api: UnleashAdminApi;
  let gateway: FakeGateway;
  before(async () => {
    unleash = await useTestUnleash();
    api = new UnleashAdminApi({ baseUrl: unleash.url, token: unleash.adminToken });
    gateway = await new FakeGateway().start();
    gateway.followPushes = true;
  });
  after(async () => {
    await gateway.stop();
    await unleash.stop();
  });

  async function setup(plan: Record<string, unknown> | undefined, guard: Record<string, unknown> = {}, more: FakeGateway[] = []): Promise<{ control: FlagsControl; flag: string; databaseUrl: string }> {
    const flag = uniqueFlag('ctl');
    const control = createFlagsControl(flagsConfig(unleash, [{ id: 'orders', flag: { name: flag }, guard: { minRequests: 50, windowMs: WINDOW_MS, ...guard }, ...(plan ? { plan } : {}) }], {
      gateways: [gateway, ...more].map((g) => ({ url: g.url, token: 'gw-token-0123456789abcdef' })),
    }));
    await syncFlags(control);
    return { control, flag, databaseUrl: await createTestDatabase(unleash.postgresUrl, 'controller') };
  }
  /** The gateway serves these stats (over a WINDOW_MS window); its flag state follows the controller's pushes, from Unleash's initial 0 %. */
  const serve = (flag: string, stats: typeof HEALTHY, breaker: { opens?: number } = {}, gw = gateway, instanceId = 'gw1') => {
    const route = fakeRoute('orders', flag, stats.legacy, stats.service, breaker);
    route.windowMs = WINDOW_MS;
    route.flagState = (gw.routes as Partial<RoutesResponse>).routes?.find((r) => r.flag.name === flag)?.flagState ?? { known: true, enabled: true, rolloutPercent: 0, localOverride: null };
    gw.routes = { gateway: { instanceId, workers: 1, ready: true, degraded: null, flagsSynchronized: true, flagsError: null }, routes: [route] } satisfies RoutesResponse;
  };
  const rollout = (flag: string) => liveRollout(api, unleash, flag);

  test('advances 1 → 5 → 25 only after each hold passes, then completes; every step is in Unleash\'s event log', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5, 25], holdMs: 1000 });
    let now = 0;
    const controller = new PromotionController({ control, store: new PostgresStateStore(databaseUrl), now: () => now });
    try {
      serve(flag, HEALTHY);
      await controller.tick();
      assert.deepEqual(await rollout(flag), { enabled: true, percent: 1 });
      now = 500;
      await controller.tick();
      assert.equal((await rollout(flag)).percent, 1, 'hold not over yet');
      now = 1000;
      const t = await controller.tick();
      assert.equal(t.routes[0]?.action.kind, 'shift');
      assert.equal((await rollout(flag)).percent, 5);
      now = 2000;
      await controller.tick();
      assert.equal((await rollout(flag)).percent, 25);
      now = 3000;
      const last = await controller.tick();
      assert.equal(last.routes[0]?.record.state, 'completed');
      const view = await controller.view();
      assert.deepEqual(view.orders?.plan, { steps: [1, 5, 25], stepIndex: 2, state: 'completed', holdUntil: null });
      assert.equal(view.orders?.guard?.lastVerdict, 'pass');
      const titles = (await api.getFeatureEvents(flag)).filter((e) => e.type === 'feature-strategy-update').map((e) => String(e.data?.title));
      assert.ok(titles.some((t2) => /shift 5→25% by controller: plan step 3\/3/.test(t2)), titles.join('\n'));
      assert.deepEqual(gateway.calls.filter((c) => c.body.flag === flag).map((c) => c.body.percent), [1, 5, 25]);
    } finally {
      await controller.stop();
    }
  });

  test('not enough traffic never advances; a failing guard rolls back and the plan stays stopped', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [5, 50], holdMs: 1000 });
    let now = 0;
    const controller = new PromotionController({ control, store: new PostgresStateStore(databaseUrl), now: () => now });
    try {
      serve(flag, { legacy: { requests: 10, errors: 0, latencyMs: 20 }, service: { requests: 3, errors: 0, latencyMs: 20 } });
      await controller.tick();
      for (now = 1000; now <= 5000; now += 1000) await controller.tick();
      assert.deepEqual(await rollout(flag), { enabled: true, percent: 5 });
      serve(flag, FAILING);
      now = 6000;
      const t = await controller.tick();
      assert.equal(t.routes[0]?.action.kind, 'rollback');
      assert.match(t.routes[0]?.action.kind === 'rollback' ? t.routes[0].action.reason : '', /error rate 30.00 % vs legacy 1.00 %/);
      assert.deepEqual(await rollout(flag), { enabled: false, percent: 5 });
      const [latest] = (await api.getFeatureEvents(flag)).filter((e) => e.type === 'feature-strategy-update');
      assert.match(String(latest?.data?.title), /rollback by controller: guard failed at 5 %/);
      assert.ok(gateway.calls.some((c) => c.body.flag === flag && c.body.action === 'rollback'));
      serve(flag, HEALTHY);
      now = 9000;
      await controller.tick();
      assert.deepEqual(await rollout(flag), { enabled: false, percent: 5 }, 'healthy stats do not resume a rolled-back route');
    } finally {
      await controller.stop();
    }
  });

  test('two controllers on one database never double-advance (compare-and-set), and the advisory lock keeps one active', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5, 25, 50], holdMs: 1000 });
    let now = 0;
    const a = new PromotionController({ control, store: new PostgresStateStore(databaseUrl, { leaderLock: false }), now: () => now });
    const b = new PromotionController({ control, store: new PostgresStateStore(databaseUrl, { leaderLock: false }), now: () => now });
    try {
      serve(flag, HEALTHY);
      await a.tick();
      assert.equal((await rollout(flag)).percent, 1);
      now = 1000;
      const [ra, rb] = await Promise.all([a.tick(), b.tick()]);
      const shifts = [ra, rb].filter((r) => r.routes[0]?.action.kind === 'shift' && !r.routes[0].conflict);
      assert.equal(shifts.length, 1, 'exactly one controller advanced');
      const other = [ra, rb].find((r) => !(r.routes[0]?.action.kind === 'shift' && !r.routes[0].conflict));
      assert.ok(other?.routes[0]?.conflict || other?.routes[0]?.action.kind === 'none', 'the other lost the compare-and-set or saw the step already decided');
      assert.equal((await rollout(flag)).percent, 5);
      assert.deepEqual(gateway.calls.filter((c) => c.body.flag === flag).map((c) => c.body.percent), [1, 5]);
    } finally {
      await a.stop();
      await b.stop();
    }

    const first = new PostgresStateStore(databaseUrl);
    const second = new PostgresStateStore(databaseUrl);
    try {
      assert.equal(await first.acquireLeadership(), true);
      assert.equal(await second.acquireLeadership(), false);
      await first.close();
      assert.equal(await second.acquireLeadership(), true, 'the standby takes over once the leader is gone');
    } finally {
      await second.close();
    }

    // State is durable: a new controller continues from the stored step.
    now = 1500;
    const c = new PromotionController({ control, store: new PostgresStateStore(databaseUrl), now: () => now });
    try {
      const r = await c.tick();
      assert.equal(r.routes[0]?.record.stepIndex, 1);
      now = 2100;
      await c.tick();
      assert.equal((await rollout(flag)).percent, 25);
    } finally {
      await c.stop();
    }
  });

  test('breaker openings are counted per gateway: a missed read, a return or a restart never turns old openings into new ones', async () => {
    const b = await new FakeGateway().start();
    const { control, flag, databaseUrl } = await setup(undefined, {}, [b]);
    const { controller, tick: tickAt } = clockedController(control, databaseUrl);
    const tick = async (at: number) => {
      const r = await tickAt(at);
      return [r.verdict.outcome, r.verdict.metrics.breakerOpens, r.action.kind];
    };
    try {
      serve(flag, HEALTHY, { opens: 2 });
      serve(flag, HEALTHY, { opens: 3 }, b, 'gw2');
      assert.deepEqual(await tick(0), ['pass', 0, 'none'], 'openings from before the controller started');
      assert.deepEqual(await tick(500), ['pass', 0, 'none']);
      b.status = 503;
      assert.deepEqual(await tick(1000), ['insufficient', 0, 'none'], 'gateway B misses one read: no pass on A\'s traffic alone');
      b.status = 200;
      assert.deepEqual(await tick(1500), ['pass', 0, 'none'], 'gateway B answers again with the same counter');
      serve(flag, HEALTHY, { opens: 0 }, b, 'gw2-restarted');
      assert.deepEqual(await tick(2000), ['pass', 0, 'none'], 'gateway B restarted: its counter began again at 0');
      serve(flag, HEALTHY, { opens: 1 }, b, 'gw2-restarted');
      const [outcome, opens, action] = await tick(2500);
      assert.deepEqual([outcome, opens, action], ['fail', 1, 'rollback'], 'a real new opening still fails the guard');
      assert.deepEqual(await rollout(flag), { enabled: false, percent: 0 });
    } finally {
      await controller.stop();
      await b.stop();
    }
  });

  test('a step is held only while every gateway serves it: a gateway that cannot read Unleash or lags blocks the plan, and says why', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5, 25], holdMs: 1000 });
    const { controller, tick } = clockedController(control, databaseUrl);
    try {
      serve(flag, HEALTHY);
      await tick(0);
      assert.equal((await rollout(flag)).percent, 1);
      // The gateway's Unleash token is revoked: it keeps serving its last data (1 %) and its stats stay healthy.
      const views = gateway.routes as RoutesResponse;
      views.gateway.flagsError = 'Unleash refused the token (401)';
      for (const at of [1000, 2000, 3000]) {
        const r = await tick(at);
        assert.equal(r.verdict.outcome, 'insufficient');
        assert.match(r.verdict.reasons.join('\n'), /waiting for the gateways to serve the step: gateway http:\/\/127\.0\.0\.1:\d+ cannot read Unleash: Unleash refused the token \(401\)/);
      }
      assert.equal((await rollout(flag)).percent, 1, 'no promotion while a gateway cannot read Unleash');
      views.gateway.flagsError = null;
      gateway.followPushes = false; // the next push does not land: the gateway keeps serving 1 %
      const served = await tick(3500);
      assert.deepEqual([served.verdict.outcome, served.action.kind, served.record.holdStartedAt], ['pass', 'none', 3000], 'the hold counts from the last tick a gateway lagged');
      assert.equal((await tick(4000)).action.kind, 'shift');
      assert.equal((await rollout(flag)).percent, 5);
      for (const at of [5000, 6000]) {
        const r = await tick(at);
        assert.deepEqual([r.verdict.outcome, r.action.kind], ['insufficient', 'none']);
        assert.match(r.verdict.reasons[0] ?? '', /gateway http:\/\/127\.0\.0\.1:\d+ serves 1 % instead of 5 %/);
      }
      assert.equal((await rollout(flag)).percent, 5);
      views.routes[0]!.flagState.rolloutPercent = 5;
      assert.deepEqual([(await tick(6500)).action.kind, (await tick(7000)).action.kind], ['none', 'shift']);
      assert.equal((await rollout(flag)).percent, 25);
    } finally {
      gateway.followPushes = true;
      await controller.stop();
    }
  });

  test('a gateway that does not answer GET /admin/routes holds the plan (its traffic is not judged), and says which', async () => {
    const b = await new FakeGateway().start();
    b.followPushes = true;
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5], holdMs: 1000 }, {}, [b]);
    const { controller, tick } = clockedController(control, databaseUrl);
    try {
      serve(flag, HEALTHY);
      serve(flag, HEALTHY, {}, b, 'gw2');
      await tick(0);
      assert.equal((await rollout(flag)).percent, 1);
      b.status = 401; // its admin token was rotated, or it is overloaded, or down: A's healthy window alone proves nothing
      for (const at of [500, 1000, 1500, 2000]) {
        const r = await tick(at);
        assert.deepEqual([r.verdict.outcome, r.action.kind], ['insufficient', 'none']);
        assert.ok(r.verdict.reasons.includes(`no stats from gateway ${b.url} (GET ${b.url}/admin/routes: HTTP 401): its traffic cannot be judged, so the plan does not advance`), r.verdict.reasons.join('\n'));
      }
      assert.equal((await rollout(flag)).percent, 1, 'no promotion while a listed gateway does not answer');
      b.status = 200;
      assert.deepEqual([(await tick(2500)).action.kind, (await tick(3000)).action.kind], ['none', 'shift'], 'held again from when B answered');
      assert.equal((await rollout(flag)).percent, 5);
      b.status = 503;
      serve(flag, FAILING);
      const failed = await tick(3500);
      assert.deepEqual([failed.verdict.outcome, failed.action.kind], ['fail', 'rollback'], 'a failure seen on A still rolls back while B is unreadable');
    } finally {
      await controller.stop();
      await b.stop();
    }
  });

  test('a step is held for at least the gateways\' stats window, so it is never promoted on the previous step\'s traffic', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5], holdMs: 200 });
    let now = 0;
    const controller = new PromotionController({ control, store: new PostgresStateStore(databaseUrl), now: () => now });
    try {
      serve(flag, HEALTHY);
      await controller.tick();
      now = 500;
      assert.equal((await controller.tick()).routes[0]?.action.kind, 'none', 'holdMs 200 is over, the 1 s window is not');
      assert.equal((await controller.view()).orders?.plan?.holdUntil, new Date(WINDOW_MS).toISOString());
      now = WINDOW_MS;
      assert.equal((await controller.tick()).routes[0]?.action.kind, 'shift');
      assert.equal((await rollout(flag)).percent, 5);
    } finally {
      await controller.stop();
    }
  });

  test('an automatic rollback that Unleash refused (HTTP 503) is retried on the next tick, not taken for an operator\'s resume', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [5, 50], holdMs: 1000 });
    // Unleash behind a proxy that answers 503 to the first switch-off.
    let failOff = 1;
    const proxy = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.method === 'POST' && /\/environments\/[^/]+\/off$/.test(req.url ?? '') && failOff-- > 0) {
          res.writeHead(503, { 'content-type': 'application/json' }).end('{"name":"ServiceUnavailable","message":"try again later"}');
          return;
        }
        const headers = Object.fromEntries(['authorization', 'content-type', 'accept'].flatMap((h) => (req.headers[h] ? [[h, String(req.headers[h])]] : [])));
        void fetch(`${unleash.url}${req.url}`, { method: req.method, headers, ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}) }).then(async (r) => {
          res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/json' }).end(Buffer.from(await r.arrayBuffer()));
        }, () => res.writeHead(502).end());
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const viaProxy = createFlagsControl(control.config, { api: new UnleashAdminApi({ baseUrl: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, token: unleash.adminToken }) });
    let now = 0;
    const controller = new PromotionController({ control: viaProxy, store: new PostgresStateStore(databaseUrl), now: () => now });
    try {
      serve(flag, HEALTHY);
      await controller.tick();
      assert.deepEqual(await rollout(flag), { enabled: true, percent: 5 });
      serve(flag, FAILING);
      now = 500;
      const failed = (await controller.tick()).routes[0]!;
      assert.match(failed.error ?? '', /HTTP 503/);
      assert.equal((await rollout(flag)).enabled, true, 'Unleash refused the switch-off');
      serve(flag, HEALTHY); // the gateway routes to legacy on its local override, so its window looks healthy again
      now = 1000;
      const retried = (await controller.tick()).routes[0]!;
      assert.deepEqual([retried.action.kind, retried.error, retried.record.state, retried.record.applied], ['rollback', null, 'rolled-back', true]);
      assert.match(retried.action.kind === 'rollback' ? retried.action.reason : '', /retrying the rollback decided earlier: Unleash still has the flag on at 5 %/);
      assert.deepEqual(await rollout(flag), { enabled: false, percent: 5 });
      now = 1500;
      assert.deepEqual([(await controller.tick()).routes[0]?.action.kind, (await rollout(flag)).enabled], ['none', false]);
    } finally {
      await controller.stop();
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  test('a leader whose lock session is killed again and again (PostgreSQL restarts, failovers) stands by and leads again, never starved of connections', async () => {
    const databaseUrl = await createTestDatabase(unleash.postgresUrl, 'controller');
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    const store = new PostgresStateStore(databaseUrl);
    const lockSessions = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    try {
      const withDeadline = <T,>(p: Promise<T>) => Promise.race([p, new Promise<string>((resolve) => setTimeout(() => resolve('still waiting for a connection after 5 s'), 5000).unref())]);
      assert.equal(await store.acquireLeadership(), true);
      for (let round = 1; round <= 4; round++) { // the pool has 3 connections: each lost session used to keep one for good
        await admin.query(`SELECT pg_terminate_backend(pid) FROM (${lockSessions}) l`);
        // The store notices its session ended and, on a later tick, takes the lock on a new one.
        await waitFor(`round ${round}: the lock held again on a new session`, async () => {
          assert.notEqual(await withDeadline(store.acquireLeadership().catch(() => false)), 'still waiting for a connection after 5 s', `round ${round}`);
          return (await admin.query(lockSessions)).rowCount === 1;
        }, 10_000);
      }
      assert.deepEqual(await store.loadAll(), {});
    } finally {
      await admin.end();
      await Promise.race([store.close(), new Promise((resolve) => setTimeout(resolve, 5000).unref())]); // a starved pool never ends
    }
  });

  test('an operator\'s shift outside the plan (to 0 % to pause it, or anywhere) holds the plan, says why, until an explicit resume', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5, 25], holdMs: 1000 });
    const { controller, tick } = clockedController(control, databaseUrl);
    try {
      serve(flag, HEALTHY);
      await tick(0);
      assert.equal((await tick(1000)).action.kind, 'shift');
      assert.equal((await rollout(flag)).percent, 5);
      // The operator pauses the rollout by hand, the flag still on (CLI `flags shift orders 0`, or the dashboard).
      await shiftRoute(control, 'orders', 0, { actor: 'cli:alice', reason: 'pausing: support tickets' });
      for (const at of [1500, 2500, 4000, 6000]) {
        const r = await tick(at);
        assert.deepEqual([r.action.kind, r.record.state], [at === 1500 ? 'pause' : 'none', 'paused'], `tick at ${at}`);
        assert.deepEqual(await rollout(flag), { enabled: true, percent: 0 }, `the controller keeps the operator's 0 % at ${at}`);
      }
      const view = (await controller.view()).orders?.plan;
      assert.equal(view?.state, 'paused');
      assert.match(view?.reason ?? '', /5 % → 0 % outside the plan.*shift 5→0% by cli:alice: pausing: support tickets.*strangler flags resume orders/);
      // A further shift by hand keeps the plan paused: the operator drives.
      await shiftRoute(control, 'orders', 10, { actor: 'cli:alice' });
      for (const at of [7000, 9000]) assert.deepEqual([(await tick(at)).action.kind, (await rollout(flag)).percent], [at === 7000 ? 'pause' : 'none', 10]);
      // An explicit resume hands the route back to the plan, from where it is: 10 % is held, then 25 %.
      await resumeRoute(control, 'orders', { actor: 'cli:alice', reason: 'tickets were unrelated' });
      const resumed = await tick(9500);
      assert.deepEqual([resumed.action.kind, resumed.record.state, resumed.record.holdStartedAt], ['none', 'holding', 9500]);
      assert.equal((await controller.view()).orders?.plan?.reason, undefined);
      assert.equal((await tick(10_000)).action.kind, 'none', 'the resumed step is held in full');
      assert.equal((await tick(10_500)).action.kind, 'shift');
      assert.equal((await rollout(flag)).percent, 25);
      assert.deepEqual(gateway.calls.filter((c) => c.body.flag === flag && c.body.action === 'shift').map((c) => c.body.percent), [1, 5, 0, 10, 25]);
    } finally {
      await controller.stop();
    }
  });

  test('a breaker that opened during the hold is not forgotten when the controller restarts (new pod) before the next tick', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5], holdMs: 1000 });
    const first = clockedController(control, databaseUrl);
    try {
      serve(flag, HEALTHY, { opens: 0 });
      await first.tick(0);
      assert.deepEqual((await first.tick(500)).verdict.outcome, 'pass');
    } finally {
      await first.controller.stop();
    }
    // Between the two controllers the service breaker opens, falls back a few times (within maxFallbacks) and closes again.
    serve(flag, HEALTHY, { opens: 1 });
    const second = clockedController(control, databaseUrl);
    try {
      const r = await second.tick(1000);
      assert.deepEqual([r.verdict.outcome, r.verdict.metrics.breakerOpens, r.action.kind], ['fail', 1, 'rollback'], 'the opening counts against the step, not promoted');
      assert.deepEqual(await rollout(flag), { enabled: false, percent: 1 });
    } finally {
      await second.controller.stop();
    }
  });

  test('a controller that was not watching for longer than the guard window holds the step again before promoting', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5], holdMs: 1000 });
    const { controller, tick } = clockedController(control, databaseUrl);
    try {
      serve(flag, HEALTHY);
      await tick(0);
      await tick(500);
      // Down (or standing by with no leader) from 500 to 5000: whatever happened meanwhile was never judged.
      const back = await tick(5000);
      assert.deepEqual([back.action.kind, back.record.holdStartedAt], ['none', 5000]);
      assert.equal((await tick(5500)).action.kind, 'none');
      assert.equal((await tick(6000)).action.kind, 'shift');
    } finally {
      await controller.stop();
    }
  });

  test('a step in Unleash whose state write failed (crash in between) is marked on restart and held in full: never skipped, never shifted twice', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5, 25], holdMs: 1000 });
    let now = 0;
    const store = new PostgresStateStore(databaseUrl);
    let failMark = false;
    const crashing: StateStore = {
      loadAll: () => store.loadAll(),
      acquireLeadership: () => store.acquireLeadership(),
      close: () => store.close(),
      // The write that records "applied" after the Unleash write fails, as if the process died in between.
      compareAndSet: (record, version) => (failMark && record.applied && record.targetPercent === 5 ? Promise.reject(new Error('crash')) : store.compareAndSet(record, version)),
    };
    const a = new PromotionController({ control, store: crashing, now: () => now });
    try {
      serve(flag, HEALTHY);
      await a.tick();
      now = 1000;
      failMark = true;
      const crashed = (await a.tick()).routes[0]!;
      assert.match(crashed.error ?? '', /crash/);
      assert.equal((await rollout(flag)).percent, 5, 'the step reached Unleash');
    } finally {
      await a.stop();
    }
    const { controller, tick } = clockedController(control, databaseUrl);
    try {
      const resumed = await tick(1200);
      assert.deepEqual([resumed.action.kind, resumed.record.applied, resumed.record.targetPercent, resumed.record.holdStartedAt], ['none', true, 5, 1200]);
      assert.equal((await tick(2000)).action.kind, 'none', 'held from the restart, not from when the step was decided');
      assert.equal((await tick(2200)).action.kind, 'shift');
      assert.deepEqual(gateway.calls.filter((c) => c.body.flag === flag && c.body.action === 'shift').map((c) => c.body.percent), [1, 5, 25]);
    } finally {
      await controller.stop();
    }
  });

  test('with Unleash unreachable a tick reports the error and writes no state', async () => {
    const { control, flag, databaseUrl } = await setup({ steps: [1, 5], holdMs: 1000 });
    serve(flag, HEALTHY);
    const down = createFlagsControl(control.config, { api: new UnleashAdminApi({ baseUrl: 'http://127.0.0.1:9', token: 'x', timeoutMs: 500 }) });
    const store = new PostgresStateStore(databaseUrl);
    const controller = new PromotionController({ control: down, store, now: () => 0 });
    try {
      const report = await controller.tick();
      assert.match(report.routes[0]?.error ?? '', /UNLEASH|cannot reach/i);
      assert.deepEqual(await store.loadAll(), {});
      assert.equal((await rollout(flag)).percent, 0);
    } finally {
      await controller.stop();
    }
  });
});

test('FileStateStore: compare-and-set on the version, file replaced atomically', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'strangler-ctl-'));
  try {
    const file = join(dir, 'sub', 'controller.json');
    const store = new FileStateStore(file);
    const record: PlanRecord = { routeId: 'orders', flag: 'f', state: 'holding', stepIndex: 0, targetPercent: 1, applied: true, holdStartedAt: 0, lastVerdict: null, lastReasons: [], lastCheckedAt: null, updatedAt: 0, version: 0 };
    const [x, y] = await Promise.all([store.compareAndSet(record, 0), store.compareAndSet({ ...record, stepIndex: 1 }, 0)]);
    assert.equal(x?.version, 1);
    assert.equal(y, undefined, 'the second writer with the same expected version loses');
    assert.equal((await store.loadAll()).orders?.stepIndex, 0);
    assert.equal((await store.compareAndSet({ ...record, stepIndex: 2 }, 1))?.version, 2);
    assert.equal((JSON.parse(readFileSync(file, 'utf8')) as { routes: Record<string, PlanRecord> }).routes.orders?.stepIndex, 2);
    assert.equal(await new FileStateStore(file).acquireLeadership(), true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
