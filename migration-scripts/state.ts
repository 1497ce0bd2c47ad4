/**
 * The sync state schema, created on both databases (`sync.stateSchema`, default strangler_sync).
 *
 *   row_version   per (logical table, key): the version vector {legacy, service}, tombstone flag, write time.
 *                 Written by the capture trigger for local writes and by apply for synced writes, so a key's
 *                 history is comparable on both sides (see apply.ts for the rules).
 *   changelog     the capture queue: one row per captured row change, in the writing transaction. `pos` is null
 *                 until the relay assigns a publish position; rows are deleted once Kafka acknowledged them.
 *   relay_state   last assigned and last acknowledged publish position of this side's relay.
 *   applied       per (source side, topic, partition): last applied position and Kafka offset (the truth for apply).
 *   apply_stats   counters per source side; conflicts, dead_letters, backfill, verify_runs: see their names.
 *   capture_gaps  logical capture only: a lost replication slot replaced by install --accept-gap (what was not captured).
 *   worker_errors the error a relay (on its source) or apply worker (on its target) stopped with, one retrying cannot get
 *                 past; status reports the direction broken with it until that worker gets past the point (then deleted).
 */
import type { Pool, PoolClient } from 'pg';
import type { Side } from './config-schema.ts';
import { lit, q } from './mapping.ts';

/**
 * worker_errors, also created by recordWorkerError itself: an install from before the table (state not installed
 * again since the upgrade) must still be able to say why its worker stopped.
 */
function workerErrorsDdl(s: string): string {
  return `CREATE TABLE IF NOT EXISTS ${s}.worker_errors (
  worker text NOT NULL, source text NOT NULL, code text NOT NULL, message text NOT NULL, at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (worker, source));`;
}

export function stateDdl(schema: string): string {
  const s = q(schema);
  return `
CREATE SCHEMA IF NOT EXISTS ${s};
CREATE SEQUENCE IF NOT EXISTS ${s}.version_seq CACHE 1;
-- Versions start at the install time in microseconds too (a new sequence only): the other side keeps the versions of
-- an earlier install for its keys, and apply drops a change whose version is not above them as stale. Within 2^53
-- (exact as a JSON/JS number) until the year 2255.
SELECT setval(${lit(`${s}.version_seq`)}, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) FROM ${s}.version_seq WHERE NOT is_called;
CREATE TABLE IF NOT EXISTS ${s}.row_version (
  tbl text NOT NULL, pk text NOT NULL,
  legacy_version bigint NOT NULL DEFAULT 0, service_version bigint NOT NULL DEFAULT 0,
  deleted boolean NOT NULL DEFAULT false, ts timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (tbl, pk));
CREATE TABLE IF NOT EXISTS ${s}.changelog (
  seq bigint PRIMARY KEY, xid xid8 NOT NULL, tbl text NOT NULL, op text NOT NULL, pk text NOT NULL,
  before jsonb, after jsonb, lv bigint NOT NULL, sv bigint NOT NULL, ts timestamptz NOT NULL, pos bigint);
-- Indexes only when missing: CREATE INDEX IF NOT EXISTS locks its table (SHARE) even when the index exists, and a rerun of
-- install would then queue the application's captured writes behind it while any of them is open.
DO $i$ BEGIN IF to_regclass(${lit(`${s}.changelog_unassigned`)}) IS NULL THEN CREATE INDEX changelog_unassigned ON ${s}.changelog (seq) WHERE pos IS NULL; END IF; END $i$;
DO $i$ BEGIN IF to_regclass(${lit(`${s}.changelog_assigned`)}) IS NULL THEN CREATE INDEX changelog_assigned ON ${s}.changelog (pos) WHERE pos IS NOT NULL; END IF; END $i$;
CREATE TABLE IF NOT EXISTS ${s}.relay_state (
  id int PRIMARY KEY, last_pos bigint NOT NULL, acked_pos bigint NOT NULL, published bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now());
-- Positions start at the install time in microseconds, so a reinstall never reuses a position a target has stored.
INSERT INTO ${s}.relay_state (id, last_pos, acked_pos)
  VALUES (1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
  ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS ${s}.applied (
  source text NOT NULL, topic text NOT NULL, partition int NOT NULL, position bigint NOT NULL, kafka_offset bigint,
  updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, topic, partition));
CREATE TABLE IF NOT EXISTS ${s}.apply_stats (
  source text PRIMARY KEY, applied bigint NOT NULL DEFAULT 0, duplicates bigint NOT NULL DEFAULT 0, stale bigint NOT NULL DEFAULT 0,
  echoes bigint NOT NULL DEFAULT 0, conflicts bigint NOT NULL DEFAULT 0, parked bigint NOT NULL DEFAULT 0,
  last_event_ts timestamptz, last_applied_at timestamptz, last_lag_ms bigint);
CREATE TABLE IF NOT EXISTS ${s}.conflicts (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), tbl text NOT NULL, pk text NOT NULL, source text NOT NULL,
  policy text NOT NULL, winner text NOT NULL, incoming_version jsonb NOT NULL, local_version jsonb NOT NULL, event jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS ${s}.dead_letters (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), source text NOT NULL, topic text, partition int,
  kafka_offset bigint, position bigint, tbl text NOT NULL, pk text NOT NULL, event jsonb NOT NULL, reason text NOT NULL,
  status text NOT NULL DEFAULT 'parked', resolved_at timestamptz);
DO $i$ BEGIN IF to_regclass(${lit(`${s}.dead_letters_parked`)}) IS NULL THEN CREATE INDEX dead_letters_parked ON ${s}.dead_letters (tbl, pk) WHERE status = 'parked'; END IF; END $i$;
CREATE TABLE IF NOT EXISTS ${s}.backfill (
  source text NOT NULL, tbl text NOT NULL, cursor text, rows_done bigint NOT NULL DEFAULT 0, rows_total bigint,
  started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), done boolean NOT NULL DEFAULT false,
  PRIMARY KEY (source, tbl));
-- Logical capture re-created after its slot was lost (install --accept-gap): changes committed on this side between
-- the last decoded transaction and the new slot were not captured; shown by status until uninstall.
CREATE TABLE IF NOT EXISTS ${s}.capture_gaps (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), slot text NOT NULL, decoded_lsn pg_lsn NOT NULL, resumed_lsn pg_lsn);
-- The row image of a captured change (CompiledTable.captureImage): to_jsonb turns a float -0 into the number 0 (a jsonb
-- number has no negative zero), so each float column holding 0 there is checked in row_to_json (which prints -0) and
-- held as the string "-0", as to_jsonb holds NaN and Infinity. Columns by name in the image only: a dropped column
-- never makes the application's write fail.
CREATE OR REPLACE FUNCTION ${s}.row_image(r anyelement, floats text[]) RETURNS jsonb LANGUAGE plpgsql STABLE AS $fn$
DECLARE i jsonb := to_jsonb(r); c text;
BEGIN
  FOREACH c IN ARRAY floats LOOP
    IF i->c = '0'::jsonb AND row_to_json(r)->>c = '-0' THEN i := jsonb_set(i, ARRAY[c], '"-0"'); END IF;
  END LOOP;
  RETURN i;
END $fn$;
CREATE TABLE IF NOT EXISTS ${s}.verify_runs (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), ok boolean NOT NULL, result jsonb NOT NULL);
${workerErrorsDdl(s)}
`;
}

