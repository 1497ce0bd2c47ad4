/**
 * capture.mode logical on real embedded PostgreSQL (wal_level=logical), memory transport: install refuses a server
 * without wal_level=logical, decoded changes equal the trigger's changelog rows, arrive in commit order and converge
 * both databases, apply's writes are not captured back, TRUNCATE is refused, and uninstall drops the slot.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PassThrough } from 'node:stream';
import { tmpdir } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { join } from 'node:path';
import { startPostgres, type RunningPostgres } from '../../../devstack/postgres.ts';
import { installServiceCapture, uninstallServiceCapture } from '../../../services/kit/capture.ts';
import { parseSyncConfig } from '../../../migration-scripts/config.ts';
import { openPool, openPools, closePools, type Pools } from '../../../migration-scripts/db.ts';
import type { SyncConfig } from '../../../migration-scripts/config-schema.ts';
import type { CompiledTable } from '../../../migration-scripts/mapping.ts';
import { compileFromDatabases, installCapture, uninstallCapture, captureInstalled } from '../../../legacy-adapter/capture/install.ts';
import { LogicalDecoder, originNames, parseChange, slotNameFor, SyncOrigins } from '../../../legacy-adapter/capture/logical.ts';
import { ChangeRelay } from '../../../legacy-adapter/capture/relay.ts';
import { repairFromVerify } from '../../../migration-scripts/repair.ts';
import { createLogger } from '../../../common/logger.ts';
import { verifyTables } from '../../../migration-scripts/verify.ts';
import { formatStatus, readSyncStatus } from '../../../migration-scripts/status.ts';
import { seededRandom as rng } from '../../../common/random.ts';
import { captureSlot, idlePollsWal, LEGACY_DDL, MemoryBus, SERVICE_DDL, syncDoc, walMark } from './fixture.ts';
import { Pipeline, randomWriter } from './load.ts';
import { waitFor } from '../../helpers/wait.ts';

const servers: { pg: RunningPostgres; dir: string }[] = [];
const opened: Pools[] = [];
let logicalPg: RunningPostgres;
let plainPg: RunningPostgres;

async function server(flags: string[]): Promise<RunningPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'strangler-logical-'));
  const pg = await startPostgres({ dataDir: dir, serverFlags: flags });
  servers.push({ pg, dir });
  return pg;
}

before(async () => {
  [logicalPg, plainPg] = await Promise.all([
    // Slots and replication origins each take one of max_replication_slots entries (separate arrays); the pairs of
    // this file leave their origins behind unless a test uninstalls.
    server(['-c', 'wal_level=logical', '-c', 'max_replication_slots=64', '-c', 'max_wal_senders=10', '-c', 'autovacuum=off']),
    server([]),
  ]);
});
after(async () => {
  for (const p of opened) await closePools(p).catch(() => {});
  for (const s of servers) {
    await s.pg.stop().catch(() => {});
    rmSync(s.dir, { recursive: true, force: true });
  }
});

async function pair(pg: RunningPostgres, name: string, mode: 'logical' | 'trigger' = 'logical'): Promise<{ config: SyncConfig; pools: Pools; tables: CompiledTable[] }> {
  const urls = { legacy: pg.url(`${name}_legacy`), service: pg.url(`${name}_service`) };
  await pg.createDatabase(`${name}_legacy`);
  await pg.createDatabase(`${name}_service`);
  const config = parseSyncConfig(syncDoc(urls, { capture: { mode } })).sync;
  const pools = openPools(config);
  opened.push(pools);
  await pools.legacy.query(LEGACY_DDL);
  await pools.service.query(SERVICE_DDL);
  return { config, pools, tables: await compileFromDatabases(config, pools) };
}

async function installed(name: string): Promise<{ config: SyncConfig; pools: Pools; tables: CompiledTable[]; p: Pipeline }> {
  const x = await pair(logicalPg, name);
  // The legacy side switches from trigger mode (its triggers must go); the service side installs logical directly.
  await installCapture({ ...x.config, capture: { ...x.config.capture, mode: 'trigger' } }, x.pools, 'legacy', x.tables);
  await installCapture(x.config, x.pools, 'legacy', x.tables);
  await installCapture(x.config, x.pools, 'service', x.tables);
  return { ...x, p: new Pipeline(x.config, x.pools, x.tables) };
}

/** The legacy changelog in capture order: what the relay would publish (versions counted from the install's first, which is its time in µs). */
const changelogRows = async (pools: Pools) => (await pools.legacy.query(
  `SELECT tbl, op, pk, before, after, lv - min(seq) OVER () AS lv, sv FROM strangler_sync.changelog ORDER BY seq`)).rows;

/** The same writes on a trigger-mode pair and on a logical-mode pair (not decoded yet), to compare their changelogs. */
async function writeInBothModes(name: string, writes: (pools: Pools) => Promise<void>): Promise<{ trig: Awaited<ReturnType<typeof pair>>; logi: Awaited<ReturnType<typeof installed>> }> {
  const trig = await pair(logicalPg, `${name}_trigger`, 'trigger');
  await installCapture(trig.config, trig.pools, 'legacy', trig.tables);
  await writes(trig.pools);
  const logi = await installed(`${name}_logical`);
  await writes(logi.pools);
  return { trig, logi };
}

/** Bytes of WAL between now and the legacy slot's restart point (what every peek and advance re-reads). */
const restartBehind = async (pools: Pools) => Number((await pools.legacy.query<{ b: string }>(
  `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS b FROM pg_replication_slots WHERE slot_name = (SELECT slot FROM strangler_sync.logical_capture)`)).rows[0]?.b);

/** Row changes (`table …` lines) the slot of `pools.<side>` still holds, peeked with or without only-local. */
async function slotLines(pool: Pools['legacy'], onlyLocal: boolean): Promise<string[]> {
  const slot = await captureSlot(pool);
  const r = await pool.query<{ data: string }>(`SELECT data FROM pg_logical_slot_peek_changes($1, NULL, NULL${onlyLocal ? `, 'only-local', '1'` : ''}) WHERE data LIKE 'table %'`, [slot]);
  return r.rows.map((x) => x.data);
}

/** The sync origins of a database side that exist on the server. */
const existingOrigins = async (pool: Pools['legacy']) => (await pool.query<{ roname: string }>(
  `SELECT roname FROM pg_replication_origin WHERE roname LIKE (SELECT slot FROM strangler_sync.logical_capture) || '\\_%' ORDER BY 1`)).rows.map((r) => r.roname);

/** A role for sync that is not a superuser: replication (slots) and the state schema and tables of both databases, no origin grants. */
async function syncRole(x: { config: SyncConfig; pools: Pools }, role: string): Promise<Pools> {
  await x.pools.legacy.query(`CREATE ROLE ${role} LOGIN REPLICATION PASSWORD 'pw'`);
  for (const side of ['legacy', 'service'] as const) {
    await x.pools[side].query(`GRANT USAGE ON SCHEMA strangler_sync TO ${role}; GRANT ALL ON ALL TABLES IN SCHEMA strangler_sync TO ${role};
      GRANT ALL ON ALL SEQUENCES IN SCHEMA strangler_sync TO ${role}; GRANT ALL ON ALL TABLES IN SCHEMA public TO ${role}`);
  }
  const url = (side: 'legacy' | 'service') => {
    const u = new URL(x.config.databases[side].url);
    u.username = role;
    u.password = 'pw';
    return u.toString();
  };
  const pools = { legacy: openPool(url('legacy'), 4), service: openPool(url('service'), 4) };
  opened.push(pools);
  return pools;
}

const slots = async (pool: Pools['legacy']) => (await pool.query<{ slot_name: string }>('SELECT slot_name FROM pg_replication_slots ORDER BY 1')).rows.map((r) => r.slot_name);

