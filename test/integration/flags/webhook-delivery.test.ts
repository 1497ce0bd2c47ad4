/**
 * Webhook delivery end to end: a kill switch flipped in Unleash itself (not through strangler) reaches a gateway
 * through the webhook addon `flags webhooks` installed, long before the gateway's next poll.
 *
 * unleash-server 7.5.1 caches its list of enabled addons for up to 60 s, filled by the first event it handles. A
 * private Unleash is therefore restarted (same database, same port) after the addon is installed, so its cache is
 * filled with the addon in it; the shared test Unleash has handled events long before and would not fire for a minute.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createFlagsControl } from '../../../flags/control.ts';
import { installWebhooks } from '../../../flags/webhooks.ts';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { startUnleash, type RunningUnleash } from '../../../devstack/unleash/launcher.ts';
import { freePort } from '../../../common/net.ts';
import { createTestDatabase, uniqueFlag, useTestUnleash, type TestUnleash } from '../../helpers/unleash.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { startTestGateway, testConfig } from '../../helpers/gateway.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import { flagsConfig } from './fixtures.ts';

let shared: TestUnleash;
let unleash: RunningUnleash | undefined;
let gateway: RunningGateway | undefined;
let legacy: FakeUpstream;
let svc: FakeUpstream;

before(async () => {
  shared = await useTestUnleash();
  legacy = await fakeUpstream('legacy');
  svc = await fakeUpstream('svc');
});
after(async () => {
  await gateway?.close();
  await unleash?.stop();
  await legacy?.stop();
  await svc?.stop();
  await shared?.stop();
});

const targetOf = async (gw: RunningGateway, user: string) => {
  const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { 'x-user-id': user } });
  await res.arrayBuffer();
  return res.headers.get('x-strangler-target');
};

test('a flag disabled in Unleash reaches the gateway through the webhook within seconds, though its poll interval is 10 minutes', async (t) => {
  const databaseUrl = await createTestDatabase(shared.postgresUrl, 'hook');
  const port = await freePort();
  unleash = await startUnleash({ databaseUrl, port });
  const { adminToken, backendToken, environment } = unleash;
  const api = new UnleashAdminApi({ baseUrl: unleash.url, token: adminToken });
  const flag = uniqueFlag('hook');
  await api.createFeature('default', { name: flag });
  await api.addStrategy('default', flag, environment, { name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default', groupId: flag }, constraints: [], title: 'all' });
  await api.setEnvironmentEnabled('default', flag, environment, true);

  gateway = await startTestGateway(testConfig({
    legacyUrl: legacy.url,
    serviceUrl: svc.url,
    route: { flag: { name: flag } },
    flags: { url: `${unleash.url}/api/`, token: backendToken, environment, refreshIntervalMs: 600_000, disableMetrics: true },
  }));
  // The first fetch happens at start; Unleash may publish the new flag on its next revision tick, so fetch until seen.
  const deadline = Date.now() + 10_000;
  while (!(gateway.runtime.flags.state(flag).known && gateway.runtime.flags.state(flag).rolloutPercent === 100)) {
    assert.ok(Date.now() < deadline, `gateway never saw ${flag} at 100 %`);
    await new Promise((r) => setTimeout(r, 100));
    await gateway.runtime.flags.refresh();
  }
  assert.equal(await targetOf(gateway, 'user-1'), 'service');

  const self = { url: unleash.url, apiUrl: `${unleash.url}/api/`, adminToken, backendToken, environment, postgresUrl: shared.postgresUrl, stop: async () => {} };
  const control = createFlagsControl(flagsConfig(self, [{ id: 'orders', flag: { name: flag } }], { gateways: [{ url: gateway.adminUrl, token: gateway.adminToken }] }));
  const [hook] = await installWebhooks(control);
  assert.equal(hook?.status, 'created');
  await unleash.stop();
  unleash = await startUnleash({ databaseUrl, port, adminToken, backendToken, environment });

  // An operator's kill switch in Unleash (the Admin API the UI uses), nothing through strangler.
  const flippedAt = Date.now();
  await new UnleashAdminApi({ baseUrl: unleash.url, token: adminToken }).setEnvironmentEnabled('default', flag, environment, false);
  const until = Date.now() + 15_000;
  while ((await targetOf(gateway, 'user-1')) !== 'legacy') {
    assert.ok(Date.now() < until, 'the webhook never reached the gateway (its own poll is 10 minutes away)');
    await new Promise((r) => setTimeout(r, 50));
  }
  t.diagnostic(`all legacy ${Date.now() - flippedAt} ms after the flip in Unleash`);
  for (const user of ['user-2', 'user-3', 'user-4']) assert.equal(await targetOf(gateway, user), 'legacy');
});
