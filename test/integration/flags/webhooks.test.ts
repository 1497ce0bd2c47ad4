import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createFlagsControl } from '../../../flags/control.ts';
import { installWebhooks, WEBHOOK_EVENTS } from '../../../flags/webhooks.ts';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import { flagsConfig } from './fixtures.ts';

let unleash: TestUnleash;
before(async () => { unleash = await useTestUnleash(); });
after(() => unleash.stop());

test('webhooks: one Unleash webhook addon per gateway, installed once', async () => {
  const port = 20000 + Math.floor(Math.random() * 20000); // never contacted: only the addon's URL must be unique
  const control = createFlagsControl(flagsConfig(unleash, [{ id: 'orders', flag: { name: uniqueFlag('hook') } }], {
    gateways: [{ url: `http://127.0.0.1:${port}`, token: 'gw-token-0123456789abcdef' }, { url: `http://127.0.0.1:${port + 1}/`, token: null }],
  }));
  const first = await installWebhooks(control);
  assert.deepEqual(first.map((r) => [r.status, r.hookUrl]), [
    ['created', `http://127.0.0.1:${port}/admin/flags/refresh`],
    ['created', `http://127.0.0.1:${port + 1}/admin/flags/refresh`],
  ]);
  const second = await installWebhooks(control);
  assert.deepEqual(second.map((r) => r.status), ['exists', 'exists']);
  const addon = (await control.api.listAddons()).find((a) => a.id === first[0]?.addonId);
  assert.deepEqual([...(addon?.events ?? [])].sort(), [...WEBHOOK_EVENTS].sort());
  assert.deepEqual(addon?.environments, [unleash.environment]);
  for (const r of first) await control.api.deleteAddon(r.addonId);
});
