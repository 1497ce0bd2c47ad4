/**
 * The control plane of `strangler gateway --workers N` while a worker is replaced: admin requests are answered by the
 * workers that serve (not stalled by one still starting), and /metrics counters never go backwards
 * (a restarted worker counts from zero; the exited worker's totals are kept by the primary). A worker whose event loop
 * hangs is killed and replaced by the primary's watchdog; a slow but answering worker, or a paused primary, is not.
 * Replacements that fail to start are retried with back-off, and /healthz fails once no worker has served for
 * proxy.workersDownLivenessMs, so the kubelet restarts a pod that cannot heal itself.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { CLI, startChild, type Child, type LogLine } from '../../helpers/process.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile } from '../../helpers/gateway.ts';
import { waitFor } from '../../helpers/wait.ts';
import type { RoutesResponse } from '../../../gateway/admin/types.ts';

const TOKEN = 'cluster-admin-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

/** pids of the gateway's worker processes (its node children; tsx also starts an esbuild child). */
function workerPids(primary: number): number[] {
  const out = execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(primary)], { encoding: 'utf8' });
  return out.split('\n').map((l) => l.trim().split(/\s+/)).filter(([, comm]) => comm === 'node').map(([pid]) => Number(pid));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `check` holds, failing with `what` after the deadline. */
const until = (what: string, check: () => Promise<boolean>, timeoutMs = 30_000) => waitFor(what, () => check().catch(() => false), timeoutMs, 50);

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** A config file's text: `body` plus the admin token and session secret every cluster test uses. */
function clusterConfig(body: Record<string, unknown>): string {
  return stringify({ ...body, admin: { port: 0, token: TOKEN }, identity: { sessionSecret: 'cluster-session-secret-0123456789' } });
}

/** Writes `body(dir)` (clusterConfig) to a fresh folder and starts a 2-worker gateway on it, up to gateway.started. */
async function startCluster(name: string, body: (dir: string) => Record<string, unknown>) {
  const dir = mkdtempSync(join(tmpdir(), `strangler-cluster-${name}-`));
  const file = join(dir, 'strangler.yaml');
  writeFileSync(file, clusterConfig(body(dir)));
  const gw = startChild([...CLI, 'gateway', '--config', file, '--workers', '2']);
  const started = await gw.waitFor((l) => l.msg === 'gateway.started', 60_000);
  return { gw, file, adminUrl: started.admin as string, proxyUrl: started.proxy as string, primary: gw.proc.pid as number };
}

async function legacyTotal(adminUrl: string): Promise<{ status: number; total: number | null }> {
  const res = await fetch(`${adminUrl}/metrics`, { headers: auth, signal: AbortSignal.timeout(4_000) });
  const text = await res.text();
  const m = /^strangler_requests_total\{route="orders",target="legacy"\} (\d+)$/m.exec(text);
  return { status: res.status, total: m ? Number(m[1]) : null };
}

