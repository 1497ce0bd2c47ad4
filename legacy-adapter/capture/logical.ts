/**
 * Capture mode `logical` (opt-in, needs wal_level=logical): no row triggers on the application's tables (only the
 * TRUNCATE guard, as in trigger mode). A logical replication slot with the built-in `test_decoding` plugin delivers
 * committed changes in commit order; the decoder step (run by the relay before it assigns positions) turns each row
 * change into exactly the changelog row the
 * capture trigger would have written (same key, op, `to_jsonb` images, version vector) and the relay publishes them
 * as in trigger mode: one relay path for both modes.
 *
 *   slot ──peek──► decode (per-table SQL function, same rules as the trigger) ──► changelog + row_version
 *                  + logical_capture.decoded_lsn, ONE transaction ──COMMIT──► pg_replication_slot_advance
 *
 * Exactly once: slot consumption is not transactional (an advance or get_changes survives a ROLLBACK), so the
 * decoder only peeks; the commit LSN of the last decoded transaction is stored in the same transaction as the
 * changelog rows, transactions at or below it are skipped, and the slot is advanced only after COMMIT (a crash in
 * between re-reads what was already stored, and skips it).
 *
 * Loop prevention: apply emits a transactional logical message (prefix `strangler.sync`) in its transaction when
 * the mode is logical; the decoder drops every transaction that carries it. Images: the user tables get
 * REPLICA IDENTITY FULL (full before images, unchanged TOAST values), restored on uninstall.
 *
 * Replication origins (SyncOrigins): sync's own sessions (apply, backfill, repair, this decoder, the relay's
 * bookkeeping) write under one of a few origins and the peek passes `only-local`, so the server skips those changes
 * before test_decoding formats them. The message stays the guarantee for a transaction that got no origin (no
 * grant, all busy). Local application writes have no origin and are decoded as before.
 *
 * Conflicts: a local write gets its version vector when it is decoded, not when it commits. So apply, after its
 * writes and before its conflict check, decodes everything committed so far (`catchUp`, on a connection of its own):
 * a local write to a key it just overwrote then shows in the version vectors, the batch is retried, and the conflict
 * is decided by policy as in trigger mode. Apply into a side therefore waits for that side's decoding.
 *
 * Cost: every peek and advance re-reads the server's WAL from the slot's restart_lsn, so the decoder keeps it close
 * (a running-xacts record when it lags, see #cycle); test_decoding has no table filter, so without origins sync's
 * own writes (the changelog, row_version, apply's rows) come back as text and are dropped here (figures:
 * migration-scripts/README.md).
 */
import type { Pool, PoolClient, QueryConfig } from 'pg';
import { StranglerError } from '../../common/errors.ts';
import { silentLogger, type Logger } from '../../common/logger.ts';
import { transactionOn } from '../../common/pg.ts';
import { CAPTURE_LOG } from './log-events.ts';
import { mappedColumns, type Side, type SyncConfig } from '../../migration-scripts/config-schema.ts';
import { lit, q, type CompiledTable } from '../../migration-scripts/mapping.ts';
import { SYNC_MESSAGE_PREFIX } from '../../migration-scripts/event.ts';
import { unbounded } from '../../migration-scripts/db.ts';
import type { DdlTransaction, LockTables } from './install.ts';

const PLUGIN = 'test_decoding';
/** Decoded changes passed to one decode-function statement (arrays of record texts); also the most changes held in memory. */
const RUN_ROWS = 2_000;
/** Text of decoded changes held in memory before they are stored (fewer than RUN_ROWS when rows are large). */
const BUFFER_CHARS = 16 << 20;
/** Peek rows read per FETCH (the relay's memory for undecoded text). */
const FETCH_ROWS = 500;
/** WAL between the slot's restart_lsn and now above which the decoder logs a running-xacts record (see #cycle). */
const RESTART_BEHIND_BYTES = 1 << 20;
/** WAL read past the slot's position without a COMMIT coming back (skipped by origin) above which the slot is moved there. */
const SKIPPED_ADVANCE_BYTES = 64n << 10n;
/** Prefix of the decoder's WAL flush marker (see #flushedEnd); it is no apply message (that one is SYNC_MESSAGE_PREFIX exactly). */
const FLUSH_MESSAGE_PREFIX = 'strangler.flush';
const decodeFunction = (name: string) => `decode_${name}`;

/** The slot name: replication slots are per server, so it names the database, state schema and side. */
export async function slotNameFor(db: Pool | PoolClient, config: SyncConfig, side: Side): Promise<string> {
  const r = await db.query<{ db: string }>('SELECT current_database() AS db');
  const raw = `strangler_${r.rows[0]?.db ?? 'db'}_${config.stateSchema}_${side}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  if (raw.length <= 63) return raw;
  // Too long for NAMEDATALEN: keep a readable prefix and a stable hash of the whole name.
  let h = 0;
  for (let i = 0; i < raw.length; i++) h = (Math.imul(h, 31) + raw.charCodeAt(i)) | 0;
  return `${raw.slice(0, 54)}_${(h >>> 0).toString(16).padStart(8, '0')}`;
}

/** Throws SYNC_LOGICAL_UNAVAILABLE unless the server runs with wal_level=logical. */
export async function assertLogicalWal(db: Pool | PoolClient, side: Side): Promise<void> {
  const r = await db.query<{ wal_level: string }>('SHOW wal_level');
  const level = r.rows[0]?.wal_level;
  if (level !== 'logical') {
    throw new StranglerError('SYNC_LOGICAL_UNAVAILABLE',
      `sync.capture.mode "logical" needs wal_level = logical on the ${side} database server (it is "${String(level)}"); set wal_level = logical (and max_replication_slots >= 1) in postgresql.conf and restart, or use capture.mode "trigger"`);
  }
}

/** SQL of the state table and the per-table decode functions (same rules as the capture trigger in install.ts); REPLICA IDENTITY is set by installLogical. */
export function logicalFunctionsSql(config: SyncConfig, side: Side, tables: readonly CompiledTable[]): string {
  const s = q(config.stateSchema);
  const own = side === 'legacy' ? 'legacy_version' : 'service_version';
  const other = side === 'legacy' ? 'service_version' : 'legacy_version';
  const [lvExpr, svExpr] = side === 'legacy' ? ['v', 'o'] : ['o', 'v'];
  const parts = [`
CREATE TABLE IF NOT EXISTS ${s}.logical_capture (
  id int PRIMARY KEY, slot text NOT NULL, decoded_lsn pg_lsn NOT NULL DEFAULT '0/0', tables jsonb NOT NULL DEFAULT '{}',
  since jsonb NOT NULL DEFAULT '{}');
-- since: per logical table, the WAL position up to which its changes are not captured (see installLogical). Added only
-- when missing (state of an earlier version): ALTER TABLE would lock logical_capture even when nothing changes.
DO $a$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = ${lit(`${s}.logical_capture`)}::regclass AND attname = 'since' AND NOT attisdropped)
  THEN ALTER TABLE ${s}.logical_capture ADD COLUMN since jsonb NOT NULL DEFAULT '{}'; END IF; END $a$;
