/**
 * Crash matrix: relays and apply workers run as child processes (`strangler sync relay|apply`) while both
 * databases take continuous random writes. At random points a random worker is killed with SIGKILL and restarted;
 * every tenth trial the Kafka broker restarts, once PostgreSQL restarts. Afterwards the pipeline must drain, verify
 * must report identical tables, and the per-key version vectors must be equal on both sides (a lost or doubled
 * change would leave them different), with nothing parked. In both capture modes: in logical mode a killed worker
 * may hold a replication origin or be mid-peek on the slot.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SyncStack, Worker, waitFor } from './stack.ts';
import { compileFromDatabases, installCapture } from '../../../legacy-adapter/capture/index.ts';
import { createKafka } from '../../../migration-scripts/kafka.ts';
import { readSyncStatus } from '../../../migration-scripts/status.ts';
import { verifyTables } from '../../../migration-scripts/verify.ts';
import { randomWriter } from '../../unit/sync/load.ts';
import { rowVersions } from '../../unit/sync/fixture.ts';
import { seededRandom as rng } from '../../../common/random.ts';
import { runBackfill } from '../../../migration-scripts/backfill.ts';
import { closePools, openPools } from '../../../migration-scripts/db.ts';

let stack: SyncStack;
before(async () => { stack = new SyncStack(); await stack.start(); });
after(async () => { await stack.stop(); });

/** One crash matrix on a fresh database pair; `overrides` go into the sync config (e.g. the capture mode). */
async function crashMatrix(name: string, trials: number, overrides: Record<string, unknown> = {}): Promise<void> {
  const seed = Number(process.env.SYNC_SEED ?? Date.now() % 1_000_000);
  const { loaded, file, pools } = await stack.pair(name, overrides);
  const config = loaded.sync;
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installCapture(config, pools, 'service', tables);
  const workers = [
    new Worker('relay-legacy', ['relay', '--side', 'legacy', '--config', file]),
    new Worker('relay-service', ['relay', '--side', 'service', '--config', file]),
    new Worker('apply-l2s', ['apply', '--direction', 'legacy-to-service', '--config', file]),
    new Worker('apply-s2l', ['apply', '--direction', 'service-to-legacy', '--config', file]),
  ];
  const r = rng(seed);
  const w = randomWriter(r);
  let writing = true;
  let writes = 0;
  let pgDown = false;
  const writer = (async () => {
    while (writing) {
      if (pgDown) { await new Promise((res) => setTimeout(res, 20)); continue; }
      await Promise.all([w.legacy(pools.legacy, 60), w.service(pools.service, 60)]).then(() => { writes += 2; }, () => {});
    }
  })();
  const kills: string[] = [];
  try {
    for (const wk of workers) wk.start();
    for (let trial = 0; trial < trials; trial++) {
      await new Promise((res) => setTimeout(res, Math.floor(r() * 900))); // the random kill point (fault injection, not synchronisation)
      const victim = workers[Math.floor(r() * workers.length)] as Worker;
      await victim.kill();
      kills.push(victim.name);
      victim.start();
      if (trial % 10 === 9) await stack.restartBroker();
      if (trial === Math.floor(trials / 2)) {
        pgDown = true;
        await stack.restartPostgres();
        pgDown = false;
      }
    }
    writing = false;
    await writer;
    const kafka = createKafka(loaded.kafka!, 'crash-status');
    // Logical mode counts lag once changes are decoded, so "drained" also waits for verify (whose diffs the assert
    // below reports if it never agrees).
    await waitFor('both directions drained after the crash matrix', async () => {
      const st = await readSyncStatus(config, pools, kafka).catch(() => null);
      return st !== null && st.directions.every((d) => d.lagEvents === 0 && d.kafkaBacklog === 0) && (await verifyTables(config, pools, tables)).ok;
    }, 90_000, 250).catch(() => {});
    const v = await verifyTables(config, pools, tables);
    assert.equal(v.ok, true, `seed ${seed}: ${JSON.stringify(v.tables.map((t) => t.diffs.slice(0, 5)))}`);
    assert.deepEqual(await rowVersions(pools.service), await rowVersions(pools.legacy), `seed ${seed}: version vectors equal`);
    const parked = await Promise.all([pools.legacy, pools.service].map(async (p) => (await p.query(`SELECT count(*)::int AS n FROM strangler_sync.dead_letters`)).rows[0].n as number));
    assert.deepEqual(parked, [0, 0], `seed ${seed}: nothing parked`);
    assert.ok(writes > 100, `seed ${seed}: the load wrote (${writes} writes)`);
    assert.equal(kills.length, trials);
    // The next kill restarts a worker that exited by itself, which would hide one that gives up on a transient fault.
    assert.deepEqual(workers.filter((wk) => wk.selfExits.length > 0).map((wk) => `${wk.name}: ${wk.selfExits.join('\n')}`), [], `seed ${seed}: no worker exited by itself`);
  } catch (err) {
    console.error(`crash matrix seed ${seed} (rerun with SYNC_SEED=${seed}); kills: ${kills.join(',')}`);
    for (const wk of workers) if (wk.stderr) console.error(`--- ${wk.name} stderr ---\n${wk.stderr}`);
    const st = await readSyncStatus(config, pools, createKafka(loaded.kafka!, 'crash-status-2')).catch((e: unknown) => String(e));
    console.error('status at failure:', JSON.stringify(st, null, 1));
    throw err;
  } finally {
    writing = false;
    await writer;
    for (const wk of workers) await wk.stop();
  }
}