describe('cluster control plane while a worker restarts', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  /** Stands in for Unleash: held while the replacement worker starts, so its start-up is as slow as the test needs. */
  let unleash: FakeUpstream;
  let gw: Child | undefined;

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
    unleash = await fakeUpstream('unleash');
  });
  after(async () => {
    gw?.kill();
    unleash.release();
    await Promise.all([legacy.stop(), svc.stop(), unleash.stop()]);
  });

  test('issue: a starting worker stalled /metrics, /readyz and /admin/routes; a restarted worker made counters drop', async () => {
    const c = await startCluster('admin', () => ({
      upstreams: [{ id: 'legacy', url: legacy.url }, { id: 'svc', url: svc.url }],
      routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }],
      flags: { url: `${unleash.url}/api/`, token: 'x', backupPath: null, bootstrapFile: featuresFile({ 'strangler.orders': { percent: 0 } }), refreshIntervalMs: 600_000, requestTimeoutMs: 30_000, disableMetrics: true },
      proxy: { port: 0, bind: '127.0.0.1' },
    }));
    gw = c.gw;
    const { adminUrl, proxyUrl } = c;
    for (let i = 0; i < 40; i++) await (await fetch(`${proxyUrl}/api/orders/${i}`, { headers: { connection: 'close' } })).text();
    const before = await legacyTotal(adminUrl);
    assert.deepEqual(before, { status: 200, total: 40 });

    // Replace one worker; hold the replacement's first flag fetch so it stays in start-up.
    unleash.mode = 'hold';
    const fetched = unleash.nextRequest();
    const [victim] = workerPids(gw.proc.pid as number);
    assert.ok(victim);
    process.kill(victim, 'SIGKILL');
    await fetched;

    const during = await legacyTotal(adminUrl);
    assert.equal(during.status, 200, 'the serving worker answers /metrics');
    assert.ok((during.total ?? 0) >= 40, `counters never drop (was 40, now ${during.total})`);
    const ready = await fetch(`${adminUrl}/readyz`, { signal: AbortSignal.timeout(4_000) });
    assert.equal(ready.status, 200);
    const routes = await fetch(`${adminUrl}/admin/routes`, { headers: auth, signal: AbortSignal.timeout(4_000) });
    assert.equal(((await routes.json()) as RoutesResponse).gateway.workers, 1);

    unleash.mode = 'ok';
    unleash.release();
    const deadline = Date.now() + 20_000;
    for (;;) {
      const view = (await (await fetch(`${adminUrl}/admin/routes`, { headers: auth })).json()) as RoutesResponse;
      if (view.gateway.workers === 2) break;
      assert.ok(Date.now() < deadline, 'the replacement worker joins');
      await new Promise((r) => setTimeout(r, 50));
    }
    for (let i = 0; i < 10; i++) await (await fetch(`${proxyUrl}/api/orders/${i}`, { headers: { connection: 'close' } })).text();
    assert.deepEqual(await legacyTotal(adminUrl), { status: 200, total: 50 }, 'the exited worker\'s requests still count');
    gw.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
  });
});

describe('cluster watchdog: a worker whose event loop hangs', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  let gw: Child | undefined;
  /** Processes this test stopped (SIGSTOP): killed in cleanup so a failed run leaves none behind. */
  const stopped = new Set<number>();
  const HANG_MS = 1_500;

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
  });
  after(async () => {
    for (const pid of stopped) if (alive(pid)) process.kill(pid, 'SIGKILL');
    gw?.kill();
    await Promise.all([legacy.stop(), svc.stop()]);
  });

  test('issue: a hung worker kept its share of connections and /readyz unready for ever while /healthz said ok', async () => {
    const c = await startCluster('hang', () => ({
      upstreams: [{ id: 'legacy', url: legacy.url }, { id: 'svc', url: svc.url }],
      routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }],
      flags: { url: null, backupPath: null, bootstrapFile: featuresFile({ 'strangler.orders': { percent: 0 } }), disableMetrics: true },
      proxy: { port: 0, bind: '127.0.0.1', workerHangTimeoutMs: HANG_MS },
    }));
    gw = c.gw;
    const { adminUrl, proxyUrl, primary } = c;
    /** Every request answered, each within 4 s: round robin sends them to both workers. */
    const served = async (n: number) => {
      const statuses = await Promise.all(Array.from({ length: n }, async (_, i) => (await fetch(`${proxyUrl}/api/orders/${i}`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(4_000) })).status));
      return statuses.every((s) => s === 200);
    };
    const readyz = async () => (await fetch(`${adminUrl}/readyz`, { signal: AbortSignal.timeout(6_000) })).status;
    const hung = () => gw?.lines.filter((l) => l.msg === 'gateway.worker_hung') ?? [];
    assert.ok(await served(10));

    // A stopped process is, to the primary, exactly a worker stuck in a loop: no IPC answer, connections unserved.
    const [victim, other] = workerPids(primary);
    assert.ok(victim && other);
    stopped.add(victim);
    process.kill(victim, 'SIGSTOP');
    const line = await gw.waitFor((l) => l.msg === 'gateway.worker_hung' && l.pid === victim, 20_000);
    assert.equal(line.level, 50, 'logged at error level');
    assert.ok((line.silentMs as number) >= HANG_MS, `silent for ${String(line.silentMs)} ms`);
    const exit = await gw.waitFor((l) => l.msg === 'gateway.worker_exit' && l.pid === victim);
    assert.equal(exit.signal, 'SIGKILL');
    await until('the hung worker is gone', async () => !alive(victim), 5_000);

    await until('a replacement worker serves beside the other one', async () => {
      const pids = workerPids(primary);
      const view = (await (await fetch(`${adminUrl}/admin/routes`, { headers: auth, signal: AbortSignal.timeout(6_000) })).json()) as RoutesResponse;
      return view.gateway.workers === 2 && pids.length === 2 && pids.includes(other) && !pids.includes(victim);
    });
    await until('/readyz recovers', async () => (await readyz()) === 200);
    assert.ok(await served(10), 'requests are served by both workers again');
    assert.equal((await fetch(`${adminUrl}/healthz`)).status, 200);

    // Busy but alive: event loop held for 300 ms at a time (well under the timeout), answering between, for over
    // three timeouts in all, under traffic. It must not be killed.
    const busy = workerPids(primary).find((p) => p !== other) as number;
    const hungBefore = hung().length;
    stopped.add(busy);
    const load = served(20);
    for (const end = Date.now() + 3.5 * HANG_MS; Date.now() < end;) {
      process.kill(busy, 'SIGSTOP');
      await sleep(300);
      process.kill(busy, 'SIGCONT');
      await sleep(150);
    }
    assert.ok(await load, 'a busy worker still serves');
    assert.ok(await served(10));
    assert.equal(hung().length, hungBefore, 'a slow but answering worker is not killed');
    assert.ok(alive(busy));

    // The primary itself held up for twice the timeout: its workers' answers wait unread, which is no hang of theirs.
    stopped.add(primary);
    process.kill(primary, 'SIGSTOP');
    await sleep(2 * HANG_MS);
    process.kill(primary, 'SIGCONT');
    stopped.delete(primary);
    await until('/readyz after the pause', async () => (await readyz()) === 200);
    assert.ok(await served(10));
    await sleep(HANG_MS);
    assert.equal(hung().length, hungBefore, 'a paused primary does not kill its workers');
    assert.deepEqual(workerPids(primary).sort(), [other, busy].sort());

    gw.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
  });
});

