/**
 * The whole strangler story against the real demo (startDemo: embedded PostgreSQL, real Unleash, dev Kafka broker,
 * monolith + orders service processes, two-way sync workers, gateway with traffic actions), as a user runs it:
 *
 *   a load generator of many users reads and writes orders through the gateway while the orders route goes
 *   0 → 10 → 50 → 100 % through the control plane (the CLI's code path); the service is killed (kill -9) at 50 %
 *   and reads keep succeeding through fallback; it is restarted before 100 %; a rollback returns everything to
 *   legacy within a second; then `strangler sync verify` reports both databases identical, and every write a
 *   client saw acknowledged is on both sides.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freePort } from '../../../common/net.ts';
import { silentLogger } from '../../../common/logger.ts';
import { startDemo, type RunningDemo } from '../../../devstack/demo/stack.ts';
import { OrdersLoad, type Sample } from '../../helpers/orders-load.ts';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const FLAG = 'strangler.orders';

let demo: RunningDemo;
let dataDir: string;
let load: OrdersLoad;
const figures: Record<string, unknown> = {};
const shifts: Record<string, { adminAnsweredMs: number; gatewayFollowsMs: number }> = {};

async function until<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15_000, everyMs = 50): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await delay(everyMs);
  }
}

async function admin(path: string, body: Record<string, unknown>): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${demo.gateway.adminUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${demo.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, json: await res.json().catch(() => null) };
}

/** Shifts through the control plane, then waits until this gateway's flag state shows the new percentage. */
async function shift(percent: number): Promise<void> {
  load.phase = `shifting to ${percent}%`; // requests in flight while the change lands are not counted in either step
  const started = performance.now();
  const r = await admin('/admin/routes/orders/shift', { percent, reason: `e2e story: ${percent}%`, actor: 'e2e' });
  assert.equal(r.status, 200, `shift to ${percent}%: ${JSON.stringify(r.json)}`);
  const answeredMs = Math.round(performance.now() - started);
  await until(`flag state ${percent}%`, () => {
    const s = demo.gateway.runtime.flags.state(FLAG);
    return s.known && s.enabled && s.rolloutPercent === percent;
  }, 15_000, 5);
  shifts[`${percent}%`] = { adminAnsweredMs: answeredMs, gatewayFollowsMs: Math.round(performance.now() - started) };
  load.phase = `${percent}%`;
}

const share = (samples: Sample[], target: string) => samples.filter((s) => s.target === target).length / Math.max(1, samples.length);

/** Within one phase, a user id whose requests were not fallbacks always landed on one side. */
function assertSticky(phase: string): void {
  const sides = new Map<string, Set<string>>();
  for (const s of load.samples) {
    if (s.phase !== phase || s.fallback || !s.target) continue;
    const set = sides.get(s.userId) ?? new Set<string>();
    set.add(s.target);
    sides.set(s.userId, set);
  }
  const bouncing = [...sides].filter(([, set]) => set.size > 1).map(([u]) => u);
  assert.deepEqual(bouncing, [], `users that bounced between sides in phase ${phase}`);
}

/** Every read answered 200 (404 only for an id not yet synced to the other side); every request was answered. */
function assertPhaseHealthy(phase: string, opts: { writesMayFail?: boolean } = {}): void {
  const st = load.stats(phase);
  const bad = load.samples.filter((s) => s.phase === phase && s.kind !== 'create' && s.status !== 200 && s.status !== 404);
  assert.deepEqual(bad.slice(0, 5).map((s) => `${s.kind} ${s.status} ${s.error}`), [], `failed reads in phase ${phase} (${bad.length})`);
  assert.equal(st.hangs, 0, `hanging requests in phase ${phase}`);
  const failedWrites = load.samples.filter((s) => s.phase === phase && s.kind === 'create' && s.status !== 201);
  if (!opts.writesMayFail) {
    assert.deepEqual(failedWrites.slice(0, 5).map((s) => `${s.status} ${s.error}`), [], `failed writes in phase ${phase} (${failedWrites.length})`);
  } else {
    for (const s of failedWrites) {
      // A clean error: a gateway status with a JSON error code, answered (no hang, no dropped connection).
      assert.ok(s.status >= 500 && s.status <= 504 && s.error && !s.error.startsWith('unparsed'), `write failure not clean in phase ${phase}: ${s.status} ${s.error}`);
    }
  }
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'strangler-e2e-'));
  const ports = { proxy: await freePort(), admin: await freePort(), unleash: await freePort(), kafka: await freePort() };
  const steps: string[] = [];
  demo = await startDemo({ dataDir, ports, fresh: true, log: silentLogger, onStep: (step, ms) => steps.push(`${step} ${ms} ms`) });
  console.log(`e2e: demo up in ${demo.startMs} ms (${steps.join(', ')})`);
  load = new OrdersLoad({ baseUrl: demo.gateway.proxyUrl, users: 32, userIds: 400, thinkMs: 25 });
});

