import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { StranglerError } from '../../../common/errors.ts';
import { UnleashAdminApi, type PatchOperation } from '../../../flags/admin-api.ts';
import { createFlagsControl, type FlagsControl } from '../../../flags/control.ts';
import { driftText, syncFlags } from '../../../flags/sync.ts';
import { resumeRoute, rollbackAll, rollbackRoute, routeStatus, shiftRoute } from '../../../flags/traffic.ts';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import { FakeGateway, flagsConfig } from './fixtures.ts';

/** The real Admin API client, with a hook that runs once just before the next strategy PATCH (to interleave a change). */
class InterleavingApi extends UnleashAdminApi {
  beforePatch: (() => Promise<unknown>) | undefined;
  override async patchStrategy(project: string, name: string, environment: string, id: string, ops: PatchOperation[]) {
    const hook = this.beforePatch;
    this.beforePatch = undefined;
    await hook?.();
    return super.patchStrategy(project, name, environment, id, ops);
  }
}

async function rejectsCode(promise: Promise<unknown>, code: string): Promise<string> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof StranglerError, String(err));
    assert.equal(err.code, code, err.message);
    return err.message;
  }
  assert.fail(`expected ${code}`);
}

describe('shift / rollback / resume against a real unleash-server', () => {
  let unleash: TestUnleash;
  let api: UnleashAdminApi;
  let gateway: FakeGateway;
  let deadGatewayUrl: string;
  let control: FlagsControl;
  let flag: string;
  let other: string;
  before(async () => {
    unleash = await useTestUnleash();
    api = new UnleashAdminApi({ baseUrl: unleash.url, token: unleash.adminToken });
    gateway = await new FakeGateway().start();
    const dead = await new FakeGateway().start();
    deadGatewayUrl = dead.url;
    await dead.stop();
    flag = uniqueFlag('orders');
    other = uniqueFlag('users');
    control = createFlagsControl(flagsConfig(unleash, [
      { id: 'orders', flag: { name: flag } },
      { id: 'users', flag: { name: other } },
      { id: 'static', service: false },
    ], { gateways: [{ url: gateway.url, token: 'gw-token-0123456789abcdef' }] }));
    await syncFlags(control);
  });
  after(async () => {
    await gateway.stop();
    await unleash.stop();
  });

  const strategy = async (name = flag) => (await api.getFeatureEnvironment('default', name, unleash.environment));

  test('invalid percentages and unknown routes change nothing', async () => {
    const eventsBefore = (await api.getFeatureEvents(flag)).length;
    for (const bad of [-1, 101, 2.5, 'abc', '', '50%', null]) await rejectsCode(shiftRoute(control, 'orders', bad), 'PERCENT_INVALID');
    assert.match(await rejectsCode(shiftRoute(control, 'nope', 10), 'FLAG_ROUTE_UNKNOWN'), /route "nope" is not in flags-test.yaml; routes with flags: orders, users/);
    assert.match(await rejectsCode(rollbackRoute(control, 'static'), 'FLAG_ROUTE_UNKNOWN'), /has no service/);
    assert.equal((await api.getFeatureEvents(flag)).length, eventsBefore);
    assert.equal(gateway.calls.length, 0);
    assert.equal((await strategy()).strategies[0]?.parameters.rollout, '0');
  });

  test('shift sets the rollout, records who and why in Unleash\'s event log, and pushes a refresh', async () => {
    const change = await shiftRoute(control, 'orders', '25', { actor: 'cli:alice', reason: 'canary looks healthy' });
    assert.deepEqual([change.from, change.to, change.effectivePercent, change.changed], [{ enabled: true, percent: 0 }, { enabled: true, percent: 25 }, 25, true]);
    assert.equal((await strategy()).strategies[0]?.parameters.rollout, '25');
    assert.deepEqual(gateway.calls.at(-1), { authorization: 'Bearer gw-token-0123456789abcdef', body: { flag, action: 'shift', percent: 25 } });
    assert.deepEqual(change.refresh.map((r) => r.ok), [true]);

    const [latest] = await api.getFeatureEvents(flag);
    assert.equal(latest?.type, 'feature-strategy-update');
    assert.equal((latest?.preData?.parameters as Record<string, string>).rollout, '0');
    assert.equal((latest?.data?.parameters as Record<string, string>).rollout, '25');
    assert.match(String(latest?.data?.title), /shift 0→25% by cli:alice: canary looks healthy/);
    assert.equal(latest?.createdBy, 'strangler-admin');

    const again = await shiftRoute(control, 'orders', 25, { actor: 'cli:alice' });
    assert.equal(again.changed, false, 'the same percentage twice writes nothing');
  });

  test('rollback switches the flag off and keeps the percentage; resume restores it', async () => {
    const calls = gateway.calls.length;
    const rolled = await rollbackRoute(control, 'orders', { actor: 'cli:bob', reason: 'p99 doubled' });
    assert.deepEqual([rolled.from, rolled.to, rolled.effectivePercent], [{ enabled: true, percent: 25 }, { enabled: false, percent: 25 }, 0]);
    const off = await strategy();
    assert.equal(off.enabled, false);
    assert.equal(off.strategies[0]?.parameters.rollout, '25');
    assert.deepEqual(gateway.calls.slice(calls).map((c) => c.body), [{ flag, action: 'rollback' }]);
    const types = (await api.getFeatureEvents(flag)).slice(0, 2).map((e) => e.type).sort();
    assert.deepEqual(types, ['feature-environment-disabled', 'feature-strategy-update']);
    const [status] = await routeStatus(control, 'orders');
    assert.equal(status?.state, 'off');
    assert.equal(status?.percent, 25);
    assert.match(status?.lastChange ?? '', /rollback by cli:bob: p99 doubled/);
    assert.deepEqual(status?.drift, []);

    const twice = await rollbackRoute(control, 'orders', { actor: 'cli:bob' });
    assert.equal(twice.changed, false);

    // A shift while rolled back records the new percentage without switching the flag on.
    const shifted = await shiftRoute(control, 'orders', 10, { actor: 'cli:bob' });
    assert.deepEqual(shifted.to, { enabled: false, percent: 10 });
    assert.equal((await strategy()).enabled, false);

    const resumed = await resumeRoute(control, 'orders', { actor: 'cli:carol', reason: 'fixed' });
    assert.deepEqual([resumed.from, resumed.to], [{ enabled: false, percent: 10 }, { enabled: true, percent: 10 }]);
    const on = await strategy();
    assert.equal(on.enabled, true);
    assert.deepEqual(on.strategies.map((s) => s.parameters.rollout), ['10']);
    assert.equal(gateway.calls.at(-1)?.body.action, 'resume');
    assert.equal((await api.getFeatureEvents(flag))[0]?.type, 'feature-environment-enabled');

    // A resume of a flag already on still leaves its note (the promotion controller's signal to go on with a plan it
    // holds after a shift by hand); the same actor and reason twice get the time, so each resume is told apart.
    const note = async () => (await routeStatus(control, 'orders'))[0]?.lastChange;
    assert.equal(await note(), 'resume by cli:carol: fixed');
    assert.equal((await resumeRoute(control, 'orders', { actor: 'cli:carol', reason: 'fixed' })).changed, false);
    assert.match(await note() ?? '', /^resume at \d{4}-\d\d-\d\dT[\d:.]+Z by cli:carol: fixed$/);
  });

  test('rollback --all switches every flagged route off', async () => {
    const { changes, errors } = await rollbackAll(control, { actor: 'cli:ops', reason: 'incident' });
    assert.deepEqual(errors, []);
    assert.deepEqual(changes.map((c) => c.routeId).sort(), ['orders', 'users']);
    assert.equal((await strategy(flag)).enabled, false);
    assert.equal((await strategy(other)).enabled, false);
    await resumeRoute(control, 'orders', { actor: 'cli:ops' });
  });

  test('shift or resume of a flag that was never synced fails with FLAG_NOT_SYNCED; extra strategies block a shift', async () => {
    const unsynced = createFlagsControl(flagsConfig(unleash, [{ id: 'new', flag: { name: uniqueFlag('unsynced') } }]));
    assert.match(await rejectsCode(shiftRoute(unsynced, 'new', 5), 'FLAG_NOT_SYNCED'), /run `strangler flags sync` first/);
    await rejectsCode(resumeRoute(unsynced, 'new'), 'FLAG_NOT_SYNCED');

    await api.addStrategy('default', other, unleash.environment, { name: 'default', parameters: {} });
    assert.match(await rejectsCode(shiftRoute(control, 'users', 5), 'FLAG_DRIFT'), /extra-strategy: expected only the flexibleRollout strategy managed by strangler, found default strategy/);
    const [status] = await routeStatus(control, 'users');
    assert.deepEqual(status?.drift.map((d) => d.split(':')[0]), ['extra-strategy']);
  });

  test('regression: status reports exactly the drift sync reports (it missed constraints, segments, stickiness and groupId set by hand)', async () => {
    const env = unleash.environment;
    const [c, g, s, p] = [uniqueFlag('status-constraint'), uniqueFlag('status-segment'), uniqueFlag('status-stickiness'), uniqueFlag('status-group')];
    const ctl = createFlagsControl(flagsConfig(unleash, [c, g, s, p].map((name, i) => ({ id: 'cgsp'[i]!, flag: { name, initialPercent: 20 } }))));
    await syncFlags(ctl);
    const ours = async (flag: string) => (await api.listStrategies('default', flag, env))[0]!;
    const res = await fetch(`${unleash.url}/api/admin/segments`, {
      method: 'POST',
      headers: { Authorization: unleash.adminToken, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: `qa-${g}`, constraints: [{ contextName: 'userId', operator: 'IN', values: ['qa-1'] }] }),
    });
    assert.equal(res.status, 201);
    const segment = (await res.json() as { id: number }).id;
    // By hand in the Unleash UI; the rollout and the on/off switch are left as strangler wrote them.
    await api.patchStrategy('default', c, env, (await ours(c)).id, [{ op: 'replace', path: '/constraints', value: [{ contextName: 'userId', operator: 'IN', values: ['qa-1'] }] }]);
    const og = await ours(g);
    await api.updateStrategy('default', g, env, og.id, { name: og.name, title: og.title ?? undefined, parameters: og.parameters, segments: [segment] });
    await api.patchStrategy('default', s, env, (await ours(s)).id, [{ op: 'replace', path: '/parameters/stickiness', value: 'random' }]);
    await api.patchStrategy('default', p, env, (await ours(p)).id, [{ op: 'replace', path: '/parameters/groupId', value: 'reshuffled' }]);

    const report = await syncFlags(ctl);
    const rows = await routeStatus(ctl);
    for (const [id, kind] of [['c', 'constraints'], ['g', 'constraints'], ['s', 'stickiness'], ['p', 'groupId']] as const) {
      const expected = report.drift.filter((d) => d.routeId === id).map(driftText);
      assert.deepEqual(report.drift.filter((d) => d.routeId === id).map((d) => d.kind), [kind], `${id}: sync reports ${kind}`);
      assert.deepEqual(rows.find((r) => r.routeId === id)?.drift, expected, `${id}: status shows what sync would change`);
    }
  });

  test('regression: shift and resume refuse a strategy changed by hand in structure (they would report a share of users they do not set); rollback still works', async () => {
    const env = unleash.environment;
    const [c, r] = [uniqueFlag('shift-constraint'), uniqueFlag('shift-random')];
    const ctl = createFlagsControl(flagsConfig(unleash, [{ id: 'c', flag: { name: c, initialPercent: 10 } }, { id: 'r', flag: { name: r, initialPercent: 10 } }], { gateways: [{ url: gateway.url, token: null }] }));
    await syncFlags(ctl);
    const ours = async (flag: string) => (await api.listStrategies('default', flag, env))[0]!;
    // By hand: a QA-only constraint (a shift to 50 % would put 50 % of QA users on the service, not 50 % of users),
    // and stickiness "random" (every request picks a side: a user moves between legacy and the service).
    await api.patchStrategy('default', c, env, (await ours(c)).id, [{ op: 'replace', path: '/constraints', value: [{ contextName: 'userId', operator: 'IN', values: ['qa-1'] }] }]);
    await api.patchStrategy('default', r, env, (await ours(r)).id, [{ op: 'replace', path: '/parameters/stickiness', value: 'random' }]);
    const calls = gateway.calls.length;
    assert.match(await rejectsCode(shiftRoute(ctl, 'c', 50, { actor: 'cli:alice' }), 'FLAG_DRIFT'), /cannot shift route c: .*changed by hand.*constraints: expected no constraints or segments, found 1 constraints, 0 segments.*flags sync.*--fix/);
    assert.match(await rejectsCode(shiftRoute(ctl, 'r', 50, { actor: 'cli:alice' }), 'FLAG_DRIFT'), /stickiness: expected default, found "random"/);
    assert.deepEqual([(await ours(c)).parameters.rollout, (await ours(r)).parameters.rollout], ['10', '10'], 'nothing written');
    assert.equal(gateway.calls.length, calls, 'nothing pushed');

    const rolled = await rollbackRoute(ctl, 'c', { actor: 'cli:alice', reason: 'incident' });
    assert.deepEqual([rolled.to.enabled, rolled.effectivePercent], [false, 0]);
    assert.equal((await api.getFeatureEnvironment('default', c, env)).enabled, false);
    assert.match(await rejectsCode(resumeRoute(ctl, 'c', { actor: 'cli:alice' }), 'FLAG_DRIFT'), /cannot resume route c: .*constraints/);
    assert.equal((await api.getFeatureEnvironment('default', c, env)).enabled, false, 'still off');
  });

  test('regression: an environment removed from the project (or never there) is named, not reported as a missing flag or a raw 404', async () => {
    // The test Unleash reads unleash.environment; the routes here use the other built-in one, removed from the
    // project "default" in between (Unleash UI → Projects → default → Environments), and re-added at the end.
    const envName = unleash.environment === 'production' ? 'development' : 'production';
    const name = uniqueFlag('env-removed');
    const ctl = createFlagsControl(flagsConfig(unleash, [{ id: 'e', flag: { name, initialPercent: 10 } }], { environment: envName, gateways: [{ url: gateway.url, token: null }] }));
    await syncFlags(ctl);
    const projectEnv = (method: string, body?: unknown) => fetch(`${unleash.url}/api/admin/projects/default/environments${body ? '' : `/${envName}`}`, {
      method,
      headers: { Authorization: unleash.adminToken, 'Content-Type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    assert.equal((await projectEnv('DELETE')).status, 200);
    try {
      const missing = new RegExp(`route e: environment "${envName}" is not enabled in Unleash project "default".*add "${envName}" to the project.*fix flags\\.environment in flags-test\\.yaml`);
      const calls = gateway.calls.length;
      assert.match(await rejectsCode(routeStatus(ctl, 'e'), 'FLAG_ENVIRONMENT_MISSING'), missing);
      assert.match(await rejectsCode(shiftRoute(ctl, 'e', 20, { actor: 'cli:alice' }), 'FLAG_ENVIRONMENT_MISSING'), missing);
      assert.match(await rejectsCode(resumeRoute(ctl, 'e', { actor: 'cli:alice' }), 'FLAG_ENVIRONMENT_MISSING'), missing);
      assert.match(await rejectsCode(syncFlags(ctl), 'FLAG_ENVIRONMENT_MISSING'), missing);
      assert.equal(gateway.calls.length, calls, 'nothing pushed');
      // Gateways may still be served the flag as it was, and Unleash cannot switch it off there: a rollback must not
      // claim "no flag, every request already goes to legacy". It pushes the local override and fails.
      const message = await rejectsCode(rollbackRoute(ctl, 'e', { actor: 'cli:alice' }), 'FLAG_ENVIRONMENT_MISSING');
      assert.match(message, missing);
      assert.match(message, /pushed to 1\/1 gateways .* but Unleash was not switched off/);
      assert.deepEqual(gateway.calls.slice(calls).map((c) => c.body), [{ flag: name, action: 'rollback' }]);
    } finally {
      assert.equal((await projectEnv('POST', { environment: envName })).status, 200);
    }
    // An environment that does not exist at all (a typo in flags.environment): named, and no flag is created.
    const typo = uniqueFlag('env-typo');
    const bad = createFlagsControl(flagsConfig(unleash, [{ id: 't', flag: { name: typo } }], { environment: 'prodution' }));
    assert.match(await rejectsCode(syncFlags(bad), 'FLAG_ENVIRONMENT_MISSING'), /Unleash has no environment "prodution" \(it has: .*production.*\); fix flags\.environment/);
    assert.equal(await api.findFeature('default', typo), undefined, 'no flag created');
    assert.match(await rejectsCode(routeStatus(bad, 't'), 'FLAG_ENVIRONMENT_MISSING'), /no environment "prodution"/);
  });

  test('regression: a flag archived in Unleash is not reported as serving its percentage, and shift or resume on it fail', async () => {
    // Unleash still answers GET …/environments/{env} for an archived flag (with its strategy) and still takes a PATCH
    // of that strategy, while every gateway sees no flag at all and sends the route to legacy.
    const archived = uniqueFlag('archived');
    const ctl = createFlagsControl(flagsConfig(unleash, [{ id: 'gone', flag: { name: archived, initialPercent: 30 } }], { gateways: [{ url: gateway.url, token: null }] }));
    await syncFlags(ctl);
    await api.archiveFeature('default', archived);
    const [status] = await routeStatus(ctl, 'gone');
    assert.deepEqual([status?.state, status?.effectivePercent, status?.drift], ['missing', 0, ['flag archived in Unleash: every gateway sends the route to legacy']]);
    const calls = gateway.calls.length;
    assert.match(await rejectsCode(shiftRoute(ctl, 'gone', 50, { actor: 'cli:alice' }), 'FLAG_NOT_SYNCED'), /is archived in Unleash.*revive it/);
    await rejectsCode(resumeRoute(ctl, 'gone', { actor: 'cli:alice' }), 'FLAG_NOT_SYNCED');
    assert.equal(gateway.calls.length, calls, 'nothing pushed');
    assert.equal((await strategy(archived)).strategies[0]?.parameters.rollout, '30', 'nothing written');
    // A rollback still pushes the local override, and says the flag is archived rather than "Unleash refused".
    assert.match(await rejectsCode(rollbackRoute(ctl, 'gone', { actor: 'cli:alice' }), 'FLAG_NOT_SYNCED'), /archived/);
    assert.deepEqual(gateway.calls.slice(calls).map((c) => c.body), [{ flag: archived, action: 'rollback' }]);
  });

  test('a gateway that cannot be reached is reported, and the change still happens', async () => {
    const withDead = createFlagsControl(control.config.flags.gateways.length ? flagsConfig(unleash, [{ id: 'orders', flag: { name: flag } }], {
      gateways: [{ url: deadGatewayUrl, token: null }, { url: gateway.url, token: null }],
    }) : control.config);
    const change = await shiftRoute(withDead, 'orders', 15, { actor: 'test' });
    assert.deepEqual(change.refresh.map((r) => r.ok), [false, true]);
    assert.match(change.refresh[0]?.error ?? '', /ECONNREFUSED/);
    assert.equal((await strategy()).strategies[0]?.parameters.rollout, '15');
  });

  test('with Unleash unreachable, rollback still reaches every gateway (local override) and says Unleash was not changed', async () => {
    const down = createFlagsControl(control.config, { api: new UnleashAdminApi({ baseUrl: deadGatewayUrl, token: 'x', timeoutMs: 500 }) });
    const calls = gateway.calls.length;
    const message = await rejectsCode(rollbackRoute(down, 'orders', { actor: 'cli:ops', reason: 'unleash down' }), 'UNLEASH_UNREACHABLE');
    assert.match(message, /pushed to 1\/1 gateways \(local override to legacy, until a resume\), but Unleash was not switched off for ".*"/);
    assert.deepEqual(gateway.calls.slice(calls).map((c) => c.body), [{ flag, action: 'rollback' }]);
    await rejectsCode(shiftRoute(down, 'orders', 5), 'UNLEASH_UNREACHABLE');
    assert.equal(gateway.calls.length, calls + 1, 'a failed shift pushes nothing');

    // Regression (resume after an outage rollback): Unleash is on and its title says on, so nothing is written,
    // but the gateways still hold the local override: resume must push to clear it.
    assert.equal((await strategy()).enabled, true);
    const resumed = await resumeRoute(control, 'orders', { actor: 'cli:ops', reason: 'unleash back' });
    assert.equal(resumed.changed, false);
    assert.deepEqual(resumed.refresh.map((r) => r.ok), [true]);
    assert.deepEqual(gateway.calls.slice(calls + 1).map((c) => c.body), [{ flag, action: 'resume' }]);
  });

  test('regression: with the admin token revoked (401) or lacking permission (403), rollback still reaches every gateway', async () => {
    await resumeRoute(control, 'orders', { actor: 'test' });
    for (const [token, status] of [['*:*.revoked0000000000000000000000000000000000000000', 401], [unleash.backendToken, 403]] as const) {
      const refused = createFlagsControl(control.config, { api: new UnleashAdminApi({ baseUrl: unleash.url, token }) });
      const calls = gateway.calls.length;
      const message = await rejectsCode(rollbackRoute(refused, 'orders', { actor: 'cli:ops', reason: 'incident' }), 'UNLEASH_UNAUTHORIZED');
      assert.match(message, new RegExp(`HTTP ${status}.*pushed to 1/1 gateways \\(local override to legacy`), message);
      assert.deepEqual(gateway.calls.slice(calls).map((c) => c.body), [{ flag, action: 'rollback' }], `${status}: the rollback reached the gateway`);
      assert.equal((await strategy()).enabled, true, 'Unleash itself was not changed');
    }
  });

  test('regression: a shift decided on an earlier read (expect) never overrides a rollback made in between', async () => {
    await shiftRoute(control, 'orders', 5, { actor: 'test' });
    await resumeRoute(control, 'orders', { actor: 'test' });
    const calls = gateway.calls.length;
    // The flag moved since the decision: nothing is written or pushed.
    await rollbackRoute(control, 'orders', { actor: 'cli:operator', reason: 'p99 too high' });
    const message = await rejectsCode(shiftRoute(control, 'orders', 25, { actor: 'controller', expect: { enabled: true, percent: 5 } }), 'FLAG_CONFLICT');
    assert.match(message, /decided with ".*" on at 5 %, but Unleash has it off at 5 %/);
    assert.deepEqual([(await strategy()).enabled, (await strategy()).strategies[0]?.parameters.rollout], [false, '5']);
    assert.deepEqual(gateway.calls.slice(calls).map((c) => c.body.action), ['rollback']);
    await rejectsCode(shiftRoute(control, 'orders', 25, { actor: 'controller', expect: { enabled: false, percent: 10 } }), 'FLAG_CONFLICT');

    // The rollback lands between the shift's read and its write: the write is undone, resume restores 5 %.
    await resumeRoute(control, 'orders', { actor: 'test' });
    const api = new InterleavingApi({ baseUrl: unleash.url, token: unleash.adminToken });
    const racing = createFlagsControl(control.config, { api });
    api.beforePatch = () => rollbackRoute(control, 'orders', { actor: 'cli:operator', reason: 'p99 too high' });
    const from = gateway.calls.length;
    assert.match(await rejectsCode(shiftRoute(racing, 'orders', 25, { actor: 'controller', expect: { enabled: true, percent: 5 } }), 'FLAG_CONFLICT'), /undone/);
    const after = await strategy();
    assert.deepEqual([after.enabled, after.strategies[0]?.parameters.rollout], [false, '5']);
    assert.match(String(after.strategies[0]?.title), /rollout=5 enabled=false/);
    assert.deepEqual(gateway.calls.slice(from).map((c) => c.body.action), ['rollback'], 'no shift pushed');
    const resumed = await resumeRoute(control, 'orders', { actor: 'cli:operator' });
    assert.equal(resumed.effectivePercent, 5);

    // Operators (no expect) shift whatever the state, as before.
    assert.equal((await shiftRoute(racing, 'orders', 6, { actor: 'cli:operator' })).to.percent, 6);
  });
});