/** A port free right now (the cluster's listening socket is re-created on it when every worker has gone). */
async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

describe('cluster supervisor: replacements that fail to start', () => {
  let legacy: FakeUpstream;
  let gw: Child | undefined;
  const DOWN_MS = 4_000;

  before(async () => {
    legacy = await fakeUpstream('legacy');
  });
  after(async () => {
    gw?.kill();
    await legacy.stop();
  });

  test('issue: a replacement that failed to start was never retried, and with none left /healthz stayed 200 for ever', async () => {
    const port = await freePort();
    let ca = '';
    const c = await startCluster('retry', (dir) => {
      // An https upstream's CA file: read by each worker at start (not by the primary), so removing it breaks starts.
      ca = join(dir, 'ca.crt');
      copyFileSync(resolve(import.meta.dirname, '../../fixtures/kafka-tls/broker.crt'), ca);
      return {
        upstreams: [{ id: 'legacy', url: legacy.url }, { id: 'secure', url: 'https://127.0.0.1:9', tls: { caFile: ca } }],
        routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy' }],
        flags: { url: null, backupPath: null, bootstrapFile: featuresFile({}), disableMetrics: true },
        proxy: { port, bind: '127.0.0.1', workersDownLivenessMs: DOWN_MS },
      };
    });
    gw = c.gw;
    const { adminUrl, proxyUrl, primary } = c;
    const healthz = async () => {
      const res = await fetch(`${adminUrl}/healthz`, { signal: AbortSignal.timeout(4_000) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const workers = async () => ((await (await fetch(`${adminUrl}/admin/routes`, { headers: auth, signal: AbortSignal.timeout(6_000) })).json()) as RoutesResponse).gateway.workers;
    const served = async () => (await fetch(`${proxyUrl}/api/orders/1`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(4_000) })).status === 200;
    const lines = (msg: string) => gw?.lines.filter((l) => l.msg === msg) ?? [];
    const at = (l: LogLine) => Date.parse(String(l.time));
    assert.deepEqual(await healthz(), { status: 200, body: { status: 'ok' } });

    // The test-only cause: a file the replacements need (an upstream's CA) goes away after the start. The running
    // workers have read it; new ones cannot start until it is back. (A broken config file no longer stops them: they
    // start from the primary's last good config, see the next describe.)
    renameSync(ca, `${ca}.away`);
    const victims = workerPids(primary);
    assert.equal(victims.length, 2);
    const killedAt = Date.now();
    for (const pid of victims) process.kill(pid, 'SIGKILL');

    // Liveness holds for DOWN_MS after the last worker went, then fails with a reason.
    let live200 = 0;
    let down: (Awaited<ReturnType<typeof healthz>> & { afterMs: number }) | undefined;
    await until('/healthz turns 503', async () => {
      const h = await healthz();
      if (h.status === 200) live200++;
      else down ??= { ...h, afterMs: Date.now() - killedAt };
      return down !== undefined;
    });
    assert.ok(live200 > 0, '/healthz stayed 200 within the bound');
    assert.equal(down?.status, 503);
    assert.ok(down.afterMs >= DOWN_MS, `/healthz failed ${down.afterMs} ms after the workers went, before the ${DOWN_MS} ms bound`);
    assert.equal(down?.body.status, 'unhealthy');
    assert.match(String(down?.body.reason), /no gateway worker has been serving for \d+ ms \(proxy\.workersDownLivenessMs: 4000\); replacements keep failing to start, last: .*ca\.crt/s);
    assert.equal((await fetch(`${adminUrl}/readyz`)).status, 503);

    // Each slot retried at once, then 1 s, 2 s, 4 s apart: logged, with the cause, and no busy loop.
    await until('both slots failed three starts', async () => lines('gateway.worker_start_failed').filter((l) => l.attempt === 3).length >= 2);
    const failed = lines('gateway.worker_start_failed');
    for (const l of failed) {
      assert.equal(l.level, 50);
      assert.equal(l.retryInMs, Math.min(30_000, 1_000 * 2 ** ((l.attempt as number) - 1)), JSON.stringify(l));
      assert.match(String(l.err), /ca\.crt/);
    }
    const restarts = lines('gateway.worker_restart');
    assert.ok(restarts.length <= 2 * 4 + 2, `${restarts.length} starts in ${Date.now() - killedAt} ms: back-off, not a loop`);
    for (const r of restarts.filter((x) => (x.delayMs as number) > 0)) {
      const cause = failed.filter((f) => f.retryInMs === r.delayMs && at(f) <= at(r) - (r.delayMs as number) + 2);
      assert.ok(cause.length > 0, `${JSON.stringify(r)} waited its delay after a failed start`);
    }

    // The cause removed: the next retry of each slot starts, and the pod is live, ready and serving again.
    renameSync(`${ca}.away`, ca);
    await until('both workers serve again', async () => (await workers()) === 2, 45_000);
    assert.deepEqual(await healthz(), { status: 200, body: { status: 'ok' } });
    assert.equal((await fetch(`${adminUrl}/readyz`)).status, 200);
    assert.ok(await served());

    // Replacing one worker while the other serves never fails liveness.
    const [one] = workerPids(primary);
    assert.ok(one);
    process.kill(one, 'SIGKILL');
    await gw.waitFor((l) => l.msg === 'gateway.worker_exit' && l.pid === one);
    const statuses = new Set<number>();
    await until('the worker is replaced', async () => {
      statuses.add((await healthz()).status);
      return (await workers()) === 2;
    }, 45_000);
    assert.deepEqual([...statuses], [200]);

    gw.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
  });
});

describe('cluster reload: replacement workers start from the last good config', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  let gw: Child | undefined;
  const stopped = new Set<number>();

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
  });
  after(async () => {
    for (const pid of stopped) if (alive(pid)) process.kill(pid, 'SIGKILL');
    gw?.kill();
    await Promise.all([legacy.stop(), svc.stop()]);
  });

  test('issue: with a bad file on disk a replaced worker never started again (retried for ever); a replacement stuck starting held its slot for ever', async () => {
    const config = (routes: string[]) => ({
      upstreams: [{ id: 'legacy', url: legacy.url }, { id: 'svc', url: svc.url }],
      routes: routes.map((id) => ({ id, match: { pathPrefix: `/api/${id}` }, legacy: 'legacy', service: 'svc' })),
      flags: { url: null, backupPath: null, bootstrapFile: featuresFile({ 'strangler.orders': { percent: 0 }, 'strangler.users': { percent: 0 }, 'strangler.items': { percent: 0 } }), requestTimeoutMs: 2_000, disableMetrics: true },
      // Start deadline of a replacement: flags.requestTimeoutMs + workerHangTimeoutMs = 5 s.
      proxy: { port: 0, bind: '127.0.0.1', workerHangTimeoutMs: 3_000 },
    });
    const c = await startCluster('lastgood', () => config(['orders']));
    gw = c.gw;
    const { file, adminUrl, proxyUrl, primary } = c;
    const view = async () => (await (await fetch(`${adminUrl}/admin/routes`, { headers: auth, signal: AbortSignal.timeout(6_000) })).json()) as RoutesResponse;
    /** The route each of n requests (round robin over the workers) was matched to, by every worker serving now. */
    const routedAs = async (path: string, n = 10) => {
      const routes = await Promise.all(Array.from({ length: n }, async () => {
        const res = await fetch(`${proxyUrl}${path}`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(4_000) });
        await res.text();
        return `${res.status} ${res.headers.get('x-strangler-route')}`;
      }));
      return [...new Set(routes)];
    };
    /** Reloads the primary reported applied (a write may fire the watcher more than once). */
    const reloaded = () => gw?.lines.filter((l) => l.msg === 'config.reloaded' && l.name === 'gateway').length ?? 0;

    // A good reload (route users added), then a bad file: the primary and both workers keep the reloaded config.
    writeFileSync(file, clusterConfig(config(['orders', 'users'])));
    await until('the good reload applies', async () => reloaded() > 0 && (await routedAs('/api/users/1')).join() === '200 users');
    writeFileSync(file, 'routes: [');
    await gw.waitFor((l) => l.msg === 'config.reload_failed');
    assert.match(String((await view()).gateway.reloadError), /strangler\.yaml/);

    // A worker crashes: its replacement starts from the last good config (not the bad file) and serves as the others.
    const [victim, other] = workerPids(primary);
    assert.ok(victim && other);
    process.kill(victim, 'SIGKILL');
    await gw.waitFor((l) => l.msg === 'gateway.worker_exit' && l.pid === victim);
    await until('the replacement serves beside the other worker', async () => (await view()).gateway.workers === 2 && workerPids(primary).length === 2, 20_000);
    assert.deepEqual(gw.lines.filter((l) => l.msg === 'gateway.worker_start_failed'), [], 'no failed start');
    assert.deepEqual(await routedAs('/api/users/1'), ['200 users'], 'both workers route with the last good config');
    assert.deepEqual(await routedAs('/api/orders/1'), ['200 orders']);
    assert.equal((await fetch(`${adminUrl}/readyz`)).status, 200);
    assert.match(String((await view()).gateway.reloadError), /strangler\.yaml/, 'the bad file is still reported');

    // The other worker crashes and its replacement hangs in start-up (stopped before it listens): it is killed at the
    // start deadline, counted as a failed start, and the slot's next start serves.
    // The pids known before the kill: read after it, they could already hold the replacement (a fast fork), which
    // would then never be seen as new.
    const known = new Set([victim, other, ...workerPids(primary)]);
    process.kill(other, 'SIGKILL');
    let stuck: number | undefined;
    await until('the replacement is forked', async () => {
      stuck = workerPids(primary).find((p) => !known.has(p));
      if (stuck === undefined) return false;
      stopped.add(stuck);
      process.kill(stuck, 'SIGSTOP');
      return true;
    }, 10_000);
    const failed = await gw.waitFor((l) => l.msg === 'gateway.worker_start_failed', 20_000);
    assert.match(String(failed.err), new RegExp(`gateway worker ${stuck} did not start listening within 5000 ms`));
    assert.equal(failed.retryInMs, 1_000);
    await until('the stuck replacement is gone', async () => !alive(stuck as number), 5_000);
    await until('the next start serves', async () => (await view()).gateway.workers === 2, 20_000);
    assert.deepEqual(await routedAs('/api/users/1'), ['200 users']);
    assert.equal((await fetch(`${adminUrl}/readyz`)).status, 200);

    // The file fixed (route items added): the reload reaches every worker, replacements included.
    const before = reloaded();
    writeFileSync(file, clusterConfig(config(['orders', 'users', 'items'])));
    await until('the fixed file applies on every worker', async () => reloaded() > before && (await routedAs('/api/items/1')).join() === '200 items');
    const after = await view();
    assert.equal(after.gateway.reloadError, null);
    assert.equal(after.gateway.workers, 2);

    gw.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
  });
});

