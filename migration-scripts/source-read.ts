/**
 * Snapshot reads of source rows: backfill chunks (copied as they are) and repair key lists (as change events, op "r").
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

/**
 * SQL for one snapshot event's JSON text from SQL expressions for its key, image and version vector: a read ('r') of a
 * row, or (repair) a delete ('d', image NULL) of a key the side no longer has, with the key's vector on that side.
 */
function snapshotEventSql(t: CompiledTable, side: Side, e: { key: string; after: string; legacy: string; service: string; ts: string; op?: 'r' | 'd' }): string {
  return `jsonb_build_object(
      'format', '${EVENT_FORMAT}', 'source', '${side}', 'origin', '${side}', 'table', ${lit(t.config[side].table)}, 'logical', ${lit(t.name)},
      'op', '${e.op ?? 'r'}', 'key', ${e.key}, 'before', NULL, 'after', ${e.after}, 'position', NULL,
      'version', jsonb_build_object('legacy', ${e.legacy}, 'service', ${e.service}),
      'txId', NULL, 'commitTs', coalesce(${e.ts}, now()))::text`;
}

/** Rows of `side` matching `where`, each with its version vector from the same statement, as snapshot events. */
function selectEvents(config: SyncConfig, t: CompiledTable, side: Side, where: string): string {
  const s = q(config.stateSchema);
  const event = snapshotEventSql(t, side, { key: t.keyText(side, 't'), after: t.readImage(side, 't'), legacy: 'coalesce(rv.legacy_version, 0)', service: 'coalesce(rv.service_version, 0)', ts: 'rv.ts' });
  return `SELECT ${event} AS value, ${t.keyText(side, 't')} AS key
    FROM (SELECT * FROM ${t.qualified(side)} t ${where}) t
    LEFT JOIN ${s}.row_version rv ON rv.tbl = ${lit(t.name)} AND rv.pk = ${t.keyText(side, 't')}`;
}

/** SQL for "the key tuple of alias equals/compares with the JSON key text in parameter $n". */
export function keyTupleFromJson(t: CompiledTable, side: Side, param: string): string {
  return `(${t.key(side).map((k, i) => `((${param}::jsonb)->>${i})::${t.table(side).columns.get(k)?.type ?? 'text'}`).join(', ')})`;
}

export function keyTuple(t: CompiledTable, side: Side, alias: string): string {
  return `(${t.key(side).map((k) => `${alias}.${q(k)}`).join(', ')})`;
}

/** The key tuple of `alias` compared with a literal key text (COPY takes no parameters). */
function keyTupleFromText(t: CompiledTable, side: Side, keyText: string): string {
  return keyTupleFromJson(t, side, lit(keyText));
}

/** `WHERE` for the key range (after, upTo]: `after` null means from the first key. */
export function keyRangeWhere(t: CompiledTable, side: Side, alias: string, after: string | null, upTo: string): string {
  const lower = after === null ? '' : `${keyTuple(t, side, alias)} > ${keyTupleFromText(t, side, after)} AND `;
  return `WHERE ${lower}${keyTuple(t, side, alias)} <= ${keyTupleFromText(t, side, upTo)}`;
}

/** The key text of the last row of the next chunk of `limit` rows after `after` (null: no rows left). Index only. */
export async function chunkEnd(pool: Pool, t: CompiledTable, side: Side, after: string | null, limit: number): Promise<string | null> {
  const key = t.key(side).map((k) => `t.${q(k)}`).join(', ');
  const where = after === null ? '' : `WHERE ${keyTuple(t, side, 't')} > ${keyTupleFromJson(t, side, '$2')}`;
  const r = await pool.query<{ key: string }>(
    `SELECT ${t.keyText(side, 't')} AS key FROM (SELECT ${key} FROM ${t.qualified(side)} t ${where} ORDER BY ${key} LIMIT $1) t
      ORDER BY ${t.key(side).map((k) => `t.${q(k)} DESC`).join(', ')} LIMIT 1`, after === null ? [limit] : [limit, after]);
  return r.rows[0]?.key ?? null;
}

/**
 * SQL taking the transaction-scoped advisory lock that orders backfill chunks of a table against apply's deletes of it
 * on the target. A chunk inserts rows that no other transaction can see until it commits; a live delete of one of
 * them applied meanwhile would delete nothing and leave a tombstone, and the chunk's commit would bring the row back.
 * So the chunk holds the lock exclusively from its last check of the target's versions until it commits, and apply
 * holds it shared from its first delete in the table: a delete either waits for the chunk (and then sees its rows) or
 * committed its tombstone before the chunk's check (which then runs the chunk again through the version rules).
 */
