/**
 * capture install / uninstall on a busy database (embedded PostgreSQL, both capture modes): a transaction holding a
 * synced table makes the DDL wait, and every later query on that table would queue behind it. Each attempt waits at
 * most capture.lockTimeoutMs and is retried (so the application waits at most about that long), a blocker that stays
 * fails with SYNC_TABLE_LOCKED naming it and leaves nothing half-done, and a rerun of install locks nothing.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import type { SyncConfig, Side } from '../../../migration-scripts/config-schema.ts';
import type { Pools } from '../../../migration-scripts/db.ts';
import type { CompiledTable } from '../../../migration-scripts/mapping.ts';
import { compileFromDatabases, installCapture, uninstallCapture, captureInstalled } from '../../../legacy-adapter/capture/install.ts';
import { startSyncFixture, LOGICAL_SERVER_FLAGS, type SyncFixture } from './fixture.ts';

let fx: SyncFixture;
let n = 0;
before(async () => { fx = await startSyncFixture({ serverFlags: LOGICAL_SERVER_FLAGS }); });
after(async () => { await fx.stop(); });

type Mode = 'trigger' | 'logical';
async function pair(mode: Mode, lock: { lockTimeoutMs: number; lockRetryMs: number }): Promise<{ config: SyncConfig; pools: Pools; urls: { legacy: string }; tables: CompiledTable[] }> {
  const x = await fx.freshPair(`lk${n++}_${mode}`, { capture: { mode, ...lock } });
  await x.pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a'); INSERT INTO notes (id, body) VALUES (1, 'a')`);
  return { ...x, tables: await compileFromDatabases(x.config, x.pools) };
}

/** A session of another application holding `sql`'s locks in an open transaction until end(). */
async function blocker(url: string, sql: string): Promise<{ pid: number; end(): Promise<void> }> {
  const c = new pg.Client({ connectionString: url, application_name: 'long-report' });
  await c.connect();
  await c.query('BEGIN');
  await c.query(sql);
  const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid as number;
  let ended = false;
  return { pid, async end() { if (ended) return; ended = true; await c.query('COMMIT'); await c.end(); } };
}

