/**
 * Repair: re-syncs exactly the keys a verify reported, through the apply path (never ad-hoc UPDATEs).
 * For each key the source side's current row is read with its version (source-read.ts) and applied with `force`;
 * a key the source no longer has is deleted on the target (leaving a tombstone). The source side is the table's
 * owner unless `from` says otherwise. Parked dead letters can be retried the same way (`retryDeadLetters`).
 *
 * Version vectors decide per key, inside the apply transaction: a key the target changed after the source last saw
 * it (the target's own version is ahead: its change is in flight to the source, parked there, or a conflict apply
 * has yet to resolve) is skipped and reported as `targetNewer`; forcing it would overwrite or delete that change on
 * the target while it still lands on the source, and the pair would end up swapped. Verify again once apply has
 * caught up (`status` lag 0). Every other key is rewritten from the source, whatever its version.
 */
import { StranglerError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { silentLogger } from '../common/logger.ts';
import type { Side, SyncConfig } from './config-schema.ts';
import { otherSide } from './config-schema.ts';
import type { Pools } from './db.ts';
import type { CompiledTable } from './mapping.ts';
import { q } from './mapping.ts';
import { Applier } from './apply.ts';
import { readKeys, type KeyedEvent } from './source-read.ts';
import { diffCountOf, verifyTable, type VerifyResult } from './verify.ts';
import { SYNC_LOG } from './log-events.ts';
import { parseEventMeta } from './event.ts';

export interface RepairResult {
  tables: {
    table: string; from: Side; to: Side; rewritten: number; deleted: number;
    /** Keys left alone: the target holds a change of its own the source has not applied yet (or the source changed the key again during every attempt). */
    targetNewer: string[];
  }[];
}

/** Attempts per key while the source keeps changing it under repair (each a read, a forced write and a check). */
const MAX_REPAIR_ROUNDS = 5;

/** Per key text: the op and version vector a source read gave it (what changes when the source changes the key). */
function versionsOf(read: { events: readonly KeyedEvent[]; deletes: readonly KeyedEvent[] }): Map<string, string> {
  return new Map([...read.events, ...read.deletes].map(({ key, event }) => {
    const { op, version } = parseEventMeta(event.value);
    return [key, `${op} ${version.legacy} ${version.service}`];
  }));
}

export async function repairFromVerify(o: { config: SyncConfig; pools: Pools; tables: readonly CompiledTable[]; verify: VerifyResult; from?: Side; log?: Logger }): Promise<RepairResult> {
  const log = o.log ?? silentLogger;
  const out: RepairResult = { tables: [] };
  // A result naming a table the config does not sync (renamed, another config file) would repair nothing and read as done.
  const unknown = o.verify.tables.filter((tv) => diffCountOf(tv) > 0 && !o.tables.some((x) => x.name === tv.table)).map((tv) => tv.table);
  if (unknown.length > 0) {
    throw new StranglerError('CLI_USAGE', `sync repair: the verify result names ${unknown.map((n) => `"${n}"`).join(', ')}, not configured (configured: ${o.tables.map((x) => x.name).join(', ')}); verify again with this config`);
  }
  for (const tv of o.verify.tables) {
    if (diffCountOf(tv) === 0) continue;
    const t = o.tables.find((x) => x.name === tv.table);
    if (!t) continue; // not reached: checked above
    const from = o.from ?? t.owner;
    const to = otherSide(from);
    const applier = new Applier({ pool: o.pools[to], config: o.config, target: to, tables: o.tables, log });
    const done = { table: t.name, from, to, rewritten: 0, deleted: 0, targetNewer: [] as string[] };
    if (tv.truncated === true || diffCountOf(tv) > tv.diffs.length) {
      // The result lists only the first verify.maxKeys keys: compare the table again and repair each leaf's keys as
      // they are found, so no list of every differing key is ever held (a rerun after an interruption finds what is left).
      log.info({ event: SYNC_LOG.repairKey, table: t.name, from, to, outcome: 'rescan', listed: tv.diffs.length, differing: diffCountOf(tv) },
        'verify listed only some of the differing keys: comparing the table again and repairing leaf by leaf');
      await verifyTable(o.pools, t, { ...o.config.verify, maxKeys: 0, recheck: false }, (batch) => repairKeys(o, t, applier, from, to, batch.map((d) => d.key), done, log));
    } else {
      const keys = tv.diffs.map((d) => d.key);
      for (let i = 0; i < keys.length; i += 1_000) await repairKeys(o, t, applier, from, to, keys.slice(i, i + 1_000), done, log);
    }
    out.tables.push(done);
  }
  return out;
}

/** Re-syncs one batch of keys from `from` to `to`, counting into `done`. */
async function repairKeys(o: { config: SyncConfig; pools: Pools }, t: CompiledTable, applier: Applier, from: Side, to: Side, keys: string[],
  done: { rewritten: number; deleted: number; targetNewer: string[] }, log: Logger): Promise<void> {
  let pending = keys;
  let read = await readKeys(o.pools[from], o.config, t, from, pending);
  for (let round = 1; pending.length > 0; round++) {
    const res = await applier.applyBatch([...read.events, ...read.deletes].map((k) => k.event), { force: true });
    const skipped = new Set((res.targetNewer ?? []).map((x) => x.key));
    // The source may have changed a key between the read and this commit, and live apply may have written that
    // newer change first: the older image just forced over it. Read again; a key whose version moved is written
    // again from the new read (forcing the newer image is right whichever of the two apply got first).
    const again = await readKeys(o.pools[from], o.config, t, from, pending.filter((k) => !skipped.has(k)));
    const was = versionsOf(read);
    const moved = new Set([...versionsOf(again)].filter(([k, v]) => was.get(k) !== v).map(([k]) => k));
    for (const [list, op] of [[read.events, 'rewritten'], [read.deletes, 'deleted']] as const) {
      for (const { key } of list) {
        if (skipped.has(key)) {
          done.targetNewer.push(key);
          log.warn({ event: SYNC_LOG.repairKey, table: t.name, key, from, to, outcome: 'target-newer' },
            `key skipped: ${to} changed it after ${from} last saw it (the change is on its way to ${from}); verify again once apply has caught up`);
        } else if (moved.has(key) && round < MAX_REPAIR_ROUNDS) {
          continue;
        } else if (moved.has(key)) {
          done.targetNewer.push(key);
          log.warn({ event: SYNC_LOG.repairKey, table: t.name, key, from, to, outcome: 'changing' },
            `key skipped: ${from} changed it again during each of ${MAX_REPAIR_ROUNDS} repair attempts; verify again once apply has caught up`);
        } else {
          if (op === 'rewritten') done.rewritten += 1; else done.deleted += 1;
          log.info({ event: SYNC_LOG.repairKey, table: t.name, key, from, to, outcome: op }, 'repaired key');
        }
      }
    }
    if (round >= MAX_REPAIR_ROUNDS) break;
    pending = pending.filter((k) => moved.has(k));
    read = { events: again.events.filter((e) => moved.has(e.key)), deletes: again.deletes.filter((e) => moved.has(e.key)) };
  }
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