CREATE OR REPLACE FUNCTION ${s}.capture_decoded(p_tbl text, p_pk text, p_op text, p_before jsonb, p_after jsonb, p_xid xid8, p_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE v bigint := nextval('${config.stateSchema}.version_seq'); o bigint;
BEGIN
  INSERT INTO ${s}.row_version AS r (tbl, pk, ${own}, ${other}, deleted, ts) VALUES (p_tbl, p_pk, v, 0, p_op = 'd', p_ts)
    ON CONFLICT (tbl, pk) DO UPDATE SET ${own} = v, deleted = p_op = 'd', ts = p_ts
    RETURNING r.${other} INTO o;
  INSERT INTO ${s}.changelog (seq, xid, tbl, op, pk, before, after, lv, sv, ts)
    VALUES (v, p_xid, p_tbl, p_op, p_pk, p_before, p_after, ${lvExpr}, ${svExpr}, p_ts);
END $fn$;`];
  for (const t of tables) {
    const key = (alias: string) => t.keyText(side, alias);
    const name = lit(t.name);
    const rowType = t.qualified(side);
    parts.push(`
CREATE OR REPLACE FUNCTION ${s}.${q(decodeFunction(t.name))}(p_op text, p_old text, p_new text, p_xid xid8, p_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE n ${rowType}; o ${rowType}; k text; ok text; img_new jsonb; img_old jsonb;
BEGIN
  IF p_new IS NOT NULL THEN n := p_new::${rowType}; END IF;
  IF p_old IS NOT NULL THEN o := p_old::${rowType}; END IF;
  IF p_op = 'INSERT' THEN
    PERFORM ${s}.capture_decoded(${name}, ${key('n')}, 'c', NULL, ${t.captureImage(side, 'n')}, p_xid, p_ts);
  ELSIF p_op = 'DELETE' THEN
    PERFORM ${s}.capture_decoded(${name}, ${key('o')}, 'd', ${t.captureImage(side, 'o')}, NULL, p_xid, p_ts);
  ELSE
    img_new := ${t.captureImage(side, 'n')}; img_old := ${t.captureImage(side, 'o')};
    IF img_new = img_old AND img_new::text = img_old::text THEN RETURN; END IF;
    k := ${key('n')}; ok := ${key('o')};
    IF k <> ok THEN
      PERFORM ${s}.capture_decoded(${name}, ok, 'd', img_old, NULL, p_xid, p_ts);
      PERFORM ${s}.capture_decoded(${name}, k, 'c', NULL, img_new, p_xid, p_ts);
    ELSE
      PERFORM ${s}.capture_decoded(${name}, k, 'u', img_old, img_new, p_xid, p_ts);
    END IF;
  END IF;
END $fn$;`);
  }
  return parts.join('\n');
}

/** The slot logical capture recorded on this database, whether it still exists, and the decode position; undefined without logical capture state. */
export async function recordedSlot(db: Pool | PoolClient, config: SyncConfig): Promise<{ slot: string; exists: boolean; decodedLsn: string } | undefined> {
  const s = q(config.stateSchema);
  const has = await db.query<{ ok: boolean }>('SELECT to_regclass($1) IS NOT NULL AS ok', [`${s}.logical_capture`]);
  if (!has.rows[0]?.ok) return undefined;
  const r = await db.query<{ slot: string; exists: boolean; decoded_lsn: string }>(
    `SELECT c.slot, EXISTS (SELECT 1 FROM pg_replication_slots s WHERE s.slot_name = c.slot) AS exists, c.decoded_lsn::text FROM ${s}.logical_capture c WHERE c.id = 1`);
  const row = r.rows[0];
  return row ? { slot: row.slot, exists: row.exists, decodedLsn: row.decoded_lsn } : undefined;
}

/**
 * SYNC_SLOT_LOST: logical capture state exists on `side` but its slot does not (dropped by hand, or a failover to a
 * standby without it). Nothing committed since the last decoded transaction can be captured any more; only the
 * operator can decide to go on (install --accept-gap) and repair what was missed.
 */
export function slotLostError(side: Side, slot: string, decodedLsn: string): StranglerError {
  return new StranglerError('SYNC_SLOT_LOST', `logical capture on the ${side} database lost its replication slot "${slot}" (dropped, or the server failed over to a standby without it): changes committed on ${side} after the last decoded one (LSN ${decodedLsn}) were not captured and will not reach the other side. `
    + `Run \`strangler sync capture install --side ${side} --accept-gap\` to create a new slot (capture resumes from then on, the gap is recorded), then, with the pipeline drained, \`strangler sync verify\` and \`strangler sync repair --from ${side}\` for the keys it reports (backfill does not rewrite keys the other side already has)`,
  { details: { side, slot, decodedLsn } });
}

/**
 * Installs logical capture: checks wal_level, creates the slot (outside any transaction), then the state and functions
 * in one DDL transaction run by `ddl` (install.ts: table locks bounded by capture.lockTimeoutMs, retried).
 * `installStateIn` locks the tables whose triggers or replica identity change, and returns the WAL position up to
 * which every committed change of the synced tables was captured otherwise (by capture triggers it just dropped), or
 * null; the decoder skips transactions committed up to there. A slot created here is dropped again if that fails.
 * Over logical capture state whose slot is gone this throws SYNC_SLOT_LOST unless `acceptGap`: then the new slot
 * starts now, the decode position is reset (a standby's WAL may be behind the lost position) and the gap is recorded.
 */
export async function installLogical(pool: Pool, config: SyncConfig, side: Side, tables: readonly CompiledTable[], ddl: DdlTransaction,
  installStateIn: (client: PoolClient, lock: LockTables) => Promise<string | null>, options: { acceptGap?: boolean } = {}): Promise<{ gap?: { slot: string; decodedLsn: string } }> {
  await assertLogicalWal(pool, side);
  const slot = await slotNameFor(pool, config, side);
  const recorded = await recordedSlot(pool, config);
  const lost = recorded !== undefined && !recorded.exists ? recorded : undefined;
  if (lost && !options.acceptGap) throw slotLostError(side, lost.slot, lost.decodedLsn);
  const exists = await pool.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  let created = false;
  if (exists.rowCount === 0) {
    await createSlot(pool, config, slot, side);
    created = true;
  }
  // The origins sync's own sessions write under (see SyncOrigins); a user that may not create them installs without.
  await ensureOrigins(pool, slot);
  try {
    await ddl(async (client, lock) => {
      const capturedUpTo = await installStateIn(client, lock);
      // Remember each table's replica identity before changing it, so uninstall can restore it.
      const prev = await client.query<{ tables: Record<string, string> }>(
        `SELECT coalesce(jsonb_object_agg(n, c.relreplident::text), '{}') AS tables FROM unnest($1::text[]) AS n JOIN pg_class c ON c.oid = n::regclass`,
        [tables.map((t) => t.qualified(side))]);
      await client.query(logicalFunctionsSql(config, side, tables));
      // Only where it is not FULL yet (ACCESS EXCLUSIVE even when nothing changes): a rerun locks nothing.
      const idents = prev.rows[0]?.tables ?? {};
      for (const [table, ident] of Object.entries(idents)) {
        if (ident !== 'f') await client.query(`ALTER TABLE ${table} REPLICA IDENTITY FULL`);
      }
      // A table whose replica identity changes here had its writes since the slot was created logged without full old
      // images: an UPDATE that left a TOASTed value unchanged cannot be decoded at all (the relay would stop on it for
      // good), an UPDATE has no old image (decoded as a delete of key [null]), a DELETE only its key. Its capture starts
      // at this transaction instead: installStateIn locked it (ACCESS EXCLUSIVE), so every transaction that wrote it
      // under the old identity committed below the WAL position now, and every later one writes under FULL. What
      // committed before is for backfill, as what committed before the slot (the decoder skips it, per table).
      const changing = tables.filter((t) => idents[t.qualified(side)] !== 'f');
      const from = changing.length === 0 ? null
        : (await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]?.lsn ?? null;
      const since = from === null ? {} : Object.fromEntries(changing.map((t) => [t.name, from]));
      const s = q(config.stateSchema);
      await client.query(
        `INSERT INTO ${s}.logical_capture (id, slot, tables, decoded_lsn, since) VALUES (1, $1, $2::jsonb, coalesce($3::pg_lsn, '0/0'), $5::jsonb)
         ON CONFLICT (id) DO UPDATE SET slot = EXCLUDED.slot, tables = EXCLUDED.tables || ${s}.logical_capture.tables,
           decoded_lsn = CASE WHEN $4 THEN EXCLUDED.decoded_lsn ELSE greatest(${s}.logical_capture.decoded_lsn, EXCLUDED.decoded_lsn) END,
           since = ${s}.logical_capture.since || EXCLUDED.since`,
        [slot, JSON.stringify(idents), capturedUpTo, lost !== undefined, JSON.stringify(since)]);
      if (lost) {
        await client.query(
          `INSERT INTO ${s}.capture_gaps (slot, decoded_lsn, resumed_lsn) SELECT $1, $2::pg_lsn, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $3`,
          [lost.slot, lost.decodedLsn, slot]);
      }
    });
  } catch (err) {
    if (created) await pool.query('SELECT pg_drop_replication_slot($1)', [slot]).catch(() => {});
    throw err;
  }
  return lost ? { gap: { slot: lost.slot, decodedLsn: lost.decodedLsn } } : {};
}