test('crash matrix: kill -9 relays and apply workers at random points, restart broker and PostgreSQL → no loss, no duplicate effect', async () => {
  await crashMatrix('crash', Number(process.env.SYNC_CRASH_TRIALS ?? 50));
});

test('the same in capture mode logical: workers killed while holding replication origins and the slot, PostgreSQL restarted', async () => {
  await crashMatrix('crashlogical', Number(process.env.SYNC_CRASH_TRIALS ?? 20), { capture: { mode: 'logical' } });
});

/** A pair with 20,000 legacy rows and capture on both sides, for backfill tests; `progress` reads the target's checkpoint. */
async function backfillPair(name: string) {
  const { loaded, file, pools } = await stack.pair(name);
  const config = loaded.sync;
  await pools.legacy.query(`INSERT INTO items (id, name, price_cents, data) SELECT g, 'n' || g, g, jsonb_build_object('g', g) FROM generate_series(1, 20000) g`);
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installCapture(config, pools, 'service', tables);
  const progress = async () => (await pools.service.query(`SELECT coalesce(max(rows_done), 0)::int AS n, bool_or(done) AS done FROM strangler_sync.backfill`)).rows[0] as { n: number; done: boolean | null };
  return { config, file, pools, tables, progress };
}

test('backfill killed with SIGKILL mid-way resumes from its checkpoint and completes; verify identical', async () => {
  const { config, file, pools, tables, progress } = await backfillPair('bfcrash');
  const first = new Worker('backfill-1', ['backfill', '--table', 'items', '--rate', '4000', '--config', file]);
  first.start();
  await waitFor('the first backfill to copy some chunks', async () => (await progress()).n >= 5_000, 30_000, 20);
  await first.kill();
  const cut = await progress();
  assert.ok(cut.n < 20_000 && !cut.done, `killed mid-way (${cut.n} rows done)`);
  const second = new Worker('backfill-2', ['backfill', '--table', 'items', '--config', file]);
  second.start();
  await waitFor('the resumed backfill to finish', async () => (await progress()).done === true, 60_000, 50);
  await second.stop();
  assert.equal((await progress()).n, 20_000, 'every row counted once across the two runs');
  const v = await verifyTables(config, pools, tables, 'items');
  assert.equal(v.ok, true);
  assert.match(second.stderr, /backfill items legacy→service/);
});

test('PostgreSQL restarting under a running backfill: it stops with an error that says to rerun (no unhandled rejection), and the rerun completes', async () => {
  const { config, pools, tables, progress } = await backfillPair('bfpgrestart');
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => { unhandled.push(err); };
  process.on('unhandledRejection', onUnhandled);
  try {
    const own = openPools(config);
    const first = runBackfill({ config, pools: own, tables, table: 'items', source: 'legacy', chunkRows: 1_000, maxRowsPerSecond: 4_000 }).finally(() => closePools(own));
    first.catch(() => {});
    await waitFor('some chunks copied', async () => (await progress()).n >= 3_000, 30_000, 20);
    await stack.restartPostgres(5_000); // down longer than apply's transaction retries
    await assert.rejects(first, (err: Error & { code?: string }) => err.code === 'SYNC_BACKFILL_INTERRUPTED' && /run the same command again to resume/.test(err.message));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled.map(String), [], 'no unhandled rejection (the CLI would die with a raw driver stack)');
    const second = await runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 1_000 });
    assert.equal(second.done, true);
    assert.equal(second.rows, 20_000, 'every row counted once across the two runs');
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('backfill sent SIGTERM mid-way (pod evicted, Job deleted) stops after its chunk, exits 1 saying it resumes, and the rerun completes', async () => {
  const { config, file, pools, tables, progress } = await backfillPair('bfsigterm');
  // --rate 1000 with 5000-row chunks: the throttle sleeps ~5 s between chunks, so SIGTERM lands in that sleep.
  const first = new Worker('backfill-term', ['backfill', '--table', 'items', '--rate', '1000', '--config', file]);
  first.start();
  await waitFor('the backfill to copy a chunk', async () => (await progress()).n >= 5_000, 30_000, 20);
  const sent = Date.now();
  await first.stop(); // SIGTERM, SIGKILL after 5 s
  const tookMs = Date.now() - sent;
  assert.deepEqual(first.exit, { code: 1, signal: null }, `it handled SIGTERM and exited 1 (output: ${first.stderr})`);
  assert.ok(tookMs < 4_000, `it stopped promptly (${tookMs} ms), not after the throttle's ~5 s sleep`);
  assert.match(first.stderr, /backfill of items interrupted by SIGTERM at \d+ rows; run the same command again to resume from its checkpoint/);
  const cut = await progress();
  assert.ok(cut.n < 20_000 && !cut.done, `stopped mid-way (${cut.n} rows done)`);
  const copied = (await pools.service.query(`SELECT count(*)::int AS n FROM catalog_items`)).rows[0].n as number;
  assert.equal(copied, cut.n, 'the checkpoint counts exactly the rows committed (no chunk half-written after exit)');
  const second = await runBackfill({ config, pools, tables, table: 'items', source: 'legacy' });
  assert.equal(second.done, true);
  assert.equal(second.rows, 20_000, 'every row counted once across the two runs');
  assert.equal((await pools.service.query(`SELECT count(*)::int AS n FROM catalog_items`)).rows[0].n, 20_000);
  assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
});
