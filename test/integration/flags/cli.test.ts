import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';
import { FakeGateway, strangler } from './fixtures.ts';
import { routeStatus as fakeRoute } from '../../unit/flags/route-status.ts';

describe('strangler flags (CLI) against a real unleash-server', () => {
  let unleash: TestUnleash;
  let dir: string;
  let file: string;
  let env: Record<string, string>;
  before(async () => {
    unleash = await useTestUnleash();
    dir = mkdtempSync(join(tmpdir(), 'strangler-flags-cli-'));
    file = join(dir, 'strangler.yaml');
    const flag = uniqueFlag('cli');
    writeFileSync(file, `upstreams:
  - { id: monolith, url: http://127.0.0.1:9 }
  - { id: orders-service, url: http://127.0.0.1:9 }
routes:
  - id: orders
    match: { pathPrefix: /api/orders }
    legacy: monolith
    service: orders-service
    flag: { name: ${flag}, initialPercent: 1 }
flags:
  url: \${UNLEASH_URL}
  token: \${UNLEASH_BACKEND_TOKEN}
  adminToken: \${UNLEASH_ADMIN_TOKEN}
  environment: ${unleash.environment}
  backupPath: null
`);
    env = { UNLEASH_URL: unleash.apiUrl, UNLEASH_BACKEND_TOKEN: unleash.backendToken, UNLEASH_ADMIN_TOKEN: unleash.adminToken };
  });
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await unleash.stop();
  });

  test('sync twice, shift, bad percent, rollback, status, resume', async () => {
    const first = await strangler(['flags', 'sync', '--config', file], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /orders: created flag/);
    assert.match(first.stdout, /added flexibleRollout 1 %/);
    const second = await strangler(['flags', 'sync', '--config', file], env);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, 'orders: no changes\nno changes\n');

    const shift = await strangler(['flags', 'shift', 'orders', '20', '--reason', 'ramp', '--config', file, '--actor', 'cli:test'], env);
    assert.equal(shift.code, 0, shift.stderr);
    assert.match(shift.stdout, /shift on 1 % → on 20 %; users on the service: 20 %/);

    const bad = await strangler(['flags', 'shift', 'orders', '150', '--config', file], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /PERCENT_INVALID/);
    const unknown = await strangler(['flags', 'shift', 'payments', '5', '--config', file], env);
    assert.match(unknown.stderr, /FLAG_ROUTE_UNKNOWN: route "payments" is not in/);

    const rollback = await strangler(['flags', 'rollback', '--all', '--config', file], env);
    assert.equal(rollback.code, 0, rollback.stderr);
    assert.match(rollback.stdout, /rollback on 20 % → off 20 %; users on the service: 0 %/);
    const status = await strangler(['flags', 'status', '--json', '--config', file], env);
    const rows = JSON.parse(status.stdout) as { routeId: string; state: string; percent: number }[];
    assert.deepEqual(rows.map((r) => [r.routeId, r.state, r.percent]), [['orders', 'off', 20]]);
    const resume = await strangler(['flags', 'resume', 'orders', '--config', file], env);
    assert.match(resume.stdout, /resume off 20 % → on 20 %/);
    const help = await strangler(['flags', '--help'], env);
    assert.match(help.stdout, /shift ROUTE PERCENT/);
  });

  test('flags controller runs until SIGTERM, starts the plan, keeps its state file', async () => {
    const flag = uniqueFlag('cli-ctl');
    const gateway = await new FakeGateway().start();
    gateway.routes = { gateway: {}, routes: [fakeRoute('orders', flag, { requests: 500 }, { requests: 100 })] };
    // It serves what the controller pushes, as a real gateway does (the guard holds a step no gateway serves).
    gateway.followPushes = true;
    const stateFile = join(dir, 'state', 'controller.json');
    const config = join(dir, 'controller.yaml');
    writeFileSync(config, `upstreams:
  - { id: monolith, url: http://127.0.0.1:9 }
  - { id: orders-service, url: http://127.0.0.1:9 }
routes:
  - id: orders
    match: { pathPrefix: /api/orders }
    legacy: monolith
    service: orders-service
    flag: { name: ${flag} }
    guard: { minRequests: 10 }
    plan: { steps: [2, 50], holdMs: 600000 }
flags:
  url: \${UNLEASH_URL}
  adminToken: \${UNLEASH_ADMIN_TOKEN}
  environment: ${unleash.environment}
  backupPath: null
  gateways: [{ url: ${gateway.url} }]
controller: { stateFile: ${stateFile}, intervalMs: 100 }
`);
    try {
      assert.equal((await strangler(['flags', 'sync', '--config', config], env)).code, 0);
      const child = spawn(process.execPath, ['bin/strangler.js', 'flags', 'controller', '--config', config], { env: { ...process.env, ...env, STRANGLER_LOG_LEVEL: 'silent' } });
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const api = new UnleashAdminApi({ baseUrl: unleash.url, token: unleash.adminToken });
      const deadline = Date.now() + 30_000;
      let rollout = '';
      while (Date.now() < deadline && rollout !== '2') {
        rollout = (await api.getFeatureEnvironment('default', flag, unleash.environment)).strategies[0]?.parameters.rollout ?? '';
        if (rollout !== '2') await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(rollout, '2', 'the controller started the plan at its first step');
      // The guard passes once a tick sees the gateway serving the step (it follows the controller's push).
      let verdict = '';
      while (Date.now() < deadline && verdict !== 'pass') {
        const saved = existsSync(stateFile) ? (JSON.parse(readFileSync(stateFile, 'utf8')) as { routes: Record<string, { lastVerdict?: string }> }) : null;
        verdict = saved?.routes.orders?.lastVerdict ?? '';
        if (verdict !== 'pass') await new Promise((r) => setTimeout(r, 100));
      }
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.ok(existsSync(stateFile));
      const status = await strangler(['flags', 'status', '--config', config], env);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /orders .* on +2% +2% +holding 1\/2 \(2%\) until \S+; guard pass/);
    } finally {
      await gateway.stop();
    }
  });
});