describe('cluster reload: every worker serves one config version, the one GET /admin/config shows', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  let gw: Child | undefined;
  const stopped = new Set<number>();

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
  });
  after(async () => {
    for (const pid of stopped) if (alive(pid)) process.kill(pid, 'SIGKILL');
    gw?.kill();
    await Promise.all([legacy.stop(), svc.stop()]);
  });

  test('issue: a reload naming a missing PEM file was shown as the live config and broke every replacement; a worker that missed a reload left the others on it', async () => {
    let ca = '';
    const config = (routes: string[], extraUpstreams: Record<string, unknown>[] = []) => ({
      upstreams: [{ id: 'legacy', url: legacy.url }, { id: 'svc', url: svc.url }, ...extraUpstreams],
      routes: routes.map((id) => ({ id, match: { pathPrefix: `/api/${id}` }, legacy: 'legacy', service: 'svc' })),
      flags: { url: null, backupPath: null, bootstrapFile: featuresFile({ 'strangler.orders': { percent: 0 }, 'strangler.users': { percent: 0 }, 'strangler.items': { percent: 0 } }), disableMetrics: true },
      // No watchdog: the worker this test stops must stay (a stopped worker stands in for one too busy to answer).
      proxy: { port: 0, bind: '127.0.0.1', workerHangTimeoutMs: 0 },
    });
    const c = await startCluster('version', (dir) => {
      ca = join(dir, 'ca.crt');
      return config(['orders']);
    });
    gw = c.gw;
    const { file, adminUrl, proxyUrl, primary } = c;
    const adminConfig = async () => (await (await fetch(`${adminUrl}/admin/config`, { headers: auth })).json()) as { config: { upstreams: { id: string }[]; routes: { id: string }[] }; reload: { lastError: { message: string; problems?: { path: string; expected: string }[] } | null } };
    /** What each of n requests on new connections (round robin over the workers) answered; one that hangs answers "none". */
    const routedAs = async (path: string, n = 10) => {
      const routes = await Promise.all(Array.from({ length: n }, async () => {
        try {
          const res = await fetch(`${proxyUrl}${path}`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(3_000) });
          await res.text();
          return `${res.status} ${res.headers.get('x-strangler-route')}`;
        } catch {
          return 'none';
        }
      }));
      return [...new Set(routes)].sort();
    };
    const failures = () => gw?.lines.filter((l) => l.msg === 'config.reload_failed' && l.name === 'gateway').length ?? 0;
    const reloads = () => gw?.lines.filter((l) => l.msg === 'config.reloaded' && l.name === 'gateway').length ?? 0;

    // A route added with an https upstream whose CA file is missing: refused with the problem's path, like a bad field.
    const secure = { id: 'secure', url: 'https://127.0.0.1:9', tls: { caFile: ca } };
    writeFileSync(file, clusterConfig(config(['orders', 'users'], [secure])));
    await until('the reload fails', async () => failures() === 1);
    const refused = await adminConfig();
    assert.deepEqual(refused.reload.lastError?.problems?.map((p) => [p.path, p.expected]), [['upstreams[2].tls.caFile', 'a readable PEM file']]);
    assert.deepEqual(refused.config.upstreams.map((u) => u.id), ['legacy', 'svc'], 'the admin API shows the config that serves');
    assert.deepEqual(await routedAs('/api/users/1'), ['404 null']);

    // A worker crashes: its replacement starts from the last good config, not the refused one.
    const [victim] = workerPids(primary);
    assert.ok(victim);
    process.kill(victim, 'SIGKILL');
    await gw.waitFor((l) => l.msg === 'gateway.worker_exit' && l.pid === victim);
    await until('the replacement serves', async () => workerPids(primary).length === 2 && ((await (await fetch(`${adminUrl}/admin/routes`, { headers: auth })).json()) as RoutesResponse).gateway.workers === 2, 20_000);
    assert.deepEqual(gw.lines.filter((l) => l.msg === 'gateway.worker_start_failed').map((l) => l.err), [], 'no failed start');

    // The CA file in place: SIGHUP applies the file on every worker.
    copyFileSync(resolve(import.meta.dirname, '../../fixtures/kafka-tls/broker.crt'), ca);
    process.kill(primary, 'SIGHUP');
    await until('the reload applies', async () => reloads() === 1);
    assert.deepEqual(await routedAs('/api/users/1'), ['200 users']);

    // One worker cannot answer (stopped) while the next version (route items) is read: the reload fails, and the
    // worker that applied it goes back, so neither serves it, now or once the stopped one runs again.
    const [paused, running] = workerPids(primary);
    assert.ok(paused && running);
    stopped.add(paused);
    process.kill(paused, 'SIGSTOP');
    writeFileSync(file, clusterConfig(config(['orders', 'users', 'items'], [secure])));
    await until('the reload fails', async () => failures() === 2, 20_000);
    assert.match((await adminConfig()).reload.lastError?.message ?? '', new RegExp(`gateway workers ${paused} could not load it`));
    assert.deepEqual((await adminConfig()).config.routes.map((r) => r.id), ['orders', 'users']);
    assert.ok(!(await routedAs('/api/items/1')).includes('200 items'), 'the running worker went back to the last good config');
    process.kill(paused, 'SIGCONT');
    stopped.delete(paused);
    assert.deepEqual(await routedAs('/api/items/1'), ['404 null'], 'the stopped worker, running again, ends on the last good config too');
    assert.deepEqual(await routedAs('/api/users/1'), ['200 users']);

    // Answering again, both workers take the file on the next SIGHUP.
    process.kill(primary, 'SIGHUP');
    await until('the reload applies', async () => reloads() === 2);
    assert.deepEqual(await routedAs('/api/items/1'), ['200 items']);

    // A worker that dies while a reload waits for it: the rollback must not write to its closed channel (an 'error'
    // event nothing listens to, which ended the primary). The reload fails, the replacement serves the last good config.
    const [dying, other] = workerPids(primary);
    assert.ok(dying && other);
    stopped.add(dying);
    process.kill(dying, 'SIGSTOP');
    const workerReloads = () => gw?.lines.filter((l) => l.msg === 'config.reloaded' && l.pid === other).length ?? 0;
    const seen = workerReloads();
    writeFileSync(file, clusterConfig(config(['orders', 'users'], [secure])));
    await until('the running worker applied it', async () => workerReloads() > seen);
    process.kill(dying, 'SIGKILL');
    await until('the reload fails', async () => failures() === 3, 20_000);
    await until('the replacement serves', async () => ((await (await fetch(`${adminUrl}/admin/routes`, { headers: auth })).json()) as RoutesResponse).gateway.workers === 2, 20_000);
    assert.deepEqual(await routedAs('/api/items/1'), ['200 items'], 'both workers on the last good config');
    gw.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
  });
});