/**
 * Creates the slot, waiting at most max(capture.lockTimeoutMs, capture.lockRetryMs). PostgreSQL builds a new slot's
 * starting snapshot by waiting until every transaction that holds a transaction id, on any database of the server, has
 * ended: one session left idle in transaction after a write would make install wait for ever. The wait holds up no
 * application query (no table lock is queued), so it is one wait, not retried attempts. On the bound the statement is
 * cancelled, PostgreSQL drops the half-made (ephemeral) slot itself, and SYNC_SLOT_BLOCKED names the open transactions.
 */
async function createSlot(pool: Pool, config: SyncConfig, slot: string, side: Side): Promise<void> {
  const waitMs = Math.max(config.capture.lockTimeoutMs, config.capture.lockRetryMs);
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query(`SET statement_timeout = ${waitMs}`);
    // The client-side bound only catches a server that stopped answering (the server cancels at waitMs).
    const create: QueryConfig & { query_timeout: number } = { text: 'SELECT pg_create_logical_replication_slot($1, $2)', values: [slot, PLUGIN], query_timeout: waitMs + 30_000 };
    await client.query(create);
  } catch (err) {
    if ((err as { code?: string }).code === '57014') throw await slotBlockedError(pool, slot, side, waitMs, err);
    broken = !(err as { code?: string }).code;
    throw new StranglerError('SYNC_LOGICAL_UNAVAILABLE', `could not create logical replication slot "${slot}" (plugin ${PLUGIN}) on the ${side} database: ${(err as Error).message}; check max_replication_slots`, { cause: err });
  } finally {
    if (!broken) await client.query('RESET statement_timeout').catch(() => { broken = true; });
    client.release(broken);
  }
}

/** SYNC_SLOT_BLOCKED naming the open transactions (with a transaction id) that slot creation waits for, oldest first. */
async function slotBlockedError(pool: Pool, slot: string, side: Side, waitMs: number, cause: unknown): Promise<StranglerError> {
  const r = await pool.query<{ pid: number | null; db: string | null; app: string | null; state: string | null; xact_start: string | null; age_s: number | null; query_start: string | null; query: string | null }>(
    `SELECT pid, datname AS db, application_name AS app, state, xact_start::text AS xact_start, extract(epoch FROM now() - xact_start)::int AS age_s,
            query_start::text AS query_start, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query
       FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
     UNION ALL
     SELECT NULL, database, 'prepared transaction ' || gid, 'prepared', prepared::text, extract(epoch FROM now() - prepared)::int, NULL, NULL FROM pg_prepared_xacts
     ORDER BY xact_start NULLS LAST LIMIT 6`).catch(() => ({ rows: [] }));
  const shown = r.rows.slice(0, 5);
  const who = shown.length === 0
    ? 'none is open any more (it ended after the wait gave up): run the command again'
    : shown.map((h) => `PID ${h.pid ?? '? (prepared: COMMIT PREPARED or ROLLBACK PREPARED it)'} (database "${h.db ?? '?'}", application "${h.app ?? ''}", ${h.state ?? 'unknown state'}`
      + `${h.age_s !== null ? `, open for ${h.age_s} s` : ''}${h.xact_start ? ` (since ${h.xact_start})` : ''}`
      + `${h.query_start ? `, last query started ${h.query_start}` : ''}${h.query ? ` "${h.query}"` : ''})`).join('; ')
      + (r.rows.length > 5 ? '; and more' : '');
  const pid = shown.find((h) => h.pid !== null)?.pid;
  return new StranglerError('SYNC_SLOT_BLOCKED',
    `could not create logical replication slot "${slot}" on the ${side} database within ${waitMs} ms (max of sync.capture.lockTimeoutMs and `
    + `sync.capture.lockRetryMs = ${waitMs} ms): PostgreSQL creates a slot only after every transaction that holds a transaction id, on any database `
    + `of this server, has ended, and these are still open: ${who}. Nothing was created. Let that transaction finish`
    + `${pid ? ` (or end it: SELECT pg_terminate_backend(${pid}))` : ''}, then run the command again; sessions an application leaves idle in `
    + 'transaction can be bounded with idle_in_transaction_session_timeout, and raising sync.capture.lockRetryMs waits longer',
    { cause, details: { side, slot, waitMs, blockers: shown.map((h) => ({ pid: h.pid, database: h.db, applicationName: h.app, state: h.state, xactStart: h.xact_start, queryStart: h.query_start, query: h.query })) } });
}

/**
 * The statements that restore the tables' replica identity recorded at install (uninstall runs them in its
 * transaction, after locking those tables); tables already back at it need none (and no lock).
 */
export async function identityRestores(client: PoolClient, config: SyncConfig): Promise<{ table: string; sql: string }[]> {
  const s = q(config.stateSchema);
  const has = await client.query('SELECT to_regclass($1) IS NOT NULL AS ok', [`${s}.logical_capture`]);
  if (!has.rows[0]?.ok) return [];
  const r = await client.query<{ tables: Record<string, string> }>(`SELECT tables FROM ${s}.logical_capture WHERE id = 1`);
  const row = r.rows[0];
  if (!row) return [];
  const identity: Record<string, string> = { d: 'DEFAULT', n: 'NOTHING', f: 'FULL' };
  const restores: { table: string; sql: string }[] = [];
  for (const [table, prev] of Object.entries(row.tables)) {
    const now = await client.query<{ ident: string | null }>('SELECT (SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)) AS ident', [table]);
    const current = now.rows[0]?.ident;
    const mode = identity[prev];
    if (current && mode && current !== prev) restores.push({ table, sql: `ALTER TABLE ${table} REPLICA IDENTITY ${mode}` });
  }
  return restores;
}

/**
 * Drops `slot` if it exists (uninstall). A session reading it (a relay's or apply's decode cycle) holds it only for a
 * moment, so this waits up to `waitMs` for it; a slot still active then fails with SYNC_SLOT_IN_USE naming the
 * session that holds it.
 */
export async function dropSlot(pool: Pool, slot: string, side: Side, waitMs = 10_000): Promise<void> {
  try {
    await retryWhileInUse(() => pool.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [slot]), Date.now() + waitMs, 50);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '42704') return; // dropped meanwhile
    if (code !== '55006') throw err;
    const who = (await pool.query<{ pid: number | null; app: string | null; client: string | null; backend: string | null }>(
      `SELECT s.active_pid AS pid, a.application_name AS app, a.client_addr::text AS client, a.backend_type AS backend
         FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = $1`, [slot])).rows[0];
    const pid = who?.pid ?? '?';
    throw new StranglerError('SYNC_SLOT_IN_USE', `could not drop replication slot "${slot}" on the ${side} database: it is in use by PID ${pid}`
      + ` (${who?.backend ?? 'session'}${who?.app ? ` "${who.app}"` : ''}${who?.client ? ` from ${who.client}` : ''}) after waiting ${waitMs} ms. Stop the sync relay, apply and backfill processes`
      + ` of this database (or end that session: SELECT pg_terminate_backend(${pid})) and run uninstall again; nothing was removed`, { cause: err, details: { slot, pid: who?.pid ?? null } });
  }
}

/**
 * Runs `fn` again every `pauseMs` while a slot or origin it needs is held by another session (55006), until
 * `deadline`; then, or on any other error, the error is thrown.
 */
async function retryWhileInUse<T>(fn: () => Promise<T>, deadline: number, pauseMs: number): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if ((err as { code?: string }).code !== '55006' || Date.now() > deadline) throw err;
      await new Promise((res) => setTimeout(res, pauseMs));
    }
  }
}

export async function slotExists(pool: Pool, config: SyncConfig, side: Side): Promise<boolean> {
  const slot = await slotNameFor(pool, config, side);
  const r = await pool.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  return (r.rowCount ?? 0) > 0;
}

// ---------------------------------------------------------------------------------------------------------------
// replication origins: sync's own writes filtered inside the server

