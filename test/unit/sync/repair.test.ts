/**
 * Repair and apply never lose a change, on real embedded PostgreSQL with the in-memory transport: repair decides per
 * key by the version vectors (a change the target made that is still on its way to the source is left alone), and
 * apply parks an image that lacks a mapped source column (a schema change under sync) instead of writing NULL.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Pool } from 'pg';
import { rowVersions, startSyncFixture, syncDoc, type SyncFixture } from './fixture.ts';
import { Pipeline } from './load.ts';
import { compileFromDatabases, installCapture } from '../../../legacy-adapter/capture/install.ts';
import { lastVerify, verifyTables } from '../../../migration-scripts/verify.ts';
import { readSyncStatus } from '../../../migration-scripts/status.ts';
import { repairFromVerify, retryDeadLetters } from '../../../migration-scripts/repair.ts';
import { parseSyncConfig } from '../../../migration-scripts/config.ts';

let fx: SyncFixture;
before(async () => { fx = await startSyncFixture(); });
after(async () => { await fx.stop(); });

async function installed(name: string, overrides: Record<string, unknown> = {}) {
  const { config, pools, urls } = await fx.freshPair(name, overrides);
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installCapture(config, pools, 'service', tables);
  return { config, pools, urls, tables, p: new Pipeline(config, pools, tables) };
}

const titles = async (pool: Pool, sql: string) => Object.fromEntries((await pool.query<{ id: string; t: string }>(sql)).rows.map((r) => [r.id, r.t]));

describe('repair and apply never lose a change', () => {
  test('repair skips keys the target changed after the owner last saw them; the pair converges once apply catches up', async () => {
    const { config, pools, tables, p } = await installed('rvec', { verify: { chunkRows: 50, leafRows: 10 } });
    await pools.legacy.query(`INSERT INTO items (id, name) SELECT g, 'v' || g FROM generate_series(1, 6) g`);
    await p.settle();
    await pools.service.query(`UPDATE catalog_items SET title = 'seen by legacy' WHERE item_id = 5`);
    await p.settle();
    // In flight from the service (published, not yet applied on legacy): an update, a delete, an insert.
    await pools.service.query(`UPDATE catalog_items SET title = 'service-newer' WHERE item_id = 1`);
    await pools.service.query(`DELETE FROM catalog_items WHERE item_id = 2`);
    await pools.service.query(`INSERT INTO catalog_items (item_id, title) VALUES (7, 'created on service')`);
    await p.relays.service.step();
    // Corruption behind sync's back on the service: same vectors, different bytes.
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; UPDATE catalog_items SET title = 'rogue' WHERE item_id = 3; COMMIT`);
    // In flight from legacy: an update, and a delete of a key legacy had seen the service's change of.
    await pools.legacy.query(`UPDATE items SET name = 'legacy-newer' WHERE id = 4`);
    await pools.legacy.query(`DELETE FROM items WHERE id = 5`);
    await p.relays.legacy.step();

    const v = await verifyTables(config, pools, tables, 'items');
    assert.deepEqual(v.tables[0]?.diffs.map((d) => `${d.key} ${d.kind}`).sort(),
      ['[1] different', '[2] missing-on-service', '[3] different', '[4] different', '[5] missing-on-legacy', '[7] missing-on-legacy']);
    const r = await repairFromVerify({ config, pools, tables, verify: v }); // from the owner, legacy
    assert.deepEqual(r.tables.map((t) => ({ ...t, targetNewer: [...t.targetNewer].sort() })),
      [{ table: 'items', from: 'legacy', to: 'service', rewritten: 2, deleted: 1, targetNewer: ['[1]', '[2]', '[7]'] }]);
    // The service's own changes are untouched; the rest is legacy's current state.
    assert.deepEqual(await titles(pools.service, 'SELECT item_id::text AS id, title AS t FROM catalog_items ORDER BY item_id'),
      { 1: 'service-newer', 3: 'v3', 4: 'legacy-newer', 6: 'v6', 7: 'created on service' });

    await p.settle();
    const after = await verifyTables(config, pools, tables, 'items');
    assert.equal(after.ok, true, JSON.stringify(after.tables[0]?.diffs));
    assert.deepEqual(await titles(pools.legacy, 'SELECT id::text AS id, name AS t FROM items ORDER BY id'),
      { 1: 'service-newer', 3: 'v3', 4: 'legacy-newer', 6: 'v6', 7: 'created on service' });
    assert.deepEqual(await rowVersions(pools.service), await rowVersions(pools.legacy), 'version vectors identical on both sides');
  });

  test('an image without a mapped source column (renamed under sync) is parked with the DDL procedure, never written as NULL', async () => {
    const { pools, urls, p } = await installed('rddl');
    await pools.legacy.query(`INSERT INTO items (id, name, body) VALUES (1, 'n', 'important text'), (2, 'm', 'other')`);
    await pools.service.query(`INSERT INTO persons (email, address) VALUES ('a@x', '{"street": "Main", "city": "Oslo", "zip": "0150"}')`);
    await p.settle();
    await pools.legacy.query('ALTER TABLE items RENAME COLUMN body TO body_text');
    await pools.service.query('ALTER TABLE persons RENAME COLUMN address TO addr');
    await pools.legacy.query(`UPDATE items SET name = 'n2' WHERE id = 1`);
    await pools.legacy.query(`UPDATE items SET name = 'n3' WHERE id = 1`);
    await pools.legacy.query('DELETE FROM items WHERE id = 2'); // a delete writes no column: it still flows
    await pools.service.query(`UPDATE persons SET updated = '2024-01-01 00:00:00' WHERE email = 'a@x'`);
    await p.settle();

    assert.deepEqual((await pools.service.query('SELECT item_id::int AS id, title, body FROM catalog_items ORDER BY item_id')).rows, [{ id: 1, title: 'n', body: 'important text' }]);
    assert.deepEqual((await pools.legacy.query(`SELECT street, city, zip FROM people WHERE email = 'a@x'`)).rows, [{ street: 'Main', city: 'Oslo', zip: '0150' }]);
    const parked = async (pool: Pool) => (await pool.query<{ tbl: string; pk: string; reason: string }>(`SELECT tbl, pk, reason FROM strangler_sync.dead_letters WHERE status = 'parked' ORDER BY id`)).rows;
    const onService = await parked(pools.service);
    assert.deepEqual(onService.map((d) => `${d.tbl} ${d.pk}`), ['items [1]', 'items [1]']);
    assert.match(onService[0]?.reason ?? '', /^the legacy table items image has no column "body" mapped by sync\.tables "items" .*NULL into service catalog_items\. DDL procedure: .*strangler sync repair --dead-letters/);
    assert.match(onService[1]?.reason ?? '', /waiting behind/);
    const onLegacy = await parked(pools.legacy);
    assert.deepEqual(onLegacy.map((d) => `${d.tbl} ${d.pk}`), ['people ["a@x"]']);
    assert.match(onLegacy[0]?.reason ?? '', /the service table persons image has no column "address" mapped by sync\.tables "people"/);

    // The DDL procedure: map the new column names, restart (compile again), retry the parked events.
    const doc = syncDoc(urls) as { sync: { tables: { name: string; columns: { legacy: unknown; service: unknown }[] }[] } };
    for (const t of doc.sync.tables) {
      for (const c of t.columns) {
        if (t.name === 'items' && c.legacy === 'body') c.legacy = 'body_text';
        if (t.name === 'people' && c.service === 'address') c.service = 'addr';
      }
    }
    const config = parseSyncConfig(doc).sync;
    const tables = await compileFromDatabases(config, pools);
    assert.deepEqual(await retryDeadLetters({ config, pools, tables, target: 'service' }), { retried: 2, stillParked: 0 });
    assert.deepEqual(await retryDeadLetters({ config, pools, tables, target: 'legacy' }), { retried: 1, stillParked: 0 });
    assert.deepEqual((await pools.service.query('SELECT title, body FROM catalog_items WHERE item_id = 1')).rows, [{ title: 'n3', body: 'important text' }]);
    assert.deepEqual((await pools.legacy.query(`SELECT street, updated::text FROM people WHERE email = 'a@x'`)).rows, [{ street: 'Main', updated: '2024-01-01 00:00:00' }]);
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
  });
});

/** Records the most rows any one query through `pool` returned (a leaf or boundary read held in memory at once). */
function rowsSpy(pool: Pool): { max: number; restore(): void } {
  const target = pool as unknown as { query: (...args: unknown[]) => Promise<{ rows?: unknown[] }> };
  const orig = target.query;
  const spy = { max: 0, restore: () => { target.query = orig; } };
  target.query = async (...args: unknown[]) => {
    const r = await orig.apply(pool, args);
    spy.max = Math.max(spy.max, r.rows?.length ?? 0);
    return r;
  };
  return spy;
}