describe('capture.mode logical (test_decoding slot, same changelog and relay)', () => {
  test('install on a server without wal_level=logical fails naming the setting and installs nothing', async () => {
    const { config, pools, tables } = await pair(plainPg, 'nowal');
    await assert.rejects(installCapture(config, pools, 'legacy', tables), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SYNC_LOGICAL_UNAVAILABLE');
      assert.match(err.message, /wal_level = logical/);
      return true;
    });
    const schema = await pools.legacy.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'strangler_sync'`);
    assert.equal(schema.rows[0].n, 0, 'no state schema');
    assert.deepEqual(await slots(pools.legacy), [], 'no slot');
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), false);
  });

  test('test_decoding lines parse: quotes, nulls, unchanged TOAST, quoted identifiers, old and new tuples', () => {
    assert.deepEqual(parseChange(`table public."we.ird": UPDATE: old-key: id[bigint]:1 "a b"[text]:'it''s' c[text]:null new-tuple: id[bigint]:1 "a b"[text]:'x y' c[text]:unchanged-toast-datum`), {
      schema: 'public', table: 'we.ird', op: 'UPDATE',
      old: { names: ['id', 'a b', 'c'], values: ['1', "it's", null] },
      new: { names: ['id', 'a b', 'c'], values: ['1', 'x y', undefined] },
    });
    assert.deepEqual(parseChange(`table s.t: DELETE: id[integer]:-5 f[boolean]:true`), { schema: 's', table: 't', op: 'DELETE', old: { names: ['id', 'f'], values: ['-5', 'true'] }, new: null });
    assert.equal(parseChange('table s.t: TRUNCATE: (no-flags)'), null);
  });

  test('decoded changelog rows equal the rows the capture trigger writes (keys, images, vectors)', async () => {
    const writes = async (pools: Pools) => {
      await pools.legacy.query(`INSERT INTO items (id, name, price_cents, body, data, happened_at, first_name, last_name, amount, flag, legacy_only)
        VALUES (1, 'n', 123456789, (SELECT string_agg(md5(i::text), 'é') FROM generate_series(1, 4000) i), '{"b": [1, 2.50, null], "a": {"x": "y"}}', '2024-03-01 10:00:00.123456+05:30', 'Ann', E'L"e\\\\e,()', 99999999999999.999999, NULL, 'mine')`);
      await pools.legacy.query(`UPDATE items SET name = 'n2' WHERE id = 1`); // body is stored out of line and unchanged: test_decoding prints unchanged-toast-datum
      await pools.legacy.query(`UPDATE items SET name = 'n2' WHERE id = 1`); // no-op: not captured
      await pools.legacy.query(`UPDATE items SET data = '{"b": [1, 2.5, null], "a": {"x": "y"}}' WHERE id = 1`); // 2.50 → 2.5: equal as jsonb values, a change all the same
      await pools.legacy.query(`INSERT INTO notes (id, body) VALUES (5, E'a\\nb'), (6, NULL)`);
      await pools.legacy.query(`UPDATE notes SET id = 7 WHERE id = 6`); // key change: d + c
      await pools.legacy.query(`DELETE FROM notes WHERE id = 5`);
      await pools.legacy.query(`INSERT INTO people VALUES ('a@x', 's', 'c', '1', '2024-01-01 00:00:00.5')`);
    };
    const { trig, logi } = await writeInBothModes('shape', writes);
    const slot = await captureSlot(logi.pools.legacy);
    const toast = await logi.pools.legacy.query(`SELECT count(*)::int AS n FROM pg_logical_slot_peek_changes($1, NULL, NULL) WHERE data LIKE '%unchanged-toast-datum%'`, [slot]);
    assert.equal(toast.rows[0].n, 3, 'the unchanged out-of-line value path is exercised (all three updates)');
    assert.equal(await new LogicalDecoder({ config: logi.config, pool: logi.pools.legacy, side: 'legacy' }).step(), 9);
    const expected = await changelogRows(trig.pools);
    assert.equal(expected.length, 9);
    const scale = `SELECT (after->'data'->'b')::text AS b FROM strangler_sync.changelog WHERE op = 'u' AND (after->'data')::text <> (before->'data')::text`;
    for (const pools of [trig.pools, logi.pools]) assert.deepEqual((await pools.legacy.query(scale)).rows, [{ b: '[1, 2.5, null]' }], 'a changed scale is a change');
    assert.deepEqual(await changelogRows(logi.pools), expected);
    const triggers = await logi.pools.legacy.query(`SELECT DISTINCT tgname FROM pg_trigger WHERE NOT tgisinternal`);
    assert.deepEqual(triggers.rows.map((r) => r.tgname), ['strangler_no_truncate'], 'no capture triggers on the user tables in logical mode (those of trigger mode removed), only the TRUNCATE guard');
    await logi.p.settle();
    assert.equal((await verifyTables(logi.config, logi.pools, logi.tables)).ok, true);
  });

  test('thousands of changes in one decode cycle (decode calls batched per run of one table) keep commit order across tables and equal the trigger rows', async () => {
    const writes = async (pools: Pools) => {
      // One transaction larger than a decode statement's run, then small transactions alternating tables, then one
      // transaction switching tables on every row: the changelog's seq order must still be commit order.
      await pools.legacy.query(`INSERT INTO items (id, name, price_cents) SELECT g, 'i' || g, g FROM generate_series(1, 4500) g`);
      for (let i = 1; i <= 5; i++) {
        await pools.legacy.query(`INSERT INTO notes (id, body) VALUES ($1, 'n')`, [i]);
        await pools.legacy.query(`UPDATE items SET name = 'u' WHERE id = $1`, [i]);
      }
      await pools.legacy.query(`BEGIN; DELETE FROM items WHERE id = 4500; INSERT INTO people (email) VALUES ('p@x'); UPDATE notes SET status = 'done' WHERE id = 1;
        INSERT INTO items (id, name) VALUES (9000, 'last'); COMMIT`);
    };
    const { trig, logi } = await writeInBothModes('runs', writes);
    assert.equal(await new LogicalDecoder({ config: logi.config, pool: logi.pools.legacy, side: 'legacy' }).catchUp(), 4514);
    const expected = await changelogRows(trig.pools);
    assert.equal(expected.length, 4514);
    assert.deepEqual(await changelogRows(logi.pools), expected);
    // Frees its two slots (the server allows ten for the whole file).
    for (const side of ['legacy', 'service'] as const) await uninstallCapture(logi.config, logi.pools, side);
  });

  test('a source transaction far larger than a decode run is decoded in bounded memory, every change with its commit time; stored before a crash, it is skipped', async () => {
    const { config, pools } = await installed('bigtx');
    const n = 12_000;
    const big = `INSERT INTO items (id, name, body) SELECT g, 'n' || g, repeat('y''"\\', 1000) FROM generate_series($1::int, $1::int + $2::int - 1) g`;
    // A crash after the decoder stored a large transaction, before the slot advance: it is skipped, the next one is not.
    await pools.legacy.query(big, [1, 3_000]);
    const slot = await captureSlot(pools.legacy);
    const commit = await pools.legacy.query<{ lsn: string }>(
      `SELECT lsn::text FROM pg_logical_slot_peek_changes($1, NULL, NULL, 'skip-empty-xacts', '1') WHERE data LIKE 'COMMIT%' ORDER BY lsn DESC LIMIT 1`, [slot]);
    await pools.legacy.query('UPDATE strangler_sync.logical_capture SET decoded_lsn = $1::pg_lsn', [commit.rows[0]?.lsn]);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (0, 'after the stored one')`);
    const decoder = new LogicalDecoder({ config, pool: pools.legacy, side: 'legacy' });
    assert.equal(await decoder.catchUp(60_000), 1, 'the stored large transaction is not captured twice');
    // 12,000 rows of 4 KB in one transaction: held whole (peek result, parsed tuples, record texts) it kept hundreds
    // of MB alive (larger transactions ran the relay out of heap, on every restart again); read and stored in runs,
    // what stays alive is a few runs. Measured after a full GC, every 100 ms while it decodes.
    await pools.legacy.query(big, [n + 1, n]);
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const before = process.memoryUsage().heapUsed;
    let peak = before;
    const sample = setInterval(() => { gc(); peak = Math.max(peak, process.memoryUsage().heapUsed); }, 100);
    try {
      assert.equal(await decoder.catchUp(120_000), n);
    } finally {
      clearInterval(sample);
    }
    assert.ok(peak - before < 64 << 20, `${Math.round((peak - before) / 2 ** 20)} MB kept alive while decoding (bound 64 MB)`);
    const r = await pools.legacy.query(`SELECT count(*)::int AS n, count(DISTINCT xid)::int AS xids, count(DISTINCT ts)::int AS ts,
        bool_and(after->>'body' = repeat('y''"\\', 1000)) AS bodies, min(pk) FILTER (WHERE seq = (SELECT min(seq) FROM strangler_sync.changelog WHERE pk <> '[0]')) AS first
      FROM strangler_sync.changelog WHERE pk <> '[0]'`);
    assert.deepEqual(r.rows[0], { n, xids: 1, ts: 1, bodies: true, first: `[${n + 1}]` }, 'one transaction, one commit time, values intact, in order');
    const commitTs = await pools.legacy.query(`SELECT DISTINCT ts FROM strangler_sync.changelog WHERE pk = '[0]' OR pk = $1`, [`[${n + 1}]`]);
    assert.equal(commitTs.rows.length, 2, 'each transaction has its own commit time');
    for (const side of ['legacy', 'service'] as const) await uninstallCapture(config, pools, side);
  });

  test('a column renamed while its changes were still in the slot stops decoding with SYNC_SCHEMA_CHANGED (never a NULL); renamed back, the value is captured', async () => {
    const { config, pools } = await installed('rename');
    await pools.legacy.query(`INSERT INTO items (id, name, legacy_only) VALUES (1, 'a', 'legacy value')`);
    await pools.legacy.query(`ALTER TABLE items RENAME COLUMN legacy_only TO legacy_note`);
    const relay = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: new MemoryBus(1) });
    const schemaChanged = (err: unknown) => {
      assert.equal((err as { code?: string }).code, 'SYNC_SCHEMA_CHANGED');
      assert.match((err as Error).message, /public\.items .*"legacy_only" are not in the table any more \(renamed or dropped\).*rename the column back/);
      return true;
    };
    // An install from before worker_errors existed (state not installed again since the upgrade): status reads it as
    // nothing recorded, and the relay creates the table to record why it stops.
    await pools.legacy.query('DROP TABLE strangler_sync.worker_errors');
    const broken = async () => (await readSyncStatus(config, pools)).directions.find((d) => d.source === 'legacy')?.broken ?? null;
    assert.equal(await broken(), null);
    const giveUp = setTimeout(() => void relay.stop(), 10_000); // a relay that keeps running fails the assertion below
    await assert.rejects(relay.run(), schemaChanged, 'the relay stops instead of retrying (or capturing a NULL)');
    clearTimeout(giveUp);
    await relay.stop();
    assert.equal((await pools.legacy.query('SELECT count(*)::int AS n FROM strangler_sync.changelog')).rows[0].n, 0, 'nothing captured');
    // sync status says the direction is stopped and why (what a supervisor restarting the relay keeps running into).
    const stopped = await broken();
    assert.equal(stopped?.code, 'SYNC_SCHEMA_CHANGED');
    assert.equal(stopped?.worker, 'relay');
    assert.match(stopped?.message ?? '', /"legacy_only" are not in the table any more \(renamed or dropped\).*rename the column back/);
    assert.match(formatStatus(await readSyncStatus(config, pools)), /legacy-to-service: BROKEN \(relay stopped .*\n {2}BROKEN SYNC_SCHEMA_CHANGED \(relay\): .*"legacy_only"/);
    await pools.legacy.query(`ALTER TABLE items RENAME COLUMN legacy_note TO legacy_only`);
    assert.equal(await new LogicalDecoder({ config, pool: pools.legacy, side: 'legacy' }).step(), 1);
    const after = await pools.legacy.query(`SELECT after->>'legacy_only' AS v FROM strangler_sync.changelog`);
    assert.equal(after.rows[0].v, 'legacy value');
    assert.deepEqual(await broken(), stopped, 'still broken until a relay gets past it');
    assert.equal(await new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: new MemoryBus(1) }).step(), 1);
    assert.equal(await broken(), null, 'a relay got past it: no longer broken');
  });

  test('replica identity set back to DEFAULT by hand: the relay stops with SYNC_DECODE_FAILED naming table, transaction, LSN and the fix (no endless retry); install + verify + repair recover', async () => {
    const { config, pools, tables, p } = await installed('identdrift');
    // Incompressible, so stored out of line (TOAST): an UPDATE that leaves it unchanged logs it as unchanged-toast-datum.
    const big = Array.from({ length: 3000 }, (_, i) => ((i * 2654435761) >>> 0).toString(36)).join('');
    await pools.legacy.query(`INSERT INTO items (id, name, body) VALUES (1, 'a', $1), (2, 'b', 'small')`, [big]);
    await p.settle();
    await pools.legacy.query('ALTER TABLE items REPLICA IDENTITY DEFAULT'); // "FULL costs WAL", says someone
    // sync status sees it before the relay meets an update: the direction is broken, with the way back.
    const broken = async () => (await readSyncStatus(config, pools)).directions.find((d) => d.source === 'legacy')?.broken ?? null;
    const off = await broken();
    assert.equal(off?.code, 'SYNC_CAPTURE_OFF');
    assert.match(off?.message ?? '', /"public"\."items": its replica identity is DEFAULT, not FULL .*capture install --side legacy/);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (3, 'inserted meanwhile')`);
    const xid = (await pools.legacy.query<{ x: string }>(`UPDATE items SET name = 'changed' WHERE id = 1 RETURNING pg_current_xact_id()::text AS x`)).rows[0]?.x;
    await pools.legacy.query(`DELETE FROM items WHERE id = 2`);
    const destination = new PassThrough();
    const lines: string[] = [];
    destination.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
    const relay = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: new MemoryBus(1), log: createLogger({ level: 'warn', destination }) });
    const giveUp = setTimeout(() => void relay.stop(), 10_000); // a relay that keeps retrying fails the assertion below
    await assert.rejects(relay.run(), (err: Error & { code?: string; details?: { lsn?: string } }) => {
      assert.equal(err.code, 'SYNC_DECODE_FAILED');
      assert.match(err.message, new RegExp(`^logical capture on the legacy database cannot decode a change of public\\.items \\(logical table "items": UPDATE in transaction ${xid}, commit LSN [0-9A-F]+/[0-9A-F]+\\): the replica identity of public\\.items is DEFAULT, capture needs FULL`));
      assert.match(err.message, /run `strangler sync capture install --side legacy`.*`strangler sync verify --table items` and `strangler sync repair --from legacy`/);
      assert.match(err.details?.lsn ?? '', /^[0-9A-F]+\/[0-9A-F]+$/);
      return true;
    });
    clearTimeout(giveUp);
    await relay.stop();
    await new Promise((res) => setImmediate(res));
    const events = lines.map((l) => JSON.parse(l) as { event?: string; code?: string });
    assert.deepEqual(events.map((e) => [e.event, e.code]), [['sync.relay.failed', 'SYNC_DECODE_FAILED']], 'logged once as such, no retry loop');
    // Set FULL by hand afterwards: the change stays undecodable, and the error says how to skip it.
    await pools.legacy.query('ALTER TABLE items REPLICA IDENTITY FULL');
    await assert.rejects(p.relays.legacy.step(), (err: Error & { code?: string }) => err.code === 'SYNC_DECODE_FAILED'
      && /logged without its old row image .*it is FULL now.*ALTER TABLE public\.items REPLICA IDENTITY DEFAULT` and then `strangler sync capture install --side legacy`/.test(err.message));
    // The documented way out: install skips what was logged without full images; verify and repair bring it over.
    await pools.legacy.query('ALTER TABLE items REPLICA IDENTITY DEFAULT');
    await installCapture(config, pools, 'legacy', tables);
    assert.equal(await broken(), null);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (4, 'after')`);
    await p.settle();
    const titles = async () => (await pools.service.query('SELECT item_id, title FROM catalog_items ORDER BY 1')).rows.map((r) => `${r.item_id}:${r.title}`);
    assert.deepEqual(await titles(), ['1:a', '2:b', '4:after'], 'capture resumed; what was skipped is for repair');
    const v = await verifyTables(config, pools, tables);
    assert.equal(v.ok, false);
    await repairFromVerify({ config, pools, tables, verify: v, from: 'legacy' });
    await p.settle();
    assert.deepEqual(await titles(), ['1:changed', '3:inserted meanwhile', '4:after']);
    for (const side of ['legacy', 'service'] as const) await uninstallCapture(config, pools, side);
  });

  test('a change its decode function fails on (a column type changed while it was in the slot) stops with SYNC_DECODE_FAILED naming that change; a lost connection is still retried', async () => {
    const { config, pools } = await installed('decodefail');
    const insert = async (id: number, v: string, db: pg.Pool | pg.PoolClient = pools.legacy) => (await db.query<{ x: string }>(`INSERT INTO items (id, name, legacy_only) VALUES ($1, 'n', $2) RETURNING pg_current_xact_id()::text AS x`, [id, v])).rows[0]?.x;
    await insert(1, '1');
    const bad = await insert(2, 'not a number');
    await insert(3, '3');
    await pools.legacy.query(`ALTER TABLE items ALTER COLUMN legacy_only DROP DEFAULT, ALTER COLUMN legacy_only TYPE integer USING 0`);
    const decodeFailed = (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SYNC_DECODE_FAILED');
      assert.match(err.message, new RegExp(`public\\.items \\(logical table "items": INSERT in transaction ${bad}, commit LSN \\S+\\): its decode function .*decode_items.* fails on it: invalid input syntax for type integer: "not a number" \\(SQLSTATE 22P02\\)`));
      return true;
    };
    const relay = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: new MemoryBus(1) });
    const giveUp = setTimeout(() => void relay.stop(), 10_000);
    await assert.rejects(relay.run(), decodeFailed, 'the relay stops instead of retrying');
    clearTimeout(giveUp);
    await relay.stop();
    assert.equal((await pools.legacy.query('SELECT count(*)::int AS n FROM strangler_sync.changelog')).rows[0].n, 0, 'nothing captured');
    // Undone, the changes decode; connections ended under a running relay (PostgreSQL restarting) are retried.
    await pools.legacy.query(`ALTER TABLE items ALTER COLUMN legacy_only TYPE text`);
    const bus = new MemoryBus(1);
    // Its log (warnings: each retry and why) goes into a failure message: a relay that does not recover says how.
    const destination = new PassThrough();
    const lines: string[] = [];
    destination.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
    const running = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: bus, log: createLogger({ level: 'debug', destination }) });
    let failed: unknown;
    const done = running.run().catch((err: unknown) => { failed = err; });
    // Delivery is at least once: a connection ended between publishing a batch and acknowledging it in the changelog
    // republishes that batch with the same positions (apply drops such duplicates). So changes are counted by
    // position, and a position seen twice must carry the same event (republished, not captured again).
    const byPosition = () => {
      const seen = new Map<number, string>();
      for (const m of bus.topics.get('strangler.legacy.items')?.flat() ?? []) {
        const position = (JSON.parse(m.value) as { position: number }).position;
        const before = seen.get(position);
        assert.ok(before === undefined || before === m.value, `position ${position} published twice with different events`);
        seen.set(position, m.value);
      }
      return seen;
    };
    const published = (n: number) => waitFor(`${n} changes published`, () => {
      if (failed !== undefined) throw new Error(`the relay stopped: ${String(failed)}`);
      return byPosition().size >= n;
    }).catch((err: Error) => { throw new Error(`${err.message}; relay log:\n${lines.join('\n')}`); });
    try {
      await published(3);
      // On the one connection that survives: another pooled one may be handed out before its end is noticed.
      const own = await pools.legacy.connect();
      try {
        await own.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`);
        await insert(4, '4', own);
      } finally {
        own.release();
      }
      await published(4);
    } finally {
      await Promise.all([running.stop(), running.stop()]); // a second signal while stopping is no crash
      await done;
    }
    assert.equal(failed, undefined);
    const keys = [...byPosition().values()].map((v) => (JSON.parse(v) as { key: string }).key);
    assert.deepEqual(keys, ['[1]', '[2]', '[3]', '[4]'], 'each change published under one position, in order, none lost');
    for (const side of ['legacy', 'service'] as const) await uninstallCapture(config, pools, side);
  });

  test('a column added while the relay runs: changes before and after the DDL are decoded (the column list is read again); a synced column added since fails closed', async () => {
    const { config, pools } = await installed('addcol');
    const decoder = new LogicalDecoder({ config, pool: pools.legacy, side: 'legacy' });
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`);
    assert.equal(await decoder.step(), 1, 'the decoder knows the table\'s columns');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'b')`); // still in the slot at the DDL
    await pools.legacy.query(`ALTER TABLE items ADD COLUMN note text`);
    await pools.legacy.query(`INSERT INTO items (id, name, note) VALUES (3, 'c', 'n')`);
    // Had the mapping synced the new column, the change from before it existed could not say its value.
    const mapped = { ...config, tables: config.tables.map((t) => t.legacy.table !== 'items' ? t : { ...t, columns: [...t.columns, { legacy: 'note', service: 'note', codec: 'identity' as const }] }) };
    await assert.rejects(new LogicalDecoder({ config: mapped, pool: pools.legacy, side: 'legacy' }).step(), (err: unknown) => {
      assert.equal((err as { code?: string }).code, 'SYNC_SCHEMA_CHANGED');
      assert.match((err as Error).message, /public\.items .*synced column\(s\) "note" did not exist yet/);
      return true;
    });
    assert.equal(await decoder.step(), 2);
    const r = await pools.legacy.query(`SELECT pk, after->'note' AS note, after ? 'note' AS has FROM strangler_sync.changelog WHERE pk <> '[1]' ORDER BY seq`);
    assert.deepEqual(r.rows, [{ pk: '[2]', note: null, has: true }, { pk: '[3]', note: 'n', has: true }]);
  });

  test('the slot restart point follows the decoder (it logs a running-xacts record when far behind), so a cycle does not re-read old WAL', async () => {
    const { config, pools } = await installed('restart');
    await pools.legacy.query(`INSERT INTO items (id, name, body) SELECT g, 'n', repeat('x', 400) FROM generate_series(1, 20000) g`);
    assert.ok(await restartBehind(pools) > 8 << 20, 'precondition: several MB of WAL behind the restart point');
    const decoder = new LogicalDecoder({ config, pool: pools.legacy, side: 'legacy' });
    assert.equal(await decoder.catchUp(), 20000);
    // Without the record the restart point stays before the big transaction until the server logs one (every 15 s).
    // One cycle moves it when nothing else runs; a few are allowed (a record the server logged meanwhile can make
    // PostgreSQL hold a pending candidate for one more confirmation), all within a fraction of those 15 s.
    let left = Infinity;
    for (let cycle = 0; cycle < 4 && left >= 2 << 20; cycle++) {
      await pools.legacy.query(`INSERT INTO items (id, name) VALUES ($1, 'next')`, [-cycle]);
      assert.equal(await decoder.catchUp(), 1);
      left = await restartBehind(pools);
    }
    assert.ok(left < 2 << 20, `restart point ${left} bytes behind after 4 cycles, expected < 2 MB`);
    for (const side of ['legacy', 'service'] as const) await uninstallCapture(config, pools, side);
  });

  test('an idle relay polls without writing WAL (no fsync per poll on a quiet database); the first write after the quiet spell is captured', async () => {
    const { config, pools, p } = await installed('idle');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`);
    assert.equal(await p.relays.legacy.step(), 1);
    await p.relays.legacy.step(); // the cycle after a capture reads the relay's own bookkeeping and then is quiet
    // Before, each poll committed a row lock (a transaction with an xid: a commit record and a WAL flush), ~100 bytes.
    const bytes = await idlePollsWal(pools.legacy, p.relays.legacy);
    assert.ok(bytes < 1024, `40 idle polls wrote ${bytes} bytes of WAL, expected (almost) none`);
    await pools.legacy.query(`UPDATE items SET name = 'b' WHERE id = 1`);
    assert.equal(await p.relays.legacy.step(), 1, 'a write after the quiet spell is captured by the next poll');
    assert.equal(p.bus.size(), 2, 'the insert and the update, each published once');
    for (const side of ['legacy', 'service'] as const) await uninstallCapture(config, pools, side);
  });

  test('a sync user that may not call pg_log_standby_snapshot still decodes; granted EXECUTE, its restart point follows too', async () => {
    const { config, pools } = await installed('nosuper');
    await pools.legacy.query(`CREATE ROLE nosuper_sync LOGIN REPLICATION PASSWORD 'pw'; GRANT USAGE ON SCHEMA strangler_sync TO nosuper_sync;
      GRANT ALL ON ALL TABLES IN SCHEMA strangler_sync TO nosuper_sync; GRANT ALL ON ALL SEQUENCES IN SCHEMA strangler_sync TO nosuper_sync;
      GRANT SELECT ON ALL TABLES IN SCHEMA public TO nosuper_sync`);
    const url = new URL(config.databases.legacy.url);
    url.username = 'nosuper_sync';
    url.password = 'pw';
    const pool = openPool(url.toString(), 2);
    const bigThenOne = async (from: number) => {
      const decoder = new LogicalDecoder({ config, pool, side: 'legacy' });
      await pools.legacy.query(`INSERT INTO items (id, name, body) SELECT g, 'n', repeat('x', 400) FROM generate_series($1::int, $1::int + 19999) g`, [from]);
      assert.equal(await decoder.catchUp(), 20000);
      await pools.legacy.query(`INSERT INTO items (id, name) VALUES ($1, 'next')`, [from + 20000]);
      assert.equal(await decoder.catchUp(), 1);
    };
    try {
      // Without the grant the restart point waits for the server's own record (every 15 s; not asserted, as that
      // record may land during the test); decoding must work all the same.
      await bigThenOne(1);
      await pools.legacy.query('GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO nosuper_sync');
      await bigThenOne(100_000);
      assert.ok(await restartBehind(pools) < 2 << 20, 'with it the decoder moves the restart point');
    } finally {
      await pool.end();
    }
    for (const side of ['legacy', 'service'] as const) await uninstallCapture(config, pools, side);
  });

  test('a transaction that commits late is published after the earlier commit; updates and deletes converge', async () => {
    const { pools, p, config, tables } = await installed('order');
    const slow = await pools.legacy.connect();
    try {
      await slow.query('BEGIN');
      await slow.query(`INSERT INTO items (id, name) VALUES (1, 'slow')`); // lower seq and xid, commits last
      await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'fast')`);
      await pools.legacy.query(`UPDATE items SET name = 'fast2' WHERE id = 2`);
      assert.equal(await p.relays.legacy.step(), 2, 'only committed changes are published');
      await slow.query(`UPDATE items SET name = 'slow2' WHERE id = 1`);
      await slow.query('COMMIT');
    } finally { slow.release(); }
    await pools.legacy.query('DELETE FROM items WHERE id = 2');
    assert.equal(await p.relays.legacy.step(), 3, 'the late commit is not skipped');
    const published = p.bus.read('strangler.legacy.', new Map(), 100).flat().map((e) => JSON.parse(e.value) as { key: string; op: string; position: number; after: { name?: string } | null });
    published.sort((a, b) => a.position - b.position);
    assert.deepEqual(published.map((e) => `${e.op}${e.key}:${e.after?.name ?? '-'}`), ['c[2]:fast', 'u[2]:fast2', 'c[1]:slow', 'u[1]:slow2', 'd[2]:-']);
    await p.settle();
    assert.deepEqual((await pools.service.query('SELECT item_id::int, title FROM catalog_items ORDER BY item_id')).rows, [{ item_id: 1, title: 'slow2' }]);
    // Both directions under a seeded random load (each round's local writes are decoded before the other side's
    // events are applied, so the decode-lag conflict window named in logical.ts is not exercised here).
    const seed = 4242;
    const r = rng(seed);
    const w = randomWriter(r);
    for (let round = 0; round < 10; round++) {
      await Promise.all([w.legacy(pools.legacy, 30), w.legacy(pools.legacy, 30), w.service(pools.service, 30)]);
      await p.round(20);
    }
    await p.settle();
    const v = await verifyTables(config, pools, tables);
    assert.equal(v.ok, true, `seed ${seed}: ${JSON.stringify(v.tables.map((t) => ({ t: t.table, diffs: t.diffs.slice(0, 5) })))}`);
  });

  test('a local write not yet decoded when apply overwrites its key is still a conflict, decided by policy; both sides converge', async () => {
    const { config, pools, p, tables } = await installed('decodegap');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'start')`);
    await p.settle();
    // The service writes key 1 and commits; its relay has not decoded it yet (it does not run in between).
    await pools.service.query(`UPDATE catalog_items SET title = 'service write' WHERE item_id = 1`);
    // Legacy writes the same key; that change is relayed and applied into the service first.
    await pools.legacy.query(`UPDATE items SET name = 'legacy write' WHERE id = 1`);
    assert.equal(await p.relays.legacy.step(), 1);
    await p.consumers.legacy.drain(100);
    const conflicts = await pools.service.query<{ pk: string; policy: string; winner: string }>('SELECT pk, policy, winner FROM strangler_sync.conflicts');
    const owner = tables.find((t) => t.name === 'items')?.owner;
    assert.deepEqual(conflicts.rows, [{ pk: '[1]', policy: config.conflicts.policy, winner: owner }], 'detected on the service although the local write was not decoded when apply started');
    await p.settle();
    const expected = owner === 'legacy' ? 'legacy write' : 'service write';
    assert.equal((await pools.service.query('SELECT title FROM catalog_items WHERE item_id = 1')).rows[0].title, expected);
    assert.equal((await pools.legacy.query('SELECT name FROM items WHERE id = 1')).rows[0].name, expected);
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
  });

  test('writes made by apply are not captured back (loop prevention by the apply message)', async () => {
    const { pools, p } = await installed('loop');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (7, 'x')`);
    assert.equal(await p.relays.legacy.step(), 1);
    await p.consumers.legacy.drain();
    assert.equal((await pools.service.query('SELECT title FROM catalog_items WHERE item_id = 7')).rows[0].title, 'x');
    assert.equal(await p.relays.service.step(), 0, 'apply writes are not captured on the service side');
    await pools.service.query(`UPDATE catalog_items SET title = 'y' WHERE item_id = 7`);
    assert.equal(await p.relays.service.step(), 1);
    await p.consumers.service.drain();
    assert.equal(await p.relays.legacy.step(), 0, 'nor on the legacy side');
    for (let i = 0; i < 3; i++) assert.equal(await p.round(), 0, 'quiet after quiescence');
    assert.equal((await pools.legacy.query('SELECT name FROM items WHERE id = 7')).rows[0].name, 'y');
    assert.equal(p.bus.size(), 2, 'one event per direction');
  });

  test('a crash between commit and slot advance captures nothing twice; uninstall drops the slot and restores replica identity', async () => {
    const { config, pools, p } = await installed('uninstall');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`);
    const slot = await captureSlot(pools.legacy) as string;
    assert.ok((await slots(pools.legacy)).includes(slot));
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), true);
    assert.equal(await p.relays.legacy.step(), 1);
    // A crash after the decoder's COMMIT but before the slot advance: the slot still holds the change, the stored
    // decode position says it is in the changelog already; the next cycle must skip it (and advance the slot).
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'b')`);
    const commit = await pools.legacy.query<{ lsn: string }>(
      `SELECT lsn::text FROM pg_logical_slot_peek_changes($1, NULL, NULL, 'skip-empty-xacts', '1') WHERE data LIKE 'COMMIT%' ORDER BY lsn DESC LIMIT 1`, [slot]);
    await pools.legacy.query('UPDATE strangler_sync.logical_capture SET decoded_lsn = $1::pg_lsn', [commit.rows[0]?.lsn]);
    assert.equal(await p.relays.legacy.step(), 0, 'the already stored transaction is not captured twice');
    const left = await pools.legacy.query(`SELECT count(*)::int AS n FROM pg_logical_slot_peek_changes($1, NULL, NULL, 'skip-empty-xacts', '1') WHERE data LIKE 'table public.items%'`, [slot]);
    assert.equal(left.rows[0].n, 0, 'slot advanced past it');
    await uninstallCapture(config, pools, 'legacy');
    await uninstallCapture(config, pools, 'service');
    assert.deepEqual((await slots(pools.legacy)).filter((s) => s.startsWith('strangler_uninstall_')), [], 'both slots dropped');
    const ident = await pools.legacy.query(`SELECT relreplident FROM pg_class WHERE oid = 'items'::regclass`);
    assert.equal(ident.rows[0].relreplident, 'd');
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), false);
  });

  test('status shows WAL the slot has not decoded; TRUNCATE is refused on captured tables; an in-place switch back to trigger mode is refused and keeps the slot', async () => {
    const { config, pools, tables, p } = await installed('guards');
    const sinceInsert = await walMark(pools.legacy);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`);
    await assert.rejects(pools.legacy.query('TRUNCATE items'), /TRUNCATE of items is not captured by sync/);
    assert.equal((await pools.legacy.query('SELECT count(*)::int AS n FROM items')).rows[0].n, 1);
    const slot = await captureSlot(pools.legacy) as string;
    // Status shows what the slot still holds: not decoded yet, so not in lagEvents, but visible as WAL behind the slot.
    const undecoded = async () => (await readSyncStatus(config, pools)).directions.find((d) => d.source === 'legacy')?.undecoded;
    const written = await sinceInsert();
    const pending = await undecoded();
    assert.equal(pending?.slot, slot);
    assert.ok(written > 0 && (pending?.walBytes ?? 0) >= written, `the insert is still in the slot: ${pending?.walBytes} bytes behind, ${written} written since`);
    assert.match(formatStatus(await readSyncStatus(config, pools)), new RegExp(`slot ${slot}: \\d+ bytes of WAL not decoded yet`));
    assert.equal(await p.relays.legacy.step(), 1);
    const after = await undecoded();
    assert.ok((after?.walBytes ?? Infinity) < await sinceInsert(), 'decoding moved the slot past the insert');
    const triggerConfig = { ...config, capture: { ...config.capture, mode: 'trigger' as const } };
    await assert.rejects(installCapture(triggerConfig, pools, 'legacy', tables), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SYNC_UNSUPPORTED');
      assert.match(err.message, new RegExp(`logical mode \\(replication slot "${slot}"\\).*sync capture uninstall`));
      return true;
    });
    assert.ok((await slots(pools.legacy)).includes(slot), 'the slot and its undecoded changes are kept');
    const triggers = await pools.legacy.query(`SELECT tgname FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal ORDER BY 1`);
    assert.deepEqual(triggers.rows.map((r) => r.tgname), ['strangler_no_truncate'], 'no capture trigger was added');
    await uninstallCapture(config, pools, 'legacy');
    await uninstallCapture(config, pools, 'service');
    await installCapture(triggerConfig, pools, 'legacy', tables);
    assert.equal(await captureInstalled(triggerConfig, pools.legacy, 'legacy'), true);
  });
  test('with replication origins, sync\'s own writes never leave the server as text; a local write in the same window is decoded and its conflict detected', async () => {
    const { config, pools, p, tables } = await installed('origins');
    assert.equal((await existingOrigins(pools.service)).length, 4, 'install created the side\'s origins');
    await pools.legacy.query(`INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 50) g`);
    await p.settle();
    // The service writes key 1 (committed, not decoded yet); legacy then writes key 1 and 20 new keys, applied into the service.
    await pools.service.query(`UPDATE catalog_items SET title = 'service write' WHERE item_id = 1`);
    await pools.legacy.query(`UPDATE items SET name = 'legacy write' WHERE id = 1; INSERT INTO items (id, name) SELECT g, 'm' || g FROM generate_series(100, 119) g`);
    assert.equal(await p.relays.legacy.step(), 21);
    await p.consumers.legacy.drain(100);
    const owner = tables.find((t) => t.name === 'items')?.owner;
    const conflicts = await pools.service.query<{ pk: string; winner: string }>('SELECT pk, winner FROM strangler_sync.conflicts');
    assert.deepEqual(conflicts.rows, [{ pk: '[1]', winner: owner }], 'the local write was decoded before the conflict check');
    // Apply's last batch (its rows, row_version, applied, apply_stats) is in the WAL after the last decode: the slot
    // hands it over as text without only-local, and not at all with it, as the decoder peeks.
    const all = await slotLines(pools.service, false);
    assert.ok(all.some((l) => l.startsWith('table public.catalog_items:')) && all.some((l) => l.startsWith('table strangler_sync.row_version:')), `without only-local apply's rows come back: ${all.length} lines`);
    assert.deepEqual(await slotLines(pools.service, true), [], 'with only-local nothing of sync\'s own comes back');
    // The relay's own writes on the legacy side (decoded changelog rows, positions, deletes) are skipped the same way.
    await pools.legacy.query(`UPDATE items SET name = 'again' WHERE id = 2`);
    assert.equal(await p.relays.legacy.step(), 1);
    assert.deepEqual(await slotLines(pools.legacy, true), [], 'after a relay cycle the legacy slot holds nothing local');
    await p.settle();
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
  });

  test('two sync sessions writing at once hold different origins; a third cannot take one of theirs', async () => {
    const { config, pools } = await installed('twosessions');
    const origins = new SyncOrigins({ pool: pools.legacy, config, side: 'legacy' });
    const [a, b] = [await pools.legacy.connect(), await pools.legacy.connect()];
    try {
      const [na, nb] = await Promise.all([origins.setup(a), origins.setup(b)]);
      assert.ok(na !== null && nb !== null, 'both got one');
      assert.notEqual(na, nb);
      const slot = await captureSlot(pools.legacy) as string;
      assert.deepEqual([na, nb].sort(), originNames(slot).slice(0, 2), 'the first ones not active elsewhere');
      await assert.rejects(pools.legacy.query('SELECT pg_replication_origin_session_setup($1)', [na]), (err: { code?: string }) => err.code === '55006');
      assert.equal(await origins.reset(a), true);
      assert.equal(await origins.setup(a), na, 'released, it is the first free one again');
      assert.equal(await origins.reset(a), true);
      assert.equal(await origins.reset(b), true);
      // Uninstall while a sync session still holds an origin: it waits for the session to let go, then drops them all.
      // (Both released: a takes the first one, whichever of the two it held before; b may have won the race for it.)
      const held = await origins.setup(a);
      assert.equal(held, originNames(slot)[0]);
      const uninstalled = uninstallCapture(config, pools, 'legacy');
      await new Promise((res) => setTimeout(res, 300));
      assert.deepEqual((await pools.legacy.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_replication_origin WHERE roname = $1`, [held])).rows[0]?.n, 1, 'still held, not dropped yet');
      assert.equal(await origins.reset(a), true);
      await uninstalled;
      const left = await pools.legacy.query(`SELECT roname FROM pg_replication_origin WHERE roname = ANY($1::text[])`, [originNames(slot)]);
      assert.deepEqual(left.rows, [], 'all four dropped');
    } finally {
      a.release();
      b.release();
    }
  });

  test('a sync role without the origin grants syncs as before (no loop, nothing lost), warning once per database; uninstall drops the origins', async () => {
    const x = await installed('nogrant');
    const rolePools = await syncRole(x, 'nogrant_sync');
    const destination = new PassThrough();
    const lines: string[] = [];
    destination.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
    const p = new Pipeline(x.config, rolePools, x.tables, 200, createLogger({ level: 'warn', destination }));
    await x.pools.legacy.query(`INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 30) g`);
    await x.pools.service.query(`INSERT INTO persons (email, address) VALUES ('a@x', '{"street": "s", "city": "c", "zip": "1"}'), ('b@x', '{"street": "t", "city": "d", "zip": "2"}')`);
    await p.settle();
    for (const side of ['legacy', 'service'] as const) assert.equal(await p.relays[side].step(), 0, `apply's writes into ${side} are not captured back`);
    assert.equal(p.bus.size(), 32, 'one event per local change, none echoed');
    await x.pools.service.query(`UPDATE catalog_items SET title = 'svc' WHERE item_id = 3`);
    await x.pools.legacy.query(`DELETE FROM items WHERE id = 4`);
    await p.settle();
    assert.equal(p.bus.size(), 34);
    assert.equal((await x.pools.legacy.query('SELECT name FROM items WHERE id = 3')).rows[0].name, 'svc');
    const v = await verifyTables(x.config, x.pools, x.tables);
    assert.equal(v.ok, true, JSON.stringify(v.tables.map((t) => ({ t: t.table, diffs: t.diffs.slice(0, 5) }))));
    await new Promise((res) => setImmediate(res));
    const warnings = lines.map((l) => JSON.parse(l) as { event?: string; side?: string; msg: string }).filter((l) => l.event === 'sync.capture.origins_unavailable');
    assert.deepEqual(warnings.map((w) => w.side).sort(), ['legacy', 'service'], 'one warning per database, not per cycle or component');
    assert.match(warnings[0]?.msg ?? '', /GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup\(text\), pg_replication_origin_session_reset\(\) TO nogrant_sync/);
    for (const side of ['legacy', 'service'] as const) {
      assert.equal((await existingOrigins(x.pools[side])).length, 4);
      await uninstallCapture(x.config, x.pools, side);
    }
    const left = await x.pools.legacy.query(`SELECT roname FROM pg_replication_origin WHERE roname LIKE 'strangler_nogrant_%'`);
    assert.deepEqual(left.rows, [], 'uninstall dropped both sides\' origins');
  });
  test('services/kit passes install options on: a service whose slot was lost installs again only with acceptGap (the runbook\'s --accept-gap), which records the gap', async () => {
    const { config, pools, tables } = await installed('kitgap');
    const slot = await captureSlot(pools.service) as string;
    await pools.service.query('SELECT pg_drop_replication_slot($1)', [slot]);
    await assert.rejects(installServiceCapture(config, pools, tables), { code: 'SYNC_SLOT_LOST' });
    const again = await installServiceCapture(config, pools, tables, { acceptGap: true });
    assert.ok(again.gap, 'the gap is reported');
    assert.ok((await slots(pools.service)).includes(await captureSlot(pools.service) as string), 'a new slot exists');
    await uninstallServiceCapture(config, pools, { slotWaitMs: 2_000 });
    assert.equal(await captureSlot(pools.service).catch(() => undefined), undefined);
  });

  test('a lost slot: the relay stops with SYNC_SLOT_LOST, status reports the direction broken (exit 1), install refuses until --accept-gap, which records the gap; verify + repair --from restore what was missed', async () => {
    const x = await installed('slotlost');
    const { config, pools, tables, p } = x;
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'before')`);
    await p.settle();
    const slot = await captureSlot(pools.legacy) as string;
    // An operator drops the "stale" slot (or the server fails over to a standby without it); writes go on meanwhile.
    await pools.legacy.query('SELECT pg_drop_replication_slot($1)', [slot]);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'while lost')`);
    await pools.legacy.query(`UPDATE items SET name = 'changed while lost' WHERE id = 1`);
    await assert.rejects(p.relays.legacy.step(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SYNC_SLOT_LOST');
      assert.match(err.message, new RegExp(`lost its replication slot "${slot}".*--side legacy --accept-gap`));
      return true;
    });
    // A running relay logs it as such and stops (no endless "retrying" of a transient failure).
    const destination = new PassThrough();
    const lines: string[] = [];
    destination.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
    const relay = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: new MemoryBus(1), log: createLogger({ level: 'warn', destination }) });
    await assert.rejects(relay.run(), { code: 'SYNC_SLOT_LOST' });
    await relay.stop();
    await new Promise((res) => setImmediate(res));
    const events = lines.map((l) => JSON.parse(l) as { event?: string; code?: string; level: number });
    assert.deepEqual(events.map((e) => [e.event, e.code]), [['sync.relay.failed', 'SYNC_SLOT_LOST']], 'logged once as such, no retry');
    assert.equal(events[0]?.level, 50, 'logged at error level');

    const st = await readSyncStatus(config, pools);
    const [l2s, s2l] = ['legacy-to-service', 'service-to-legacy'].map((d) => st.directions.find((x) => x.direction === d));
    assert.equal(l2s?.broken?.code, 'SYNC_SLOT_LOST');
    assert.equal(s2l?.broken, null);
    assert.match(formatStatus(st), /legacy-to-service: BROKEN .*\n {2}BROKEN SYNC_SLOT_LOST: logical capture on the legacy database lost its replication slot/);
    const dir = mkdtempSync(join(tmpdir(), 'strangler-slotlost-'));
    const file = join(dir, 'strangler.yaml');
    writeFileSync(file, JSON.stringify(syncDoc({ legacy: config.databases.legacy.url, service: config.databases.service.url }, { capture: { mode: 'logical' } })));
    const cli = (...args: string[]) => promisify(execFile)(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../../../cli/main.ts', import.meta.url)), 'sync', ...args, '--config', file],
      { env: { ...process.env, STRANGLER_LOG_LEVEL: 'warn' } });
    try {
      await assert.rejects(cli('status'), (err: { code?: number; stdout?: string; stderr?: string }) => {
        assert.equal(err.code, 1, 'status exits non-zero while a direction is broken');
        assert.match(err.stdout ?? '', /legacy-to-service: BROKEN/);
        assert.match(err.stderr ?? '', /legacy-to-service: SYNC_SLOT_LOST/);
        return true;
      });
      // Re-running install does not quietly start a new slot at the current WAL position.
      await assert.rejects(cli('capture', 'install', '--side', 'legacy'), (err: { code?: number; stderr?: string }) => err.code === 1 && /SYNC_SLOT_LOST: .*--accept-gap/.test(err.stderr ?? ''));
      assert.ok(!(await slots(pools.legacy)).includes(slot), 'no slot created without --accept-gap');
      const accepted = await cli('capture', 'install', '--side', 'legacy', '--accept-gap');
      assert.match(accepted.stdout, new RegExp(`slot "${slot}" was missing were not captured.*strangler sync repair --from legacy`));
      assert.equal((await cli('status')).stdout.includes('BROKEN'), false, 'healthy again (exit 0)');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const after = (await readSyncStatus(config, pools)).directions.find((d) => d.source === 'legacy');
    assert.equal(after?.broken, null);
    assert.equal(after?.captureGaps.length, 1);
    assert.equal(after?.captureGaps[0]?.slot, slot);
    assert.match(formatStatus(await readSyncStatus(config, pools)), /capture gap on legacy \(slot \S+ lost, new slot .*\): changes after LSN \S+ up to \S+ were not captured; verify and repair --from legacy; no verify since/);

    // Capture resumes; what was written while the slot was missing is found by verify and restored by repair.
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (3, 'after')`);
    await p.settle();
    const titles = async () => (await pools.service.query('SELECT item_id, title FROM catalog_items ORDER BY 1')).rows.map((r) => `${r.item_id}:${r.title}`);
    assert.deepEqual(await titles(), ['1:before', '3:after'], 'the gap is real: only repair brings it over');
    const v = await verifyTables(config, pools, tables);
    assert.equal(v.ok, false);
    await repairFromVerify({ config, pools, tables, verify: v, from: 'legacy' });
    await p.settle();
    assert.deepEqual(await titles(), ['1:changed while lost', '2:while lost', '3:after']);
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
    assert.match(formatStatus(await readSyncStatus(config, pools)), /capture gap on legacy .*; verify since: identical/);
    for (const side of ['legacy', 'service'] as const) await uninstallCapture(config, pools, side);
  });

  test('uninstall drops the slot before the state: a slot in use fails naming the PID and removes nothing; the rerun drops it, and a slot left behind without state', async () => {
    const { config, pools } = await installed('slotbusy');
    const slot = await captureSlot(pools.legacy) as string;
    // A walsender streaming from the slot holds it for as long as it runs (a relay or apply decoding holds it per cycle).
    const reader = new pg.Client({ connectionString: config.databases.legacy.url, replication: 'database' } as pg.ClientConfig);
    await reader.connect();
    reader.on('error', () => {});
    const streaming = reader.query(`START_REPLICATION SLOT ${slot} LOGICAL 0/0`).catch(() => 'ended');
    const activePid = async () => (await pools.legacy.query<{ pid: number | null }>('SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows[0]?.pid ?? null;
    let pid: number | null = null;
    for (const deadline = Date.now() + 10_000; pid === null && Date.now() < deadline;) pid = await activePid();
    assert.ok(pid !== null, 'the walsender holds the slot');
    await assert.rejects(uninstallCapture(config, pools, 'legacy', { slotWaitMs: 300 }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SYNC_SLOT_IN_USE');
      assert.match(err.message, new RegExp(`"${slot}" on the legacy database: it is in use by PID ${pid} \\(walsender.*pg_terminate_backend\\(${pid}\\)\\).*run uninstall again; nothing was removed`));
      return true;
    });
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), true, 'state and slot are both still there');
    await reader.end();
    await streaming;
    await uninstallCapture(config, pools, 'legacy');
    assert.equal(await captureInstalled(config, pools.legacy, 'legacy'), false);
    assert.ok(!(await slots(pools.legacy)).includes(slot), 'the slot is gone, it holds no WAL');
    // A slot left behind by an older uninstall (state gone, slot not): uninstall finds it by its name and drops it.
    await pools.legacy.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [await slotNameFor(pools.legacy, config, 'legacy')]);
    await uninstallCapture(config, pools, 'legacy');
    assert.ok(!(await slots(pools.legacy)).includes(slot), 'the leftover slot is dropped too');
    await uninstallCapture(config, pools, 'service');
  });

  test('switching from trigger to logical mode: a transaction committed after the slot was created but before the triggers were dropped is captured once', async () => {
    const { config, pools, tables } = await pair(logicalPg, 'switchrace');
    await installCapture({ ...config, capture: { ...config.capture, mode: 'trigger' } }, pools, 'legacy', tables);
    // Hold install's lock so that the switch stops between creating the slot and its transaction.
    const holder = await pools.legacy.connect();
    await holder.query('SELECT pg_advisory_lock(hashtext($1))', ['strangler-install:strangler_sync']);
    const switching = installCapture(config, pools, 'legacy', tables);
    const waiting = async () => (await pools.legacy.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`)).rows[0].n > 0;
    for (const deadline = Date.now() + 10_000; !(await waiting());) assert.ok(Date.now() < deadline, 'install reached its transaction');
    assert.ok((await slots(pools.legacy)).includes(await slotNameFor(pools.legacy, config, 'legacy')), 'the slot exists already');
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'in between')`);
    await holder.query('SELECT pg_advisory_unlock(hashtext($1))', ['strangler-install:strangler_sync']);
    holder.release();
    await switching;
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'after')`);
    await new LogicalDecoder({ config, pool: pools.legacy, side: 'legacy' }).catchUp();
    const rows = await pools.legacy.query(`SELECT pk, op FROM strangler_sync.changelog ORDER BY seq`);
    assert.deepEqual(rows.rows.map((r) => `${r.op}${r.pk}`), ['c[1]', 'c[2]'], 'the trigger captured 1, the slot 2; neither twice');
    await uninstallCapture(config, pools, 'legacy');
  });

  test('a fresh install: writes committed after the slot was created but before REPLICA IDENTITY FULL (an UPDATE leaving a TOASTed value unchanged, a DELETE) do not stop decoding and are not published with missing images', async () => {
    const { config, pools, tables } = await pair(logicalPg, 'identityrace');
    // Incompressible, so stored out of line (TOAST): an UPDATE that leaves it unchanged logs it as unchanged-toast-datum.
    const big = Array.from({ length: 3000 }, (_, i) => ((i * 2654435761) >>> 0).toString(36)).join('');
    await pools.legacy.query(`INSERT INTO items (id, name, body) VALUES (1, 'a', $1), (2, 'b', 'small')`, [big]);
    const holder = await pools.legacy.connect();
    await holder.query('SELECT pg_advisory_lock(hashtext($1))', ['strangler-install:strangler_sync']);
    const installing = installCapture(config, pools, 'legacy', tables);
    const waiting = async () => (await pools.legacy.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`)).rows[0].n > 0;
    for (const deadline = Date.now() + 10_000; !(await waiting());) assert.ok(Date.now() < deadline, 'install reached its transaction');
    await pools.legacy.query(`UPDATE items SET name = 'in between' WHERE id = 1`);
    await pools.legacy.query(`DELETE FROM items WHERE id = 2`);
    await holder.query('SELECT pg_advisory_unlock(hashtext($1))', ['strangler-install:strangler_sync']);
    holder.release();
    await installing;
    await pools.legacy.query(`UPDATE items SET name = 'after' WHERE id = 1`);
    await new LogicalDecoder({ config, pool: pools.legacy, side: 'legacy' }).catchUp();
    const rows = await pools.legacy.query(`SELECT op, pk, before->>'name' AS was, after->>'name' AS name, after->>'body' = $1 AS body FROM strangler_sync.changelog ORDER BY seq`, [big]);
    assert.deepEqual(rows.rows, [{ op: 'u', pk: '[1]', was: 'in between', name: 'after', body: true }], 'captured from the install on, with full images; what came before is for backfill');
    await uninstallCapture(config, pools, 'legacy');
  });
});
