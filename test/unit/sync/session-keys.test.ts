/**
 * Sync against databases whose session defaults differ, keys the mapping must refuse, and verify's table choice,
 * on real embedded PostgreSQL (memory transport):
 * - every sync session pins the settings that decide how values print (DateStyle, IntervalStyle, TimeZone, …), so a
 *   legacy database in DateStyle 'SQL, DMY' backfills and verifies exactly;
 * - the capture trigger pins them too: an application session in another TimeZone (and other output styles) yields
 *   the same key text and images as any other session, in trigger and logical capture mode alike;
 * - a key over a nullable unique index, or unique only through a DEFERRABLE constraint, is refused at compile time;
 * - verify of a table that is not configured is a usage error, never "identical".
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { LOGICAL_SERVER_FLAGS, startSyncFixture, syncDoc, type SyncFixture } from './fixture.ts';
import { Pipeline } from './load.ts';
import { compileFromDatabases, installCapture } from '../../../legacy-adapter/capture/install.ts';
import { LogicalDecoder } from '../../../legacy-adapter/capture/logical.ts';
import { runBackfill } from '../../../migration-scripts/backfill.ts';
import { closePools, openPool, openPools, type Pools } from '../../../migration-scripts/db.ts';
import { verifyTables } from '../../../migration-scripts/verify.ts';

let fx: SyncFixture;
const tmp = mkdtempSync(join(tmpdir(), 'strangler-session-keys-'));
const fresh: Pools[] = [];
before(async () => { fx = await startSyncFixture({ serverFlags: LOGICAL_SERVER_FLAGS }); });
after(async () => {
  for (const p of fresh) await closePools(p).catch(() => {});
  await fx.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** A mapping of one table `name` with the same shape on both sides. */
function sameShape(name: string, key: string[], columns: string[]) {
  return { name, legacy: { table: name, key }, service: { table: name, key }, columns: columns.map((c) => ({ legacy: c, service: c })) };
}

/** The code and message of the mapping error compiling `ddl` (run on both databases) with `mapping` gives. */
async function mappingError(name: string, ddl: { legacy: string; service: string }, mapping: ReturnType<typeof sameShape>): Promise<{ code?: string; message: string } | undefined> {
  const { config, pools } = await fx.freshPair(name, { tables: [mapping] });
  await pools.legacy.query(ddl.legacy);
  await pools.service.query(ddl.service);
  try {
    await compileFromDatabases(config, pools);
    return undefined;
  } catch (err) {
    return err as { code?: string; message: string };
  }
}

/** A session as an application might run it (not a sync pool's): another TimeZone and non-default output styles. */
async function foreignSession(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`SET TimeZone = 'Europe/Berlin'; SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'; SET bytea_output = 'escape'; SET extra_float_digits = 0`);
  return c;
}

/** A date format that does not depend on the session's DateStyle. */
const FMT = `'YYYY-MM-DD HH24:MI:SS'`;

const EV_DDL = `CREATE TABLE ev (id int, at timestamptz, span interval, raw bytea, f float8, v text, PRIMARY KEY (id, at));`;
const EV = sameShape('ev', ['id', 'at'], ['id', 'at', 'span', 'raw', 'f', 'v']);