describe('verify and repair of a badly diverged table', () => {
  test('a wiped side: verify splits on the side holding the rows, lists at most maxKeys keys with the true counts; repair of the stored run fixes every key', async () => {
    const { config, pools, tables } = await installed('rwiped', { verify: { chunkRows: 50, leafRows: 10, maxKeys: 5 } });
    // The service holds 600 rows legacy never got (a wrong mapping, a wiped legacy table), behind sync's back; and
    // legacy 3 rows of its own.
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; INSERT INTO catalog_items (item_id, title) SELECT g, 's' || g FROM generate_series(1, 600) g; COMMIT`);
    await pools.legacy.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; INSERT INTO items (id, name) SELECT g, 'l' || g FROM generate_series(1001, 1003) g; COMMIT`);
    const spies = [rowsSpy(pools.legacy), rowsSpy(pools.service)];
    const v = await verifyTables(config, pools, tables, 'items').finally(() => { for (const sp of spies) sp.restore(); });
    assert.ok(Math.max(...spies.map((sp) => sp.max)) <= 50, `no read of more than chunkRows rows at once, got ${spies.map((sp) => sp.max).join('/')}`);
    const t = v.tables[0];
    assert.equal(t?.diffs.length, 5, 'keys listed: verify.maxKeys');
    assert.deepEqual({ diffCount: t?.diffCount, counts: t?.counts, truncated: t?.truncated, match: t?.match },
      { diffCount: 603, counts: { 'missing-on-legacy': 600, 'missing-on-service': 3, different: 0 }, truncated: true, match: false });
    const stored = await lastVerify(config, pools.legacy);
    assert.ok(stored);
    assert.equal(stored.tables[0]?.diffs.length, 5, 'the stored run holds the listed keys only');
    const st = await readSyncStatus(config, pools);
    assert.deepEqual(st.lastVerify?.tables, [{ table: 'items', match: false, diffs: 603 }], 'status shows the true count');

    // Repair from the stored (truncated) run: every differing key, not only the listed ones.
    const r = await repairFromVerify({ config, pools, tables, verify: stored, from: 'service' });
    assert.deepEqual(r.tables, [{ table: 'items', from: 'service', to: 'legacy', rewritten: 600, deleted: 3, targetNewer: [] }]);
    const after = await verifyTables(config, pools, tables, 'items');
    assert.equal(after.ok, true, JSON.stringify(after.tables[0]));
    // Run twice: nothing left to do, nothing changed.
    const again = await repairFromVerify({ config, pools, tables, verify: stored, from: 'service' });
    assert.deepEqual(again.tables, [{ table: 'items', from: 'service', to: 'legacy', rewritten: 0, deleted: 0, targetNewer: [] }]);
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
  });

  test('verify during live sync: a key whose change lands between two reads of its leaf is in flight, not reported', async () => {
    const { config, pools, tables, p } = await installed('rflight', { verify: { chunkRows: 50, leafRows: 10 } });
    await pools.legacy.query(`INSERT INTO items (id, name) SELECT g, 'v' || g FROM generate_series(1, 6) g`);
    await p.settle();
    await pools.legacy.query(`UPDATE items SET name = 'in flight' WHERE id = 3`); // captured, not yet applied
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; UPDATE catalog_items SET title = 'rogue' WHERE item_id = 5; COMMIT`);
    // Live sync applies the change right after verify's first read of the service leaf.
    const target = pools.service as unknown as { query: (...args: unknown[]) => Promise<unknown> };
    const orig = target.query;
    let fired = false;
    target.query = async (...args: unknown[]) => {
      const r = await orig.apply(pools.service, args);
      const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string }).text ?? '';
      if (!fired && / AS key, /.test(text)) { fired = true; await p.settle(); }
      return r;
    };
    const v = await verifyTables(config, pools, tables, 'items').finally(() => { target.query = orig; });
    assert.ok(fired, 'the leaf was read');
    assert.deepEqual(v.tables[0]?.diffs, [{ key: '[5]', kind: 'different' }], 'the real difference stays reported, the in-flight key does not');
  });

  test('a verify result naming a table the config does not sync is refused, not reported as nothing to repair', async () => {
    const { config, pools, tables } = await installed('runknown');
    const verify = { ok: false, at: new Date().toISOString(), ms: 1, tables: [{ table: 'orders_old', legacyRows: 1, serviceRows: 0, chunks: 1, mismatchedChunks: 1, match: false, diffs: [{ key: '[1]', kind: 'missing-on-service' as const }], ms: 1 }] };
    await assert.rejects(repairFromVerify({ config, pools, tables, verify }), (err: Error & { code?: string }) => err.code === 'CLI_USAGE' && /"orders_old", not configured/.test(err.message));
  });
});
