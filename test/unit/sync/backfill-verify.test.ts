/**
 * Backfill, verify and repair under the races and value shapes a live migration meets, on real embedded PostgreSQL
 * with the in-memory transport: a delete applied while a backfill chunk holding its key is still open, verify's
 * comparisons, and repair's choice of keys.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSyncFixture, type SyncFixture } from './fixture.ts';
import { Pipeline } from './load.ts';
import { compileFromDatabases, installCapture } from '../../../legacy-adapter/capture/install.ts';
import { runBackfill } from '../../../migration-scripts/backfill.ts';
import { verifyTables } from '../../../migration-scripts/verify.ts';
import { repairFromVerify } from '../../../migration-scripts/repair.ts';
import type { Pools } from '../../../migration-scripts/db.ts';
import { waitFor } from '../../helpers/wait.ts';

let fx: SyncFixture;
before(async () => { fx = await startSyncFixture(); });
after(async () => { await fx.stop(); });

/**
 * A fresh pair with `seed` run on legacy before capture is installed (rows for backfill to copy), and `serviceDdl` on
 * the service before the mapping is compiled (a column type that differs from the fixture's).
 */
async function installed(name: string, seed = '', overrides: Record<string, unknown> = {}, serviceDdl = '') {
  const { config, pools, urls } = await fx.freshPair(name, overrides);
  if (seed) await pools.legacy.query(seed);
  if (serviceDdl) await pools.service.query(serviceDdl);
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installCapture(config, pools, 'service', tables);
  return { config, pools, urls, tables, p: new Pipeline(config, pools, tables) };
}


describe('backfill under live changes', () => {
  test('a source delete applied while the chunk that copied the row is still open is not undone by the chunk (no resurrection)', async () => {
    const { config, pools, tables, p } = await installed('bfdel', `INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 10) g`);
    // Hold the chunk just before its commit: its cursor update waits for an advisory lock this test holds.
    await pools.service.query(`CREATE FUNCTION public.hold_chunk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$;
      CREATE TRIGGER hold_chunk BEFORE UPDATE ON strangler_sync.backfill FOR EACH ROW EXECUTE FUNCTION public.hold_chunk()`);
    const holder = await pools.service.connect();
    let held = true;
    try {
      await holder.query('SELECT pg_advisory_lock(4242)');
      const running = runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 100, maxLagEvents: 0 });
      await waitFor('the chunk to wait before its commit', async () => (await pools.service.query(
        `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted`)).rows[0].n > 0);
      // The chunk copied key 3; now the source deletes it and live sync applies the delete to the service.
      await pools.legacy.query('DELETE FROM items WHERE id = 3');
      let applied = false;
      const applying = p.settle().then(() => { applied = true; });
      // Apply either finishes (deleting nothing: the chunk's row is invisible to it) or waits for the open chunk.
      await waitFor('apply of the delete to finish or wait for the chunk', async () => applied || (await pools.service.query(
        `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid <> 4242 AND NOT granted`)).rows[0].n > 0);
      await holder.query('SELECT pg_advisory_unlock(4242)');
      held = false;
      assert.equal((await running).done, true);
      await applying;
      await p.settle();
    } finally {
      if (held) await holder.query('SELECT pg_advisory_unlock(4242)').catch(() => {});
      holder.release();
    }
    assert.deepEqual((await pools.service.query('SELECT item_id::int AS id FROM catalog_items WHERE item_id = 3')).rows, [], 'key 3 was deleted on legacy and must not exist on the service');
    const v = await verifyTables(config, pools, tables, 'items');
    assert.equal(v.ok, true, JSON.stringify(v.tables[0]?.diffs));
  });
});