/**
 * Replication origins per database side for sync's own sessions. An origin is active in one session at a time and
 * each one ever used holds one of the server's max_replication_slots origin-progress entries until dropped, so the
 * set is small and fixed; a sync transaction that finds all of them busy runs without one (its rows then come back
 * through the slot as text and are dropped by the decoder, as without origins).
 */
export const SYNC_ORIGINS = 4;
/** `<slot>_<n>`: the slot name already names the database, state schema and side (origins are per server). */
export const originNames = (slot: string): string[] => Array.from({ length: SYNC_ORIGINS }, (_, n) => `${slot}_${n}`);
/** What a sync user needs to run its sessions under an origin (superuser-only unless granted). */
export const ORIGIN_GRANTS = ['pg_replication_origin_session_setup(text)', 'pg_replication_origin_session_reset()'] as const;

/** Creates the sync origins of `slot` that are missing, if this user may (install does); returns those that exist. */
export async function ensureOrigins(db: Pool | PoolClient, slot: string): Promise<string[]> {
  const names = originNames(slot);
  const may = await db.query<{ ok: boolean }>(`SELECT has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE') AS ok`);
  if (may.rows[0]?.ok) {
    for (const name of names) {
      // Two installs at once: the loser's create fails on the unique name, which is what it wanted anyway.
      await db.query('SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)', [name])
        .catch((err: { code?: string }) => { if (err.code !== '23505') throw err; });
    }
  }
  const r = await db.query<{ roname: string }>('SELECT roname FROM pg_replication_origin WHERE roname = ANY($1::text[])', [names]);
  const have = new Set(r.rows.map((x) => x.roname));
  return names.filter((n) => have.has(n));
}

/**
 * Drops the sync origins of `slot` (uninstall, after the slot). A session of a sync process still running holds its
 * origin only while it writes, so this waits a little for it; an origin still in use after `timeoutMs`, or a user
 * without EXECUTE on pg_replication_origin_drop, fails with SYNC_ORIGINS_LEFT naming the origins (run uninstall again).
 */
export async function dropOrigins(pool: Pool, slot: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const r = await pool.query<{ roname: string }>('SELECT roname FROM pg_replication_origin WHERE roname = ANY($1::text[]) ORDER BY roname', [originNames(slot)]);
  for (const { roname } of r.rows) {
    try {
      await retryWhileInUse(() => pool.query('SELECT pg_replication_origin_drop($1)', [roname]), deadline, 50);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '42704') continue; // dropped meanwhile
      throw new StranglerError('SYNC_ORIGINS_LEFT', `could not drop replication origin "${roname}": ${(err as Error).message}; ${code === '42501' ? 'grant EXECUTE ON FUNCTION pg_replication_origin_drop(text) to the user running uninstall, or drop it as a superuser' : 'stop every sync process on this database'} and run uninstall again`, { cause: err });
    }
  }
}

/** Per process, database and side: the origin names this user can use ([] = none), checked and warned about once. */
const usableOrigins = new Map<string, Promise<string[]>>();

/**
 * Runs sync's own sessions on a logical-mode database under one of its replication origins, so that the decoder's
 * `only-local` peek drops their changes inside the server before test_decoding formats them. The origin is held only
 * while a connection is checked out for sync's work (set up before, reset after): the pools stay usable for other
 * sessions, and uninstall can drop the origins once sync stopped. Without the grants (ORIGIN_GRANTS) or without
 * origins (install could not create them) nothing is set up, the decoder peeks without `only-local`, and apply's
 * message alone keeps its writes out of the capture, as before; one warning says which grant is missing.
 */
export class SyncOrigins {
  readonly #pool: Pool;
  readonly #config: SyncConfig;
  readonly #side: Side;
  readonly #log: Logger;
  #names: Promise<string[]> | undefined;
  #limitWarned = false;

  constructor(options: { pool: Pool; config: SyncConfig; side: Side; log?: Logger }) {
    this.#pool = options.pool;
    this.#config = options.config;
    this.#side = options.side;
    this.#log = options.log ?? silentLogger;
  }

