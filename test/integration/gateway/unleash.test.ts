/**
 * The gateway against a real unleash-server 7.5.1 (auth on, backend token): the observed split follows the flag's
 * rollout as it moves 0 → 30 → 60 → off, users never move back as it grows, and "off" sends everything to legacy.
 * Also: Unleash unreachable at start (degraded, all legacy; then the backup file), and a refused token shown on
 * the admin API.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile, startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { FlagClient } from '../../../flags/client.ts';
import { createLogger } from '../../../common/logger.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import type { RoutesResponse } from '../../../gateway/admin/types.ts';

const USERS = Array.from({ length: 2000 }, (_, i) => `user-${i}`);

/** Sends one request per user (50 at a time) and returns the users that reached the service. */
async function serviceUsers(gw: RunningGateway): Promise<Set<string>> {
  const on = new Set<string>();
  for (let i = 0; i < USERS.length; i += 50) {
    await Promise.all(USERS.slice(i, i + 50).map(async (user) => {
      const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { 'x-user-id': user } });
      await res.arrayBuffer();
      assert.equal(res.status, 200);
      if (res.headers.get('x-strangler-target') === 'service') on.add(user);
    }));
  }
  return on;
}

/** Polls the gateway's flag client (refetching now) until it sees `want`, or fails after 10 s. */
async function until(gw: RunningGateway, flag: string, want: { enabled: boolean; percent?: number }): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    await gw.runtime.flags.refresh();
    const s = gw.runtime.flags.state(flag);
    if (s.known && s.enabled === want.enabled && (want.percent === undefined || s.rolloutPercent === want.percent)) return;
    if (Date.now() > deadline) assert.fail(`gateway never saw ${flag} as ${JSON.stringify(want)} (last: ${JSON.stringify(s)})`);
    await new Promise((r) => setTimeout(r, 100)); // Unleash publishes changes on a 1 s revision tick
  }
}