export function chunkLockSql(config: SyncConfig, t: CompiledTable, mode: 'exclusive' | 'shared'): string {
  return `SELECT pg_advisory_xact_lock${mode === 'shared' ? '_shared' : ''}(hashtext(${lit(`strangler-backfill:${config.stateSchema}:${t.name}`)}))`;
}

/** Names of the columns a chunk copy adds in front of the row's own columns. */
export const CHUNK_META = { key: '__strangler_pk', legacy: '__strangler_lv', service: '__strangler_sv', ts: '__strangler_ts' } as const;

/**
 * SELECT for `COPY (...) TO STDOUT` of one key range: key text, the row's version vector and its time, then every
 * column of the row as it is, in table order (the staging table on the other side has the same columns).
 */
export function chunkCopySelect(config: SyncConfig, t: CompiledTable, side: Side, after: string | null, upTo: string): string {
  const s = q(config.stateSchema);
  const cols = [...t.table(side).columns.keys()].map((c) => `t.${q(c)}`).join(', ');
  return `SELECT ${t.keyText(side, 't')}, coalesce(rv.legacy_version, 0), coalesce(rv.service_version, 0), rv.ts, ${cols}
    FROM (SELECT * FROM ${t.qualified(side)} t ${keyRangeWhere(t, side, 't', after, upTo)}) t
    LEFT JOIN ${s}.row_version rv ON rv.tbl = ${lit(t.name)} AND rv.pk = ${t.keyText(side, 't')}`;
}

/** A snapshot-read ('r') event built in SQL from a staged chunk row (alias `st`), for the per-event apply rules. */
export function stagedEventValue(t: CompiledTable, side: Side): string {
  const m = CHUNK_META;
  return snapshotEventSql(t, side, { key: `st.${m.key}`, after: `${t.readImage(side, 'st')} - ARRAY['${m.key}', '${m.legacy}', '${m.service}', '${m.ts}']`, legacy: `st.${m.legacy}`, service: `st.${m.service}`, ts: `st.${m.ts}` });
}

/** An event with its key text (the `key` inside its value), as repair reports it. */
export interface KeyedEvent { key: string; event: ConsumedEvent }

/**
 * Repair's read of a list of key texts, in one statement (one snapshot): an 'r' event for each key the side has,
 * and a 'd' event for each key it does not have, carrying the key's vector there (a tombstone's, or zero for a key
 * the side never changed). Apply compares that vector with the target's, so a delete never lands on a change the
 * target made after it (see ApplyOptions.force).
 */
export async function readKeys(pool: Pool, config: SyncConfig, t: CompiledTable, side: Side, keys: readonly string[]): Promise<{ events: KeyedEvent[]; deletes: KeyedEvent[] }> {
  const s = q(config.stateSchema);
  const present = `SELECT 1 FROM ${t.qualified(side)} t WHERE ${keyTuple(t, side, 't')} = ${keyTupleFromJson(t, side, 'k.pk')}`;
  const del = snapshotEventSql(t, side, { op: 'd', key: 'k.pk', after: 'NULL', legacy: 'coalesce(rv.legacy_version, 0)', service: 'coalesce(rv.service_version, 0)', ts: 'rv.ts' });
  const r = await pool.query<{ value: string; key: string; op: 'r' | 'd' }>(
    `SELECT value, key, 'r' AS op FROM (${selectEvents(config, t, side, `WHERE ${keyTuple(t, side, 't')} IN (SELECT ${keyTupleFromJson(t, side, 'k.x').slice(1, -1)} FROM unnest($1::text[]) AS k(x))`)}) found
     UNION ALL
     SELECT ${del}, k.pk, 'd' FROM (SELECT DISTINCT (x::jsonb)::text AS pk FROM unnest($1::text[]) AS k(x)) k
       LEFT JOIN ${s}.row_version rv ON rv.tbl = ${lit(t.name)} AND rv.pk = k.pk
      WHERE NOT EXISTS (${present})`, [keys]);
  const keyed = (x: { value: string; key: string }): KeyedEvent => ({ key: x.key, event: { topic: null, partition: null, offset: null, value: x.value } });
  return { events: r.rows.filter((x) => x.op === 'r').map(keyed), deletes: r.rows.filter((x) => x.op === 'd').map(keyed) };
}
