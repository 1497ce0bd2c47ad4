import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createFlagsControl } from '../../../flags/control.ts';
import { syncFlags, formatSyncReport } from '../../../flags/sync.ts';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import { flagsConfig } from './fixtures.ts';

describe('flags sync against a real unleash-server', () => {
  let unleash: TestUnleash;
  let api: UnleashAdminApi;
  before(async () => {
    unleash = await useTestUnleash();
    api = new UnleashAdminApi({ baseUrl: unleash.url, token: unleash.adminToken });
  });
  after(() => unleash.stop());

  test('creates each flag with one flexibleRollout strategy and switches it on; a second run changes nothing', async () => {
    const a = uniqueFlag('sync-a');
    const b = uniqueFlag('sync-b');
    const config = flagsConfig(unleash, [
      { id: 'a', flag: { name: a, initialPercent: 5 } },
      { id: 'b', flag: { name: b, stickiness: 'tenantId', groupId: 'orders-migration' } },
      { id: 'legacy-only', service: false, flag: { name: uniqueFlag('never') } },
    ]);
    const control = createFlagsControl(config);
    const first = await syncFlags(control);
    assert.deepEqual(first.drift, []);
    assert.deepEqual(first.actions.filter((x) => x.routeId === 'a').map((x) => x.action), ['created-flag', 'added-strategy', 'enabled']);

    const stateA = await api.getFeatureEnvironment('default', a, unleash.environment);
    assert.equal(stateA.enabled, true);
    assert.equal(stateA.strategies.length, 1);
    assert.equal(stateA.strategies[0]?.name, 'flexibleRollout');
    assert.deepEqual(stateA.strategies[0]?.parameters, { rollout: '5', stickiness: 'default', groupId: a });
    const stateB = await api.getFeatureEnvironment('default', b, unleash.environment);
    assert.deepEqual(stateB.strategies[0]?.parameters, { rollout: '0', stickiness: 'tenantId', groupId: 'orders-migration' });
    assert.equal(first.actions.some((x) => x.routeId === 'legacy-only'), false, 'routes without a service get no flag');

    const second = await syncFlags(control);
    assert.deepEqual(second.actions, []);
    assert.deepEqual(second.drift, []);
    assert.match(formatSyncReport(second, ['a', 'b']), /a: no changes\nb: no changes\nno changes/);
  });

  test('an existing flag without strategies gets the strategy before it is switched on (never a 100 % default)', async () => {
    const flag = uniqueFlag('sync-existing');
    await api.createFeature('default', { name: flag });
    const control = createFlagsControl(flagsConfig(unleash, [{ id: 'x', flag: { name: flag } }]));
    const report = await syncFlags(control);
    assert.deepEqual(report.actions.map((x) => x.action), ['added-strategy', 'enabled']);
    const state = await api.getFeatureEnvironment('default', flag, unleash.environment);
    assert.deepEqual(state.strategies.map((s) => s.parameters.rollout), ['0']);
    const events = await api.getFeatureEvents(flag);
    const addAt = events.findIndex((e) => e.type === 'feature-strategy-add');
    const onAt = events.findIndex((e) => e.type === 'feature-environment-enabled');
    assert.ok(addAt > onAt, 'newest first: the strategy was added before the environment was switched on');
  });

  test('hand-made changes are reported as drift and left alone; --fix reconciles them, never exposing more users', async () => {
    const flag = uniqueFlag('sync-drift');
    const env = unleash.environment;
    const control = createFlagsControl(flagsConfig(unleash, [{ id: 'd', flag: { name: flag, initialPercent: 10 } }]));
    await syncFlags(control);
    const [ours] = await api.listStrategies('default', flag, env);
    assert.ok(ours);
    // By hand: rollout raised to 40, stickiness changed, an extra 100 % strategy.
    await api.patchStrategy('default', flag, env, ours.id, [
      { op: 'replace', path: '/parameters/rollout', value: '40' },
      { op: 'replace', path: '/parameters/stickiness', value: 'sessionId' },
    ]);
    await api.addStrategy('default', flag, env, { name: 'default', parameters: {} });

    const report = await syncFlags(control);
    assert.deepEqual(report.actions, []);
    assert.deepEqual(report.drift.map((d) => d.kind).sort(), ['extra-strategy', 'rollout', 'stickiness']);
    assert.match(formatSyncReport(report, ['d']), /DRIFT rollout: expected 10 % \(last set through strangler\), found "40"/);
    assert.equal((await api.getFeatureEnvironment('default', flag, env)).strategies.length, 2, 'drift is left as found');

    const fixed = await syncFlags(control, { fix: true });
    assert.equal(fixed.fixed, true);
    const after = await api.getFeatureEnvironment('default', flag, env);
    assert.equal(after.enabled, true);
    assert.equal(after.strategies.length, 1);
    assert.deepEqual(after.strategies[0]?.parameters, { rollout: '10', stickiness: 'default', groupId: flag }, 'the raised rollout is reverted');
    assert.deepEqual((await syncFlags(control)).drift, []);

    // By hand: rollout lowered to 3 and the flag switched off (an operator's kill switch). --fix keeps both.
    await api.patchStrategy('default', flag, env, after.strategies[0]!.id, [{ op: 'replace', path: '/parameters/rollout', value: '3' }]);
    await api.setEnvironmentEnabled('default', flag, env, false);
    assert.deepEqual((await syncFlags(control)).drift.map((d) => d.kind).sort(), ['enabled', 'rollout']);
    await syncFlags(control, { fix: true });
    const safe = await api.getFeatureEnvironment('default', flag, env);
    assert.equal(safe.enabled, false, '--fix never switches a flag on');
    assert.equal(safe.strategies[0]?.parameters.rollout, '3', '--fix never raises a rollout');
    assert.match(safe.strategies[0]?.title ?? '', /^strangler rollout=3 enabled=false · reconciled by flags sync --fix/);
    const clean = await syncFlags(control);
    assert.deepEqual(clean.drift, []);
    assert.deepEqual(clean.actions, []);
  });

  test('a flag made by hand is adopted only with --fix; a groupId change in the config is drift', async () => {
    const flag = uniqueFlag('sync-adopt');
    const env = unleash.environment;
    await api.createFeature('default', { name: flag });
    await api.addStrategy('default', flag, env, { name: 'flexibleRollout', parameters: { rollout: '30', stickiness: 'default', groupId: flag } });
    await api.setEnvironmentEnabled('default', flag, env, true);
    const control = createFlagsControl(flagsConfig(unleash, [{ id: 'h', flag: { name: flag } }]));
    assert.deepEqual((await syncFlags(control)).drift.map((d) => d.kind), ['unmanaged']);
    await syncFlags(control, { fix: true });
    const adopted = await api.getFeatureEnvironment('default', flag, env);
    assert.equal(adopted.strategies[0]?.parameters.rollout, '30', 'adopting keeps the live percentage');
    assert.match(adopted.strategies[0]?.title ?? '', /^strangler rollout=30 enabled=true/);
    assert.deepEqual((await syncFlags(control)).drift, []);

    const regrouped = createFlagsControl(flagsConfig(unleash, [{ id: 'h', flag: { name: flag, groupId: 'other' } }]));
    const drift = (await syncFlags(regrouped)).drift;
    assert.deepEqual(drift.map((d) => [d.kind, d.expected]), [['groupId', 'other']]);
  });
});