  /** The origins sync's sessions here may use; [] when origins are unavailable (then the decoder does not filter by origin). */
  names(): Promise<string[]> {
    if (this.#config.capture.mode !== 'logical') return Promise.resolve([]);
    if (this.#names) return this.#names;
    const url = this.#pool.options.connectionString;
    const key = url === undefined ? undefined : `${url}|${this.#config.stateSchema}|${this.#side}`;
    const cached = key === undefined ? undefined : usableOrigins.get(key);
    if (cached) return (this.#names = cached);
    const check = this.#check();
    this.#names = check;
    if (key !== undefined) usableOrigins.set(key, check);
    // A check that failed (database restarting) is made again by the next call.
    check.catch(() => { this.#names = undefined; if (key !== undefined && usableOrigins.get(key) === check) usableOrigins.delete(key); });
    return check;
  }

  async #check(): Promise<string[]> {
    const missing = await this.#pool.query<{ fn: string }>(`SELECT fn FROM unnest($1::text[]) AS fn WHERE NOT has_function_privilege(fn, 'EXECUTE')`, [[...ORIGIN_GRANTS]]);
    if (missing.rows.length > 0) {
      const user = (await this.#pool.query<{ u: string }>('SELECT current_user AS u')).rows[0]?.u ?? 'the sync user';
      this.#log.warn({ event: CAPTURE_LOG.originsUnavailable, side: this.#side, missing: missing.rows.map((r) => r.fn) },
        `logical capture on ${this.#side}: sync's own writes are decoded as text and dropped by the decoder (slower) because ${user} may not use replication origins; GRANT EXECUTE ON FUNCTION ${missing.rows.map((r) => r.fn).join(', ')} TO ${user}`);
      return [];
    }
    const names = await ensureOrigins(this.#pool, await slotNameFor(this.#pool, this.#config, this.#side));
    if (names.length === 0) {
      this.#log.warn({ event: CAPTURE_LOG.originsUnavailable, side: this.#side, missing: ['pg_replication_origin_create(text)'] },
        `logical capture on ${this.#side}: sync's own writes are decoded as text and dropped by the decoder (slower) because its replication origins do not exist; run sync capture install as a user with EXECUTE on pg_replication_origin_create(text) (or a superuser)`);
    }
    return names;
  }

  /**
   * Sets up the first sync origin not active in another session on `client` (a checked-out connection, outside a
   * transaction). Returns its name, or null when origins are unavailable or all busy (the work then runs without one).
   */
  async setup(client: PoolClient): Promise<string | null> {
    for (const name of await this.names()) {
      try {
        await client.query('SELECT pg_replication_origin_session_setup($1)', [name]);
        return name;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === '55006' || code === '42704') continue; // active in another session; dropped meanwhile
        if (code === '53400') { // no free origin-progress entry (max_replication_slots)
          if (!this.#limitWarned) this.#log.warn({ event: CAPTURE_LOG.originsUnavailable, side: this.#side, err: (err as Error).message }, `logical capture on ${this.#side}: no free replication origin entry on the server (raise max_replication_slots); sync's writes go without an origin`);
          this.#limitWarned = true;
          return null;
        }
        throw err;
      }
    }
    return null;
  }

  /** Resets the origin `setup` put on `client`; false when that failed (the caller must discard the connection). */
  async reset(client: PoolClient): Promise<boolean> {
    try {
      await client.query('SELECT pg_replication_origin_session_reset()');
      return true;
    } catch {
      return false;
    }
  }

  /** Runs `work` on a pooled connection under a sync origin (when one is free) for its duration. */
  async use<T>(work: (client: PoolClient) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    let origin: string | null = null;
    let keep = true;
    try {
      origin = await this.setup(client);
      return await work(client);
    } finally {
      if (origin !== null) keep = await this.reset(client);
      client.release(!keep);
    }
  }

  /** `use` with `work` in one transaction: COMMIT when it resolves, ROLLBACK when it throws. */
  transaction<T>(work: (client: PoolClient) => Promise<T>): Promise<T> {
    return this.use((client) => transactionOn(client, work));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// test_decoding output parsing

/** One column value as text for the type's input function; null for SQL NULL; undefined for an unchanged TOAST value. */
type Value = string | null | undefined;
/** Sticky (read at Cursor.i): an unquoted identifier, an unquoted value. */
const IDENT_RE = /[^.[:\s]+/y;
const TOKEN_RE = /\S+/y;
interface Tuple { names: string[]; values: Value[] }
export interface RowChange { schema: string; table: string; op: 'INSERT' | 'UPDATE' | 'DELETE'; old: Tuple | null; new: Tuple | null }

class Cursor {
  i = 0;
  constructor(readonly s: string) {}
  get done(): boolean { return this.i >= this.s.length; }
  startsWith(p: string): boolean { return this.s.startsWith(p, this.i); }
  expect(p: string): void {
    if (!this.startsWith(p)) throw new Error(`test_decoding output: expected "${p}" at ${this.i} in ${this.s.slice(0, 200)}`);
    this.i += p.length;
  }
  /**
   * A string in `quote` characters with the quote doubled inside (quote_identifier's "…", quote_literal's '…').
   * Copies whole runs between quotes (indexOf + slice): building it a character at a time made a 1 KB value cost
   * tens of KB of heap, and a large transaction ran the relay out of memory.
   */
  quoted(quote: string, what: string): string {
    const parts: string[] = [];
    let from = this.i + 1;
    for (;;) {
      const at = this.s.indexOf(quote, from);
      if (at < 0) throw new Error(`test_decoding output: unterminated ${what}`);
      if (this.s[at + 1] === quote) {
        parts.push(this.s.slice(from, at + 1));
        from = at + 2;
        continue;
      }
      parts.push(this.s.slice(from, at));
      this.i = at + 1;
      return parts.length === 1 ? parts[0] as string : parts.join('');
    }
  }
  /** The run of characters matching the sticky `re` at the cursor (no copy of the rest of the line), or ''. */
  token(re: RegExp): string {
    re.lastIndex = this.i;
    const m = re.exec(this.s);
    const tok = m?.[0] ?? '';
    this.i += tok.length;
    return tok;
  }
  /** An identifier as printed by quote_identifier. */
  ident(): string {
    if (this.s[this.i] === '"') return this.quoted('"', 'identifier');
    const tok = this.token(IDENT_RE);
    if (!tok) throw new Error(`test_decoding output: expected an identifier at ${this.i}`);
    return tok;
  }
}

function parseTuple(c: Cursor, stop: string | null): Tuple {
  const names: string[] = [];
  const values: Value[] = [];
  while (!c.done && !(stop !== null && c.startsWith(stop))) {
    if (c.startsWith(' ')) { c.i++; continue; }
    names.push(c.ident());
    c.expect('[');
    const end = c.s.indexOf(']:', c.i);
    if (end < 0) throw new Error('test_decoding output: column type not terminated');
    c.i = end + 2;
    if (c.startsWith("'")) {
      values.push(c.quoted("'", 'literal'));
    } else {
      const tok = c.token(TOKEN_RE);
      if (tok === 'null') values.push(null);
      else if (tok === 'unchanged-toast-datum') values.push(undefined);
      else if (/^B'[01]*'$/.test(tok)) values.push(tok.slice(2, -1));
      else values.push(tok);
    }
  }
  return { names, values };
}

/**
 * Parses one `table schema.name: OP: ...` line of test_decoding; null for TRUNCATE and tuple-less changes, and for
 * tables `wanted` refuses (checked before the tuples are read: most lines the decoder sees are sync's own state writes).
 */
export function parseChange(line: string, wanted?: (schema: string, table: string) => boolean): RowChange | null {
  const c = new Cursor(line);
  c.expect('table ');
  const schema = c.ident();
  c.expect('.');
  const table = c.ident();
  if (wanted && !wanted(schema, table)) return null;
  c.expect(': ');
  const opEnd = line.indexOf(':', c.i);
  const op = line.slice(c.i, opEnd);
  c.i = opEnd + 1;
  if (op !== 'INSERT' && op !== 'UPDATE' && op !== 'DELETE') return null;
  if (c.startsWith(' (no-tuple-data)')) return null;
  if (op === 'UPDATE' && c.startsWith(' old-key:')) {
    c.expect(' old-key:');
    const old = parseTuple(c, ' new-tuple:');
    c.expect(' new-tuple:');
    return { schema, table, op, old, new: parseTuple(c, null) };
  }
  const tuple = parseTuple(c, null);
  return op === 'DELETE' ? { schema, table, op, old: tuple, new: null } : { schema, table, op, old: null, new: tuple };
}

/**
 * Throws SYNC_SCHEMA_CHANGED when a decoded change does not fit the table's current `columns`: the slot still held it
 * when a DDL committed, and test_decoding prints it with the columns of its own time. A column name the table no
 * longer has (renamed or dropped since), or a column the sync mapping reads (`mapped`) that the change's new tuple
 * lacks (added since) would otherwise be captured as NULL. A new tuple lists every column (NULLs as `null`), so a
 * column only it lacks and no mapping reads was added after the change: NULL, the value the row had for it (none).
 * Old tuples leave NULL columns out; there a missing column is NULL.
 */
function checkDecodedColumns(side: Side, table: string, columns: TableColumns, mapped: ReadonlySet<string>, ch: RowChange): void {
  const goneSet = new Set<string>();
  for (const t of [ch.old, ch.new]) if (t) for (const n of t.names) if (!columns.current.has(n)) goneSet.add(n);
  const gone = [...goneSet];
  const added = ch.new ? columns.names.filter((c) => mapped.has(c) && !(ch.new as Tuple).names.includes(c)) : [];
  if (gone.length === 0 && added.length === 0) return;
  const list = (names: string[]) => names.map((n) => `"${n}"`).join(', ');
  const what = gone.length > 0
    ? `its column(s) ${list(gone)} are not in the table any more (renamed or dropped)`
    : `the synced column(s) ${list(added)} did not exist yet when it was written (added since)`;
  const undo = gone.length > 0 ? 'rename the column back, or add it back with that name' : 'drop the added column again';
  throw new StranglerError('SYNC_SCHEMA_CHANGED',
    `logical capture on ${side}: a change (${ch.op}) of ${table} still in the replication slot no longer fits the table: ${what}; decoding stopped there so that nothing is captured with a wrong value. ` +
    `To go on, ${undo}, let the relay drain the slot (strangler sync status: undecoded near 0), then make the DDL again with writes to the table stopped and the slot drained (migration-scripts/README.md, DDL)`);
}

/** A table's current columns: names in attribute order, and the same as a set; its replica identity (pg_class.relreplident). */
interface TableColumns { names: readonly string[]; current: ReadonlySet<string>; identity: string }

/** pg_class.relreplident codes as ALTER TABLE … REPLICA IDENTITY spells them. */
export const IDENTITY_NAMES: Record<string, string> = { d: 'DEFAULT', n: 'NOTHING', f: 'FULL', i: 'USING INDEX' };

/**
 * SYNC_DECODE_FAILED: a change in the slot that can never be decoded (retrying only keeps every later change waiting
 * behind it). `why` says what is wrong; a table whose replica identity is not FULL gets the recovery through install,
 * which sets FULL again and skips the table's changes committed until then (logged without full images).
 */
function decodeFailedError(o: { side: Side; table: string; logical: string; op: string; xid: string; lsn: string; why: string; identity?: { now: string }; cause?: unknown }): StranglerError {
  const install = `\`strangler sync capture install --side ${o.side}\``;
  const repair = `then, with the pipeline drained (strangler sync status: lag 0), \`strangler sync verify --table ${o.logical}\` and \`strangler sync repair --from ${o.side}\` for the keys it reports`;
  const todo = o.identity === undefined
    ? `Fix the cause (undo a DDL made on ${o.table} while its changes were in the slot; run ${install} if its decode function is missing), then restart the relay; a change that still cannot be decoded can be skipped by setting ${o.table} to REPLICA IDENTITY DEFAULT and running ${install} (it sets FULL again and skips the table's changes committed until then), restarting the relay, ${repair}`
    : o.identity.now === 'f'
      ? `The identity is FULL again, but this change was logged while it was not. Run \`ALTER TABLE ${o.table} REPLICA IDENTITY DEFAULT\` and then ${install}: install sets FULL again and skips the changes of ${o.table} committed until then (they were logged without full images); restart the relay, ${repair}`
      : `Do not only ALTER TABLE by hand (the changes already logged stay undecodable): run ${install}, which sets REPLICA IDENTITY FULL again and skips the changes of ${o.table} committed until then (logged without full images); restart the relay, ${repair}`;
  return new StranglerError('SYNC_DECODE_FAILED',
    `logical capture on the ${o.side} database cannot decode a change of ${o.table} (logical table "${o.logical}": ${o.op} in transaction ${o.xid}, commit LSN ${o.lsn}): ${o.why}. `
    + `Decoding stopped there (retrying cannot help; every later change of the ${o.side} database waits behind it). ${todo}`,
  { cause: o.cause, details: { side: o.side, table: o.table, logical: o.logical, op: o.op, xid: o.xid, lsn: o.lsn } });
}

/** Why a change of a table with replica identity `identity` (now) lacks what decoding needs; null when nothing is missing. */
function identityProblem(table: string, identity: string, ch: RowChange, toastMissing: boolean): string | null {
  const now = IDENTITY_NAMES[identity] ?? identity;
  // An insert carries its whole row whatever the identity: it is decoded (and the first update or delete stops).
  if (identity !== 'f' && ch.op !== 'INSERT') return `the replica identity of ${table} is ${now}, capture needs FULL (it was changed after install), so its updates and deletes are logged without the full old row`;
  if ((ch.op === 'UPDATE' && ch.old === null) || toastMissing) return `it was logged without its old row image (the replica identity of ${table} was not FULL when it was written; it is FULL now)`;
  return null;
}

/**
 * A tuple as record input text `(v1,v2,…)` in the table's column order. test_decoding leaves NULL columns out of
 * old tuples, so columns are matched by name and a missing one is NULL (checkDecodedColumns first refuses a change
 * whose columns do not fit the table); an unchanged TOAST value is taken from `fallback` (the full old image).
 */
export function recordText(columns: readonly string[], t: Tuple, fallback: Tuple | null): string {
  return `(${columns.map((col) => {
    const i = t.names.indexOf(col);
    let value: Value = i >= 0 ? t.values[i] : null;
    if (value === undefined) {
      const j = fallback ? fallback.names.indexOf(col) : -1;
      value = j >= 0 ? fallback?.values[j] : undefined;
      if (value === undefined) throw new Error(`test_decoding output: unchanged TOAST value of column ${col} without a full old image (REPLICA IDENTITY FULL missing?)`);
    }
    return value === null ? '' : `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
  }).join(',')})`;
}

// ---------------------------------------------------------------------------------------------------------------
// the decoder step

/** One decoded row change as the decode function's arguments (record texts), before its commit time is known. */
interface DecodedChange { fn: string; op: string; old: string | null; new: string | null; chars: number; table: string; unreadable?: { why: string; identity?: { now: string }; cause?: unknown } }
/** A decoded change waiting to be stored: the decode function's arguments (op, old, new, xid, commit time), its table and commit LSN. */
interface QueuedChange { fn: string; args: (string | null)[]; table: string; lsn: string }

/**
 * SQLSTATE classes of a decode-function statement that fail the same way on every retry: data exceptions (22: a value
 * that no longer fits the column's type), integrity (23), undefined or forbidden objects (42: the decode function or a
 * state table dropped, a privilege revoked), program limits (54), not supported (0A), raised exceptions (P0). A lost
 * connection, a restart, a deadlock, a timeout or a full disk is retried by the relay.
 */
function isDeterministicDecodeError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && ['22', '23', '42', '54', '0A', 'P0'].includes(code.slice(0, 2));
}

/** A decode-function statement that failed deterministically, with the run of changes it stored (see #decodeRunError). */
class DecodeRunFailed extends Error {
  constructor(readonly run: readonly QueuedChange[], readonly error: unknown) {
    super((error as Error).message);
  }
}

/** A synced source table: its decode function (qualified), the columns the sync mapping reads (keys included), its logical name. */
interface SourceTable { fn: string; mapped: ReadonlySet<string>; logical: string }
/** The transaction being read from the peek; `commit` is looked up early for a large one (see #cycle). */
interface OpenTx { xid: string; sync: boolean; skip: boolean; pending: DecodedChange[]; chars: number; commit: { lsn: string; ts: string } | null }

export class LogicalDecoder {
  readonly #config: SyncConfig;
  readonly #pool: Pool;
  readonly #side: Side;
  readonly #batch: number;
  /** "schema.table" (unquoted) of each synced source table → its decode function (qualified) and the source columns the sync mapping reads (keys included). */
  readonly #tables: Map<string, SourceTable>;
  /** The logical table name per decode function (qualified), for errors. */
  readonly #logical: Map<string, string>;
  /** The columns per "schema.table", read in each cycle that decodes a change of the table (a DDL between cycles is seen). */
  readonly #columns = new Map<string, TableColumns>();
  /** False once pg_log_standby_snapshot() failed (PostgreSQL < 16, or not granted): then only the server's own records move restart_lsn. */
  #logSnapshots = true;
  /** The decoder's own writes (changelog, row_version, decoded_lsn) run under a sync origin too. */
  readonly #origins: SyncOrigins;
  /** False once pg_logical_emit_message(…, flush) is missing (PostgreSQL < 17): see #flushedEnd. */
  #flushMessage = true;
  /**
   * The end of the last complete read while the WAL has not moved past it: everything committed so far is decoded, so
   * a poll with the WAL insert position still there skips the cycle (see #cycle). Null when unknown.
   */
  #quietEnd: string | null = null;

  constructor(options: { config: SyncConfig; pool: Pool; side: Side; batchSize?: number; origins?: SyncOrigins; log?: Logger }) {
    this.#config = options.config;
    this.#pool = options.pool;
    this.#side = options.side;
    this.#origins = options.origins ?? new SyncOrigins({ pool: options.pool, config: options.config, side: options.side, log: options.log });
    this.#batch = options.batchSize ?? options.config.capture.relayBatchSize;
    const schema = options.config.databases[options.side].schema;
    this.#tables = new Map(options.config.tables.map((t) => [`${schema}.${t[options.side].table}`, {
      fn: `${q(options.config.stateSchema)}.${q(decodeFunction(t.name))}`,
      mapped: new Set(mappedColumns(t, options.side)),
      logical: t.name,
    }]));
    this.#logical = new Map([...this.#tables.values()].map((t) => [t.fn, t.logical]));
  }

  get #s(): string { return q(this.#config.stateSchema); }

  /**
   * A decoded change as the decode function's record texts in the table's current column order. The columns are read
   * once per cycle (#cycle clears them), so a DDL made while the relay runs is seen by the next cycle; a change that
   * no longer fits the table (a DDL committed after it, before it was decoded) fails with SYNC_SCHEMA_CHANGED
   * (checkDecodedColumns) instead of being captured with a wrong or NULL value.
   */
  async #decodeChange(client: PoolClient, ch: RowChange): Promise<DecodedChange> {
    const name = `${ch.schema}.${ch.table}`;
    let cols = this.#columns.get(name);
    if (!cols) {
      // The replica identity comes along (same round trip): set back from FULL by hand, updates and deletes lose their old images.
      const r = await client.query<{ attname: string; ident: string }>(
        `SELECT a.attname, c.relreplident::text AS ident FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, [ch.schema, ch.table]);
      const names = r.rows.map((x) => x.attname);
      cols = { names, current: new Set(names), identity: r.rows[0]?.ident ?? 'f' };
      this.#columns.set(name, cols);
    }
    const table = this.#tables.get(name) as SourceTable; // parseChange kept synced tables only
    checkDecodedColumns(this.#side, name, cols, table.mapped, ch);
    const old = ch.old ? recordText(cols.names, ch.old, null) : null;
    let nw: string | null = null;
    let toastMissing: unknown;
    try {
      nw = ch.new ? recordText(cols.names, ch.new, ch.old) : null;
    } catch (err) {
      toastMissing = err;
    }
    // Written without full images (before install set REPLICA IDENTITY FULL: skipped by its commit position, see
    // #cycle; else thrown there as SYNC_DECODE_FAILED, with its transaction and commit LSN).
    const why = identityProblem(name, cols.identity, ch, toastMissing !== undefined);
    const unreadable = why === null ? undefined : { why, identity: { now: cols.identity }, cause: toastMissing };
    return { fn: table.fn, op: ch.op, old, new: nw, chars: (old?.length ?? 0) + (nw?.length ?? 0), table: name, ...(unreadable ? { unreadable } : {}) };
  }

  /**
   * SYNC_DECODE_FAILED for a run of changes whose decode-function statement failed deterministically (the cycle's
   * transaction rolled back): the run's changes are decoded again one at a time in a transaction that is rolled back,
   * to name the one that fails. One that no longer fails on its own gives the original error back (retried).
   */
  async #decodeRunError(client: PoolClient, failed: DecodeRunFailed): Promise<unknown> {
    let culprit: { change: QueuedChange; error: unknown } | undefined;
    await transactionOn(client, async () => {
      for (const change of failed.run) {
        const error = await client.query(`SELECT ${change.fn}($1, $2, $3, $4::xid8, $5::timestamptz)`, change.args).then(() => undefined, (err: unknown) => err);
        if (error !== undefined) {
          culprit = { change, error };
          break;
        }
      }
      throw failed; // rolled back: nothing of this is kept
    }).catch((err: unknown) => { if (err !== failed) throw err; });
    if (!culprit) return failed.error;
    const { change, error } = culprit;
    const code = (error as { code?: string }).code;
    return decodeFailedError({ side: this.#side, table: change.table, logical: this.#logical.get(change.fn) ?? change.table, op: change.args[0] ?? '?', xid: change.args[3] ?? '?', lsn: change.lsn,
      why: `its decode function ${change.fn} fails on it: ${(error as Error).message}${code ? ` (SQLSTATE ${code})` : ''}`, cause: error });
  }