export async function installState(db: Pool | PoolClient, schema: string): Promise<void> {
  await db.query(stateDdl(schema));
}

export async function stateInstalled(db: Pool | PoolClient, schema: string): Promise<boolean> {
  const r = await db.query('SELECT to_regclass($1) IS NOT NULL AS ok', [`${q(schema)}.row_version`]);
  return r.rows[0]?.ok === true;
}

/** A sync worker that records the error it stops with: the relay of a source, the apply worker of a direction (by its source). */
export type SyncWorker = 'relay' | 'apply';
export interface WorkerError { worker: SyncWorker; source: Side; code: string; message: string; at: string }

const UNDEFINED_TABLE = '42P01';
const sqlState = (err: unknown): unknown => (err as { code?: unknown } | null)?.code;

/** Records (replaces) the error `worker` of direction `source` stops with; status shows it until clearWorkerError. */
export async function recordWorkerError(db: Pool | PoolClient, schema: string, e: Omit<WorkerError, 'at'>): Promise<void> {
  const s = q(schema);
  const upsert = () => db.query(
    `INSERT INTO ${s}.worker_errors (worker, source, code, message, at) VALUES ($1, $2, $3, $4, now())
     ON CONFLICT (worker, source) DO UPDATE SET code = EXCLUDED.code, message = EXCLUDED.message, at = EXCLUDED.at`,
    [e.worker, e.source, e.code, e.message]);
  try {
    await upsert();
  } catch (err) {
    if (sqlState(err) !== UNDEFINED_TABLE) throw err;
    await db.query(workerErrorsDdl(s));
    await upsert();
  }
}

/**
 * Forgets the error `worker` of direction `source` stopped with (it got past that point; or, with `codes`, only an
 * error with one of them: one a repair removed the cause of); none recorded is fine.
 */
export async function clearWorkerError(db: Pool | PoolClient, schema: string, worker: SyncWorker, source: Side, codes?: readonly string[]): Promise<void> {
  await db.query(`DELETE FROM ${q(schema)}.worker_errors WHERE worker = $1 AND source = $2 AND ($3::text[] IS NULL OR code = ANY($3))`, [worker, source, codes ?? null]).catch((err: unknown) => {
    if (sqlState(err) !== UNDEFINED_TABLE) throw err;
  });
}

/** The recorded errors of the workers of direction `source` in the database `db` (relays on the source, apply on the target). */
export async function readWorkerErrors(db: Pool, schema: string, source: Side): Promise<WorkerError[]> {
  const s = q(schema);
  const r = await db.query<{ worker: SyncWorker; code: string; message: string; at: string }>(
    `SELECT worker, code, message, at::text FROM ${s}.worker_errors WHERE source = $1 ORDER BY worker DESC`, [source])
    .catch((err: unknown) => { if (sqlState(err) === UNDEFINED_TABLE) return { rows: [] }; throw err; });
  return r.rows.map((x) => ({ worker: x.worker, source, code: x.code, message: x.message, at: x.at }));
}
