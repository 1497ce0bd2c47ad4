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
      { id: 'b', flag: { name: b, groupId: 'orders-migration' } },
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
    assert.deepEqual(stateB.strategies[0]?.parameters, { rollout: '0', stickiness: 'default', groupId: 'orders-migration' });
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
    // By hand: rollout raised to 40, an extra 100 % strategy. Restoring both can only remove users from the service.
    await api.patchStrategy('default', flag, env, ours.id, [{ op: 'replace', path: '/parameters/rollout', value: '40' }]);
    await api.addStrategy('default', flag, env, { name: 'default', parameters: {} });

    const report = await syncFlags(control);
    assert.deepEqual(report.actions, []);
    assert.deepEqual(report.drift.map((d) => d.kind).sort(), ['extra-strategy', 'rollout']);
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

  test('--fix never widens a strategy narrowed by hand (constraint, disabled, other stickiness): it narrows it to 0 % and says why', async () => {
    const env = unleash.environment;
    const [c, d, s] = [uniqueFlag('fix-constraint'), uniqueFlag('fix-disabled'), uniqueFlag('fix-stickiness')];
    const control = createFlagsControl(flagsConfig(unleash, [{ id: 'c', flag: { name: c, initialPercent: 50 } }, { id: 'd', flag: { name: d, initialPercent: 50 } }, { id: 's', flag: { name: s, initialPercent: 50 } }]));
    await syncFlags(control);
    const strategyOf = async (flag: string) => (await api.listStrategies('default', flag, env))[0]!;
    // By hand in the Unleash UI, each narrowing the 50 % rollout: a constraint (only qa-1); the strategy disabled
    // beside a QA-only one; stickiness sessionId (identified users have no sessionId: none of them is on).
    const qaOnly = [{ contextName: 'userId', operator: 'IN', values: ['qa-1'] }];
    await api.patchStrategy('default', c, env, (await strategyOf(c)).id, [{ op: 'replace', path: '/constraints', value: qaOnly }]);
    const ourD = await strategyOf(d);
    await api.addStrategy('default', d, env, { name: 'flexibleRollout', title: 'QA only', parameters: { rollout: '100', stickiness: 'default', groupId: d }, constraints: qaOnly });
    await api.patchStrategy('default', d, env, ourD.id, [{ op: 'replace', path: '/disabled', value: true }]);
    await api.patchStrategy('default', s, env, (await strategyOf(s)).id, [{ op: 'replace', path: '/parameters/stickiness', value: 'sessionId' }]);
    assert.deepEqual((await syncFlags(control)).drift.map((x) => `${x.routeId}:${x.kind}`).sort(), ['c:constraints', 'd:extra-strategy', 'd:strategy-disabled', 's:stickiness']);

    const report = await syncFlags(control, { fix: true });
    assert.deepEqual(report.actions.filter((a) => a.action === 'narrowed').map((a) => a.routeId), ['c', 'd', 's']);
    const text = formatSyncReport(report, ['c', 'd', 's']);
    assert.match(text, /c: rollout set to 0 % instead of 50 %: the live strategy has 1 constraint that narrows it/);
    assert.match(text, /d: rollout set to 0 % instead of 50 %: the live strategy is disabled/);
    assert.match(text, /s: rollout set to 0 % instead of 50 %: the live stickiness is "sessionId"/);
    for (const flag of [c, d, s]) {
      const state = await api.getFeatureEnvironment('default', flag, env);
      assert.equal(state.enabled, true);
      assert.equal(state.strategies.length, 1, `${flag}: only strangler's strategy is left`);
      const [only] = state.strategies;
      assert.deepEqual(only?.parameters, { rollout: '0', stickiness: 'default', groupId: flag }, `${flag}: structure restored, nobody on the service`);
      assert.equal(only?.disabled, false);
      assert.deepEqual(only?.constraints, []);
      assert.match(only?.title ?? '', /^strangler rollout=0 enabled=true · narrowed to 0 % by flags sync --fix/);
    }
    const clean = await syncFlags(control);
    assert.deepEqual([clean.drift, clean.actions], [[], []]);
  });

  test('regression: a segment added by hand was invisible (GET …/environments/{env} leaves segments out), so --fix dropped it and widened the rollout', async () => {
    const env = unleash.environment;
    const flag = uniqueFlag('fix-segment');
    const control = createFlagsControl(flagsConfig(unleash, [{ id: 'g', flag: { name: flag, initialPercent: 20 } }]));
    await syncFlags(control);
    const res = await fetch(`${unleash.url}/api/admin/segments`, {
      method: 'POST',
      headers: { Authorization: unleash.adminToken, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: `qa-${flag}`, constraints: [{ contextName: 'userId', operator: 'IN', values: ['qa-1'] }] }),
    });
    assert.equal(res.status, 201);
    const segment = (await res.json() as { id: number }).id;
    // By hand in the Unleash UI: the rollout raised to 30 %, but only for the QA segment (qa-1 alone is on).
    const [ours] = await api.listStrategies('default', flag, env);
    assert.ok(ours);
    await api.updateStrategy('default', flag, env, ours.id, { name: ours.name, title: ours.title ?? undefined, parameters: { ...ours.parameters, rollout: '30' }, segments: [segment] });
    assert.deepEqual((await api.listStrategies('default', flag, env))[0]?.segments, [segment]);

    const report = await syncFlags(control);
    assert.deepEqual(report.drift.map((d) => d.kind).sort(), ['constraints', 'rollout']);
    assert.match(formatSyncReport(report, ['g']), /DRIFT constraints: expected no constraints or segments, found 0 constraints, 1 segments/);

    const fixed = await syncFlags(control, { fix: true });
    assert.match(formatSyncReport(fixed, ['g']), /g: rollout set to 0 % instead of 20 %: the live strategy has 1 segment that narrows it/);
    const [after] = await api.listStrategies('default', flag, env);
    assert.deepEqual([after?.parameters.rollout, after?.segments], ['0', []], 'segment removed only with the rollout at 0 %: nobody moved to the service');
  });

  test('sync switches on only a flag it created or one never configured; one switched off by hand stays off, even with --fix', async () => {
    const env = unleash.environment;
    // Switched off by hand, with Unleash's own "default" strategy (the flag was made in the UI).
    const byHand = uniqueFlag('sync-off');
    await api.createFeature('default', { name: byHand });
    await api.addStrategy('default', byHand, env, { name: 'default', parameters: {} });
    await api.setEnvironmentEnabled('default', byHand, env, true);
    await api.setEnvironmentEnabled('default', byHand, env, false);
    // Configured before and emptied by hand (deleting the last strategy switches the environment off).
    const emptied = uniqueFlag('sync-emptied');
    await api.createFeature('default', { name: emptied });
    const gone = await api.addStrategy('default', emptied, env, { name: 'default', parameters: {} });
    await api.deleteStrategy('default', emptied, env, gone.id);
    // On, with another strategy: strangler's is added at 0 %, not initialPercent, so no user is added.
    const onBeside = uniqueFlag('sync-beside');
    await api.createFeature('default', { name: onBeside });
    await api.addStrategy('default', onBeside, env, { name: 'default', parameters: {}, constraints: [{ contextName: 'userId', operator: 'IN', values: ['qa-1'] }] });
    await api.setEnvironmentEnabled('default', onBeside, env, true);
    const control = createFlagsControl(flagsConfig(unleash, [
      { id: 'h', flag: { name: byHand, initialPercent: 10 } },
      { id: 'e', flag: { name: emptied, initialPercent: 10 } },
      { id: 'b', flag: { name: onBeside, initialPercent: 10 } },
    ]));

    const plain = await syncFlags(control, { routes: ['e'] });
    assert.deepEqual(plain.actions.map((a) => a.action), ['added-strategy', 'left-off']);
    assert.equal((await api.getFeatureEnvironment('default', emptied, env)).enabled, false);

    const report = await syncFlags(control, { fix: true });
    assert.deepEqual(report.actions.filter((a) => a.routeId === 'h').map((a) => a.action), ['added-strategy', 'left-off', 'fixed']);
    assert.match(formatSyncReport(report, ['h']), /h: left development off: the flag already existed and is off in Unleash .* Run `strangler flags resume h` to switch it on at 10 %/);
    const h = await api.getFeatureEnvironment('default', byHand, env);
    assert.equal(h.enabled, false, 'the operator\'s kill switch is kept');
    assert.deepEqual(h.strategies.map((x) => [x.name, x.parameters.rollout]), [['flexibleRollout', '10']]);
    const b = await api.getFeatureEnvironment('default', onBeside, env);
    assert.equal(b.enabled, true);
    assert.deepEqual(b.strategies.map((x) => [x.name, x.parameters.rollout]), [['flexibleRollout', '0']]);
    assert.match(formatSyncReport(report, ['b']), /added flexibleRollout 0 % .* instead of initialPercent 10 %: development is already on with 1 other strategy/);

    const clean = await syncFlags(control);
    assert.deepEqual([clean.drift, clean.actions], [[], []], 'the flags left off are the recorded intent now, not drift');
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
