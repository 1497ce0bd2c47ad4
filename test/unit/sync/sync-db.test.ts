/**
 * Database side of the sync on real embedded PostgreSQL, with an in-memory stand-in for Kafka: capture, relay
 * order, apply (versions, dedupe, tombstones, conflicts, dead letters), loop prevention, mapping validation,
 * backfill, verify and repair. The Kafka path and kill -9 crashes are in test/integration/sync/.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import kafkajs from 'kafkajs';
import { idlePollsWal, rowVersions, SERVICE_DDL, startSyncFixture, syncDoc, type SyncFixture } from './fixture.ts';
import { Pipeline, randomWriter } from './load.ts';
import { seededRandom as rng } from '../../../common/random.ts';
import { compileFromDatabases, installCapture, uninstallCapture, captureInstalled } from '../../../legacy-adapter/capture/install.ts';
import { installServiceCapture } from '../../../services/kit/capture.ts';
import { verifyTables } from '../../../migration-scripts/verify.ts';
import { repairFromVerify, retryDeadLetters } from '../../../migration-scripts/repair.ts';
import { runBackfill } from '../../../migration-scripts/backfill.ts';
import { readSyncStatus } from '../../../migration-scripts/status.ts';
import { parseSyncConfig } from '../../../migration-scripts/config.ts';
import type { SyncConfig } from '../../../migration-scripts/config-schema.ts';
import { closePools, namingDatabase, openPools, type Pools } from '../../../migration-scripts/db.ts';
import type { CompiledTable } from '../../../migration-scripts/mapping.ts';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

let fx: SyncFixture;
// autovacuum off: one test measures the WAL an idle relay writes, and WAL is server-wide.
before(async () => { fx = await startSyncFixture({ serverFlags: ['-c', 'autovacuum=off'] }); });
after(async () => { await fx.stop(); });

async function installed(name: string, overrides: Record<string, unknown> = {}): Promise<{ config: SyncConfig; pools: Pools; tables: CompiledTable[]; p: Pipeline }> {
  const { config, pools } = await fx.freshPair(name, overrides);
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installServiceCapture(config, pools);
  return { config, pools, tables, p: new Pipeline(config, pools, tables) };
}

describe('sync on PostgreSQL (memory transport)', () => {
  test('random load on both databases at once converges and verify reports identical', async () => {
    const seed = Number(process.env.SYNC_SEED ?? Date.now() % 1_000_000);
    const { config, pools, tables, p } = await installed('load');
    const r = rng(seed);
    const w = randomWriter(r);
    try {
      for (let round = 0; round < 30; round++) {
        const writes: Promise<void>[] = [];
        for (let i = 0; i < 8; i++) writes.push(w.legacy(pools.legacy, 40), w.service(pools.service, 40));
        await Promise.all(writes);
        if (r() < 0.6) await p.round(Math.ceil(r() * 50));
      }
      await p.settle();
      const v = await verifyTables(config, pools, tables);
      assert.equal(v.ok, true, `seed ${seed}: ${JSON.stringify(v.tables.map((t) => ({ t: t.table, diffs: t.diffs.slice(0, 5) })))}`);
      assert.deepEqual(await rowVersions(pools.service), await rowVersions(pools.legacy), `seed ${seed}: version vectors identical on both sides`);
      const counts = await pools.legacy.query('SELECT count(*)::int AS n FROM items');
      assert.ok(counts.rows[0].n > 0, `seed ${seed}: load wrote rows`);
      const st = await readSyncStatus(config, pools);
      for (const d of st.directions) assert.equal(d.lagEvents, 0, `seed ${seed}: ${d.direction} drained`);
    } catch (err) {
      console.error(`sync random-load seed: ${seed} (rerun with SYNC_SEED=${seed})`);
      throw err;
    }
  });

  test('exact values survive both directions: numerics, zones, json, large text, nulls; unmapped columns kept', async () => {
    const { pools, p } = await installed('values');
    await pools.legacy.query(`INSERT INTO items (id, name, price_cents, body, data, happened_at, first_name, last_name, amount, flag, legacy_only)
      VALUES (1, 'n', 123456789, repeat('é', 100000), '{"b": [1, 2.50, null], "a": {"x": "y"}}', '2024-03-01 10:00:00.123456+05:30', 'Ann', 'Lee', 99999999999999.999999, NULL, 'mine')`);
    await p.settle();
    const s = await pools.service.query(`SELECT price::text, length(body) AS len, data::text, happened_at = '2024-03-01 04:30:00.123456+00' AS ts_ok, full_name, amount::text, flag, service_only FROM catalog_items WHERE item_id = 1`);
    assert.deepEqual(s.rows[0], { price: '1234567.89', len: 100000, data: '{"a": {"x": "y"}, "b": [1, 2.50, null]}', ts_ok: true, full_name: 'Ann Lee', amount: '99999999999999.999999', flag: null, service_only: 'svc' });
    await pools.service.query(`UPDATE catalog_items SET price = 0.01, full_name = 'Bob van Dyke', service_only = 'other' WHERE item_id = 1`);
    await p.settle();
    const l = await pools.legacy.query('SELECT price_cents, first_name, last_name, legacy_only, amount::text FROM items WHERE id = 1');
    assert.deepEqual(l.rows[0], { price_cents: 1, first_name: 'Bob', last_name: 'van Dyke', legacy_only: 'mine', amount: '99999999999999.999999' });
  });

  test('split columns and value maps work both ways; an unmapped value is parked, not written as NULL', async () => {
    const { pools, p, config, tables } = await installed('split');
    await pools.legacy.query(`INSERT INTO notes (id, body, status) VALUES (1, E'Title\\nline one\\nline two', 'open'), (2, NULL, 'done')`);
    await p.settle();
    assert.deepEqual((await pools.service.query('SELECT note_id::int, title, rest, state FROM note_parts ORDER BY note_id')).rows, [
      { note_id: 1, title: 'Title', rest: 'line one\nline two', state: 'OPEN' },
      { note_id: 2, title: null, rest: null, state: 'DONE' },
    ]);
    await pools.service.query(`UPDATE note_parts SET title = 'New', state = 'DONE' WHERE note_id = 1`);
    await p.settle();
    assert.deepEqual((await pools.legacy.query('SELECT body, status FROM notes WHERE id = 1')).rows[0], { body: 'New\nline one\nline two', status: 'done' });
    assert.equal((await verifyTables(config, pools, tables, 'notes')).ok, true);
    await pools.legacy.query(`INSERT INTO notes (id, body, status) VALUES (3, 'x', 'archived')`);
    await p.settle();
    const dl = await pools.service.query(`SELECT pk, reason FROM strangler_sync.dead_letters`);
    assert.equal(dl.rows.length, 1);
    assert.equal(dl.rows[0].pk, '[3]');
    assert.equal((await pools.service.query('SELECT count(*)::int AS n FROM note_parts WHERE note_id = 3')).rows[0].n, 0);
  });

  test('a slow transaction with a lower sequence that commits later is still published, after the faster one', async () => {
    const { pools, p } = await installed('order');
    const slow = await pools.legacy.connect();
    try {
      await slow.query('BEGIN');
      await slow.query(`INSERT INTO items (id, name) VALUES (1, 'slow')`); // takes the lower seq
      await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'fast')`); // higher seq, commits first
      assert.equal(await p.relays.legacy.step(), 1, 'only the committed change is published');
      assert.equal(p.bus.size(), 1);
      await slow.query('COMMIT');
    } finally { slow.release(); }
    assert.equal(await p.relays.legacy.step(), 1, 'the late commit is not skipped');
    await p.settle();
    const rows = await pools.service.query('SELECT item_id::int, title FROM catalog_items ORDER BY item_id');
    assert.deepEqual(rows.rows, [{ item_id: 1, title: 'slow' }, { item_id: 2, title: 'fast' }]);
  });

  test('replayed, duplicated and reordered events change nothing', async () => {
    const { pools, p, config, tables } = await installed('replay');
    for (let i = 1; i <= 20; i++) await pools.legacy.query(`INSERT INTO items (id, name, price_cents) VALUES ($1, 'v1', $2)`, [i, i]);
    for (let i = 1; i <= 20; i += 2) await pools.legacy.query(`UPDATE items SET name = 'v2' WHERE id = $1`, [i]);
    for (let i = 1; i <= 20; i += 5) await pools.legacy.query('DELETE FROM items WHERE id = $1', [i]);
    await p.settle();
    const snapshot = async () => (await pools.service.query('SELECT item_id, title, price FROM catalog_items ORDER BY item_id')).rows;
    const before = await snapshot();
    // Replay from offset 0 (consumer group reset), duplicates of every batch, and every partition reversed.
    p.consumers.legacy.offsets.clear();
    await p.consumers.legacy.drain();
    const all = p.bus.read('strangler.legacy.', new Map(), 10_000).flat();
    await p.appliers.service.applyBatch([...all, ...all]);
    await p.appliers.service.applyBatch([...all].reverse().map((e) => ({ ...e, topic: null, partition: null, offset: null })));
    assert.deepEqual(await snapshot(), before);
    const v = await verifyTables(config, pools, tables);
    assert.equal(v.ok, true);
    const st = await readSyncStatus(config, pools);
    const d = st.directions.find((x) => x.source === 'legacy');
    assert.ok(d && d.duplicates >= all.length * 2, `duplicates counted: ${d?.duplicates}`);
  });

  test('loop prevention: one write yields exactly one event per direction and no echo', async () => {
    const { pools, p } = await installed('loop');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (7, 'x')`);
    assert.equal(await p.relays.legacy.step(), 1);
    await p.consumers.legacy.drain();
    assert.equal(await p.relays.service.step(), 0, 'apply writes are not captured on the service side');
    await pools.service.query(`UPDATE catalog_items SET title = 'y' WHERE item_id = 7`);
    assert.equal(await p.relays.service.step(), 1);
    await p.consumers.service.drain();
    assert.equal(await p.relays.legacy.step(), 0, 'nor on the legacy side');
    // An echo that leaks through (an event fed back to its own side) is a no-op.
    const echoes = p.bus.read('strangler.service.', new Map()).flat();
    const r = await p.appliers.service.applyBatch(echoes);
    assert.equal(r.echoes, echoes.length);
    assert.equal(r.applied, 0);
    for (let i = 0; i < 3; i++) assert.equal(await p.round(), 0, 'quiet after quiescence');
    assert.equal((await pools.legacy.query('SELECT name FROM items WHERE id = 7')).rows[0].name, 'y');
  });

  test('an idle relay polls without writing WAL (no commit and fsync per poll on a quiet database); the next write is published', async () => {
    const { pools, p } = await installed('idle');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`);
    assert.equal(await p.relays.legacy.step(), 1);
    // Before, each poll locked relay_state: a transaction id, a commit record and a WAL flush, ~100 bytes per poll.
    const bytes = await idlePollsWal(pools.legacy, p.relays.legacy);
    assert.ok(bytes < 1024, `40 idle polls wrote ${bytes} bytes of WAL, expected (almost) none`);
    await pools.legacy.query(`UPDATE items SET name = 'b' WHERE id = 1`);
    assert.equal(await p.relays.legacy.step(), 1, 'a write after the quiet spell is published by the next poll');
    assert.equal(p.bus.size(), 2);
  });

  for (const policy of ['owner-wins', 'latest-commit-wins'] as const) {
    test(`conflict: both sides change a row before sync catches up → ${policy} applied, logged and counted`, async () => {
      const { pools, p, config, tables } = await installed(`conflict_${policy.replaceAll('-', '_')}`, { conflicts: { policy } });
      await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'base')`);
      await p.settle();
      await pools.service.query(`UPDATE catalog_items SET title = 'from-service' WHERE item_id = 1`);
      await pools.legacy.query(`UPDATE items SET name = 'from-legacy' WHERE id = 1`); // later commit; legacy owns items
      await pools.legacy.query(`INSERT INTO people (email, city) VALUES ('a@x', 'base')`);
      await p.settle();
      await pools.legacy.query(`UPDATE people SET city = 'legacy-city' WHERE email = 'a@x'`);
      await pools.service.query(`UPDATE persons SET address = '{"street": null, "city": "service-city", "zip": null}' WHERE email = 'a@x'`); // later; service owns people
      await p.settle();
      const item = (await pools.legacy.query('SELECT name FROM items WHERE id = 1')).rows[0].name;
      const city = (await pools.legacy.query(`SELECT city FROM people WHERE email = 'a@x'`)).rows[0].city;
      // owner-wins: items → legacy, people → service. latest-commit-wins: the later write each time.
      assert.equal(item, 'from-legacy');
      assert.equal(city, 'service-city');
      const v = await verifyTables(config, pools, tables);
      assert.equal(v.ok, true, 'both sides converge');
      const logged = await pools.service.query(`SELECT tbl, policy, winner FROM strangler_sync.conflicts ORDER BY id`);
      const logged2 = await pools.legacy.query(`SELECT tbl, policy, winner FROM strangler_sync.conflicts ORDER BY id`);
      const all = [...logged.rows, ...logged2.rows];
      assert.ok(all.some((c) => c.tbl === 'items' && c.winner === 'legacy' && c.policy === policy), JSON.stringify(all));
      assert.ok(all.some((c) => c.tbl === 'people' && c.winner === 'service' && c.policy === policy), JSON.stringify(all));
      const st = await readSyncStatus(config, pools);
      assert.equal(st.directions.reduce((n, d) => n + d.conflicts, 0), all.length, 'each conflict counted');
    });
  }

  test('a local write committing while apply waits for its row is seen: conflict detected, both sides converge', async () => {
    for (const policy of ['owner-wins', 'latest-commit-wins'] as const) {
      const { pools, p, config, tables } = await installed(`race_${policy.replaceAll('-', '_')}`, { conflicts: { policy } });
      await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'base')`);
      await p.settle();
      await pools.legacy.query(`UPDATE items SET name = 'legacy' WHERE id = 1`);
      await p.relays.legacy.step();
      const local = await pools.service.connect();
      try {
        await local.query('BEGIN');
        await local.query(`UPDATE catalog_items SET title = 'service' WHERE item_id = 1`); // holds the row, vector bumped
        const applying = p.consumers.legacy.drain(); // blocks on the row
        // Wait until apply is blocked on the row lock (the race being tested), polling with a deadline.
        const deadline = Date.now() + 10_000;
        for (;;) {
          const w = await pools.service.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
          if (w.rows[0].n > 0) break;
          assert.ok(Date.now() < deadline, 'apply never waited for the locked row');
          await new Promise((r) => setTimeout(r, 10));
        }
        await local.query('COMMIT');
        await applying;
      } finally { local.release(); }
      await p.settle();
      const v = await verifyTables(config, pools, tables);
      assert.equal(v.ok, true, `${policy}: converged`);
      const vectors = async (pool: typeof pools.legacy) => (await pool.query('SELECT tbl, pk, legacy_version, service_version FROM strangler_sync.row_version ORDER BY tbl, pk')).rows;
      assert.deepEqual(await vectors(pools.service), await vectors(pools.legacy));
      const conflicts = (await pools.service.query('SELECT count(*)::int AS n FROM strangler_sync.conflicts')).rows[0].n + (await pools.legacy.query('SELECT count(*)::int AS n FROM strangler_sync.conflicts')).rows[0].n;
      assert.ok(conflicts >= 1, `${policy}: the concurrent write is a conflict, not silently overwritten`);
    }
  });

  test('a delete is not resurrected by a late or replayed insert (tombstones)', async () => {
    const { pools, p } = await installed('tombstone');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`);
    await p.relays.legacy.step();
    const insert = p.bus.read('strangler.legacy.', new Map()).flat();
    await pools.legacy.query('DELETE FROM items WHERE id = 1');
    await p.settle();
    await p.appliers.service.applyBatch(insert.map((e) => ({ ...e, topic: null, partition: null, offset: null })));
    assert.equal((await pools.service.query('SELECT count(*)::int AS n FROM catalog_items')).rows[0].n, 0);
  });

  test('an error about the target database (statement timeout; likewise disk full, read-only) fails the batch instead of parking its events as poison', async () => {
    const urls = { legacy: fx.pg.url('dbfault_legacy'), service: fx.pg.url('dbfault_service') };
    const { pools, p } = await installed('dbfault', { databases: { legacy: { url: urls.legacy }, service: { url: `${urls.service}?options=-c%20statement_timeout%3D2000` } } });
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two')`);
    await p.settle();
    // An application transaction holds item 1 longer than the sync role's statement_timeout.
    const app = await pools.service.connect();
    try {
      await app.query('BEGIN; SET LOCAL statement_timeout = 0; SELECT 1 FROM catalog_items WHERE item_id = 1 FOR UPDATE');
      await pools.legacy.query(`UPDATE items SET name = 'one-new' WHERE id = 1`);
      await pools.legacy.query(`UPDATE items SET name = 'two-new' WHERE id = 2`);
      await assert.rejects(p.settle(), (err: Error & { code?: string }) => err.code === 'SYNC_APPLY_FAILED' && /statement timeout/.test(err.message));
    } finally {
      await app.query('COMMIT');
      app.release();
    }
    assert.equal((await pools.service.query('SELECT count(*)::int AS n FROM strangler_sync.dead_letters')).rows[0].n, 0, 'nothing parked');
    await p.settle();
    assert.deepEqual((await pools.service.query('SELECT title FROM catalog_items ORDER BY item_id')).rows.map((r) => r.title), ['one-new', 'two-new']);
  });

  test('a batch whose transient retries are spent says so, instead of the last error\'s "retrying"', async () => {
    const { p } = await installed('retriesspent');
    let attempts = 0;
    await assert.rejects(p.appliers.service.transaction(async () => {
      attempts += 1;
      throw Object.assign(new Error('concurrent local write to items [1] while applying (the batch is run again so the decision sees it)'), { code: '40001' });
    }), (err: Error & { code?: string }) => err.code === 'SYNC_APPLY_FAILED' && /failed after 8 attempts \(nothing of this batch was written; it is tried again when apply restarts\): concurrent local write/.test(err.message));
    assert.equal(attempts, 8);
  });

  test('a poison event is parked with its reason, later events for its key wait, others flow; repair retries it', async () => {
    const { pools, p, config, tables } = await installed('poison');
    await pools.service.query(`ALTER TABLE catalog_items ADD CONSTRAINT short_title CHECK (length(title) < 10)`);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'much-too-long-title')`);
    await pools.legacy.query(`UPDATE items SET price_cents = 5 WHERE id = 1`);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'fine')`);
    await p.settle();
    const dl = await pools.service.query(`SELECT pk, reason, status FROM strangler_sync.dead_letters ORDER BY id`);
    assert.equal(dl.rows.length, 2);
    assert.match(dl.rows[0].reason, /short_title/);
    assert.match(dl.rows[1].reason, /waiting behind/);
    assert.deepEqual((await pools.service.query('SELECT item_id::int FROM catalog_items')).rows, [{ item_id: 2 }]);
    const st = await readSyncStatus(config, pools);
    assert.equal(st.directions.find((d) => d.source === 'legacy')?.parkedNow, 2);
    // Still failing: nothing changes, nothing dropped.
    assert.deepEqual(await retryDeadLetters({ config, pools, tables, target: 'service' }), { retried: 0, stillParked: 2 });
    await pools.service.query('ALTER TABLE catalog_items DROP CONSTRAINT short_title');
    assert.deepEqual(await retryDeadLetters({ config, pools, tables, target: 'service' }), { retried: 2, stillParked: 0 });
    const row = (await pools.service.query('SELECT title, price::text FROM catalog_items WHERE item_id = 1')).rows[0];
    assert.deepEqual(row, { title: 'much-too-long-title', price: '0.05' });
    // New events for the key flow again.
    await pools.legacy.query(`UPDATE items SET name = 'ok' WHERE id = 1`);
    await p.settle();
    assert.equal((await pools.service.query('SELECT title FROM catalog_items WHERE item_id = 1')).rows[0].title, 'ok');
  });

  test('verify finds corruption injected into one side and repair fixes exactly those keys', async () => {
    const { pools, p, config, tables } = await installed('repair', { verify: { chunkRows: 50, leafRows: 10 } });
    await pools.legacy.query(`INSERT INTO items (id, name, price_cents, amount) SELECT g, 'n' || g, g, g / 7.0 FROM generate_series(1, 2000) g`);
    await pools.legacy.query(`INSERT INTO people (email, city) SELECT 'p' || g || '@x', 'c' FROM generate_series(1, 50) g`);
    await p.settle();
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
    // Corrupt the service side behind sync's back (as a rogue writer that bypasses capture would).
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync';
      UPDATE catalog_items SET price = price + 1 WHERE item_id IN (17, 1500);
      DELETE FROM catalog_items WHERE item_id = 999;
      INSERT INTO catalog_items (item_id, title) VALUES (5000, 'extra');
      UPDATE persons SET address = '{"city": "zzz"}' WHERE email = 'p7@x'; COMMIT`);
    const v = await verifyTables(config, pools, tables);
    assert.equal(v.ok, false);
    const diffs = v.tables.flatMap((t) => t.diffs.map((d) => `${t.table} ${d.key} ${d.kind}`)).sort();
    assert.deepEqual(diffs, ['items [1500] different', 'items [17] different', 'items [5000] missing-on-legacy', 'items [999] missing-on-service', 'people ["p7@x"] different']);
    const before = (await pools.service.query('SELECT item_id, title, price FROM catalog_items WHERE item_id NOT IN (17, 1500, 999, 5000) ORDER BY item_id')).rows;
    const r = await repairFromVerify({ config, pools, tables, verify: v, from: 'legacy' });
    assert.deepEqual(r.tables.map((t) => [t.table, t.rewritten, t.deleted]), [['items', 3, 1], ['people', 1, 0]]);
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
    assert.deepEqual((await pools.service.query('SELECT item_id, title, price FROM catalog_items WHERE item_id NOT IN (17, 1500, 999, 5000) ORDER BY item_id')).rows, before, 'no other key touched');
  });

  test('a backfill leaves no statement timer behind (COPY TO never cleared node-postgres\'s query_timeout, which kept the process alive that long after the backfill)', async () => {
    const urls = { legacy: fx.pg.url('copytimer_legacy'), service: fx.pg.url('copytimer_service') };
    const { config, pools } = await fx.freshPair('copytimer', { databases: { legacy: { url: urls.legacy, queryTimeoutMs: 30_000 }, service: { url: urls.service, queryTimeoutMs: 30_000 } } });
    await pools.legacy.query(`INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 50) g`);
    const tables = await compileFromDatabases(config, pools);
    await installCapture(config, pools, 'legacy', tables);
    await installCapture(config, pools, 'service', tables);
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const own = openPools(config);
    const before = timers();
    assert.equal((await runBackfill({ config, pools: own, tables, table: 'items', source: 'legacy', chunkRows: 20 })).rows, 50);
    await Promise.all([own.legacy.end(), own.service.end()]);
    assert.ok(timers() <= before, `timers left after the three COPY chunks and the pools' end: ${timers() - before}`);
    assert.equal((await pools.service.query('SELECT count(*)::int AS n FROM catalog_items')).rows[0].n, 50);
  });

  test('backfill copies existing rows while live changes flow, resumes after an interruption, and verify agrees', async () => {
    const { config, pools } = await fx.freshPair('backfill');
    await pools.legacy.query(`INSERT INTO items (id, name, price_cents, data) SELECT g, 'n' || g, g, jsonb_build_object('g', g) FROM generate_series(1, 3000) g`);
    const tables = await compileFromDatabases(config, pools);
    await installCapture(config, pools, 'legacy', tables);
    await installCapture(config, pools, 'service', tables);
    const p = new Pipeline(config, pools, tables);
    const first = await runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 500, maxChunks: 2 });
    assert.equal(first.done, false);
    assert.equal(first.rows, 1000);
    // Live changes during the backfill: updates ahead of and behind the cursor, deletes, inserts.
    await pools.legacy.query(`UPDATE items SET name = 'live' WHERE id IN (10, 2500)`);
    await pools.legacy.query('DELETE FROM items WHERE id IN (20, 2600)');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (5000, 'new')`);
    await p.round();
    const progress: number[] = [];
    const second = await runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 500, onProgress: (d) => progress.push(d) });
    assert.equal(second.done, true);
    assert.equal(second.resumedFrom, '[1000]');
    assert.ok(progress.length >= 4);
    await p.settle();
    const v = await verifyTables(config, pools, tables, 'items');
    assert.equal(v.ok, true, JSON.stringify(v.tables[0]?.diffs.slice(0, 5)));
    assert.equal((await pools.service.query(`SELECT title FROM catalog_items WHERE item_id = 2500`)).rows[0].title, 'live');
    const st = await readSyncStatus(config, pools);
    assert.deepEqual(st.backfill.map((b) => [b.table, b.done]), [['items', true]]);
  });

  test('backfill: a local write committed while the chunk waits for its row wins by the version rules; every column type, a text key with quotes and a source-only enum copy exactly', async () => {
    const { config, pools } = await fx.freshPair('backfillrace');
    // An enum that exists only on the legacy side: staged as text, mapped by the value map as live events are.
    await pools.legacy.query(`CREATE TYPE note_status AS ENUM ('open', 'done');
      ALTER TABLE notes ALTER COLUMN status DROP DEFAULT, ALTER COLUMN status TYPE note_status USING status::note_status`);
    await pools.legacy.query(`INSERT INTO items (id, name, price_cents, body, data, happened_at, first_name, last_name, amount, flag)
      SELECT g, 'n' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE g END, repeat('long text ', g % 300), CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'nested', jsonb_build_array(1, 'two', NULL)) END,
             timestamptz '2024-03-31 01:30:00+02' + g * interval '37 minutes', CASE WHEN g % 3 = 0 THEN NULL ELSE 'F' || g END, 'L' || g, g / 3.0, g % 2 = 0
        FROM generate_series(1, 2000) g`);
    await pools.legacy.query(`INSERT INTO notes (id, body, status) SELECT g, 'title ' || g || E'\\nrest', CASE WHEN g % 2 = 0 THEN 'done' ELSE 'open' END::note_status FROM generate_series(1, 300) g`);
    // A text key with quotes and a split address (combine: json), in chunks smaller than the table.
    await pools.legacy.query(`INSERT INTO people (email, street, city, zip, updated) SELECT 'o''brien.' || g || '@x', 'street ' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'city' END, lpad(g::text, 5, '0'), timestamp '2024-01-01 12:00:00.123456' + g * interval '1 hour' FROM generate_series(1, 250) g`);
    const tables = await compileFromDatabases(config, pools);
    await installCapture(config, pools, 'legacy', tables);
    await installServiceCapture(config, pools);
    const p = new Pipeline(config, pools, tables);

    // A local write on the service holds key 1500 uncommitted: the chunk's insert of 1500 must wait for it.
    const local = await pools.service.connect();
    try {
      await local.query('BEGIN');
      await local.query(`INSERT INTO catalog_items (item_id, title) VALUES (1500, 'local write')`);
      const running = runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 1000 });
      const deadline = Date.now() + 20_000;
      for (;;) {
        const waiting = await pools.service.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO%catalog_items%'`);
        if (waiting.rows[0].n > 0) break;
        assert.ok(Date.now() < deadline, 'the backfill chunk never waited for the local write');
        await new Promise((r) => setTimeout(r, 10));
      }
      await local.query('COMMIT');
      const result = await running;
      assert.equal(result.done, true);
      assert.equal(result.rows, 2000);
    } finally {
      // On a failed assertion the local transaction may still hold key 1500: end it so the backfill can finish.
      await local.query('ROLLBACK').catch(() => {});
      local.release();
    }
    // The local write is newer than the snapshot as far as the version vectors know: it stays, and it syncs back.
    assert.equal((await pools.service.query('SELECT title FROM catalog_items WHERE item_id = 1500')).rows[0].title, 'local write');
    await p.settle();
    assert.equal((await pools.legacy.query('SELECT name FROM items WHERE id = 1500')).rows[0].name, 'local write');
    assert.equal((await runBackfill({ config, pools, tables, table: 'notes', source: 'legacy', chunkRows: 128 })).rows, 300);
    assert.equal((await runBackfill({ config, pools, tables, table: 'people', source: 'legacy', chunkRows: 64 })).rows, 250);
    const v = await verifyTables(config, pools, tables);
    assert.equal(v.ok, true, JSON.stringify(v.tables.map((t) => ({ t: t.table, diffs: t.diffs.slice(0, 5) }))));
    assert.deepEqual((await pools.service.query(`SELECT state, count(*)::int AS n FROM note_parts GROUP BY state ORDER BY state`)).rows, [{ state: 'DONE', n: 150 }, { state: 'OPEN', n: 150 }]);
  });

  test('backfill: two chunks in flight that both hold keys the target knows do not wait on each other', async () => {
    const { config, pools, tables, p } = await installed('backfillpair');
    await pools.legacy.query(`INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 200) g`);
    // Keys 50 (first chunk) and 150 (second chunk) get version vectors on the service through live sync first.
    await pools.legacy.query(`UPDATE items SET name = 'live' WHERE id IN (50, 150)`);
    await p.settle();
    // ... and change again on legacy, not relayed yet: the snapshot is newer than what the service holds, so the
    // per-event path writes both keys.
    await pools.legacy.query(`UPDATE items SET name = 'newer' WHERE id IN (50, 150)`);
    // Hold key 50 on the service (no write): the first chunk's per-event path waits for it while the second chunk
    // runs ahead and parks (idle in its transaction) until the first commits. Then let the first go on.
    const holder = await pools.service.connect();
    const pid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM catalog_items WHERE item_id = 50 FOR UPDATE');
    let released = false;
    try {
      const running = runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 100, maxLagEvents: 0 });
      const deadline = Date.now() + 20_000;
      for (;;) {
        const a = await pools.service.query<{ waiting: number; idle: number }>(
          `SELECT count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS waiting,
                  count(*) FILTER (WHERE state = 'idle in transaction' AND pid <> $1 AND clock_timestamp() - state_change > interval '300 ms')::int AS idle
             FROM pg_stat_activity WHERE datname = current_database()`, [pid]);
        if ((a.rows[0]?.waiting ?? 0) > 0 && (a.rows[0]?.idle ?? 0) > 0) break;
        assert.ok(Date.now() < deadline, 'the two chunks never reached the expected points');
        await new Promise((r) => setTimeout(r, 10));
      }
      await holder.query('COMMIT');
      released = true;
      let timer: NodeJS.Timeout | undefined;
      const result = await Promise.race([running, new Promise<'stuck'>((r) => { timer = setTimeout(() => r('stuck'), 15_000); })]);
      clearTimeout(timer);
      if (result === 'stuck') {
        await pools.service.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`);
        assert.fail('backfill deadlocked: the newer chunk held a lock the older one needed while it waited for the older one to commit');
      }
      assert.equal(result.done, true);
      assert.equal(result.rows, 200);
    } finally {
      if (!released) await holder.query('ROLLBACK').catch(() => {});
      holder.release();
    }
    assert.deepEqual((await pools.service.query('SELECT title FROM catalog_items WHERE item_id IN (50, 150) ORDER BY item_id')).rows.map((r) => r.title), ['newer', 'newer']);
    await p.settle();
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
  });

  test('backfill of a table with a foreign key to itself goes one chunk at a time: earlier references copy, a forward one is a clear error', async () => {
    const selfRefPair = async (name: string, rows: string) => {
      const tablesDoc = (syncDoc({ legacy: '', service: '' }) as { sync: { tables: { name: string; columns: unknown[] }[] } }).sync.tables;
      tablesDoc.find((t) => t.name === 'items')?.columns.push({ legacy: 'parent', service: 'parent_id' });
      const { config, pools } = await fx.freshPair(name, { tables: tablesDoc });
      await pools.legacy.query('ALTER TABLE items ADD COLUMN parent bigint');
      await pools.service.query('ALTER TABLE catalog_items ADD COLUMN parent_id bigint REFERENCES catalog_items (item_id)');
      await pools.legacy.query(`INSERT INTO items (id, name, parent) ${rows}`);
      const tables = await compileFromDatabases(config, pools);
      await installCapture(config, pools, 'legacy', tables);
      await installServiceCapture(config, pools);
      return { config, pools, tables };
    };
    // Every row after the first references one a little earlier, often in the chunk before its own.
    const back = await selfRefPair('backfillselfref', `SELECT g, 'n' || g, CASE WHEN g = 1 THEN NULL ELSE greatest(1, g - 1 - (g % 7)) END FROM generate_series(1, 600) g`);
    const result = await runBackfill({ ...back, table: 'items', source: 'legacy', chunkRows: 50, maxLagEvents: 0 });
    assert.deepEqual([result.done, result.rows, result.chunks], [true, 600, 12]);
    assert.equal((await back.pools.service.query('SELECT count(*)::int AS n FROM catalog_items WHERE parent_id IS NOT NULL')).rows[0].n, 599);
    assert.equal((await verifyTables(back.config, back.pools, back.tables, 'items')).ok, true);
    // Row 40 references row 60 of the next chunk. Two chunks in flight could each wait for the other (a hang);
    // one at a time, the first chunk fails on the foreign key and says so.
    const fwd = await selfRefPair('backfillselffwd', `SELECT g, 'n' || g, CASE WHEN g = 40 THEN 60 END FROM generate_series(1, 100) g`);
    await assert.rejects(runBackfill({ ...fwd, table: 'items', source: 'legacy', chunkRows: 50, maxLagEvents: 0 }), /foreign key/);
  });

  test('bad config: unknown table, unknown column, type that cannot map → clear errors, nothing installed', async () => {
    const { urls, pools } = await fx.freshPair('badcfg');
    const doc = syncDoc(urls) as { sync: { tables: Record<string, unknown>[] } };
    const bad = structuredClone(doc);
    bad.sync.tables[0] = { ...bad.sync.tables[0], service: { table: 'no_such_table', key: ['item_id'] } };
    const t1 = bad.sync.tables[1] as { columns: Record<string, unknown>[] };
    t1.columns[2] = { legacy: 'updatd', service: 'updated' };
    bad.sync.tables.push({ name: 'typed', legacy: { table: 'items', key: ['id'] }, service: { table: 'persons', key: ['email'] }, columns: [{ legacy: 'id', service: 'email' }, { legacy: 'flag', service: 'updated' }] });
    const config = parseSyncConfig(bad).sync;
    await assert.rejects(compileFromDatabases(config, pools), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SYNC_MAPPING_INVALID');
      assert.match(err.message, /sync\.tables\[0\]\.service\.table: unknown table "no_such_table"/);
      assert.match(err.message, /unknown column "updatd" in legacy table public\.people/);
      assert.match(err.message, /type that cannot map: legacy flag boolean ↔ service updated timestamp without time zone/);
      return true;
    });
    await assert.rejects(installCapture(config, pools, 'legacy'), /SYNC_MAPPING_INVALID|unknown table/);
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), false);
    const schema = await pools.legacy.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'strangler_sync'`);
    assert.equal(schema.rows[0].n, 0, 'no state schema created');
    assert.throws(() => parseSyncConfig({ sync: { ...doc.sync, conflicts: { policy: 'coin-flip' } } }), /sync\.conflicts\.policy/);
  });

  test('issue: a database that cannot be reached or entered failed sync commands without saying which of the two; a malformed URL echoed its password', async () => {
    const { urls } = await fx.freshPair('whichdb');
    const wrong = new URL(urls.legacy);
    wrong.password = 'S3CRET-pw';
    const config = parseSyncConfig(syncDoc({ legacy: wrong.toString(), service: urls.service })).sync;
    const err = await namingDatabase(config, Object.assign(new Error('password authentication failed for user "postgres"'), { code: '28P01' })) as Error & { code?: string };
    assert.equal(err.code, 'SYNC_DATABASE_UNAVAILABLE');
    assert.match(err.message, /^cannot use sync\.databases\.legacy\.url \(postgres:\/\/[^:]+:\[redacted\]@[^)]+\): 28P01: password authentication failed for user "postgres"\. Check the URL, the password/);
    assert.doesNotMatch(err.message, /sync\.databases\.service|S3CRET/, 'the service side answers; no password');
    // The CLI says so too (sync commands catch it on their way out).
    const file = join(mkdtempSync(join(tmpdir(), 'whichdb-')), 'strangler.json');
    writeFileSync(file, JSON.stringify(syncDoc({ legacy: wrong.toString(), service: urls.service })));
    const cli = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cli/main.ts'), 'sync', 'verify', '--config', file], { cwd: REPO_ROOT, timeout: 60_000 })
      .then(() => ({ code: 0, stderr: '' }), (e: { code?: number; stderr?: string }) => ({ code: e.code ?? -1, stderr: e.stderr ?? '' }));
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /strangler: SYNC_DATABASE_UNAVAILABLE: cannot use sync\.databases\.legacy\.url \(.*\): 28P01/);
    assert.doesNotMatch(cli.stderr, /S3CRET/);
    const statement = Object.assign(new Error('division by zero'), { code: '22012' });
    assert.equal(await namingDatabase(config, statement), statement, 'an error about a statement is left as it is');
    // A Kafka connection lost (a broker restarting) is not about a database: CI's crash matrix saw apply exit with
    // "SYNC_DATABASE_UNAVAILABLE: cannot use one of the databases (both answer now): Connection error: read ECONNRESET".
    const { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded } = kafkajs; // (spread into module.exports: no named import)
    const kafkaReset = new KafkaJSConnectionError('Connection error: read ECONNRESET', { broker: '127.0.0.1:9092', code: 'ECONNRESET' });
    assert.equal(await namingDatabase(config, kafkaReset), kafkaReset, 'a Kafka connection error is left as it is');
    const kafkaGaveUp = new KafkaJSNumberOfRetriesExceeded(kafkaReset, { retryCount: 5, retryTime: 1_000 });
    assert.equal(await namingDatabase(config, kafkaGaveUp), kafkaGaveUp, 'and so is kafkajs giving up on one');
    // A database's error thrown inside kafkajs's consumer (apply's batch) is still about the database.
    const wrapped = await namingDatabase(config, new KafkaJSNumberOfRetriesExceeded(Object.assign(new Error('password authentication failed for user "postgres"'), { code: '28P01' }), { retryCount: 5, retryTime: 1_000 })) as Error & { code?: string };
    assert.equal(wrapped.code, 'SYNC_DATABASE_UNAVAILABLE');
    assert.match(wrapped.message, /sync\.databases\.legacy\.url .*28P01/);
    assert.throws(() => parseSyncConfig(syncDoc({ legacy: 'postgres//u:S3CRET-pw@db:5432/x', service: urls.service })), (e: Error) =>
      /sync\.databases\.legacy\.url: expected a postgres:\/\/user:password@host:5432\/database URL, found string "\[redacted\]@db:5432\/x"/.test(e.message) && !e.message.includes('S3CRET'));
  });

  test('both sides configured on one database (same state schema) are refused before anything is installed: the second install used to replace the first side\'s capture functions, failing every application write', async () => {
    const { urls, pools: own } = await fx.freshPair('onedb');
    await own.legacy.query(SERVICE_DDL); // the service's tables next to the legacy ones
    // Another spelling of the same database (127.0.0.1 vs localhost), as host aliases or a proxy would give.
    const alias = new URL(urls.legacy);
    alias.hostname = alias.hostname === 'localhost' ? '127.0.0.1' : 'localhost';
    const config = parseSyncConfig(syncDoc({ legacy: urls.legacy, service: alias.toString() })).sync;
    const pools = openPools(config);
    try {
      const tables = await compileFromDatabases(config, pools);
      for (const side of ['legacy', 'service'] as const) {
        await assert.rejects(installCapture(config, pools, side, tables), (err: Error & { code?: string }) => {
          assert.equal(err.code, 'SYNC_UNSUPPORTED');
          assert.match(err.message, new RegExp(`reach the same database \\("onedb_legacy"\\).*Nothing was installed on the ${side} database.*own database`));
          return true;
        });
      }
      assert.equal((await pools.legacy.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'strangler_sync'`)).rows[0].n, 0, 'nothing installed');
      await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`); // the application's writes go on
      // Two databases on one server are fine (the usual setup of the tests).
      const apart = await fx.freshPair('twodb');
      await installCapture(apart.config, apart.pools, 'legacy');
      await installCapture(apart.config, apart.pools, 'service');
    } finally {
      await closePools(pools);
    }
  });

  test('the owner of a table comes from its own owner, else its route, else the default', async () => {
    const { urls, pools } = await fx.freshPair('owners');
    const doc = syncDoc(urls, { ownership: { default: 'legacy', routes: { 'items-write': 'service' } } }) as { sync: { tables: Record<string, unknown>[] } };
    doc.sync.tables[0] = { ...doc.sync.tables[0], route: 'items-write' };
    doc.sync.tables[2] = { ...doc.sync.tables[2], route: 'unknown-route' };
    const tables = await compileFromDatabases(parseSyncConfig(doc).sync, pools);
    assert.deepEqual(tables.map((t) => [t.name, t.owner]), [['items', 'service'], ['people', 'service'], ['notes', 'legacy']]);
  });

  test('uninstall removes triggers and state cleanly; TRUNCATE is refused while installed', async () => {
    const { config, pools } = await installed('uninstall');
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), true);
    await assert.rejects(pools.legacy.query('TRUNCATE items'), /TRUNCATE of items is not captured/);
    await uninstallCapture(config, pools, 'legacy');
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), false);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'after')`);
    const fns = await pools.legacy.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'strangler_sync'`);
    assert.equal(fns.rows[0].n, 0);
  });
  test('issue: a session with session_replication_role = replica wrote past the capture trigger, and a trigger disabled by hand went unnoticed', async () => {
    const { config, pools, tables, p } = await installed('captureoff');
    // Replica role (restores, some bulk tools): the trigger fires ALWAYS, so the write is captured.
    const client = await pools.legacy.connect();
    try {
      await client.query('SET session_replication_role = replica');
      await client.query(`INSERT INTO items (id, name) VALUES (1, 'as replica')`);
    } finally {
      await client.query('RESET session_replication_role');
      client.release();
    }
    await p.settle();
    assert.deepEqual((await pools.service.query('SELECT title FROM catalog_items WHERE item_id = 1')).rows, [{ title: 'as replica' }]);
    assert.equal((await readSyncStatus(config, pools)).directions.find((d) => d.source === 'legacy')?.broken, null);

    // Disabled by hand (a bulk load): status reports the direction broken, naming the table and the way back.
    await pools.legacy.query('ALTER TABLE items DISABLE TRIGGER strangler_capture');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'while off')`);
    const off = (await readSyncStatus(config, pools)).directions.find((d) => d.source === 'legacy')?.broken;
    assert.equal(off?.code, 'SYNC_CAPTURE_OFF');
    assert.match(off?.message ?? '', /"public"\."items": its capture trigger strangler_capture is disabled .*capture install --side legacy.*repair --from legacy/);
    assert.equal((await readSyncStatus(config, pools)).directions.find((d) => d.source === 'service')?.broken, null, 'the other direction is fine');

    // Install puts it back (ENABLE ALWAYS); verify finds the row written meanwhile and repair copies it.
    await installCapture(config, pools, 'legacy', tables);
    assert.equal((await pools.legacy.query(`SELECT tgenabled::text AS e FROM pg_trigger WHERE tgname = 'strangler_capture' AND tgrelid = 'items'::regclass`)).rows[0]?.e, 'A');
    assert.equal((await readSyncStatus(config, pools)).directions.find((d) => d.source === 'legacy')?.broken, null);
    const v = await verifyTables(config, pools, tables);
    assert.deepEqual(v.tables.find((t) => t.table === 'items')?.diffs.map((d) => d.key), ['[2]']);
    await repairFromVerify({ config, pools, tables, verify: v, from: 'legacy' });
    await p.settle();
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
  });

  test('reinstalling capture on one side: its later changes are applied, not dropped as stale (versions start at the install time)', async () => {
    const { config, pools, tables, p } = await installed('reinstall');
    for (let i = 0; i < 5; i++) await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'v1') ON CONFLICT (id) DO UPDATE SET name = 'v' || $1`, [i]);
    await p.settle();
    await uninstallCapture(config, pools, 'legacy');
    await installCapture(config, pools, 'legacy', tables);
    const p2 = new Pipeline(config, pools, tables);
    await pools.legacy.query(`UPDATE items SET name = 'after reinstall' WHERE id = 1`);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'new')`);
    await p2.settle();
    const titles = await pools.service.query('SELECT item_id, title FROM catalog_items ORDER BY 1');
    assert.deepEqual(titles.rows.map((r) => `${r.item_id}:${r.title}`), ['1:after reinstall', '2:new']);
    assert.equal((await pools.service.query(`SELECT stale::int AS n FROM strangler_sync.apply_stats WHERE source = 'legacy'`)).rows[0].n, 0);
    // Versions are microseconds now: beyond 32 bits, still exact through the event's JSON and apply (both sides equal).
    const vectors = async (pool: typeof pools.legacy) => (await pool.query('SELECT tbl, pk, legacy_version::text, service_version::text FROM strangler_sync.row_version ORDER BY tbl, pk')).rows;
    assert.deepEqual(await vectors(pools.service), await vectors(pools.legacy));
    assert.ok(Number((await vectors(pools.legacy))[0]?.legacy_version) > 2 ** 50);
  });
});