  /**
   * Moves committed changes from the slot into the changelog, in commit order, in one transaction with the stored
   * decode position; then advances the slot. Returns the number of captured row changes.
   */
  async step(): Promise<number> {
    // Another session may hold the slot for a moment (55006: the other cycle between its COMMIT and the advance).
    return (await retryWhileInUse(() => this.#cycle(null), Date.now() + 10_000, 5)).captured;
  }

  /**
   * Decodes every transaction that committed before this call (not just one batch). Apply calls it after its writes
   * so that a local write it overwrote has its version vector before the conflict check. Waits while the relay's
   * own cycle holds the slot.
   */
  async catchUp(timeoutMs = 10_000): Promise<number> {
    const upTo = await this.#flushedEnd();
    const deadline = Date.now() + timeoutMs;
    let captured = 0;
    for (;;) {
      const c = await retryWhileInUse(() => this.#cycle(upTo), deadline, 5);
      captured += c.captured;
      // A peek that returned fewer rows than its limit read everything up to `upTo`: no second peek to find nothing.
      if (!c.sawCommit || c.complete) return captured;
      if (Date.now() > deadline) throw Object.assign(new Error(`logical decoding on ${this.#side} did not catch up within ${timeoutMs} ms`), { code: '55P03' });
    }
  }

  /**
   * A WAL position that ends a record and below which everything is flushed, for a peek to read up to: a peek whose
   * end lies inside a record not yet flushed (the flush pointer stops at page boundaries while a big transaction,
   * such as apply's own open batch, writes) sleeps until the WAL writer flushes it, up to wal_writer_delay (200 ms
   * measured per apply batch). PostgreSQL 17+ flushes a non-transactional message and returns where it ends; before
   * that the flush pointer is used as is. Only catchUp (once per apply batch or backfill chunk, with its own batch
   * open) pays that extra WAL flush; the relay's cycles read up to the flush pointer, which under load is mostly a
   * commit's end (measured at 1,000 writes/s: the marker in every relay cycle added ~8 % more WAL fsyncs).
   */
  async #flushedEnd(): Promise<string> {
    if (this.#flushMessage) {
      try {
        const m = await this.#pool.query<{ lsn: string }>(`SELECT pg_logical_emit_message(false, $1, '', true)::text AS lsn`, [FLUSH_MESSAGE_PREFIX]);
        return m.rows[0]?.lsn as string;
      } catch (err) {
        if ((err as { code?: string }).code !== '42883') throw err;
        this.#flushMessage = false;
      }
    }
    const r = await this.#pool.query<{ lsn: string }>('SELECT pg_current_wal_flush_lsn()::text AS lsn');
    return r.rows[0]?.lsn as string;
  }

  async #cycle(upTo: string | null): Promise<{ captured: number; sawCommit: boolean; complete: boolean }> {
    // An idle poll costs one read of the WAL insert position: an idle cycle writes no WAL (an advisory lock, not a row
    // lock, and no xid), so a position still at the last complete read's end means nothing has committed since.
    if (upTo === null && this.#quietEnd !== null) {
      const now = await this.#pool.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
      if (now.rows[0]?.lsn === this.#quietEnd) return { captured: 0, sawCommit: false, complete: true };
    }
    this.#quietEnd = null;
    return this.#origins.use(async (client) => {
      // With origins in use, sync's own writes (apply's, the relay's, this decoder's) are dropped inside the server.
      const onlyLocal = (await this.#origins.names()).length > 0 ? `, 'only-local', '1'` : '';
      // Read up to a fixed end (catchUp's, or the flushed WAL now): a complete peek has then read everything below it.
      const end = upTo ?? (await client.query<{ lsn: string }>('SELECT pg_current_wal_flush_lsn()::text AS lsn')).rows[0]?.lsn as string;
      const { captured, slot, lastCommit, complete, restartBehind, confirmed } = await transactionOn(client, async () => {
        // One decoder at a time per slot (the relay's cycle, apply's catch-up): a transaction-scoped advisory lock, which
        // unlike a row lock writes no WAL, so an idle cycle leaves the WAL where it was (see #quietEnd).
        // (Decoding a large transaction takes as long as it takes: the lock wait, peeks, fetches and the slot advance
        // are not bounded by queryTimeoutMs.)
        await client.query(unbounded('SELECT pg_advisory_xact_lock(hashtext($1))', [`strangler-decode:${this.#config.stateSchema}`]));
        const st = await client.query<{ slot: string; decoded_lsn: string; behind: string | null; confirmed: string | null; since: Record<string, string> }>(
          `SELECT c.slot, c.decoded_lsn::text, c.since, pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint::text AS behind,
                  s.confirmed_flush_lsn::text AS confirmed
             FROM ${this.#s}.logical_capture c LEFT JOIN pg_replication_slots s ON s.slot_name = c.slot WHERE c.id = 1`);
        const state = st.rows[0];
        if (!state) throw new StranglerError('SYNC_NOT_INSTALLED', `${this.#side} database has no ${this.#config.stateSchema}.logical_capture row; run strangler sync capture install with capture.mode logical`);
        // The LEFT JOIN found no slot (a logical slot always has a confirmed_flush_lsn): it was dropped or lost in a failover.
        if (state.confirmed === null) throw slotLostError(this.#side, state.slot, state.decoded_lsn);
        // The peek's result is materialised on the server (a tuplestore, spilled to disk when large) and read here
        // FETCH_ROWS at a time, and decoded changes are stored in runs as they come: the relay holds a bounded part of
        // it, however large one source transaction is (a whole transaction in memory ran it out of heap, again on
        // every restart). Everything is stored in this one transaction, with decoded_lsn.
        this.#columns.clear();
        const peek = `pg_logical_slot_peek_changes($1, $2::pg_lsn, $3,
             'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1'${onlyLocal})`;
        const peekArgs = [state.slot, end, this.#batch];
        const decodedLsn = lsnValue(state.decoded_lsn);
        // Per decode function: changes of transactions committed at or below it are not captured (written before
        // install made the table's replica identity FULL, see installLogical).
        const since = new Map(Object.entries(state.since).map(([name, lsn]) => [`${this.#s}.${q(decodeFunction(name))}`, lsnValue(lsn)]));
        let captured = 0;
        let lastCommit: string | null = null;
        /** Commit LSN of the last transaction above decoded_lsn (stored as the new decoded_lsn when something was captured). */
        let lastNew: string | null = null;
        let current: bigint | null = null;
        let queue: QueuedChange[] = [];
        let queuedChars = 0;
        const store = async (): Promise<void> => {
          // One statement per run of consecutive changes to one table (at most RUN_ROWS), not a round trip per change:
          // the runs go in commit order and each calls the decode function row by row in array order, so `seq` (taken
          // in capture_decoded) still follows commit order across tables.
          for (let i = 0; i < queue.length;) {
            const fn = (queue[i] as { fn: string }).fn;
            let j = i + 1;
            while (j < queue.length && j - i < RUN_ROWS && queue[j]?.fn === fn) j++;
            const run = queue.slice(i, j);
            await client.query(`SELECT ${fn}(u.op, u.old, u.new, u.xid::xid8, u.ts::timestamptz)
              FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(op, old, new, xid, ts, n) ORDER BY u.n`,
            [0, 1, 2, 3, 4].map((k) => run.map((d) => d.args[k] ?? null))).catch((err: unknown) => {
              throw isDeterministicDecodeError(err) ? new DecodeRunFailed(run, err) : err;
            });
            captured += run.length;
            i = j;
          }
          queue = [];
          queuedChars = 0;
        };
        const enqueue = async (txXid: string, all: readonly DecodedChange[], commit: { lsn: string; ts: string }): Promise<void> => {
          const at = lsnValue(commit.lsn);
          const changes = since.size === 0 ? all : all.filter((d) => at > (since.get(d.fn) ?? -1n));
          if (changes.length === 0) return;
          const ts = commit.ts;
          current ??= BigInt((await client.query<{ x: string }>('SELECT pg_current_xact_id()::text AS x')).rows[0]?.x ?? '0');
          const xid = fullXid(current, BigInt(txXid)).toString();
          const bad = changes.find((d) => d.unreadable);
          if (bad?.unreadable) throw decodeFailedError({ side: this.#side, table: bad.table, logical: this.#logical.get(bad.fn) ?? bad.table, op: bad.op, xid, lsn: commit.lsn, ...bad.unreadable });
          for (const d of changes) {
            queue.push({ fn: d.fn, args: [d.op, d.old, d.new, xid, ts || null], table: d.table, lsn: commit.lsn });
            queuedChars += d.chars;
          }
          if (queue.length >= RUN_ROWS || queuedChars >= BUFFER_CHARS) await store();
        };
        // A transaction's commit time (every change's commitTs) and whether it is above decoded_lsn come with its
        // COMMIT line, after its changes. A large one's COMMIT is looked up by a second peek of the same range (same
        // arguments, so the same transactions; the server decodes that range once more, only for such a transaction),
        // and its changes are stored as they are read.
        const commitOf = async (xid: string): Promise<{ lsn: string; ts: string }> => {
          const r = await client.query<{ lsn: string; data: string }>(
            unbounded(`SELECT lsn::text, data FROM ${peek} WHERE xid = $4::xid AND data LIKE 'COMMIT%' LIMIT 1`, [...peekArgs, xid]));
          const row = r.rows[0];
          if (!row) throw new Error(`logical decoding on ${this.#side}: a second peek of slot ${String(peekArgs[0])} did not return the COMMIT of transaction ${xid}`);
          return { lsn: row.lsn, ts: commitTsOf(row.data) };
        };
        await client.query(`DECLARE strangler_peek NO SCROLL CURSOR FOR SELECT lsn::text, xid::text, data FROM ${peek}`, peekArgs);
        let read = 0;
        let open: OpenTx | null = null;
        for (;;) {
          const rows = await client.query<{ lsn: string; xid: string; data: string }>(unbounded(`FETCH ${FETCH_ROWS} FROM strangler_peek`));
          read += rows.rows.length;
          for (const row of rows.rows) {
            if (row.data.startsWith('BEGIN')) {
              open = { xid: row.xid, sync: false, skip: false, pending: [], chars: 0, commit: null };
            } else if (row.data.startsWith('COMMIT')) {
              if (!open) continue;
              if (lsnValue(row.lsn) > decodedLsn) {
                lastNew = row.lsn;
                if (!open.sync && !open.skip) await enqueue(open.xid, open.pending, { lsn: row.lsn, ts: commitTsOf(row.data) });
              }
              lastCommit = row.lsn;
              open = null;
            } else if (open && row.data.startsWith('message:')) {
              if (row.data.includes(`prefix: ${SYNC_MESSAGE_PREFIX},`)) open.sync = true;
            } else if (open && !open.sync && !open.skip && row.data.startsWith('table ')) {
              // An apply transaction's message comes first in it (right after BEGIN), so its rows are not even parsed.
              const change = parseChange(row.data, (schema, table) => this.#tables.has(`${schema}.${table}`));
              if (!change) continue;
              const decoded = await this.#decodeChange(client, change);
              if (open.commit) {
                await enqueue(open.xid, [decoded], open.commit);
                continue;
              }
              open.pending.push(decoded);
              open.chars += decoded.chars;
              if (open.pending.length >= RUN_ROWS || open.chars >= BUFFER_CHARS) {
                open.commit = await commitOf(open.xid);
                if (lsnValue(open.commit.lsn) <= decodedLsn) open.skip = true; // stored before a crash: skipped
                else await enqueue(open.xid, open.pending, open.commit);
                open.pending = [];
                open.chars = 0;
              }
            }
          }
          if (rows.rows.length < FETCH_ROWS) break;
        }
        await client.query('CLOSE strangler_peek');
        await store();
        // Stored only when something was captured: a cycle that read only other tables' changes writes nothing
        // (re-reading those after a crash is harmless), so the decoder does not feed itself a new transaction per poll.
        if (captured > 0) await client.query(`UPDATE ${this.#s}.logical_capture SET decoded_lsn = $1::pg_lsn WHERE id = 1`, [lastNew]);
        return { captured, slot: state.slot, lastCommit, complete: read < this.#batch, restartBehind: Number(state.behind ?? 0), confirmed: state.confirmed };
      }).catch(async (err: unknown) => {
        throw err instanceof DecodeRunFailed ? await this.#decodeRunError(client, err) : err;
      });
      // A complete peek read every transaction that committed below `end`, output or not (filtered by origin,
      // or empty): the slot may move there even when no COMMIT came back (sync's own writes only, with origins).
      // Without a COMMIT only once that is worth a slot write (not on every idle poll).
      const skipped = lsnValue(end) - lsnValue(lastCommit ?? confirmed ?? end);
      const advanceTo = complete && skipped > (lastCommit === null ? SKIPPED_ADVANCE_BYTES : 0n) ? end : lastCommit;
      // Only after COMMIT: the slot may now forget what the changelog holds (a crash before this line re-reads and skips it).
      // Never backwards (another cycle may have moved it further meanwhile; advancing below it is an error).
      if (advanceTo !== null) {
        await client.query(unbounded(`SELECT pg_replication_slot_advance(slot_name, $2::pg_lsn) FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn`, [slot, advanceTo]));
      }
      // Every peek and advance re-reads the WAL from the slot's restart_lsn, which moves only past a running-xacts
      // record (the server logs one every 15 s, or at a checkpoint): up to 15 s of the server's WAL per cycle
      // (measured: ~300 ms per apply batch at 200 MB behind). Logging one here lets the next advance move it.
      if (advanceTo !== null && restartBehind > RESTART_BEHIND_BYTES && this.#logSnapshots) {
        await client.query('SELECT pg_log_standby_snapshot()').catch(() => { this.#logSnapshots = false; });
      }
      if (complete) this.#quietEnd = end;
      return { captured, sawCommit: lastCommit !== null, complete };
    });
  }
}

/** The commit time in a test_decoding `COMMIT xid (at …)` line ('' when absent). */
function commitTsOf(line: string): string {
  return /\(at (.+)\)$/.exec(line)?.[1] ?? '';
}

/** An LSN `X/Y` as a number for comparisons. */
function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi ?? '0'}`) << 32n) | BigInt(`0x${lo ?? '0'}`);
}

/** The 64-bit id of a 32-bit xid seen by the decoder, relative to the current full xid (same or previous epoch). */
function fullXid(current: bigint, xid32: bigint): bigint {
  const epoch = current >> 32n;
  const low = current & 0xffffffffn;
  return ((xid32 <= low ? epoch : epoch - 1n) << 32n) | xid32;
}