/** `pools` whose `side` pool hands out its next connection only once `open()` is called (the first `connect()` is held). */
function gatedPools(pools: Pools, side: 'legacy' | 'service'): { pools: Pools; reached: Promise<void>; open: () => void } {
  let open = () => {};
  let reach = () => {};
  const gate = new Promise<void>((r) => { open = r; });
  const reached = new Promise<void>((r) => { reach = r; });
  let first = true;
  const pool = pools[side];
  const gated = new Proxy(pool, {
    get(target, prop, receiver) {
      if (prop === 'connect') {
        return async () => {
          if (first) { first = false; reach(); await gate; }
          return target.connect();
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { pools: { ...pools, [side]: gated }, reached, open };
}

describe('repair against live changes', () => {
  for (const change of ['update', 'delete', 'reinsert'] as const) {
    test(`a source ${change} applied live between repair's read and its write is not undone by the older image`, async () => {
      const { config, pools, tables, p } = await installed(`rp${change}`);
      await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'v1'), (2, 'v2')`);
      if (change === 'reinsert') await pools.legacy.query('DELETE FROM items WHERE id = 1');
      await p.settle();
      // Corruption behind sync's back on the service, which verify reports.
      await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync';
        ${change === 'reinsert' ? `INSERT INTO catalog_items (item_id, title) VALUES (1, 'rogue')` : `UPDATE catalog_items SET title = 'rogue' WHERE item_id = 1`}; COMMIT`);
      const v = await verifyTables(config, pools, tables, 'items');
      assert.deepEqual(v.tables[0]?.diffs.map((d) => d.key), ['[1]']);
      // Repair reads legacy's key 1, then (before it writes) legacy changes key 1 and live sync applies that.
      const g = gatedPools(pools, 'service');
      const repairing = repairFromVerify({ config, pools: g.pools, tables, verify: v });
      await g.reached;
      if (change === 'update') await pools.legacy.query(`UPDATE items SET name = 'newer' WHERE id = 1`);
      if (change === 'delete') await pools.legacy.query('DELETE FROM items WHERE id = 1');
      if (change === 'reinsert') await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'back')`);
      await p.settle();
      g.open();
      await repairing;
      await p.settle();
      const legacy = (await pools.legacy.query('SELECT id::int AS id, name FROM items ORDER BY id')).rows;
      const service = (await pools.service.query('SELECT item_id::int AS id, title AS name FROM catalog_items ORDER BY item_id')).rows;
      assert.deepEqual(service, legacy, 'the service must hold what legacy holds');
      assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
    });
  }
});

describe('verify sees what the mapping cannot hold', () => {
  test('a text longer than the target varchar(n) is refused (parked, reported by verify), never written truncated', async () => {
    const { config, pools, tables, p } = await installed('vtrunc', '', {}, 'ALTER TABLE catalog_items ALTER COLUMN title TYPE varchar(5)');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'short'), (2, 'abcdefgh')`);
    await p.settle();
    assert.deepEqual((await pools.service.query('SELECT item_id::int AS id, title FROM catalog_items ORDER BY item_id')).rows, [{ id: 1, title: 'short' }]);
    const parked = (await pools.service.query<{ pk: string; reason: string }>(`SELECT pk, reason FROM strangler_sync.dead_letters WHERE status = 'parked'`)).rows;
    assert.deepEqual(parked.map((d) => d.pk), ['[2]']);
    assert.match(parked[0]?.reason ?? '', /too long for type character varying\(5\)/);
    // A row that fitted, then grew: the service keeps the old text, and verify names the key.
    await pools.legacy.query(`UPDATE items SET name = 'longer now' WHERE id = 1`);
    await p.settle();
    assert.equal((await pools.service.query('SELECT title FROM catalog_items WHERE item_id = 1')).rows[0].title, 'short');
    const v = await verifyTables(config, pools, tables, 'items');
    assert.deepEqual(v.tables[0]?.diffs.map((d) => `${d.key} ${d.kind}`).sort(), ['[1] different', '[2] missing-on-service']);
  });

  test('a value the target column would round (numeric scale, timestamp precision, whole cents) is parked, never stored rounded, and verify does not call a rounded copy identical', async () => {
    const { config, pools, tables, p } = await installed('vround', '', {},
      'ALTER TABLE catalog_items ALTER COLUMN amount TYPE numeric(20,2), ALTER COLUMN happened_at TYPE timestamptz(0), ALTER COLUMN price TYPE numeric');
    await pools.legacy.query(`INSERT INTO items (id, name, amount, happened_at) VALUES
      (1, 'fits', 1.25, '2024-01-01 10:00:00+00'), (2, 'scale', 1.234567, NULL), (3, 'precision', NULL, '2024-01-01 10:00:00.654321+00')`);
    await p.settle();
    assert.deepEqual((await pools.service.query('SELECT item_id::int AS id, amount::text AS amount FROM catalog_items ORDER BY item_id')).rows, [{ id: 1, amount: '1.25' }]);
    const parked = (await pools.service.query<{ pk: string; reason: string }>(`SELECT pk, reason FROM strangler_sync.dead_letters WHERE status = 'parked' ORDER BY pk`)).rows;
    assert.deepEqual(parked.map((d) => d.pk), ['[2]', '[3]']);
    assert.match(parked[0]?.reason ?? '', /value 1\.234567 of legacy items\.amount numeric\(20,6\) does not fit service catalog_items\.amount numeric\(20,2\) without rounding/);
    assert.match(parked[1]?.reason ?? '', /does not fit service catalog_items\.happened_at timestamp\(0\) with time zone without rounding/);
    // The other way: 12.345 on the service would be 1235 cents on legacy; legacy keeps what it had.
    await pools.service.query(`UPDATE catalog_items SET price = 12.345 WHERE item_id = 1`);
    await p.settle();
    assert.equal((await pools.legacy.query('SELECT price_cents FROM items WHERE id = 1')).rows[0].price_cents, null);
    assert.match((await pools.legacy.query(`SELECT reason FROM strangler_sync.dead_letters WHERE status = 'parked'`)).rows[0]?.reason ?? '', /does not fit legacy items\.price_cents integer as cents/);
    // Rounded copies written behind sync's back are differences, not "identical".
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync';
      INSERT INTO catalog_items (item_id, title, amount, happened_at) VALUES (2, 'scale', 1.23, NULL), (3, 'precision', NULL, '2024-01-01 10:00:01+00');
      UPDATE catalog_items SET price = NULL WHERE item_id = 1; COMMIT`);
    const v = await verifyTables(config, pools, tables, 'items');
    assert.deepEqual(v.tables[0]?.diffs.map((d) => `${d.key} ${d.kind}`).sort(), ['[2] different', '[3] different']);
    // Backfill refuses such a row too, naming it, instead of copying it rounded.
    const b = await installed('vroundbf', `INSERT INTO items (id, name, amount) VALUES (1, 'scale', 1.234567)`, {}, 'ALTER TABLE catalog_items ALTER COLUMN amount TYPE numeric(20,2)');
    await assert.rejects(runBackfill({ config: b.config, pools: b.pools, tables: b.tables, table: 'items', source: 'legacy', chunkRows: 100, maxLagEvents: 0 }),
      /value 1\.234567 of legacy items\.amount numeric\(20,6\) does not fit service catalog_items\.amount numeric\(20,2\)/);
    assert.equal((await b.pools.service.query('SELECT count(*)::int AS n FROM catalog_items')).rows[0].n, 0);
  });

  test('numbers equal in value but printed with another scale (numeric(20,6) against numeric) are the same; a different value is not', async () => {
    const { config, pools, tables, p } = await installed('vscale', '', {}, 'ALTER TABLE catalog_items ALTER COLUMN amount TYPE numeric');
    // Written on the service as 2.5 (and 0, 100): legacy stores 2.500000; both hold the same number.
    await pools.service.query(`INSERT INTO catalog_items (item_id, title, amount) VALUES (1, 'a', 2.5), (2, 'b', 0), (3, 'c', 100), (4, 'd', -0.125)`);
    await pools.legacy.query(`INSERT INTO items (id, name, amount) VALUES (5, 'e', 7.25)`);
    await p.settle();
    assert.equal((await pools.legacy.query('SELECT amount::text AS a FROM items WHERE id = 1')).rows[0].a, '2.500000');
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true, 'no false difference from the scale');
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; UPDATE catalog_items SET amount = 2.5000001 WHERE item_id = 1; COMMIT`);
    assert.deepEqual((await verifyTables(config, pools, tables, 'items')).tables[0]?.diffs, [{ key: '[1]', kind: 'different' }]);
  });
});

describe('values a JSON image does not hold as they are (float -0, NaN, ±Infinity, JSON null)', () => {
  const ddl = 'CREATE TABLE vals (id bigint PRIMARY KEY, f8 float8, f4 float4, n numeric, j jsonb, js json)';
  const vals = { tables: [{ name: 'vals', legacy: { table: 'vals', key: ['id'] }, service: { table: 'vals', key: ['id'] },
    columns: ['id', 'f8', 'f4', 'n', 'j', 'js'].map((c) => ({ legacy: c, service: c })) }] };
  const rows = `INSERT INTO vals VALUES (1, '-0', '-0', 0, '{"a": 1}', '[1]'), (2, 'NaN', 'NaN', 'NaN', NULL, NULL),
    (3, 'Infinity', 'Infinity', 'Infinity', '{"a": null}', '{"a": null}'), (4, '-Infinity', '-Infinity', '-Infinity', '1', '1'), (5, 1.5, 1.5, 1.5, 'null', 'null')`;
  const dump = `SELECT id::int, f8::text, f4::text, n::text, j::text, js::text, j IS NULL AS j_sql_null, js IS NULL AS js_sql_null FROM vals ORDER BY id`;

  test('live sync, verify and repair copy a float -0 as -0 and NaN/±Infinity as they are; JSON null taken for SQL NULL by live sync is reported and repaired', async () => {
    const { config, pools, tables, p } = await installed('fvals', ddl, vals, ddl);
    await pools.legacy.query(rows);
    await p.settle();
    const service = (await pools.service.query(dump)).rows;
    assert.deepEqual(service.map((r) => [r.f8, r.f4, r.n]), [['-0', '-0', '0'], ['NaN', 'NaN', 'NaN'], ['Infinity', 'Infinity', 'Infinity'], ['-Infinity', '-Infinity', '-Infinity'], ['1.5', '1.5', '1.5']]);
    // An update from 0 to -0 is a change too (the images differ).
    await pools.legacy.query(`UPDATE vals SET f8 = 0 WHERE id = 1`);
    await p.settle();
    assert.equal((await pools.service.query('SELECT f8::text AS f FROM vals WHERE id = 1')).rows[0].f, '0');
    await pools.legacy.query(`UPDATE vals SET f8 = '-0' WHERE id = 1`);
    await p.settle();
    assert.equal((await pools.service.query('SELECT f8::text AS f FROM vals WHERE id = 1')).rows[0].f, '-0');
    // Live capture's image cannot tell JSON null from SQL NULL (row 5): verify says so, repair writes what legacy holds.
    assert.deepEqual([service[4]?.j_sql_null, service[4]?.js_sql_null], [true, true]);
    const v = await verifyTables(config, pools, tables, 'vals');
    assert.deepEqual(v.tables[0]?.diffs, [{ key: '[5]', kind: 'different' }]);
    await repairFromVerify({ config, pools, tables, verify: v });
    assert.deepEqual((await pools.service.query(dump)).rows, (await pools.legacy.query(dump)).rows);
    assert.equal((await verifyTables(config, pools, tables, 'vals')).ok, true);
    // And a float -0 written behind sync's back as 0 is a difference that repair clears.
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; UPDATE vals SET f4 = 0 WHERE id = 1; COMMIT`);
    const v2 = await verifyTables(config, pools, tables, 'vals');
    assert.deepEqual(v2.tables[0]?.diffs, [{ key: '[1]', kind: 'different' }]);
    await repairFromVerify({ config, pools, tables, verify: v2 });
    assert.equal((await verifyTables(config, pools, tables, 'vals')).ok, true);
    assert.equal((await pools.service.query('SELECT f4::text AS f FROM vals WHERE id = 1')).rows[0].f, '-0');
  });

  test('backfill copies them exactly, JSON null included, both for new keys and for keys live sync already knows', async () => {
    const { config, pools, tables, p } = await installed('fvalsbf', `${ddl}; ${rows}`, vals, ddl);
    // Keys 1 and 5 changed on legacy since the service last heard of them (an older version there), so backfill takes
    // them through the per-event rules (their snapshot images); the other keys are new and go in bulk.
    await pools.legacy.query(`UPDATE vals SET n = 7 WHERE id IN (1, 5)`);
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; INSERT INTO vals (id) VALUES (1), (5);
      INSERT INTO strangler_sync.row_version (tbl, pk, legacy_version, service_version) VALUES ('vals', '[1]', 1, 0), ('vals', '[5]', 1, 0); COMMIT`);
    await runBackfill({ config, pools, tables, table: 'vals', source: 'legacy', chunkRows: 100, maxLagEvents: 0 });
    await p.settle();
    const strip = (r: Record<string, unknown>) => ({ ...r, js: r.js === null ? null : JSON.stringify(JSON.parse(r.js as string)) });
    assert.deepEqual((await pools.service.query(dump)).rows.map(strip), (await pools.legacy.query(dump)).rows.map(strip));
    assert.equal((await verifyTables(config, pools, tables, 'vals')).ok, true);
  });
});

