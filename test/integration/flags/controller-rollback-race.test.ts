/**
 * Regression: an operator's rollback that lands while the promotion controller is applying a plan step (after it
 * read the flag and decided 5 → 25 %, before its shift) wins. The controller's shift used to write 25 % into the
 * rolled-back flag and push "shift" to every gateway, so a later resume brought back 25 % instead of 5 %.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { createFlagsControl } from '../../../flags/control.ts';
import { PromotionController } from '../../../flags/controller.ts';
import { FileStateStore, type PlanRecord, type StateStore } from '../../../flags/controller-state.ts';
import { syncFlags } from '../../../flags/sync.ts';
import { resumeRoute, rollbackRoute } from '../../../flags/traffic.ts';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import { routeStatus as fakeRoute } from '../../unit/flags/route-status.ts';
import { FakeGateway, flagsConfig, liveRollout } from './fixtures.ts';

let unleash: TestUnleash;
let gateway: FakeGateway;
let dir: string;
before(async () => {
  unleash = await useTestUnleash();
  gateway = await new FakeGateway().start();
  dir = mkdtempSync(join(tmpdir(), 'strangler-race-'));
});
after(async () => {
  await gateway.stop();
  rmSync(dir, { recursive: true, force: true });
  await unleash.stop();
});

test('an operator rollback between the controller\'s decision and its shift wins: nothing written, no shift pushed, resume restores the old step', async () => {
  const flag = uniqueFlag('race');
  const control = createFlagsControl(flagsConfig(unleash, [{ id: 'orders', flag: { name: flag }, guard: { minRequests: 50 }, plan: { steps: [1, 5, 25], holdMs: 1000 } }], {
    gateways: [{ url: gateway.url, token: null }],
  }));
  await syncFlags(control);

  // The rollback is made right after the controller stored its decision to go to 25 % (compare-and-set) and
  // before it applies it in Unleash: the window a real operator can hit.
  const inner = new FileStateStore(join(dir, 'state.json'));
  let operator: Promise<unknown> | undefined;
  let armed = false;
  const store: StateStore = {
    loadAll: () => inner.loadAll(),
    acquireLeadership: () => inner.acquireLeadership(),
    close: () => inner.close(),
    async compareAndSet(record: PlanRecord, version: number) {
      const written = await inner.compareAndSet(record, version);
      if (armed && record.targetPercent === 25 && !record.applied) {
        armed = false;
        operator = rollbackRoute(control, 'orders', { actor: 'cli:operator', reason: 'p99 too high' });
        await operator;
      }
      return written;
    },
  };
  const api = new UnleashAdminApi({ baseUrl: unleash.url, token: unleash.adminToken });
  const live = () => liveRollout(api, unleash, flag);
  // A healthy gateway that serves what the controller pushes, from Unleash's initial 0 % (the controller only
  // promotes on stats of the step the gateways serve).
  const route = fakeRoute('orders', flag, { requests: 900, errors: 9, latencyMs: 20 }, { requests: 100, errors: 1, latencyMs: 22 });
  gateway.routes = { gateway: { instanceId: 'gw1', workers: 1, ready: true, degraded: null, flagsSynchronized: true, flagsError: null }, routes: [{ ...route, flagState: { known: true, enabled: true, rolloutPercent: 0, localOverride: null } }] };
  gateway.followPushes = true;
  let now = 0;
  const controller = new PromotionController({ control, store, now: () => now });
  try {
    // Step 1 (1 %), then step 2 (5 %): ticks 30 s apart (a controller that looked away for longer than the guard
    // window holds again), each step held for the gateways' 60 s stats window.
    for (let i = 0; i < 8 && (await live()).percent < 5; i++) {
      await controller.tick();
      now += 30_000;
    }
    assert.deepEqual(await live(), { enabled: true, percent: 5 });
    await controller.tick(); // 5 % held half its window
    now += 30_000;

    armed = true;
    const calls = gateway.calls.length;
    const race = await controller.tick();
    assert.ok(operator, 'the controller decided 5 → 25 % and the operator rolled back in between');
    assert.match(race.routes[0]?.error ?? '', /shift of route orders to 25 % not written: .* on at 5 %, but Unleash has it off at 5 %/);
    assert.deepEqual(await live(), { enabled: false, percent: 5 }, 'the rollback stands; the step was not written');
    assert.deepEqual(gateway.calls.slice(calls).map((c) => c.body.action), ['rollback'], 'no shift pushed to the gateways');

    // The next tick decides again from Unleash: rolled back, nothing to do.
    now += 3_600_000;
    const next = await controller.tick();
    assert.deepEqual([next.routes[0]?.action.kind, next.routes[0]?.record.state, next.routes[0]?.error], ['none', 'rolled-back', null]);
    assert.deepEqual(await live(), { enabled: false, percent: 5 });

    const resumed = await resumeRoute(control, 'orders', { actor: 'cli:operator' });
    assert.equal(resumed.effectivePercent, 5, 'resume restores what was rolled back');
  } finally {
    await controller.stop();
  }
});