describe('sync session settings, keys and verify', () => {
  test('a legacy database in DateStyle SQL, DMY (and other output styles): backfill copies dates exactly, live sync and verify agree', async () => {
    const { config, pools } = await fx.freshPair('dmy');
    await pools.legacy.query(`ALTER DATABASE dmy_legacy SET DateStyle = 'SQL, DMY'; ALTER DATABASE dmy_legacy SET IntervalStyle = 'sql_standard'`);
    await pools.service.query(`ALTER DATABASE dmy_service SET IntervalStyle = 'iso_8601'; ALTER DATABASE dmy_service SET bytea_output = 'escape'`);
    const db = openPools(config); // new connections: the databases' defaults would apply
    fresh.push(db);
    await db.legacy.query(`INSERT INTO items (id, name, happened_at) VALUES (1, 'x', '2024-03-05 10:00:00+00')`);
    await db.legacy.query(`INSERT INTO people (email, updated) VALUES ('a@x', '2024-03-05 10:00:00')`);
    const tables = await compileFromDatabases(config, db);
    await installCapture(config, db, 'legacy', tables);
    await installCapture(config, db, 'service', tables);
    await runBackfill({ config, pools: db, tables, table: 'items', source: 'legacy' });
    await runBackfill({ config, pools: db, tables, table: 'people', source: 'legacy' });
    const svc = async () => (await db.service.query<{ h: string; u: string }>(
      `SELECT (SELECT to_char(happened_at AT TIME ZONE 'UTC', ${FMT}) FROM catalog_items WHERE item_id = 1) AS h, (SELECT to_char(updated, ${FMT}) FROM persons WHERE email = 'a@x') AS u`)).rows[0];
    assert.deepEqual(await svc(), { h: '2024-03-05 10:00:00', u: '2024-03-05 10:00:00' }, '5 March stays 5 March');
    // live changes from a legacy session in the database's own DateStyle (not a sync session)
    const appClient = new pg.Client({ connectionString: config.databases.legacy.url });
    await appClient.connect();
    try {
      assert.equal((await appClient.query<{ d: string }>(`SELECT current_setting('DateStyle') AS d`)).rows[0]?.d, 'SQL, DMY');
      await appClient.query(`INSERT INTO people (email, updated) VALUES ('b@x', '2024-04-06 07:08:09')`);
    } finally { await appClient.end(); }
    await new Pipeline(config, db, tables).settle();
    assert.equal((await db.service.query<{ u: string }>(`SELECT to_char(updated, ${FMT}) AS u FROM persons WHERE email = 'b@x'`)).rows[0]?.u, '2024-04-06 07:08:09');
    const v = await verifyTables(config, db, tables);
    assert.equal(v.ok, true, `verify flags correctly synced rows: ${JSON.stringify(v.tables.map((t) => t.diffs))}`);
    const shown = (await db.legacy.query<{ d: string; i: string; t: string }>(`SELECT current_setting('DateStyle') AS d, current_setting('IntervalStyle') AS i, current_setting('TimeZone') AS t`)).rows[0];
    assert.deepEqual(shown, { d: 'ISO, YMD', i: 'postgres', t: 'UTC' }, 'sync sessions pin their output settings');
  });

  test('an options parameter in the database URL is kept, and the sync settings still apply', async () => {
    const { config } = await fx.freshPair('urlopts');
    const u = new URL(config.databases.legacy.url);
    u.searchParams.set('options', '-c application_name=from_url -c DateStyle=SQL,DMY');
    const pool = openPool(u.toString(), 1);
    try {
      const r = (await pool.query<{ a: string; d: string }>(`SELECT current_setting('application_name') AS a, current_setting('DateStyle') AS d`)).rows[0];
      assert.deepEqual(r, { a: 'from_url', d: 'ISO, YMD' });
    } finally { await pool.end(); }
  });

  test('verify of a table that is not configured is a usage error naming the configured tables; nothing is recorded; the CLI exits non-zero', async () => {
    const { config, pools, urls } = await fx.freshPair('unknowntable');
    const tables = await compileFromDatabases(config, pools);
    await installCapture(config, pools, 'legacy', tables);
    await installCapture(config, pools, 'service', tables);
    await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'only on legacy')`);
    await assert.rejects(verifyTables(config, pools, tables, 'itemz'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'CLI_USAGE');
      assert.match(err.message, /unknown table "itemz"; configured: items, people, notes/);
      return true;
    });
    assert.equal((await pools.legacy.query('SELECT count(*)::int AS n FROM strangler_sync.verify_runs')).rows[0].n, 0, 'no run stored (status would show it)');
    const file = join(tmp, 'unknowntable.json');
    writeFileSync(file, JSON.stringify(syncDoc(urls)));
    const cli = spawnSync(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'sync', 'verify', '--table', 'itemz', '--config', file], { encoding: 'utf8' });
    assert.equal(cli.status, 2, `a usage error exits 2 (stdout ${cli.stdout})`);
    assert.doesNotMatch(cli.stdout, /identical/);
    assert.match(cli.stderr, /CLI_USAGE: sync verify: unknown table "itemz"; configured: items, people, notes/);
  });

  test('a key over a nullable unique index is refused, naming the table, the column and the fix; NOT NULL makes it valid', async () => {
    const ddl = `CREATE TABLE acct (email text UNIQUE, name text);`;
    const acct = sameShape('acct', ['email'], ['email', 'name']);
    const err = await mappingError('nullkey', { legacy: ddl, service: `CREATE TABLE acct (email text NOT NULL UNIQUE, name text);` }, acct);
    assert.equal(err?.code, 'SYNC_MAPPING_INVALID');
    assert.match(err?.message ?? '', /sync\.tables\[0\]\.legacy\.key: key column "email" of legacy table public\.acct allows NULL.*ALTER TABLE public\.acct ALTER COLUMN "email" SET NOT NULL/);
    assert.doesNotMatch(err?.message ?? '', /service table/, 'the NOT NULL side is fine');
    assert.equal(await mappingError('notnullkey', { legacy: ddl.replace('text UNIQUE', 'text NOT NULL UNIQUE'), service: ddl.replace('text UNIQUE', 'text NOT NULL UNIQUE') }, acct), undefined);
  });

  test('a key unique only through a DEFERRABLE constraint is refused, naming the constraint and the fix; an immediate unique index on it makes it valid', async () => {
    const items = sameShape('things', ['id'], ['id', 'name']);
    const deferrable = `CREATE TABLE things (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, name text);`;
    const plain = `CREATE TABLE things (id int PRIMARY KEY, name text);`;
    const err = await mappingError('deferkey', { legacy: plain, service: deferrable }, items);
    assert.equal(err?.code, 'SYNC_MAPPING_INVALID');
    assert.match(err?.message ?? '', /sync\.tables\[0\]\.service\.key: key \(id\) of service table public\.things is unique only through the DEFERRABLE constraint "things_pkey".*NOT DEFERRABLE.*CREATE UNIQUE INDEX CONCURRENTLY ON public\.things \("id"\)/);
    assert.equal(await mappingError('deferkeyfixed', { legacy: plain, service: `${deferrable} CREATE UNIQUE INDEX ON things (id);` }, items), undefined);
    // An expression index does not make its plain columns a key.
    const expr = await mappingError('exprkey', { legacy: plain, service: `CREATE TABLE things (id int NOT NULL, name text); CREATE UNIQUE INDEX ON things (id, lower(name));` }, items);
    assert.match(expr?.message ?? '', /key \(id\) of service table public\.things is not its primary key or a unique index/);
  });

  test('key columns whose types print one key differently (char(n) against text, a numeric scale against an integer) are refused; integer widths and text limits are not', async () => {
    const codes = sameShape('codes', ['code'], ['code', 'name']);
    const err = await mappingError('charkey', { legacy: `CREATE TABLE codes (code char(5) PRIMARY KEY, name text);`, service: `CREATE TABLE codes (code text PRIMARY KEY, name text);` }, codes);
    assert.equal(err?.code, 'SYNC_MAPPING_INVALID');
    assert.match(err?.message ?? '', /sync\.tables\[0\]\.columns: key column legacy code character\(5\) ↔ service code text: the two types print one key differently.*give both key columns the same type/);
    const num = await mappingError('numkey', { legacy: `CREATE TABLE codes (code bigint PRIMARY KEY, name text);`, service: `CREATE TABLE codes (code numeric(12,2) PRIMARY KEY, name text);` }, codes);
    assert.match(num?.message ?? '', /key column legacy code bigint ↔ service code numeric\(12,2\)/);
    assert.equal(await mappingError('intkey', { legacy: `CREATE TABLE codes (code integer PRIMARY KEY, name text);`, service: `CREATE TABLE codes (code numeric(18,0) PRIMARY KEY, name text);` }, codes), undefined);
    assert.equal(await mappingError('textkey', { legacy: `CREATE TABLE codes (code varchar(5) PRIMARY KEY, name text);`, service: `CREATE TABLE codes (code text PRIMARY KEY, name text);` }, codes), undefined);
  });

  test('verify compares a table keyed by an enum (which takes no collation) and names the key that differs', async () => {
    const ddl = `CREATE TYPE size AS ENUM ('small', 'large'); CREATE TABLE shirts (size size PRIMARY KEY, stock int);`;
    const { config, pools } = await fx.freshPair('enumkey', { tables: [sameShape('shirts', ['size'], ['size', 'stock'])] });
    await pools.legacy.query(ddl);
    await pools.service.query(ddl);
    const tables = await compileFromDatabases(config, pools);
    await installCapture(config, pools, 'legacy', tables);
    await installCapture(config, pools, 'service', tables);
    await pools.legacy.query(`INSERT INTO shirts VALUES ('small', 1), ('large', 2)`);
    await new Pipeline(config, pools, tables).settle();
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; UPDATE shirts SET stock = 3 WHERE size = 'large'; COMMIT`);
    assert.deepEqual((await verifyTables(config, pools, tables)).tables[0]?.diffs, [{ key: '["large"]', kind: 'different' }]);
  });

  test('a timestamptz key written from sessions in other time zones and output styles: one key text, the same images, in trigger and logical mode; conflicting writes converge', async () => {
    const expectedKey = '[1, "2024-01-01T10:00:00+00:00"]';
    const run = async (mode: 'trigger' | 'logical') => {
      const { config, pools } = await fx.freshPair(`tzkey_${mode}`, { tables: [EV], capture: { mode } });
      await pools.legacy.query(EV_DDL);
      await pools.service.query(EV_DDL);
      const tables = await compileFromDatabases(config, pools);
      await installCapture(config, pools, 'legacy', tables);
      await installCapture(config, pools, 'service', tables);
      const app = await foreignSession(config.databases.legacy.url);
      try {
        await app.query(`INSERT INTO ev VALUES (1, '2024-01-01 11:00:00+01', '1 year 2 mons -3 days 04:05:06.5', '\\x00ff', 0.1::float8 + 0.2::float8, 'a')`);
        await pools.legacy.query(`UPDATE ev SET v = 'b'`); // a sync-pinned (UTC) session
        await app.query(`UPDATE ev SET v = 'c'`);
      } finally { await app.end(); }
      if (mode === 'logical') await new LogicalDecoder({ config, pool: pools.legacy, side: 'legacy' }).catchUp();
      const rows = (await pools.legacy.query(`SELECT op, pk, before::text AS before, after::text AS after FROM strangler_sync.changelog ORDER BY seq`)).rows;
      const keys = (await pools.legacy.query<{ pk: string }>(`SELECT pk FROM strangler_sync.row_version`)).rows.map((r) => r.pk);
      return { config, pools, tables, rows, keys };
    };
    const trig = await run('trigger');
    assert.deepEqual(trig.keys, [expectedKey], 'one row, one key');
    assert.deepEqual(trig.rows.map((r) => [r.op, r.pk]), [['c', expectedKey], ['u', expectedKey], ['u', expectedKey]]);
    assert.deepEqual(JSON.parse(trig.rows[0].after), { id: 1, at: '2024-01-01T10:00:00+00:00', span: '1 year 2 mons -3 days +04:05:06.5', raw: '\\x00ff', f: 0.30000000000000004, v: 'a' },
      'the image prints as in a sync session, whatever the writer session');
    assert.equal(trig.rows[2].before, trig.rows[1].after, 'images from the two sessions are byte-identical');
    const logi = await run('logical');
    assert.deepEqual(logi.keys, [expectedKey]);
    assert.deepEqual(logi.rows, trig.rows, 'logical capture writes byte-identical changelog rows');

    // Both sides change the row before sync catches up (the writer in Berlin): one key, so the conflict is seen and both converge.
    const { config, pools, tables } = trig;
    const p = new Pipeline(config, pools, tables);
    await p.settle();
    await pools.service.query(`UPDATE ev SET v = 's' WHERE id = 1`);
    const app = await foreignSession(config.databases.legacy.url);
    try { await app.query(`UPDATE ev SET v = 'l' WHERE id = 1`); } finally { await app.end(); }
    await p.settle();
    const l = (await pools.legacy.query('SELECT v FROM ev')).rows[0]?.v;
    const s = (await pools.service.query('SELECT v FROM ev')).rows[0]?.v;
    assert.deepEqual([l, s], ['l', 'l'], 'owner (legacy) wins on both sides');
    assert.equal((await verifyTables(config, pools, tables)).ok, true);
  });
});