describe('cluster stop: no worker outlives the gateway', () => {
  let legacy: FakeUpstream;
  let gw: Child | undefined;
  const stopped = new Set<number>();

  before(async () => {
    legacy = await fakeUpstream('legacy');
  });
  after(async () => {
    for (const pid of stopped) if (alive(pid)) process.kill(pid, 'SIGKILL');
    gw?.kill();
    await legacy.stop();
  });

  test('issue: SIGTERM with a worker that could not drain (stopped) never exited, and left the worker holding the port', async () => {
    const DRAIN_MS = 500;
    const c = await startCluster('stop', () => ({
      upstreams: [{ id: 'legacy', url: legacy.url }],
      routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy' }],
      flags: { url: null, backupPath: null, bootstrapFile: featuresFile({}), disableMetrics: true },
      proxy: { port: 0, bind: '127.0.0.1', drainTimeoutMs: DRAIN_MS, workerHangTimeoutMs: 0 },
    }));
    gw = c.gw;
    const workers = workerPids(c.primary);
    assert.equal(workers.length, 2);
    const [hung] = workers;
    assert.ok(hung);
    stopped.add(hung);
    process.kill(hung, 'SIGSTOP');
    const t0 = Date.now();
    gw.kill('SIGTERM');
    // The primary's bound: drainTimeoutMs for the workers' drain, plus 5 s for a worker's answer.
    const code = await Promise.race([gw.exited, sleep(DRAIN_MS + 5_000 + 10_000).then(() => 'still running')]);
    assert.equal(code, 0, `exit code after ${Date.now() - t0} ms`);
    await until('no worker is left', async () => workers.every((p) => !alive(p)), 5_000);
  });
});