describe('gateway with a real Unleash', () => {
  let unleash: TestUnleash;
  let api: UnleashAdminApi;
  let legacy: FakeUpstream;
  let svc: FakeUpstream;

  before(async () => {
    unleash = await useTestUnleash();
    api = new UnleashAdminApi({ baseUrl: unleash.url, token: unleash.adminToken });
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
  });
  after(async () => {
    await legacy?.stop();
    await svc?.stop();
    await unleash?.stop();
  });

  test('observed split follows 0 → 30 → 60 → off within ±4 points over 2000 users; no user moves back', async () => {
    const flag = uniqueFlag('split');
    const env = unleash.environment;
    await api.createFeature('default', { name: flag });
    const strategy = await api.addStrategy('default', flag, env, { name: 'flexibleRollout', parameters: { rollout: '0', stickiness: 'default', groupId: flag }, constraints: [], title: 'test' });
    await api.setEnvironmentEnabled('default', flag, env, true);
    const gw = await startTestGateway(testConfig({
      legacyUrl: legacy.url,
      serviceUrl: svc.url,
      route: { flag: { name: flag } },
      flags: { url: unleash.apiUrl, token: unleash.backendToken, environment: env, refreshIntervalMs: 500, disableMetrics: true },
    }));
    try {
      await until(gw, flag, { enabled: true, percent: 0 });
      assert.equal((await serviceUsers(gw)).size, 0, '0% sends nobody to the service');

      let previous = new Set<string>();
      for (const percent of [30, 60]) {
        await api.patchStrategy('default', flag, env, strategy.id, [{ op: 'replace', path: '/parameters/rollout', value: String(percent) }]);
        await until(gw, flag, { enabled: true, percent });
        const on = await serviceUsers(gw);
        const share = (on.size / USERS.length) * 100;
        assert.ok(Math.abs(share - percent) <= 4, `observed ${share.toFixed(1)}% at ${percent}%`);
        for (const u of previous) assert.ok(on.has(u), `${u} stayed on the service when the rollout grew to ${percent}%`);
        previous = on;
      }

      const view = (await (await fetch(`${gw.adminUrl}/admin/routes`, { headers: { authorization: `Bearer ${gw.adminToken}` } })).json()) as RoutesResponse;
      const route = view.routes[0];
      assert.ok(route);
      assert.deepEqual(route.flagState, { known: true, enabled: true, rolloutPercent: 60, localOverride: null });
      // the window holds the 0%, 30% and 60% phases: (0 + 600 + 1200) of 6000 requests went to the service
      assert.ok(Math.abs(route.stats.service.share - 0.3) < 0.03, `the admin API reports the observed service share (${route.stats.service.share})`);
      assert.equal(view.gateway.flagsSynchronized, true);

      await api.setEnvironmentEnabled('default', flag, env, false);
      await until(gw, flag, { enabled: false });
      assert.equal((await serviceUsers(gw)).size, 0, 'after off, every request goes to legacy');
    } finally {
      await gw.close();
    }
  });

  test('Unleash unreachable at start: degraded and all legacy; a backup from an earlier run is used instead', async () => {
    const flag = uniqueFlag('backup');
    const env = unleash.environment;
    await api.createFeature('default', { name: flag });
    await api.addStrategy('default', flag, env, { name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default', groupId: flag }, constraints: [], title: 'test' });
    await api.setEnvironmentEnabled('default', flag, env, true);
    const backupPath = mkdtempSync(join(tmpdir(), 'strangler-backup-'));
    const flags = { token: unleash.backendToken, environment: env, refreshIntervalMs: 500, disableMetrics: true, backupPath, requestTimeoutMs: 500 };

    // 1. Unleash unreachable and nothing local: degraded, everything to legacy.
    const dead = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, route: { flag: { name: flag } }, flags: { ...flags, url: 'http://127.0.0.1:9/api/' } }));
    try {
      const ready = (await (await fetch(`${dead.adminUrl}/readyz`)).json()) as { status: string; degraded: string };
      assert.equal(ready.status, 'degraded');
      assert.match(ready.degraded, /no flag data/);
      const res = await fetch(`${dead.proxyUrl}/api/orders/1`, { headers: { 'x-user-id': 'u1' } });
      await res.text();
      assert.equal(res.headers.get('x-strangler-target'), 'legacy');
    } finally {
      await dead.close();
    }

    // 2. A run against the live server writes the backup…
    const live = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, route: { flag: { name: flag } }, flags: { ...flags, url: unleash.apiUrl } }));
    try {
      await until(live, flag, { enabled: true, percent: 100 });
    } finally {
      await live.close();
    }

    // 3. …which a later start with Unleash unreachable uses: not degraded, decisions from the last known flags.
    const fromBackup = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, route: { flag: { name: flag } }, flags: { ...flags, url: 'http://127.0.0.1:9/api/' } }));
    try {
      assert.equal(fromBackup.runtime.flags.status.source, 'backup');
      const ready = (await (await fetch(`${fromBackup.adminUrl}/readyz`)).json()) as { status: string };
      assert.equal(ready.status, 'ready');
      const res = await fetch(`${fromBackup.proxyUrl}/api/orders/1`, { headers: { 'x-user-id': 'u1' } });
      await res.text();
      assert.equal(res.headers.get('x-strangler-target'), 'service', 'the 100% rollout from the backup applies');
    } finally {
      await fromBackup.close();
    }
  });

  test('issue: Unleash unreachable at start, a bootstrap file shipped with the gateway undid a rollback the backup knew of', async () => {
    const flag = uniqueFlag('bootstrap-vs-backup');
    const env = unleash.environment;
    await api.createFeature('default', { name: flag });
    await api.addStrategy('default', flag, env, { name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default', groupId: flag }, constraints: [], title: 'test' });
    // Rolled back in Unleash (environment off); the bootstrap file deployed with the gateway still says 100 %.
    const backupPath = mkdtempSync(join(tmpdir(), 'strangler-backup-'));
    const flags = { token: unleash.backendToken, environment: env, refreshIntervalMs: 500, disableMetrics: true, backupPath, requestTimeoutMs: 500, bootstrapFile: featuresFile({ [flag]: { percent: 100 } }) };
    const route = { flag: { name: flag } };
    const live = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, route, flags: { ...flags, url: unleash.apiUrl } }));
    try {
      await until(live, flag, { enabled: false });
    } finally {
      await live.close();
    }
    const restarted = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, route, flags: { ...flags, url: 'http://127.0.0.1:9/api/' } }));
    try {
      assert.equal(restarted.runtime.flags.status.source, 'backup', 'the last flags Unleash served win over the bootstrap file');
      const res = await fetch(`${restarted.proxyUrl}/api/orders/1`, { headers: { 'x-user-id': 'u1' } });
      await res.text();
      assert.equal(res.headers.get('x-strangler-target'), 'legacy', 'the rolled-back route stays on legacy');
    } finally {
      await restarted.close();
    }
    // Offline (no url) the bootstrap file is the source of truth, backup or not.
    const offline = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, route, flags: { ...flags, url: null } }));
    try {
      assert.equal(offline.runtime.flags.status.source, 'bootstrap');
      assert.equal(offline.runtime.flags.isEnabled(flag, { userId: 'u1' }), true);
    } finally {
      await offline.close();
    }
  });

  test('issue: a flag that is not one sticky percentage was reported as its first rollout, and random stickiness went unnoticed', async () => {
    const env = unleash.environment;
    const flexible = (rollout: string, stickiness = 'default') => ({ name: 'flexibleRollout', parameters: { rollout, stickiness, groupId: 'g' }, constraints: [], title: 'test' });
    const cases: { strategies: Parameters<UnleashAdminApi['addStrategy']>[3][]; percent: number | null; unsticky: boolean }[] = [
      { strategies: [flexible('30')], percent: 30, unsticky: false },
      { strategies: [{ name: 'default', parameters: {}, constraints: [], title: 'test' }], percent: 100, unsticky: false },
      { strategies: [flexible('30', 'random')], percent: null, unsticky: true },
      { strategies: [{ ...flexible('30'), constraints: [{ contextName: 'userId', operator: 'IN', values: ['bob'] }] }], percent: null, unsticky: false },
      { strategies: [flexible('10'), flexible('100')], percent: null, unsticky: false },
    ];
    const flags = cases.map(() => uniqueFlag('strategies'));
    for (const [i, c] of cases.entries()) {
      const flag = flags[i] as string;
      await api.createFeature('default', { name: flag });
      for (const strategy of c.strategies) await api.addStrategy('default', flag, env, strategy);
      await api.setEnvironmentEnabled('default', flag, env, true);
    }
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    const client = new FlagClient(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, flags: { url: unleash.apiUrl, token: unleash.backendToken, environment: env, refreshIntervalMs: 0, disableMetrics: true } }).flags, createLogger({ destination }));
    client.routeBy(flags); // as the gateway does with its routes' flags
    try {
      await client.start();
      const deadline = Date.now() + 10_000;
      while (!flags.every((f) => client.state(f).enabled)) { // Unleash publishes changes on a 1 s revision tick
        if (Date.now() > deadline) assert.fail('the client never saw every flag on');
        await new Promise((r) => setTimeout(r, 100));
        await client.refresh();
      }
      for (const [i, c] of cases.entries()) {
        const flag = flags[i] as string;
        assert.deepEqual(client.state(flag), { known: true, enabled: true, rolloutPercent: c.percent, localOverride: null }, `${JSON.stringify(c.strategies.map((s) => s.name))}`);
        const warned = lines.filter((l) => l.msg === 'flags.not_sticky' && l.flag === flag);
        assert.equal(warned.length, c.unsticky ? 1 : 0, `${flag}: one warning for a random strategy, none otherwise`);
      }
    } finally {
      client.close();
    }
  });

  test('a refused token is reported on the admin API, not a silent stop', async () => {
    const gw = await startTestGateway(testConfig({
      legacyUrl: legacy.url,
      serviceUrl: svc.url,
      flags: { url: unleash.apiUrl, token: `*:${unleash.environment}.not-a-real-token`, environment: unleash.environment, refreshIntervalMs: 200, disableMetrics: true },
    }));
    try {
      const view = (await (await fetch(`${gw.adminUrl}/admin/routes`, { headers: { authorization: `Bearer ${gw.adminToken}` } })).json()) as RoutesResponse;
      assert.match(view.gateway.flagsError ?? '', /refused the token \(401\)/);
      const ready = (await (await fetch(`${gw.adminUrl}/readyz`)).json()) as { status: string };
      assert.equal(ready.status, 'degraded');
      const before = gw.runtime.flags.status.lastFetchAt;
      await gw.runtime.flags.refresh();
      assert.notEqual(gw.runtime.flags.status.lastFetchAt, before, 'polling continues after a 401');
    } finally {
      await gw.close();
    }
  });
});
