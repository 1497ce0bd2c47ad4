/**
 * Snapshot reads of source rows as change events (op "r"): backfill chunks and repair key lists.
 *
 * Each row is read together with its version vector from row_version in the same statement, hence the same
 * snapshot: the event carries the exact version of the image it holds. Apply's version guard then orders it
 * against the live stream whatever the arrival order: a live change newer than the snapshot wins, an older or equal
 * one is a no-op. This is the "version read in the chunk snapshot" variant of the DBLog watermark for trigger
 * capture (see reference/data-sync.md §6.4), with no watermark rows written into the source.
 */
import type { Pool } from 'pg';
import type { Side, SyncConfig } from './config-schema.ts';
import { EVENT_FORMAT, type ConsumedEvent } from './event.ts';
import { lit, q, type CompiledTable } from './mapping.ts';

/** The chunk is selected first (index order, LIMIT), then joined to its versions: never a join over the whole table. */
function selectEvents(config: SyncConfig, t: CompiledTable, side: Side, where: string, order: string): string {
  const s = q(config.stateSchema);
  return `SELECT jsonb_build_object(
      'format', '${EVENT_FORMAT}', 'source', '${side}', 'origin', '${side}', 'table', ${lit(t.config[side].table)}, 'logical', ${lit(t.name)},
      'op', 'r', 'key', ${t.keyText(side, 't')}, 'before', NULL, 'after', to_jsonb(t), 'position', NULL,
      'version', jsonb_build_object('legacy', coalesce(rv.legacy_version, 0), 'service', coalesce(rv.service_version, 0)),
      'txId', NULL, 'commitTs', coalesce(rv.ts, now()))::text AS value, ${t.keyText(side, 't')} AS key
    FROM (SELECT * FROM ${t.qualified(side)} t ${where} ${order}) t
    LEFT JOIN ${s}.row_version rv ON rv.tbl = ${lit(t.name)} AND rv.pk = ${t.keyText(side, 't')}`;
}

/** SQL for "the key tuple of alias equals/compares with the JSON key text in parameter $n". */
export function keyTupleFromJson(t: CompiledTable, side: Side, param: string): string {
  return `(${t.key(side).map((k, i) => `((${param}::jsonb)->>${i})::${t.table(side).columns.get(k)?.type ?? 'text'}`).join(', ')})`;
}

export function keyTuple(t: CompiledTable, side: Side, alias: string): string {
  return `(${t.key(side).map((k) => `${alias}.${q(k)}`).join(', ')})`;
}

/** The next chunk after `cursor` (a key text, null for the start), in key order. */
export async function readChunk(pool: Pool, config: SyncConfig, t: CompiledTable, side: Side, cursor: string | null, limit: number): Promise<{ events: ConsumedEvent[]; lastKey: string | null }> {
  const where = cursor === null ? '' : `WHERE ${keyTuple(t, side, 't')} > ${keyTupleFromJson(t, side, '$2')}`;
  const order = `ORDER BY ${t.key(side).map((k) => `t.${q(k)}`).join(', ')} LIMIT $1`;
  const r = await pool.query<{ value: string; key: string }>(
    `${selectEvents(config, t, side, where, order)} ORDER BY ${t.key(side).map((k) => `t.${q(k)}`).join(', ')}`,
    cursor === null ? [limit] : [limit, cursor]);
  const events = r.rows.map((row) => ({ topic: null, partition: null, offset: null, value: row.value }));
  return { events, lastKey: r.rows.length > 0 ? (r.rows[r.rows.length - 1] as { key: string }).key : null };
}

/** The current rows for a list of key texts, plus the keys that no longer exist on the source. */
export async function readKeys(pool: Pool, config: SyncConfig, t: CompiledTable, side: Side, keys: readonly string[]): Promise<{ events: ConsumedEvent[]; missing: string[] }> {
  const r = await pool.query<{ value: string; key: string }>(
    selectEvents(config, t, side, `WHERE ${keyTuple(t, side, 't')} IN (SELECT ${keyTupleFromJson(t, side, 'k.x').slice(1, -1)} FROM unnest($1::text[]) AS k(x))`, ''), [keys]);
  const found = new Set(r.rows.map((row) => row.key));
  return { events: r.rows.map((row) => ({ topic: null, partition: null, offset: null, value: row.value })), missing: keys.filter((k) => !found.has(k)) };
}

/** A delete event for a key the source no longer has (repair of an extra row on the target). */
export function deleteEvent(t: CompiledTable, side: Side, key: string): ConsumedEvent {
  const value = JSON.stringify({ format: EVENT_FORMAT, source: side, origin: side, table: t.config[side].table, logical: t.name, op: 'd', key, before: null, after: null, position: null, version: { legacy: 0, service: 0 }, txId: null, commitTs: new Date().toISOString() });
  return { topic: null, partition: null, offset: null, value };
}
