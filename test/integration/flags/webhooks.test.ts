/**
 * `strangler flags webhooks`: one Unleash webhook addon per gateway, against a real unleash-server.
 *
 * Never delete a webhook outright on the shared test Unleash: unleash-server 7.5.1 caches its addon list for up to a
 * minute, a deleted webhook still fires from that cache, recording the delivery then violates a foreign key to the
 * deleted addon, and the server exits with code 1, failing every later test that needs it. Removal goes through
 * --prune (disable, wait out the cache, delete), tested on a private server below.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger } from '../../../common/logger.ts';
import { freePort } from '../../../common/net.ts';
import { startUnleash, type RunningUnleash } from '../../../devstack/unleash/launcher.ts';
import { UNLEASH_LOG } from '../../../devstack/unleash/log-events.ts';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { createFlagsControl } from '../../../flags/control.ts';
import { installWebhooks, PRUNE_WAIT_MS, WEBHOOK_EVENTS } from '../../../flags/webhooks.ts';
import { createTestDatabase, useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import { flagsConfig } from './fixtures.ts';

let unleash: TestUnleash;
let privateUnleash: RunningUnleash | undefined;
before(async () => { unleash = await useTestUnleash(); });
after(async () => {
  await privateUnleash?.stop();
  await unleash.stop();
});

/** Gateway URLs that are never contacted (only the addon URLs must be unique per test). */
const deadGateways = (n: number) => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  return Array.from({ length: n }, (_, i) => `http://127.0.0.1:${port + i}`);
};

test('webhooks: one Unleash webhook addon per gateway, installed once; one disabled by hand is enabled again', async () => {
  const [a, b] = deadGateways(2) as [string, string];
  const control = createFlagsControl(flagsConfig(unleash, [{ id: 'orders', flag: { name: uniqueFlag('hook') } }], {
    gateways: [{ url: a, token: 'gw-token-0123456789abcdef' }, { url: `${b}/`, token: null }],
  }));
  const first = await installWebhooks(control);
  assert.deepEqual(first.map((r) => [r.status, r.hookUrl]), [
    ['created', `${a}/admin/flags/refresh`],
    ['created', `${b}/admin/flags/refresh`],
  ]);
  const second = await installWebhooks(control);
  assert.deepEqual(second.map((r) => r.status), ['exists', 'exists']);
  const addon = (await control.api.listAddons()).find((x) => x.id === first[0]?.addonId);
  assert.ok(addon);
  assert.deepEqual([...addon.events].sort(), [...WEBHOOK_EVENTS].sort());
  assert.deepEqual(addon.environments, [unleash.environment]);

  await control.api.updateAddon(addon.id, { provider: addon.provider, enabled: false, description: addon.description ?? '', parameters: addon.parameters, events: addon.events });
  const third = await installWebhooks(control);
  assert.deepEqual(third.map((r) => r.status), ['enabled', 'exists']);
  const listed = await control.api.listAddons();
  assert.equal(listed.find((x) => x.id === addon.id)?.enabled, true);
  assert.equal(listed.find((x) => x.id === addon.id)?.parameters.authorization, '*****', 'the masked token was kept, not overwritten with the mask');
  // Left disabled, not deleted (see the header).
  for (const r of first) {
    const x = listed.find((y) => y.id === r.addonId)!;
    await control.api.updateAddon(x.id, { provider: x.provider, enabled: false, description: x.description ?? '', parameters: x.parameters, events: x.events });
  }
});

test('webhooks --prune: the webhook of a gateway no longer listed is disabled, then deleted once Unleash no longer caches it; the server keeps running', async (t) => {
  const lines: { level: number; msg: string }[] = [];
  const log = createLogger({ level: 'warn', destination: new Writable({ write(chunk: Buffer, _enc, done) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as { level: number; msg: string }); done(); } }) });
  const databaseUrl = await createTestDatabase(unleash.postgresUrl, 'prune');
  const port = await freePort();
  privateUnleash = await startUnleash({ databaseUrl, port, log });
  const { adminToken, backendToken, environment } = privateUnleash;
  const self = { url: privateUnleash.url, apiUrl: `${privateUnleash.url}/api/`, adminToken, backendToken, environment, postgresUrl: unleash.postgresUrl, stop: async () => {} };
  const flag = uniqueFlag('prune');
  const api = new UnleashAdminApi({ baseUrl: privateUnleash.url, token: adminToken });
  await api.createFeature('default', { name: flag });
  const [kept, gone] = deadGateways(2) as [string, string];
  const routes = [{ id: 'orders', flag: { name: flag } }];
  const both = await installWebhooks(createFlagsControl(flagsConfig(self, routes, { gateways: [{ url: kept, token: null }, { url: gone, token: null }] })));
  assert.deepEqual(both.map((r) => r.status), ['created', 'created']);

  // Restarted, Unleash's addon cache is empty; the next flag event fills it with both webhooks, which then fire (and
  // fail: nothing listens). Deleting `gone` outright now would take the server down at the next flag event.
  await privateUnleash.stop();
  privateUnleash = await startUnleash({ databaseUrl, port, adminToken, backendToken, environment, log });
  await api.setEnvironmentEnabled('default', flag, environment, true);

  const waits: number[] = [];
  const pruned = await installWebhooks(createFlagsControl(flagsConfig(self, routes, { gateways: [{ url: kept, token: null }] })), {
    prune: true,
    onPruneWait: (ms, stale) => {
      waits.push(ms);
      assert.deepEqual(stale.map((r) => r.gateway), [gone]);
      // Flag events while it waits: the disabled webhook may still fire from the cache, which is harmless.
      void api.setEnvironmentEnabled('default', flag, environment, false).then(() => api.setEnvironmentEnabled('default', flag, environment, true));
    },
  });
  assert.deepEqual(waits, [PRUNE_WAIT_MS]);
  assert.deepEqual(pruned.map((r) => [r.gateway, r.status]), [[kept, 'exists'], [gone, 'removed']]);
  const left = await api.listAddons();
  assert.deepEqual(left.map((x) => x.id), [both[0]!.addonId], 'only the listed gateway keeps its webhook');

  // Flag events after the delete: the server must still be there to answer them, and still be there afterwards.
  for (let i = 0; i < 6; i++) {
    await api.setEnvironmentEnabled('default', flag, environment, i % 2 === 0);
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(await api.health(), true);
  assert.deepEqual(lines.filter((l) => l.msg === UNLEASH_LOG.childExitedUnexpectedly), []);
  t.diagnostic(`pruned after waiting ${PRUNE_WAIT_MS} ms`);
});
