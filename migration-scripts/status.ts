/**
 * Status: per direction, lag in events and seconds, positions, counters, parked events; backfill progress; the
 * last verify result. `readSyncStatus` is also what the gateway's admin API serves (GET /admin/sync) so the
 * dashboard and the promotion gates read the same lag figures.
 */
import type { Pool } from 'pg';
import type { Kafka } from 'kafkajs';
import type { Side, SyncConfig } from './config-schema.ts';
import { otherSide } from './config-schema.ts';
import type { Pools } from './db.ts';
import { q } from './mapping.ts';
import { messageOf } from '../common/errors.ts';
import { kafkaBacklog, sideTopics, type LostEvents } from './kafka.ts';
import { diffCountOf, lastVerifySummary, type VerifyResult } from './verify.ts';
import { recordedSlot, slotLostError, slotNameFor } from '../legacy-adapter/capture/logical.ts';
import { captureOff } from '../legacy-adapter/capture/install.ts';
import { readWorkerErrors, type SyncWorker } from './state.ts';

export interface DirectionStatus {
  direction: 'legacy-to-service' | 'service-to-legacy';
  source: Side;
  target: Side;
  /** Captured on the source, not yet acknowledged by Kafka. */
  capturePending: number;
  /**
   * Logical capture only: WAL the source's slot still holds, not yet decoded into the change table (so not in
   * `lagEvents`, which cannot count it without taking the slot from the relay). Includes WAL of unrelated writes;
   * it stays large while the relay is stopped. Null in trigger mode.
   */
  undecoded: { slot: string; walBytes: number; relayAttached: boolean } | null;
  /**
   * Why this direction does not sync any more, whatever the lag says: SYNC_SLOT_LOST when logical capture state
   * exists on the source but its slot does not (changes since are not captured); SYNC_CAPTURE_OFF when capture of a
   * table is off; SYNC_EVENTS_LOST when Kafka no longer holds the next events apply has to read (retention deleted
   * them; apply stops there). Otherwise, with `worker` and `at`: the error the direction's relay or apply worker last
   * stopped with, one retrying cannot get past (e.g. SYNC_EVENT_TOO_LARGE, SYNC_SCHEMA_CHANGED, SYNC_DECODE_FAILED),
   * until that worker gets past it. Null when healthy.
   */
  broken: { code: string; message: string; worker?: SyncWorker; at?: string } | null;
  /** Gaps accepted by `capture install --accept-gap` on the source: changes between these positions were not captured. */
  captureGaps: { at: string; slot: string; decodedLsn: string; resumedLsn: string | null }[];
  /** In Kafka, not yet applied (null when Kafka was not asked, or could not be read: see kafkaError). */
  kafkaBacklog: number | null;
  /** Why the Kafka backlog could not be read; `lagEvents` then counts only what the databases know (a lower bound). */
  kafkaError: string | null;
  lagEvents: number;
  lagSeconds: number;
  relay: { lastPosition: number | null; ackedPosition: number | null; published: number; updatedAt: string | null };
  lastAppliedPosition: number | null;
  applied: number; duplicates: number; stale: number; echoes: number; conflicts: number; parked: number;
  parkedNow: number;
  lastEventAt: string | null; lastAppliedAt: string | null; lastLagMs: number | null;
}

export interface BackfillStatus { source: Side; table: string; rowsDone: number; rowsTotal: number | null; done: boolean; updatedAt: string }
export interface SyncStatus { at: string; directions: DirectionStatus[]; backfill: BackfillStatus[]; lastVerify: Pick<VerifyResult, 'ok' | 'at' | 'ms'> & { tables: { table: string; match: boolean; diffs: number }[] } | null }

async function one<T>(pool: Pool, sql: string, params: unknown[] = []): Promise<T | undefined> {
  const r = await pool.query(sql, params);
  return r.rows[0] as T | undefined;
}