describe('backfill against keys that keep changing', () => {
  test('a chunk that races live changes in every attempt stops with a message naming the chunk and saying nothing was written; the run resumes from its checkpoint', async () => {
    const { config, pools, tables } = await installed('bfhot', `INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 10) g`);
    // Every attempt of the chunk sees a live version appear on one of its new keys (as a stream of first writes would).
    await pools.service.query(`CREATE FUNCTION public.race() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO strangler_sync.row_version (tbl, pk, legacy_version) VALUES ('items', jsonb_build_array(NEW.item_id)::text, 1) ON CONFLICT DO NOTHING; RETURN NULL; END $$;
      CREATE TRIGGER race AFTER INSERT ON catalog_items FOR EACH ROW WHEN (NEW.item_id = 7) EXECUTE FUNCTION public.race()`);
    await assert.rejects(runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 100, maxLagEvents: 0 }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SYNC_BACKFILL_INTERRUPTED');
      assert.match(err.message, /stopped after 0 of 10 rows: backfill chunk of items \(keys after the first up to \[10\]\) into service failed after 8 attempts \(live changes kept reaching keys of the chunk while it was written; nothing of the chunk was written, and live sync goes on applying those changes\): a live change to items committed while its backfill chunk was written .*run the same command again to resume/);
      assert.doesNotMatch(err.message, /apply restarts/);
      return true;
    });
    assert.equal((await pools.service.query('SELECT count(*)::int AS n FROM catalog_items')).rows[0].n, 0);
    await pools.service.query('DROP TRIGGER race ON catalog_items');
    assert.equal((await runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 100, maxLagEvents: 0 })).done, true);
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
  });
});