/** The application: runs `sql` back to back until stop(), which returns the longest time one run took. */
function application(url: string, sql: string): { stop(): Promise<number> } {
  const c = new pg.Client({ connectionString: url, application_name: 'app' });
  let running = true;
  let worst = 0;
  const loop = (async () => {
    await c.connect();
    while (running) {
      const t0 = Date.now();
      await c.query(sql);
      worst = Math.max(worst, Date.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
    await c.end();
  })();
  return { async stop() { running = false; await loop; return worst; } };
}

const onTables = (side: Side) => (pool: pg.Pool) => pool.query<{ n: number }>(
  `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'strangler_%' AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)`).then((r) => `${side}:${r.rows[0]?.n}`);
const identity = async (pool: pg.Pool): Promise<string> => (await pool.query<{ r: string }>(`SELECT relreplident::text AS r FROM pg_class WHERE oid = 'notes'::regclass`)).rows[0]?.r as string;
const slots = async (pool: pg.Pool): Promise<number> => (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE 'strangler_lk%'`)).rows[0]?.n as number;
const stateSchema = async (pool: pg.Pool): Promise<boolean> => (await pool.query<{ ok: boolean }>(`SELECT to_regnamespace('strangler_sync') IS NOT NULL AS ok`)).rows[0]?.ok as boolean;

// A ROW EXCLUSIVE table lock (what an open transaction that wrote the table holds) without a transaction id, so
// creating the logical slot does not wait for it: only the table lock is in the way.
const HOLD_NOTES = 'LOCK TABLE notes IN ROW EXCLUSIVE MODE';
// Blocked by CREATE TRIGGER (SHARE ROW EXCLUSIVE) and by DROP TRIGGER / REPLICA IDENTITY (ACCESS EXCLUSIVE).
const APP_QUERY = `UPDATE items SET name = name WHERE id = 1`;

for (const mode of ['trigger', 'logical'] as const) {
  describe(`capture.mode ${mode}: install/uninstall with a transaction holding a synced table`, () => {
    test('a blocker present for a while: install and uninstall retry and succeed; the application waits at most about one lock timeout', async () => {
      const { config, pools, urls, tables } = await pair(mode, { lockTimeoutMs: 300, lockRetryMs: 30_000 });
      for (const op of ['install', 'uninstall'] as const) {
        const b = await blocker(urls.legacy, HOLD_NOTES);
        const app = application(urls.legacy, APP_QUERY);
        const t0 = Date.now();
        const done = op === 'install' ? installCapture(config, pools, 'legacy', tables) : uninstallCapture(config, pools, 'legacy');
        await new Promise((r) => setTimeout(r, 2_000));
        await b.end();
        await done;
        const worst = await app.stop();
        assert.ok(Date.now() - t0 >= 2_000, `${op} waited for the blocker`);
        // Without the bound the application's query waits behind the DDL for as long as the blocker lasts (2 s).
        assert.ok(worst < 1_000, `${op}: an application query waited ${worst} ms (lockTimeoutMs 300)`);
        assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), op === 'install');
      }
    });

    test('a blocker that stays: SYNC_TABLE_LOCKED names it, nothing is half-done, a rerun after it ended succeeds', async () => {
      const { config, pools, urls, tables } = await pair(mode, { lockTimeoutMs: 200, lockRetryMs: 1_500 });
      const b = await blocker(urls.legacy, HOLD_NOTES);
      // (Ends the blocker after 8 s so that an install that waits without bound finishes and the test fails, not hangs.)
      const stopper = setTimeout(() => { void b.end(); }, 8_000);
      try {
        const t0 = Date.now();
        await assert.rejects(installCapture(config, pools, 'legacy', tables), (err: Error & { code?: string }) => {
          assert.equal(err.code, 'SYNC_TABLE_LOCKED');
          assert.match(err.message, new RegExp(`PID ${b.pid} \\(application "long-report", idle in transaction, transaction started .*RowExclusiveLock on notes`));
          assert.match(err.message, /Nothing was changed.*pg_terminate_backend/);
          return true;
        });
        assert.ok(Date.now() - t0 < 5_000, 'gave up after lockRetryMs');
        assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), false);
        assert.deepEqual([await onTables('legacy')(pools.legacy), await stateSchema(pools.legacy), await slots(pools.legacy), await identity(pools.legacy)],
          ['legacy:0', false, 0, 'd'], 'no trigger, no state schema, no slot, replica identity untouched');
      } finally {
        clearTimeout(stopper);
        await b.end();
      }
      await installCapture(config, pools, 'legacy', tables);
      assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), true);

      const b2 = await blocker(urls.legacy, HOLD_NOTES);
      const stopper2 = setTimeout(() => { void b2.end(); }, 8_000);
      try {
        await assert.rejects(uninstallCapture(config, pools, 'legacy'), (err: Error & { code?: string }) => {
          assert.equal(err.code, 'SYNC_TABLE_LOCKED');
          assert.match(err.message, new RegExp(`capture uninstall on the legacy database .*PID ${b2.pid} \\(application "long-report"`));
          return true;
        });
        // Triggers (trigger mode) or replica identity (logical) and the state are all still there.
        assert.equal(await stateSchema(pools.legacy), true);
        if (mode === 'trigger') assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), true);
        else assert.equal(await identity(pools.legacy), 'f');
      } finally {
        clearTimeout(stopper2);
        await b2.end();
      }
      await uninstallCapture(config, pools, 'legacy');
      assert.deepEqual([await onTables('legacy')(pools.legacy), await stateSchema(pools.legacy), await slots(pools.legacy), await identity(pools.legacy)],
        ['legacy:0', false, 0, 'd']);
    });

    test('install again while an application transaction that wrote a synced table is open: nothing waits (idempotent, no table lock)', async () => {
      const { config, pools, urls, tables } = await pair(mode, { lockTimeoutMs: 2_000, lockRetryMs: 30_000 });
      await installCapture(config, pools, 'legacy', tables);
      const b = await blocker(urls.legacy, `UPDATE notes SET body = 'b' WHERE id = 1`);
      try {
        const t0 = Date.now();
        const app = application(urls.legacy, APP_QUERY);
        await installCapture(config, pools, 'legacy', tables);
        const worst = await app.stop();
        assert.ok(Date.now() - t0 < 1_500, `the rerun waited ${Date.now() - t0} ms for the open transaction`);
        assert.ok(worst < 500, `an application write waited ${worst} ms`);
      } finally {
        await b.end();
      }
      assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), true);
      await uninstallCapture(config, pools, 'legacy');
    });
  });
}

describe('capture.mode logical: creating the replication slot while a transaction stays open', () => {
  test('an idle-in-transaction session that wrote something: install fails within lockRetryMs naming it, leaves no slot, and a rerun after it ended succeeds', async () => {
    const { config, pools, urls, tables } = await pair('logical', { lockTimeoutMs: 200, lockRetryMs: 1_500 });
    // A transaction id, no table lock: PostgreSQL builds a new slot's snapshot by waiting for every such transaction.
    const b = await blocker(urls.legacy, 'SELECT txid_current()');
    // (Ends the blocker after 8 s so that an install that waits without bound finishes and the test fails, not hangs.)
    const stopper = setTimeout(() => { void b.end(); }, 8_000);
    try {
      const t0 = Date.now();
      await assert.rejects(installCapture(config, pools, 'legacy', tables), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'SYNC_SLOT_BLOCKED');
        assert.match(err.message, new RegExp(`PID ${b.pid} \\(database "[^"]+", application "long-report", idle in transaction, open for \\d+ s \\(since .+\\), last query started .+ "SELECT pg_backend_pid\\(\\) AS pid"\\)`));
        assert.match(err.message, /sync\.capture\.lockRetryMs = 1500 ms.*Nothing was created.*pg_terminate_backend\(\d+\)/);
        return true;
      });
      assert.ok(Date.now() - t0 < 5_000, `gave up after lockRetryMs (${Date.now() - t0} ms)`);
      assert.deepEqual([await slots(pools.legacy), await stateSchema(pools.legacy), await identity(pools.legacy)], [0, false, 'd'], 'no slot, no state schema, replica identity untouched');
    } finally {
      clearTimeout(stopper);
      await b.end();
    }
    await installCapture(config, pools, 'legacy', tables);
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), true);
    assert.equal(await slots(pools.legacy), 1);
    await uninstallCapture(config, pools, 'legacy');
  });
});
