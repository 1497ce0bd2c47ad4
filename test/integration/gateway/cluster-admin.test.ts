/**
 * The control plane of `strangler gateway --workers N` while a worker is replaced: admin requests are answered by the
 * workers that serve (not stalled by one still starting), and /metrics counters never go backwards
 * (a restarted worker counts from zero; the exited worker's totals are kept by the primary).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI, startChild, type Child } from '../../helpers/process.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile } from '../../helpers/gateway.ts';
import type { RoutesResponse } from '../../../gateway/admin/types.ts';

const TOKEN = 'cluster-admin-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

/** pids of the gateway's worker processes (its node children; tsx also starts an esbuild child). */
function workerPids(primary: number): number[] {
  const out = execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(primary)], { encoding: 'utf8' });
  return out.split('\n').map((l) => l.trim().split(/\s+/)).filter(([, comm]) => comm === 'node').map(([pid]) => Number(pid));
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
    const dir = mkdtempSync(join(tmpdir(), 'strangler-cluster-admin-'));
    const file = join(dir, 'strangler.yaml');
    writeFileSync(file, stringify({
      upstreams: [{ id: 'legacy', url: legacy.url }, { id: 'svc', url: svc.url }],
      routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }],
      flags: { url: `${unleash.url}/api/`, token: 'x', backupPath: null, bootstrapFile: featuresFile({ 'strangler.orders': { percent: 0 } }), refreshIntervalMs: 600_000, requestTimeoutMs: 30_000, disableMetrics: true },
      proxy: { port: 0, bind: '127.0.0.1' },
      admin: { port: 0, token: TOKEN },
      identity: { sessionSecret: 'cluster-session-secret-0123456789' },
    }));
    gw = startChild([...CLI, 'gateway', '--config', file, '--workers', '2']);
    const started = await gw.waitFor((l) => l.msg === 'gateway.started', 60_000);
    const adminUrl = started.admin as string;
    const proxyUrl = started.proxy as string;
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