after(async () => {
  await load?.stop();
  await demo?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('the strangler story', () => {
  test('0 → 10 → 50 % (service killed, fallback) → restart → 100 % → rollback < 1 s → sync verify identical', async () => {
    const t0 = performance.now();
    assert.equal(demo.gateway.runtime.flags.state(FLAG).rolloutPercent, 0, 'the demo starts at 0 %');

    // 0 %: everything on legacy.
    load.phase = '0%';
    load.start();
    await load.waitForRequests(300);
    assert.equal(share(load.samples.filter((s) => s.phase === '0%'), 'service'), 0);
    assertPhaseHealthy('0%');

    // 10 %: a canary share on the service, sticky per user.
    await shift(10);
    await load.waitForRequests(600);
    const s10 = share(load.samples.filter((s) => s.phase === '10%'), 'service');
    assert.ok(s10 > 0.02 && s10 < 0.25, `service share at 10 %: ${s10}`);
    assertPhaseHealthy('10%');
    assertSticky('10%');

    // 50 %.
    await shift(50);
    await load.waitForRequests(600);
    const s50 = share(load.samples.filter((s) => s.phase === '50%'), 'service');
    assert.ok(s50 > 0.3 && s50 < 0.7, `service share at 50 %: ${s50}`);
    assertPhaseHealthy('50%');
    assertSticky('50%');

    // The service crashes (kill -9) at 50 %: reads keep succeeding through fallback to legacy.
    load.phase = 'service down';
    const killedAt = performance.now();
    await demo.service.kill();
    await load.waitForRequests(40, 20_000, (s) => s.kind !== 'create' && s.fallback !== null);
    await load.waitForRequests(400);
    const down = load.samples.filter((s) => s.phase === 'service down');
    assert.ok(down.every((s) => s.servedBy !== 'service'), 'nothing is served by a dead service');
    assertPhaseHealthy('service down', { writesMayFail: true });
    figures.downMs = Math.round(performance.now() - killedAt);

    // Restart it on the same port; once the breaker lets calls through, the service answers again.
    await demo.restartService();
    load.phase = 'restarted';
    await load.waitForRequests(50, 30_000, (s) => s.target === 'service' && !s.fallback && s.status < 500);
    const serviceBackAt = Math.min(...load.samples.filter((s) => s.phase === 'restarted' && s.target === 'service' && !s.fallback && s.status < 500).map((s) => s.endMs));
    assertPhaseHealthy('restarted', { writesMayFail: true });

    // 100 %: everything on the service.
    await shift(100);
    await load.waitForRequests(600);
    const s100 = load.samples.filter((s) => s.phase === '100%');
    assert.equal(share(s100, 'service'), 1, `100 %: ${JSON.stringify(load.stats('100%').byTarget)}`);
    assertPhaseHealthy('100%');

    // Rollback: every request on legacy within a second. Probe loops for many users run next to the load; the
    // figure is the later of (a) when this gateway's flag state switched and (b) the earliest send time from which
    // on every request (probes and load) landed on legacy.
    load.phase = 'rollback';
    const rollbackStart = performance.now();
    let answered = false;
    const rollback = admin('/admin/routes/orders/rollback', { reason: 'e2e story: rollback', actor: 'e2e' }).then((r) => {
      answered = true;
      return { ...r, ms: Math.round(performance.now() - rollbackStart) };
    });
    const stateSeen = until('flag state off or overridden', () => {
      const s = demo.gateway.runtime.flags.state(FLAG);
      return !s.enabled || s.localOverride === 'legacy' ? Math.round(performance.now() - rollbackStart) : undefined;
    }, 10_000, 5);
    const probes: { startMs: number; endMs: number; target: string | null; fallback: string | null; status: number }[] = [];
    let probing = true;
    const probeLoop = async (loop: number) => {
      for (let i = 0; probing; i++) {
        const startMs = performance.now();
        const res = await fetch(`${demo.gateway.proxyUrl}/api/orders?customerId=${1 + (i % 8)}&limit=1`, { headers: { 'x-user-id': `probe-${loop}-${i % 50}` }, signal: AbortSignal.timeout(5_000) });
        await res.arrayBuffer();
        probes.push({ startMs, endMs: performance.now(), target: res.headers.get('x-strangler-target'), fallback: res.headers.get('x-strangler-fallback'), status: res.status });
      }
    };
    const loops = Array.from({ length: 8 }, (_, i) => probeLoop(i));
    const landed = () => {
      const sent = [...probes, ...load.samples].filter((s) => s.startMs >= rollbackStart);
      const lastService = Math.max(rollbackStart, ...sent.filter((s) => s.target === 'service').map((s) => s.startMs));
      const after = sent.filter((s) => s.startMs > lastService && s.target === 'legacy' && !s.fallback);
      return { after: after.length, ms: after.length ? Math.round(Math.min(...after.map((s) => s.startMs)) - rollbackStart) : -1 };
    };
    try {
      // Until the flag state changed, the admin API answered, and 300 requests in a row went to legacy.
      await until('every request on legacy', () => answered && landed().after >= 300, 15_000, 20);
    } finally {
      probing = false;
      await Promise.all(loops);
    }
    const rb = await rollback;
    const flagStateMs = await stateSeen;
    // The later of: this gateway's flag state switched; every request sent from then on landed on legacy.
    const rollbackMs = Math.max(landed().ms, flagStateMs);
    figures.rollbackMs = rollbackMs;
    figures.rollbackAdminAnsweredMs = rb.ms;
    figures.rollbackFlagStateMs = flagStateMs;
    figures.rollbackAllLegacyFromSendMs = landed().ms;
    figures.rollbackProbes = probes.length;
    console.log(`e2e rollback: rollback landed after ${rollbackMs} ms (gateway flag state switched after ${flagStateMs} ms, every request sent from ${figures.rollbackAllLegacyFromSendMs} ms on went to legacy, admin API answered after ${rb.ms} ms; ${probes.length} probes)`);
    assert.equal(rb.status, 200, `rollback: ${JSON.stringify(rb.json)}`);
    assert.ok(probes.every((p) => p.status === 200), 'every probe answered 200');
    // From then on nothing reaches the service: the load's own requests too.
    await load.waitForRequests(300);
    const lateService = load.samples.filter((s) => s.startMs >= rollbackStart + rollbackMs && s.target === 'service');
    assert.deepEqual(lateService.map((s) => `${s.kind} ${s.userId}`), [], 'requests on the service after the rollback landed');
    assert.ok(rollbackMs <= 1000, `rollback took ${rollbackMs} ms`);
    assertPhaseHealthy('rollback');

    await load.stop();

    // Over the whole run, transitions included: every read answered (200, or 404 for an id not yet synced), no
    // request hung, and the only failed writes were clean gateway errors while the service was down.
    const badReads = load.samples.filter((s) => s.kind !== 'create' && s.status !== 200 && s.status !== 404);
    assert.deepEqual(badReads.slice(0, 5).map((s) => `${s.phase} ${s.kind} ${s.status} ${s.error}`), [], `failed reads: ${badReads.length}`);
    assert.equal(load.samples.filter((s) => s.status === -1).length, 0, 'hung requests');
    const failedWrites = load.samples.filter((s) => s.kind === 'create' && s.status !== 201);
    for (const s of failedWrites) {
      assert.ok(s.status >= 500 && s.status <= 504 && s.error && !s.error.startsWith('unparsed'), `write failure not clean: ${s.phase} ${s.status} ${s.error}`);
      assert.ok(s.endMs >= killedAt && s.startMs <= serviceBackAt, `write failed outside the outage: ${s.phase} ${s.status} ${s.error}`);
    }
    figures.failedWrites = failedWrites.length;

    // The sync drains: no lag, nothing parked, in both directions.
    const drainStart = performance.now();
    const status = await until('sync lag 0 in both directions', async () => {
      const st = await demo.sync.status();
      return st.directions.every((d) => d.lagEvents === 0) ? st : undefined;
    }, 30_000, 200);
    figures.syncDrainMs = Math.round(performance.now() - drainStart);
    for (const d of status.directions) assert.equal(d.parkedNow, 0, `${d.direction}: parked events`);
    figures.applied = Object.fromEntries(status.directions.map((d) => [d.direction, d.applied]));

    // `strangler sync verify` as a user runs it.
    const verifyStart = performance.now();
    const cli = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'sync', 'verify', '--config', demo.configFile, '--json'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    cli.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
    cli.stderr.setEncoding('utf8').on('data', (c: string) => { err += c; });
    const code = await new Promise<number | null>((resolve) => cli.on('exit', (c) => resolve(c)));
    figures.verifyMs = Math.round(performance.now() - verifyStart);
    assert.equal(code, 0, `sync verify exit ${code}\nstdout: ${out.slice(0, 2000)}\nstderr: ${err.slice(0, 2000)}`);
    const verify = JSON.parse(out) as { ok: boolean; tables: { table: string; match: boolean }[] };
    assert.equal(verify.ok, true);
    assert.ok(verify.tables.some((t) => t.table === 'orders' && t.match));

    // The control plane shows the same: no lag, and the verify just run.
    const syncView = (await (await fetch(`${demo.gateway.adminUrl}/admin/sync`, { headers: { authorization: `Bearer ${demo.adminToken}` } })).json()) as { directions: { direction: string; lagEvents: number }[]; lastVerify: { ok: boolean } | null };
    assert.deepEqual(syncView.directions.map((d) => [d.direction, d.lagEvents]), [['legacy-to-service', 0], ['service-to-legacy', 0]]);
    assert.equal(syncView.lastVerify?.ok, true, 'GET /admin/sync shows the verify result');

    // Every acknowledged write is on both sides.
    const ids = [...load.acknowledged];
    assert.ok(ids.length > 100, `acknowledged writes: ${ids.length}`);
    for (const [db, table, column] of [['legacy_shop', 'orders', 'id'], ['orders_service', 'order_records', 'order_id']] as const) {
      const client = new pg.Client({ connectionString: demo.postgres.url(db) });
      await client.connect();
      try {
        const r = await client.query<{ id: string }>(`SELECT ${column} AS id FROM ${table} WHERE ${column} = ANY($1::text[])`, [ids]);
        const present = new Set(r.rows.map((row) => row.id));
        const missing = ids.filter((id) => !present.has(id));
        assert.deepEqual(missing.slice(0, 10), [], `${missing.length} acknowledged orders missing from ${db}.${table}`);
      } finally {
        await client.end();
      }
    }

    const all = load.stats();
    figures.requests = all.requests;
    figures.acknowledgedWrites = ids.length;
    figures.fallbacks = all.fallbacks;
    figures.read404 = all.read404;
    figures.perPhase = Object.fromEntries(load.phases().map((p) => {
      const st = load.stats(p);
      return [p, { requests: st.requests, byTarget: st.byTarget, fallbacks: st.fallbacks, writeFailures: st.writeFailures, read404: st.read404 }];
    }));
    figures.shifts = shifts;
    figures.storyMs = Math.round(performance.now() - t0);
    console.log(`e2e figures: ${JSON.stringify(figures, null, 2)}`);
  });
});
