/**
 * Backfill: copies a table's existing rows from one side to the other while live changes flow.
 * Chunks are read in key order with their exact versions (source-read.ts) and written through the apply path, so
 * the version guard orders them against live changes. The cursor is stored in the target database in the same
 * transaction as the chunk: a crash resumes after the last committed chunk, never copying a row twice into effect.
 * Throttled by rows/s and by the live direction's backlog (live apply has priority over backfill).
 */
import type { Logger } from '../common/logger.ts';
import { silentLogger } from '../common/logger.ts';
import { StranglerError } from '../common/errors.ts';
import type { Side, SyncConfig } from './config-schema.ts';
import { otherSide } from './config-schema.ts';
import type { Pools } from './db.ts';
import type { CompiledTable } from './mapping.ts';
import { q } from './mapping.ts';
import { Applier } from './apply.ts';
import { readChunk } from './source-read.ts';
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

  // Two chunks are written at once on two connections (disjoint key ranges), but they COMMIT in order: a chunk's
  // transaction stores its cursor only after the previous chunk committed, so the checkpoint never passes a chunk
  // that is not in the target, and a failed chunk fails the one behind it.
  let next = readChunk(o.pools[o.source], o.config, t, o.source, cursor, chunkRows);
  let previous: Promise<void> = Promise.resolve();
  const finishChunk = (rows: number, lastKey: string) => {
    cursor = lastKey;
    done += rows;
    chunks += 1;
    o.onProgress?.(done, total);
    log.debug({ event: SYNC_LOG.backfillChunk, table: t.name, rows, cursor }, 'backfill chunk');
  };
  for (;;) {
    if (o.signal?.aborted) break;
    // Throttle on the live backlog of this direction: unpublished changes on the source.
    if (maxLag > 0) {
      for (;;) {
        const lag = await o.pools[o.source].query<{ n: string }>(`SELECT count(*) AS n FROM (SELECT 1 FROM ${s}.changelog LIMIT $1) x`, [maxLag + 1]);
        if (Number(lag.rows[0]?.n ?? 0) <= maxLag || o.signal?.aborted) break;
        log.info({ event: SYNC_LOG.backfillThrottled, table: t.name, reason: 'lag' }, 'backfill paused: live sync is behind');
        await sleep(200);
      }
    }
    const chunk = await next;
    if (chunk.events.length === 0) {
      await previous;
      await o.pools[target].query(`UPDATE ${s}.backfill SET done = true, updated_at = now() WHERE source = $1 AND tbl = $2`, [o.source, t.name]);
      o.onProgress?.(done, total);
      log.info({ event: SYNC_LOG.backfillDone, table: t.name, rows: done }, 'backfill done');
      return { table: t.name, source: o.source, rows: done, rowsTotal: total, chunks, ms: Date.now() - started, done: true, resumedFrom };
    }
    const lastKey = chunk.lastKey as string;
    // Read the next chunk while this one is written (different databases).
    next = readChunk(o.pools[o.source], o.config, t, o.source, lastKey, chunkRows);
    const rows = chunk.events.length;
    const before = previous;
    const current = applier.applyBatch(chunk.events, {
      inTransaction: async (client) => {
        await before;
        await client.query(`UPDATE ${s}.backfill SET cursor = $3, rows_done = rows_done + $4, updated_at = now() WHERE source = $1 AND tbl = $2`, [o.source, t.name, lastKey, rows]);
      },
    }).then(() => finishChunk(rows, lastKey));
    current.catch(() => {});
    // At most two chunks in flight: wait for the older one before reading on.
    await before;
    previous = current;
    if (maxRate) {
      const ahead = ((done + rows - startDone) * 1000) / maxRate - (Date.now() - started);
      if (ahead > 0) await sleep(ahead);
    }
    if (o.maxChunks !== undefined && chunks + 1 >= o.maxChunks) { await previous; break; }
  }
  await previous.catch(() => {});
  await next.catch(() => {});
  return { table: t.name, source: o.source, rows: done, rowsTotal: total, chunks, ms: Date.now() - started, done: false, resumedFrom };
}
