/**
 * Backfill: copies a table's existing rows from one side to the other while live changes flow.
 *
 * Each chunk is one key range, written in one target transaction (Applier.transaction: marked as sync's own, retried
 * whole on a transient error):
 *   1. COPY the range out of the source (rows as they are, each with its version vector read in the same snapshot,
 *      see source-read.ts) straight into a temporary staging table on the target: no per-row work in this process;
 *   2. keys the target already knows (a version vector from live sync or a local write, or a parked dead letter) are
 *      taken out of staging and go through apply's per-event rules as snapshot events: the version guard orders them
 *      against the live stream exactly as it orders live events;
 *   3. every other key is new to the sync: one INSERT ... SELECT through the mapping, reading the staged rows in
 *      place (CompiledTable.rowWriteExprs: the values apply would write from the row's image), then its non-zero
 *      version vectors;
 *   4. a live apply or local write that committed a key of this chunk while step 3 waited for it shows up as a
 *      version vector on a key we wrote as new: the transaction is retried (SQLSTATE 40001), and the key then takes
 *      step 2. Writers that start later wait for this transaction's row locks and find our versions;
 *   5. the cursor is stored in the same transaction, after the previous chunk committed: a crash resumes after the
 *      last committed chunk, never copying a row twice into effect.
 * Two chunks are in flight at once (disjoint key ranges on two connections): while one is inserted, the next is copied
 * and inserted too. The newer one waits for the older to commit before it touches anything they share (step 2's
 * apply counters, the cursor), and a table with a foreign key to itself goes one chunk at a time (a parent row in
 * the other chunk's uncommitted insert is invisible to the foreign-key check).
 * Throttled by rows/s and by the live direction's backlog (live apply has priority over backfill).
 */
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import type { PoolClient } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { Logger } from '../common/logger.ts';
import { silentLogger } from '../common/logger.ts';
import { StranglerError, messageOf } from '../common/errors.ts';
import type { Side, SyncConfig } from './config-schema.ts';
import { otherSide } from './config-schema.ts';
import type { Pools } from './db.ts';
import type { CompiledTable } from './mapping.ts';
import { q } from './mapping.ts';
import { Applier } from './apply.ts';
import { CHUNK_META, chunkCopySelect, chunkEnd, chunkLockSql, stagedEventValue } from './source-read.ts';
import { SYNC_LOG } from './log-events.ts';

export interface BackfillOptions {
  config: SyncConfig;
  pools: Pools;
  tables: readonly CompiledTable[];
  table: string;
  source: Side;
  log?: Logger;
  chunkRows?: number;
  maxRowsPerSecond?: number;
  maxLagEvents?: number;
  /** Start again from the first key (default: resume from the stored cursor). */
  restart?: boolean;
  onProgress?: (done: number, total: number | null) => void;
  /** Stop after this many chunks (tests use it to simulate an interruption). */
  maxChunks?: number;
  signal?: AbortSignal;
}

export interface BackfillResult { table: string; source: Side; rows: number; rowsTotal: number | null; chunks: number; ms: number; done: boolean; resumedFrom: string | null }

/** Resolves after `ms`, or at once when `signal` aborts (a stop request must not wait out the throttle). */
const sleep = (ms: number, signal?: AbortSignal): Promise<void> => delay(ms, undefined, { signal }).catch(() => {});

