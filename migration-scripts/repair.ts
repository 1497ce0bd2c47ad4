/**
 * Repair: re-syncs exactly the keys a verify reported, through the apply path (never ad-hoc UPDATEs).
 * For each key the source side's current row is read with its version (source-read.ts) and applied with `force`;
 * a key the source no longer has is deleted on the target (leaving a tombstone). The source side is the table's
 * owner unless `from` says otherwise. Parked dead letters can be retried the same way (`retryDeadLetters`).
 */
import type { Logger } from '../common/logger.ts';
import { silentLogger } from '../common/logger.ts';
import type { Side, SyncConfig } from './config-schema.ts';
import { otherSide } from './config-schema.ts';
import type { Pools } from './db.ts';
import type { CompiledTable } from './mapping.ts';
import { q } from './mapping.ts';
import { Applier } from './apply.ts';
import { deleteEvent, readKeys } from './source-read.ts';
import type { VerifyResult } from './verify.ts';
import { SYNC_LOG } from './log-events.ts';
import type { ConsumedEvent } from './event.ts';

export interface RepairResult { tables: { table: string; from: Side; to: Side; rewritten: number; deleted: number }[] }

export async function repairFromVerify(o: { config: SyncConfig; pools: Pools; tables: readonly CompiledTable[]; verify: VerifyResult; from?: Side; log?: Logger }): Promise<RepairResult> {
  const log = o.log ?? silentLogger;
  const out: RepairResult = { tables: [] };
  for (const tv of o.verify.tables) {
    if (tv.diffs.length === 0) continue;
    const t = o.tables.find((x) => x.name === tv.table);
    if (!t) continue;
    const from = o.from ?? t.owner;
    const to = otherSide(from);
    const keys = tv.diffs.map((d) => d.key);
    const applier = new Applier({ pool: o.pools[to], config: o.config, target: to, tables: o.tables, log });
    let rewritten = 0;
    let deleted = 0;
    for (let i = 0; i < keys.length; i += 1_000) {
      const slice = keys.slice(i, i + 1_000);
      const { events, missing } = await readKeys(o.pools[from], o.config, t, from, slice);
      const all: ConsumedEvent[] = [...events, ...missing.map((k) => deleteEvent(t, from, k))];
      await applier.applyBatch(all, { force: true });
      rewritten += events.length;
      deleted += missing.length;
      for (const k of slice) log.info({ event: SYNC_LOG.repairKey, table: t.name, key: k, from, to }, 'repaired key');
    }
    out.tables.push({ table: t.name, from, to, rewritten, deleted });
  }
  return out;
}

/** Retries parked events on `target` in arrival order; a success resolves the entry, a failure keeps it (and its key) parked. */
export async function retryDeadLetters(o: { config: SyncConfig; pools: Pools; tables: readonly CompiledTable[]; target: Side; log?: Logger }): Promise<{ retried: number; stillParked: number }> {
  const s = q(o.config.stateSchema);
  const pool = o.pools[o.target];
  const rows = await pool.query<{ id: string; event: string }>(`SELECT id::text, event::text FROM ${s}.dead_letters WHERE status = 'parked' ORDER BY id`);
  const applier = new Applier({ pool, config: o.config, target: o.target, tables: o.tables, log: o.log });
  let retried = 0;
  let stillParked = 0;
  // Per key, all its parked events in arrival order, in one transaction: either the whole queue of the key applies
  // (and is resolved) or the transaction rolls back and every entry stays parked.
  const byKey = new Map<string, { id: string; event: string }[]>();
  for (const r of rows.rows) {
    const meta = JSON.parse(r.event) as { logical?: string; key?: string };
    const k = `${meta.logical}\u0000${meta.key}`;
    let list = byKey.get(k);
    if (!list) { list = []; byKey.set(k, list); }
    list.push(r);
  }
  for (const [k, list] of byKey) {
    const [table, key] = k.split('\u0000');
    try {
      await applier.applyBatch(list.map((r) => ({ topic: null, partition: null, offset: null, value: r.event })), { unparkIds: list.map((r) => r.id) });
      retried += list.length;
      o.log?.info({ event: SYNC_LOG.deadLetterRetried, table, key, count: list.length }, 'dead letters applied');
    } catch (err) {
      stillParked += list.length;
      o.log?.warn({ event: SYNC_LOG.deadLetterRetried, table, key, err: (err as Error).message }, 'dead letters still failing');
    }
  }
  return { retried, stillParked };
}
