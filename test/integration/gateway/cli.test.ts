/**
 * `strangler gateway` as a process: help, reload on SIGHUP and on file change (a bad file keeps the last good
 * config and is reported), SIGTERM drains and exits 0, and cluster mode serves one merged admin view and reloads
 * every worker when a Kubernetes-style ConfigMap mount changes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI, startChild, type Child } from '../../helpers/process.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile } from '../../helpers/gateway.ts';
import type { RoutesResponse } from '../../../gateway/admin/types.ts';

const TOKEN = 'cli-test-admin-token-0123456789';

function configYaml(legacy: string, svc: string, percent: number, extra: Record<string, unknown> = {}): string {
  return stringify({
    upstreams: [{ id: 'legacy', url: legacy }, { id: 'svc', url: svc }],
    routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }],
    flags: { url: null, backupPath: null, bootstrapFile: featuresFile({ 'strangler.orders': { percent } }) },
    proxy: { port: 0, bind: '127.0.0.1' },
    admin: { port: 0, token: TOKEN },
    identity: { sessionSecret: 'cli-session-secret-0123456789' },
    ...extra,
  });
}

async function admin<T>(url: string, path: string): Promise<T> {
  const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  return (await res.json()) as T;
}

describe('strangler gateway (process)', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  const children: Child[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'strangler-cli-'));

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
  });
  after(async () => {
    for (const c of children) c.kill();
    await legacy.stop();
    await svc.stop();
  });

  test('--help describes the command; a missing --config is a usage error', () => {
    const help = execFileSync(process.execPath, [...CLI, 'gateway', '--help'], { encoding: 'utf8' });
    assert.match(help, /Usage: strangler gateway --config FILE/);
    assert.match(help, /--workers N/);
    assert.match(execFileSync(process.execPath, [...CLI, '--help'], { encoding: 'utf8' }), /Commands:/);
    assert.throws(() => execFileSync(process.execPath, [...CLI, 'gateway'], { encoding: 'utf8', stdio: 'pipe' }), (err: { status: number; stderr: string }) => err.status === 2 && /CLI_USAGE: gateway: --config FILE is required/.test(err.stderr));
  });

  test('a bad config at start exits non-zero listing every problem', () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, stringify({ upstreams: [{ id: 'a', url: 'nope' }], routes: [{ id: 'r', match: {}, legacy: 'x' }] }));
    assert.throws(() => execFileSync(process.execPath, [...CLI, 'gateway', '--config', file], { encoding: 'utf8', stdio: 'pipe' }), (err: { status: number; stderr: string }) => {
      assert.equal(err.status, 1);
      assert.match(err.stderr, /CONFIG_INVALID: .*bad\.yaml: 3 problems/);
      assert.match(err.stderr, /upstreams\[0\]\.url: expected an http:\/\/ or https:\/\/ URL/);
      assert.match(err.stderr, /routes\[0\]\.legacy: expected an id from upstreams, found "x"\. Hint: known: a/);
      return true;
    });
  });

  test('reloads on SIGHUP and on file change; a bad reload keeps the last good config; SIGTERM exits 0', async () => {
    const file = join(dir, 'reload.yaml');
    writeFileSync(file, configYaml(legacy.url, svc.url, 0));
    const gw = startChild([...CLI, 'gateway', '--config', file]);
    children.push(gw);
    const started = await gw.waitFor((l) => l.msg === 'gateway.started');
    const adminUrl = started.admin as string;
    const proxyUrl = started.proxy as string;

    // File change: add a second route (written in place), then a third and a fourth (an editor's atomic saves:
    // a temporary file renamed over the config, which a watch on the file itself stops seeing after the first).
    const withRoutes = (ids: string[]) => configYaml(legacy.url, svc.url, 0, { routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }, ...ids.map((id) => ({ id, match: { pathPrefix: `/${id}` }, legacy: 'legacy' })), { id: 'rest', match: { pathPrefix: '/' }, legacy: 'legacy' }] });
    writeFileSync(file, withRoutes([]));
    await gw.waitFor((l) => l.msg === 'config.reloaded');
    assert.deepEqual((await admin<RoutesResponse>(adminUrl, '/admin/routes')).routes.map((r) => r.id), ['orders', 'rest']);
    for (const ids of [['a'], ['a', 'b']]) {
      writeFileSync(`${file}.tmp`, withRoutes(ids));
      renameSync(`${file}.tmp`, file);
      await gw.waitFor((l) => l.msg === 'config.reloaded' && l.routes === ids.length + 2);
      assert.deepEqual((await admin<RoutesResponse>(adminUrl, '/admin/routes')).routes.map((r) => r.id), ['orders', ...ids, 'rest']);
    }

    // A bad file: kept out, reported on the admin API.
    writeFileSync(file, 'routes: [');
    gw.kill('SIGHUP');
    await gw.waitFor((l) => l.msg === 'config.reload_failed');
    const config = await admin<{ reload: { lastError: { message: string } | null } }>(adminUrl, '/admin/config');
    assert.match(config.reload.lastError?.message ?? '', /reload\.yaml/);
    const still = await fetch(`${proxyUrl}/other`);
    await still.text();
    assert.equal(still.status, 200, 'the last good config (with the catch-all route) still serves');

    // SIGTERM: drain and exit 0.
    gw.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
    assert.ok(gw.lines.some((l) => l.msg === 'gateway.stopped'));
  });

  test('cluster mode: a worker that cannot bind fails the start instead of hanging', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const taken = (blocker.address() as { port: number }).port;
    try {
      const file = join(dir, 'taken.yaml');
      writeFileSync(file, configYaml(legacy.url, svc.url, 0, { proxy: { port: taken, bind: '127.0.0.1' } }));
      const gw = startChild([...CLI, 'gateway', '--config', file, '--workers', '2']);
      children.push(gw);
      assert.equal(await gw.exited, 1);
      assert.match(gw.stderr.join('\n'), /could not start: .*port \d+ on 127\.0\.0\.1 is already in use/);
    } finally {
      blocker.close();
    }
  });

  test('cluster mode: a ConfigMap-style mount swapped twice reloads every worker; a bad version is reported with its problems', async () => {
    // A Kubernetes ConfigMap volume: strangler.yaml -> ..data/strangler.yaml, ..data -> a directory per version,
    // swapped by renaming a new symlink over ..data, then the old directory removed.
    const mount = mkdtempSync(join(tmpdir(), 'strangler-cm-'));
    let current = '';
    const publish = (version: string, text: string) => {
      mkdirSync(join(mount, version));
      writeFileSync(join(mount, version, 'strangler.yaml'), text);
      if (current === '') symlinkSync(version, join(mount, '..data'));
      else {
        symlinkSync(version, join(mount, '..data_tmp'));
        renameSync(join(mount, '..data_tmp'), join(mount, '..data'));
        rmSync(join(mount, current), { recursive: true });
      }
      current = version;
    };
    const routes = (extra: string[]) => [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }, ...extra.map((id) => ({ id, match: { pathPrefix: `/${id}` }, legacy: 'legacy' }))];
    publish('..v1', configYaml(legacy.url, svc.url, 0, { routes: routes([]) }));
    symlinkSync('..data/strangler.yaml', join(mount, 'strangler.yaml'));
    const gw = startChild([...CLI, 'gateway', '--config', join(mount, 'strangler.yaml'), '--workers', '2']);
    children.push(gw);
    const started = await gw.waitFor((l) => l.msg === 'gateway.started');
    const adminUrl = started.admin as string;
    const proxyUrl = started.proxy as string;
    /** Requests on new connections, so both workers answer some of them. */
    const statuses = async (path: string) => {
      const seen = new Set<number>();
      for (let i = 0; i < 8; i++) {
        const res = await fetch(`${proxyUrl}${path}`, { headers: { connection: 'close' } });
        await res.text();
        seen.add(res.status);
      }
      return [...seen];
    };
    assert.deepEqual(await statuses('/second'), [404]);
    let reloads = 0;
    for (const [version, extra] of [['..v2', ['second']], ['..v3', ['second', 'third']]] as const) {
      publish(version, configYaml(legacy.url, svc.url, 0, { routes: routes([...extra]) }));
      const nth = ++reloads;
      // The primary's line (workers log their own reloads too).
      await gw.waitFor((l) => l.msg === 'config.reloaded' && l.workers === 2 && gw.lines.filter((x) => x.msg === 'config.reloaded' && x.workers === 2).length >= nth);
      assert.deepEqual(await statuses(`/${extra.at(-1)}`), [200], `every worker serves ${version}`);
    }
    publish('..v4', configYaml(legacy.url, svc.url, 0, { routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'nowhere' }] }));
    await gw.waitFor((l) => l.msg === 'config.reload_failed');
    const config = await admin<{ reload: { lastError: { message: string; problems?: { path: string }[] } | null; restartRequired: string[] } }>(adminUrl, '/admin/config');
    assert.ok(config.reload.lastError?.problems?.some((p) => p.path === 'routes[0].legacy'), JSON.stringify(config.reload.lastError));
    // Each version of this file names a new bootstrap file: a flag-client setting, read at start only.
    assert.deepEqual(config.reload.restartRequired, ['flags.bootstrapFile']);
    assert.deepEqual(await statuses('/third'), [200], 'the last good config still serves');
    gw.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
  });

  test('cluster mode: several workers, one merged admin view, pushes reach every worker', async () => {
    const file = join(dir, 'cluster.yaml');
    writeFileSync(file, configYaml(legacy.url, svc.url, 50));
    const gw = startChild([...CLI, 'gateway', '--config', file, '--workers', '3']);
    children.push(gw);
    const closed = once(gw.proc, 'close');
    const started = await gw.waitFor((l) => l.msg === 'gateway.started');
    const adminUrl = started.admin as string;
    const proxyUrl = started.proxy as string;
    for (let i = 0; i < 60; i++) {
      const res = await fetch(`${proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': `u${i}`, connection: 'close' } });
      await res.text();
    }
    const view = await admin<RoutesResponse>(adminUrl, '/admin/routes');
    assert.equal(view.gateway.workers, 3);
    const route = view.routes[0];
    assert.ok(route);
    assert.equal(route.totals.legacy.requests + route.totals.service.requests, 60, 'counts from every worker are summed');

    const push = await fetch(`${adminUrl}/admin/flags/refresh`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ flag: 'strangler.orders', action: 'rollback' }) });
    assert.equal(((await push.json()) as { delivered: number }).delivered, 3);
    for (let i = 0; i < 60; i++) {
      const res = await fetch(`${proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': `u${i}`, connection: 'close' } });
      await res.text();
      assert.equal(res.headers.get('x-strangler-target'), 'legacy', 'after the push every worker routes to legacy');
    }
    gw.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
    // Each worker's log thread wrote every request line to the one stdout they share, whole, before the exit.
    await closed;
    const requestLines = gw.lines.filter((l) => l.msg === 'request.completed');
    assert.equal(requestLines.length, 120);
    assert.equal(new Set(requestLines.map((l) => l.reqId)).size, 120);
    assert.equal(new Set(requestLines.map((l) => l.pid)).size, 3, 'lines from every worker');
    assert.deepEqual(gw.lines.filter((l) => typeof l.level !== 'number'), [], 'every stdout line is a whole JSON log line');
  });
});