export async function runBackfill(o: BackfillOptions): Promise<BackfillResult> {
  const log = o.log ?? silentLogger;
  const t = o.tables.find((x) => x.name === o.table);
  if (!t) throw new StranglerError('CLI_USAGE', `sync backfill: unknown table "${o.table}"; configured: ${o.tables.map((x) => x.name).join(', ')}`);
  const target = otherSide(o.source);
  const s = q(o.config.stateSchema);
  const chunkRows = o.chunkRows ?? o.config.backfill.chunkRows;
  const maxRate = o.maxRowsPerSecond ?? o.config.backfill.maxRowsPerSecond;
  const maxLag = o.maxLagEvents ?? o.config.backfill.maxLagEvents;
  const applier = new Applier({ pool: o.pools[target], config: o.config, target, tables: o.tables, log });

  if (o.restart) await o.pools[target].query(`DELETE FROM ${s}.backfill WHERE source = $1 AND tbl = $2`, [o.source, t.name]);
  const count = await o.pools[o.source].query<{ n: string }>(`SELECT count(*) AS n FROM ${t.qualified(o.source)}`);
  const total = Number(count.rows[0]?.n ?? 0);
  await o.pools[target].query(
    `INSERT INTO ${s}.backfill (source, tbl, rows_total) VALUES ($1, $2, $3) ON CONFLICT (source, tbl) DO UPDATE SET rows_total = EXCLUDED.rows_total, updated_at = now()`,
    [o.source, t.name, total]);
  const st = await o.pools[target].query<{ cursor: string | null; rows_done: string; done: boolean }>(`SELECT cursor, rows_done, done FROM ${s}.backfill WHERE source = $1 AND tbl = $2`, [o.source, t.name]);
  let cursor = st.rows[0]?.cursor ?? null;
  const resumedFrom = cursor;
  let done = Number(st.rows[0]?.rows_done ?? 0);
  const startDone = done;
  const started = Date.now();
  let chunks = 0;
  if (st.rows[0]?.done && !o.restart) {
    return { table: t.name, source: o.source, rows: done, rowsTotal: total, chunks: 0, ms: 0, done: true, resumedFrom };
  }

  const stage = await stagingTable(o.pools[target], t, o.source);
  const selfRef = await o.pools[target].query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_constraint WHERE contype = 'f' AND conrelid = $1::regclass AND confrelid = conrelid`, [t.qualified(target)]);
  const parallel = (selfRef.rows[0]?.n ?? 0) === 0;
  // The same for every chunk (one staging table, one mapping): built once, not per chunk.
  const takeSpecialSql = `DELETE FROM ${stage.name} st WHERE EXISTS (SELECT 1 FROM ${s}.row_version rv WHERE rv.tbl = $1 AND rv.pk = st.${CHUNK_META.key})
          OR EXISTS (SELECT 1 FROM ${s}.dead_letters d WHERE d.tbl = $1 AND d.pk = st.${CHUNK_META.key} AND d.status = 'parked')
        RETURNING ${stagedEventValue(t, o.source)} AS value`;
  const insertSql = bulkInsertSql(t, target, stage.name);
  const writeChunk = (after: string | null, upTo: string, before: Promise<void>) => applier.transaction(async (client) => {
    const rows = await copyChunk(o.pools, o.config, t, o.source, after, upTo, client, stage);
    const special = await client.query<{ value: string }>(takeSpecialSql, [t.name]);
    await client.query(insertSql);
    // From here on the chunk touches rows it shares with the chunk before it (apply's counters, the cursor, the chunk
    // lock): only after that chunk committed, so the older chunk never waits for a lock of the newer one while the
    // newer waits for it to commit (a deadlock PostgreSQL cannot see, since one side waits here).
    await before;
    // Until commit no live delete of this table is applied (see chunkLockSql): one applied before is caught below.
    await client.query(chunkLockSql(o.config, t, 'exclusive'));
    await applier.decodeLocalWrites();
    const raced = await client.query(
      `SELECT 1 FROM ${s}.row_version rv JOIN ${stage.name} st ON rv.tbl = $1 AND rv.pk = st.${CHUNK_META.key} LIMIT 1 FOR UPDATE OF rv`, [t.name]);
    if (raced.rows.length > 0) throw Object.assign(new Error(`a live change to ${t.name} committed while its backfill chunk was written (the chunk is run again so the decision sees it)`), { code: '40001' });
    await client.query(
      `INSERT INTO ${s}.row_version (tbl, pk, legacy_version, service_version, deleted, ts)
       SELECT $1, ${CHUNK_META.key}, ${CHUNK_META.legacy}, ${CHUNK_META.service}, false, coalesce(${CHUNK_META.ts}, now())
         FROM ${stage.name} WHERE ${CHUNK_META.legacy} <> 0 OR ${CHUNK_META.service} <> 0`, [t.name]);
    if (special.rows.length > 0) {
      await applier.applyIn(client, special.rows.map((r) => ({ topic: null, partition: null, offset: null, value: r.value })));
    }
    await client.query(`UPDATE ${s}.backfill SET cursor = $3, rows_done = rows_done + $4, updated_at = now() WHERE source = $1 AND tbl = $2`, [o.source, t.name, upTo, rows]);
    return rows;
  }, { name: `backfill chunk of ${t.name} (keys after ${after ?? 'the first'} up to ${upTo})`, spent: 'live changes kept reaching keys of the chunk while it was written; nothing of the chunk was written, and live sync goes on applying those changes' });

  // Chunk bounds come from the source's key index, one after another; the chunks themselves overlap by one. The next
  // bound is read ahead: a rejection the loop never gets to await (it stopped on another error) must not be unhandled.
  const endAfter = (key: string | null): Promise<string | null> => {
    const end = chunkEnd(o.pools[o.source], t, o.source, key, chunkRows);
    end.catch(() => {});
    return end;
  };
  let nextEnd = endAfter(cursor);
  let previous: Promise<void> = Promise.resolve();
  try {
  for (;;) {
    if (o.signal?.aborted) break;
    // Throttle on the live backlog of this direction: unpublished changes on the source.
    if (maxLag > 0) {
      for (;;) {
        const lag = await o.pools[o.source].query<{ n: string }>(`SELECT count(*) AS n FROM (SELECT 1 FROM ${s}.changelog LIMIT $1) x`, [maxLag + 1]);
        if (Number(lag.rows[0]?.n ?? 0) <= maxLag || o.signal?.aborted) break;
        log.info({ event: SYNC_LOG.backfillThrottled, table: t.name, reason: 'lag' }, 'backfill paused: live sync is behind');
        await sleep(200, o.signal);
      }
      if (o.signal?.aborted) break;
    }
    const upTo = await nextEnd;
    if (upTo === null) {
      await previous;
      await o.pools[target].query(`UPDATE ${s}.backfill SET done = true, updated_at = now() WHERE source = $1 AND tbl = $2`, [o.source, t.name]);
      o.onProgress?.(done, total);
      log.info({ event: SYNC_LOG.backfillDone, table: t.name, rows: done }, 'backfill done');
      return { table: t.name, source: o.source, rows: done, rowsTotal: total, chunks, ms: Date.now() - started, done: true, resumedFrom };
    }
    const after = cursor;
    cursor = upTo;
    nextEnd = endAfter(upTo);
    const before = previous;
    const current = writeChunk(after, upTo, before).then((rows) => {
      done += rows;
      chunks += 1;
      o.onProgress?.(done, total);
      log.debug({ event: SYNC_LOG.backfillChunk, table: t.name, rows, cursor: upTo }, 'backfill chunk');
    });
    current.catch(() => {});
    // At most two chunks in flight: wait for the older one before starting another. A table with a foreign key to
    // itself takes one chunk at a time: a row's parent in the other chunk's uncommitted insert is invisible to the check.
    await (parallel ? before : current);
    previous = current;
    if (maxRate) {
      const ahead = ((done + chunkRows - startDone) * 1000) / maxRate - (Date.now() - started);
      if (ahead > 0) await sleep(ahead, o.signal);
    }
    if (o.maxChunks !== undefined && chunks + 1 >= o.maxChunks) { await previous; break; }
  }
  } catch (err) {
    // A database restarting, a failover, a chunk that keeps failing: every committed chunk stored its cursor.
    await previous.catch(() => {});
    throw new StranglerError('SYNC_BACKFILL_INTERRUPTED',
      `backfill of ${t.name} ${o.source}→${target} stopped after ${done} of ${total} rows: ${messageOf(err)}; its checkpoint is saved: run the same command again to resume`, { cause: err });
  }
  await previous.catch(() => {});
  await nextEnd.catch(() => {});
  return { table: t.name, source: o.source, rows: done, rowsTotal: total, chunks, ms: Date.now() - started, done: false, resumedFrom };
}

interface Staging { name: string; columns: string }

/**
 * The staging table's shape: the chunk's meta columns, then the source table's columns with the source's types where
 * the target has the same built-in type (so the image the mapping reads is the one the source would have produced),
 * text otherwise (an enum or domain that exists only on the source).
 */
async function stagingTable(targetPool: Pools[Side], t: CompiledTable, source: Side): Promise<Staging> {
  const cols = [...t.table(source).columns.values()];
  const clash = cols.find((c) => Object.values(CHUNK_META).includes(c.name as never));
  if (clash) throw new StranglerError('SYNC_MAPPING_INVALID', `sync backfill: ${source} table ${t.table(source).name} has a column named "${clash.name}", a name backfill reserves for itself`);
  const types = [...new Set(cols.map((c) => c.type))];
  const builtin = await targetPool.query<{ type: string }>(
    `SELECT x.type FROM unnest($1::text[]) AS x(type) JOIN pg_type ty ON ty.oid = to_regtype(x.type)
       JOIN pg_namespace n ON n.oid = ty.typnamespace WHERE n.nspname = 'pg_catalog'`, [types]);
  const ok = new Set(builtin.rows.map((r) => r.type));
  const m = CHUNK_META;
  return {
    name: q(`strangler_backfill_${t.name}`),
    columns: [`${m.key} text`, `${m.legacy} bigint`, `${m.service} bigint`, `${m.ts} timestamptz`, ...cols.map((c) => `${q(c.name)} ${ok.has(c.type) ? c.type : 'text'}`)].join(', '),
  };
}

/** Copies the key range (after, upTo] from the source into a new staging table in the target transaction. */
async function copyChunk(pools: Pools, config: SyncConfig, t: CompiledTable, source: Side, after: string | null, upTo: string, client: PoolClient, stage: Staging): Promise<number> {
  await client.query(`CREATE TEMP TABLE ${stage.name} (${stage.columns}) ON COMMIT DROP`);
  const src = await pools[source].connect();
  let broken = false;
  try {
    const into = client.query(copyFrom(`COPY ${stage.name} FROM STDIN`));
    const out = src.query(copyTo(`COPY (${chunkCopySelect(config, t, source, after, upTo)}) TO STDOUT`));
    try {
      await pipeline(out, into);
    } finally {
      // node-postgres arms the pool's query_timeout for every query and clears it from the query's callback, which
      // pg-copy-streams' COPY TO never calls (its COPY FROM does): the timer would keep the process alive for
      // queryTimeoutMs and then fire an error into the finished stream.
      (out as { callback?: () => void }).callback?.();
    }
    return into.rowCount;
  } catch (err) {
    broken = true;
    throw err;
  } finally {
    src.release(broken);
  }
}

/** New keys in one statement, through the mapping's expressions over the staged rows read in place. */
function bulkInsertSql(t: CompiledTable, target: Side, stage: string): string {
  const key = t.key(target);
  const exprs = t.rowWriteExprs(target, 'st');
  const nonKey = exprs.filter((e) => !key.includes(e.column));
  const onConflict = nonKey.length === 0 ? 'DO NOTHING' : `DO UPDATE SET ${nonKey.map((e) => `${q(e.column)} = EXCLUDED.${q(e.column)}`).join(', ')}`;
  return `INSERT INTO ${t.qualified(target)} (${exprs.map((e) => q(e.column)).join(', ')})
    SELECT ${exprs.map((e) => e.expr).join(', ')} FROM ${stage} st
    ON CONFLICT (${key.map(q).join(', ')}) ${onConflict}`;
}