async function direction(config: SyncConfig, pools: Pools, source: Side, kafka: Kafka | undefined): Promise<DirectionStatus> {
  const s = q(config.stateSchema);
  const target = otherSide(source);
  const cap = await one<{ n: string; oldest: string | null; age_s: number | null }>(pools[source],
    `SELECT count(*) AS n, min(ts)::text AS oldest, extract(epoch FROM clock_timestamp() - min(ts))::float8 AS age_s FROM ${s}.changelog`);
  const relay = await one<{ last_pos: string; acked_pos: string; published: string; updated_at: string }>(pools[source],
    `SELECT last_pos, acked_pos, published, updated_at::text FROM ${s}.relay_state WHERE id = 1`);
  const stats = await one<Record<string, string | null>>(pools[target],
    `SELECT applied, duplicates, stale, echoes, conflicts, parked, last_event_ts::text AS last_event_ts, last_applied_at::text AS last_applied_at, last_lag_ms,
            extract(epoch FROM clock_timestamp() - last_event_ts)::float8 AS since_last_event_s
       FROM ${s}.apply_stats WHERE source = $1`, [source]);
  const pos = await one<{ p: string | null }>(pools[target], `SELECT max(position)::text AS p FROM ${s}.applied WHERE source = $1`, [source]);
  const parked = await one<{ n: string }>(pools[target], `SELECT count(*) AS n FROM ${s}.dead_letters WHERE source = $1 AND status = 'parked'`, [source]);
  let undecoded: DirectionStatus['undecoded'] = null;
  let broken: DirectionStatus['broken'] = null;
  const recorded = await recordedSlot(pools[source], config);
  if (recorded && !recorded.exists) broken = { code: 'SYNC_SLOT_LOST', message: slotLostError(source, recorded.slot, recorded.decodedLsn).message };
  const off = broken ? [] : await captureOff(pools[source], config, source);
  if (off.length > 0) {
    broken = { code: 'SYNC_CAPTURE_OFF', message: `capture on the ${source} database is off for ${off.map((o) => `${o.table}: ${o.why}`).join('; ')}. `
      + `Changes there do not reach ${target}. Run \`strangler sync capture install --side ${source}\` (puts capture back; a short table lock), `
      + `then, with lag 0, \`strangler sync verify\` and \`strangler sync repair --from ${source}\` for what was missed` };
  }
  const gaps = await one<{ ok: boolean }>(pools[source], 'SELECT to_regclass($1) IS NOT NULL AS ok', [`${s}.capture_gaps`]);
  const captureGaps = gaps?.ok
    ? (await pools[source].query<{ at: string; slot: string; decoded_lsn: string; resumed_lsn: string | null }>(
      `SELECT at::text, slot, decoded_lsn::text, resumed_lsn::text FROM ${s}.capture_gaps ORDER BY id`)).rows
      .map((g) => ({ at: g.at, slot: g.slot, decodedLsn: g.decoded_lsn, resumedLsn: g.resumed_lsn }))
    : [];
  if (config.capture.mode === 'logical') {
    const slot = await slotNameFor(pools[source], config, source);
    const w = await one<{ bytes: string | null; active: boolean }>(pools[source],
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS bytes, active FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
    if (w) undecoded = { slot, walBytes: Number(w.bytes ?? 0), relayAttached: w.active };
  }
  let backlog: number | null = null;
  let kafkaError: string | null = null;
  if (kafka) {
    const lost: LostEvents[] = [];
    backlog = await kafkaBacklog(kafka, sideTopics(config, source), async (topic) => {
      const r = await pools[target].query<{ partition: number; kafka_offset: string | null }>(`SELECT partition, kafka_offset::text FROM ${s}.applied WHERE source = $1 AND topic = $2`, [source, topic]);
      return new Map(r.rows.filter((x) => x.kafka_offset !== null).map((x) => [x.partition, x.kafka_offset as string]));
    }, lost).catch((err: unknown) => {
      kafkaError = messageOf(err);
      return null;
    });
    if (lost.length > 0 && !broken) {
      broken = { code: 'SYNC_EVENTS_LOST', message: lost.map((l) => `Kafka topic ${l.topic} partition ${l.partition} starts at offset ${l.firstOffset}, `
        + `but ${target} has applied only up to ${BigInt(l.nextOffset) - 1n}: the events between were deleted (retention) before apply read them and will never be applied; `
        + `apply stops there. Accept the gap with UPDATE ${config.stateSchema}.applied SET kafka_offset = ${BigInt(l.firstOffset) - 1n} WHERE source = '${source}' AND topic = '${l.topic}' AND partition = ${l.partition} `
        + `on the ${target} database, restart apply, then with lag 0 run strangler sync verify and strangler sync repair --from ${source}`).join('; ') };
    }
  }
  // Last: what the databases and Kafka show now names the cause more exactly than the error a worker stopped with.
  // The relay records on the source, apply on the target; the relay first (apply waits behind it anyway).
  if (!broken) {
    const stopped = (await readWorkerErrors(pools[source], config.stateSchema, source)).find((e) => e.worker === 'relay')
      ?? (await readWorkerErrors(pools[target], config.stateSchema, source)).find((e) => e.worker === 'apply');
    if (stopped) broken = { code: stopped.code, message: stopped.message, worker: stopped.worker, at: stopped.at };
  }
  const capturePending = Number(cap?.n ?? 0);
  const lagEvents = capturePending + (backlog ?? 0);
  const ages = [capturePending > 0 ? Number(cap?.age_s ?? 0) : 0, (backlog ?? 0) > 0 ? Number(stats?.since_last_event_s ?? 0) : 0];
  const num = (v: string | null | undefined) => (v === null || v === undefined ? 0 : Number(v));
  return {
    direction: `${source}-to-${target}` as DirectionStatus['direction'],
    source, target, capturePending, undecoded, broken, captureGaps, kafkaBacklog: backlog, kafkaError, lagEvents, lagSeconds: lagEvents === 0 ? 0 : Math.max(...ages),
    relay: { lastPosition: relay ? Number(relay.last_pos) : null, ackedPosition: relay ? Number(relay.acked_pos) : null, published: Number(relay?.published ?? 0), updatedAt: relay?.updated_at ?? null },
    lastAppliedPosition: pos?.p ? Number(pos.p) : null,
    applied: num(stats?.applied), duplicates: num(stats?.duplicates), stale: num(stats?.stale), echoes: num(stats?.echoes), conflicts: num(stats?.conflicts), parked: num(stats?.parked),
    parkedNow: Number(parked?.n ?? 0),
    lastEventAt: stats?.last_event_ts ?? null, lastAppliedAt: stats?.last_applied_at ?? null, lastLagMs: stats?.last_lag_ms === null || stats?.last_lag_ms === undefined ? null : Number(stats.last_lag_ms),
  };
}

/** Reads the whole sync status from both databases (and Kafka's high watermarks when a client is given). */
export async function readSyncStatus(config: SyncConfig, pools: Pools, kafka?: Kafka): Promise<SyncStatus> {
  const s = q(config.stateSchema);
  const directions = await Promise.all((['legacy', 'service'] as const).map((side) => direction(config, pools, side, kafka)));
  const backfill: BackfillStatus[] = [];
  for (const side of ['legacy', 'service'] as const) {
    const r = await pools[side].query<{ source: Side; tbl: string; rows_done: string; rows_total: string | null; done: boolean; updated_at: string }>(
      `SELECT source, tbl, rows_done, rows_total, done, updated_at::text FROM ${s}.backfill ORDER BY tbl`);
    for (const b of r.rows) backfill.push({ source: b.source, table: b.tbl, rowsDone: Number(b.rows_done), rowsTotal: b.rows_total === null ? null : Number(b.rows_total), done: b.done, updatedAt: b.updated_at });
  }
  const v = await lastVerifySummary(config, pools.legacy);
  return {
    at: new Date().toISOString(), directions, backfill,
    lastVerify: v ? { ok: v.ok, at: v.at, ms: v.ms, tables: v.tables.map((t) => ({ table: t.table, match: t.match, diffs: diffCountOf(t) })) } : null,
  };
}

/** The lag figures alone, for the gateway admin API and promotion gates. */
export function lagSummary(status: SyncStatus): Record<string, { lagEvents: number; lagSeconds: number; parked: number; broken: boolean; kafkaError: string | null }> {
  // kafkaError set: lagEvents is only a lower bound (Kafka's backlog unknown), never "caught up".
  return Object.fromEntries(status.directions.map((d) => [d.direction, { lagEvents: d.lagEvents, lagSeconds: d.lagSeconds, parked: d.parkedNow, broken: d.broken !== null, kafkaError: d.kafkaError }]));
}

/** The directions that do not sync any more (`strangler sync status` exits non-zero when there is one). */
export function brokenDirections(status: SyncStatus): DirectionStatus[] {
  return status.directions.filter((d) => d.broken !== null);
}

/** The directions whose Kafka backlog could not be read: their lag is unknown (`strangler sync status` exits 1 too). */
export function unknownLagDirections(status: SyncStatus): DirectionStatus[] {
  return status.directions.filter((d) => d.kafkaError !== null);
}

export function formatStatus(st: SyncStatus): string {
  const lines: string[] = [];
  for (const d of st.directions) {
    const inKafka = d.kafkaError !== null ? ', in Kafka unknown' : d.kafkaBacklog === null ? '' : `, in Kafka ${d.kafkaBacklog}`;
    const uncounted: Record<string, string> = { SYNC_SLOT_LOST: 'changes since the slot was lost', SYNC_CAPTURE_OFF: 'changes while capture was off', SYNC_EVENTS_LOST: 'events lost from Kafka' };
    const b = d.broken;
    // A stopped worker's lag still counts what waits behind it; the other causes lose changes the lag cannot count.
    const why = !b ? '' : b.worker ? `BROKEN (${b.worker} stopped ${b.at ?? ''}; nothing passes it until the cause is fixed and it is restarted), `
      : `BROKEN (${uncounted[b.code] ?? 'changes missed'} are not counted), `;
    lines.push(`${d.direction}: ${why}lag ${d.kafkaError !== null || (b && !b.worker) ? 'at least ' : ''}${d.lagEvents} events / ${d.lagSeconds.toFixed(2)} s (capture pending ${d.capturePending}${inKafka})`);
    if (b) lines.push(`  BROKEN ${b.code}${b.worker ? ` (${b.worker})` : ''}: ${b.message}`);
    if (d.kafkaError !== null) lines.push(`  Kafka backlog unreadable: ${d.kafkaError}`);
    for (const g of d.captureGaps) {
      const checked = st.lastVerify && Date.parse(st.lastVerify.at) > Date.parse(g.at) ? `; verify since: ${st.lastVerify.ok ? 'identical' : 'DIFFERENT'}` : '; no verify since';
      lines.push(`  capture gap on ${d.source} (slot ${g.slot} lost, new slot ${g.at}): changes after LSN ${g.decodedLsn} up to ${g.resumedLsn ?? '?'} were not captured; verify and repair --from ${d.source}${checked}`);
    }
    if (d.undecoded) lines.push(`  slot ${d.undecoded.slot}: ${d.undecoded.walBytes} bytes of WAL not decoded yet (not in the lag above)`);
    lines.push(`  relay position ${d.relay.lastPosition ?? '-'} (acked ${d.relay.ackedPosition ?? '-'}, published ${d.relay.published}); last applied position ${d.lastAppliedPosition ?? '-'}`);
    lines.push(`  applied ${d.applied}, duplicates ${d.duplicates}, stale ${d.stale}, echoes ${d.echoes}, conflicts ${d.conflicts}, parked now ${d.parkedNow}; last lag ${d.lastLagMs ?? '-'} ms`);
  }
  for (const b of st.backfill) lines.push(`backfill ${b.source} → ${b.table}: ${b.rowsDone}/${b.rowsTotal ?? '?'} rows${b.done ? ' (done)' : ''}`);
  lines.push(st.lastVerify ? `last verify ${st.lastVerify.at}: ${st.lastVerify.ok ? 'identical' : 'DIFFERENT'} (${st.lastVerify.tables.map((t) => `${t.table}${t.match ? '' : ` ${t.diffs} diffs`}`).join(', ')})` : 'no verify run yet');
  return lines.join('\n');
}
