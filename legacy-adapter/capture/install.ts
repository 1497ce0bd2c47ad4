/**
 * Same-transaction change capture, installed without touching the application's code: an AFTER ROW trigger per
 * synced table writes each change into the state schema's `changelog` (and bumps the key's version in
 * `row_version`) inside the writing transaction, so a change is captured exactly when its transaction commits.
 *
 * One implementation for both databases, parametrised by side: the legacy adapter installs it on the monolith's
 * database, services/kit on a service's. Loop prevention, layer 1: a transaction that set
 * `strangler.origin = 'sync'` (the apply worker does, with SET LOCAL) is not captured at all.
 * TRUNCATE on a captured table is refused (it would bypass row capture); DDL is out of band (stop, migrate, verify).
 * capture.mode `logical` installs a replication slot instead of triggers (see logical.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import type { Side, SyncConfig } from '../../migration-scripts/config-schema.ts';
import { compileMappings, lit, q, readSchema, type CompiledTable } from '../../migration-scripts/mapping.ts';
import { clearWorkerError, installState, stateInstalled } from '../../migration-scripts/state.ts';
import { dropOrigins, dropSlot, IDENTITY_NAMES, identityRestores, installLogical, recordedSlot, slotExists, slotNameFor } from './logical.ts';
import { captureFunctionSettings, type Pools } from '../../migration-scripts/db.ts';
import { inTransaction } from '../../common/pg.ts';
import { StranglerError } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import { CAPTURE_LOG } from './log-events.ts';

const triggerName = 'strangler_capture';
const truncateTriggerName = 'strangler_no_truncate';
const functionName = (t: CompiledTable) => `capture_${t.name}`;

/** Reads both schemas and compiles the mappings; throws SYNC_MAPPING_INVALID before anything is installed. */
export async function compileFromDatabases(config: SyncConfig, pools: Pools): Promise<CompiledTable[]> {
  const [legacy, service] = await Promise.all([
    readSchema(pools.legacy, config.databases.legacy.schema),
    readSchema(pools.service, config.databases.service.schema),
  ]);
  return compileMappings(config, { legacy, service });
}

function captureFunctionsSql(config: SyncConfig, side: Side, tables: readonly CompiledTable[]): string {
  const s = q(config.stateSchema);
  const own = side === 'legacy' ? 'legacy_version' : 'service_version';
  const other = side === 'legacy' ? 'service_version' : 'legacy_version';
  const [lvExpr, svExpr] = side === 'legacy' ? ['v', 'o'] : ['o', 'v'];
  const parts = [`
CREATE OR REPLACE FUNCTION ${s}.capture_write(p_tbl text, p_pk text, p_op text, p_before jsonb, p_after jsonb) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE v bigint := nextval('${config.stateSchema}.version_seq'); o bigint; t timestamptz := clock_timestamp();
BEGIN
  INSERT INTO ${s}.row_version AS r (tbl, pk, ${own}, ${other}, deleted, ts) VALUES (p_tbl, p_pk, v, 0, p_op = 'd', t)
    ON CONFLICT (tbl, pk) DO UPDATE SET ${own} = v, deleted = p_op = 'd', ts = t
    RETURNING r.${other} INTO o;
  INSERT INTO ${s}.changelog (seq, xid, tbl, op, pk, before, after, lv, sv, ts)
    VALUES (v, pg_current_xact_id(), p_tbl, p_op, p_pk, p_before, p_after, ${lvExpr}, ${svExpr}, t);
END $fn$;
`, truncateGuardSql(config)];
  for (const t of tables) {
    const key = (alias: string) => t.keyText(side, alias);
    const name = lit(t.name);
    parts.push(`
CREATE OR REPLACE FUNCTION ${s}.${q(functionName(t))}() RETURNS trigger LANGUAGE plpgsql ${captureFunctionSettings()} AS $fn$
DECLARE k text; ok text; img_new jsonb; img_old jsonb;
BEGIN
  IF current_setting('strangler.origin', true) = 'sync' THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    PERFORM ${s}.capture_write(${name}, ${key('NEW')}, 'c', NULL, ${t.captureImage(side, 'NEW')});
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM ${s}.capture_write(${name}, ${key('OLD')}, 'd', ${t.captureImage(side, 'OLD')}, NULL);
  ELSE
    img_new := ${t.captureImage(side, 'NEW')}; img_old := ${t.captureImage(side, 'OLD')};
    -- jsonb = compares numbers by value (1.5 = 1.50): the text tells a changed scale from a no-op update.
    IF img_new = img_old AND img_new::text = img_old::text THEN RETURN NULL; END IF;
    k := ${key('NEW')}; ok := ${key('OLD')};
    IF k <> ok THEN
      -- A key change is a delete of the old key and an insert of the new one (per-key order needs a stable key).
      PERFORM ${s}.capture_write(${name}, ok, 'd', img_old, NULL);
      PERFORM ${s}.capture_write(${name}, k, 'c', NULL, img_new);
    ELSE
      PERFORM ${s}.capture_write(${name}, k, 'u', img_old, img_new);
    END IF;
  END IF;
  RETURN NULL;
END $fn$;`);
  }
  return parts.join('\n');
}

/**
 * TRUNCATE fires no row triggers and sync cannot replay it safely on the other side, so in both capture modes it is
 * refused on captured tables (one statement trigger each, see triggerSpecs; sync's own transactions pass).
 */
function truncateGuardSql(config: SyncConfig): string {
  return `
CREATE OR REPLACE FUNCTION ${q(config.stateSchema)}.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF current_setting('strangler.origin', true) = 'sync' THEN RETURN NULL; END IF;
  RAISE EXCEPTION 'strangler: TRUNCATE of % is not captured by sync; delete rows instead or uninstall capture first', TG_TABLE_NAME;
END $fn$;`;
}

/**
 * Table locks of capture's DDL on the application's tables. CREATE TRIGGER takes SHARE ROW EXCLUSIVE (writes wait,
 * reads go on); DROP TRIGGER and ALTER TABLE … REPLICA IDENTITY take ACCESS EXCLUSIVE (reads wait too).
 */
export type TableLock = 'SHARE ROW EXCLUSIVE' | 'ACCESS EXCLUSIVE';
/** Locks `tables` (qualified names) for the rest of the DDL transaction, waiting at most lockTimeoutMs in all. */
export type LockTables = (tables: readonly string[], mode: TableLock) => Promise<void>;
/** Runs `body` in one DDL transaction on a database, retried while a synced table stays locked (see lockedDdl). */
export type DdlTransaction = <T>(body: (client: PoolClient, lock: LockTables) => Promise<T>) => Promise<T>;

/** pg_locks modes that conflict with each TableLock (PostgreSQL's conflict table). */
const CONFLICTS: Record<TableLock, readonly string[]> = {
  'SHARE ROW EXCLUSIVE': ['RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'],
  'ACCESS EXCLUSIVE': ['AccessShareLock', 'RowShareLock', 'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'],
};

/**
 * PostgreSQL queues lock requests: DDL waiting for a table that a long transaction holds (an open transaction that
 * wrote it, a long report) makes every later query on that table wait behind it, reads too for ACCESS EXCLUSIVE,
 * for as long as that transaction lasts. So capture's DDL transaction takes its table locks first, in one LOCK
 * statement bounded by `capture.lockTimeoutMs` (every other lock wait of the transaction by lock_timeout), and on a
 * timeout rolls back and tries again after a pause (exponential backoff with jitter, as gh-ost's cut-over and
 * pgroll do), for up to `capture.lockRetryMs`. Application queries therefore wait at most about lockTimeoutMs per
 * attempt. Then SYNC_TABLE_LOCKED names the sessions holding the table; the transaction rolled back, nothing changed.
 * One install or uninstall per database and state schema at a time (a transaction-scoped advisory lock).
 */
function lockedDdl(config: SyncConfig, pool: Pool, side: Side, action: 'install' | 'uninstall', log?: Logger): DdlTransaction {
  return async (body) => {
    const { lockTimeoutMs, lockRetryMs } = config.capture;
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      let waitedOn: { tables: readonly string[]; mode: TableLock } | null = null;
      let locking = false;
      try {
        return await inTransaction(pool, async (client) => {
          await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`strangler-install:${config.stateSchema}`]);
          await client.query(`SET LOCAL lock_timeout = ${lockTimeoutMs}`);
          return body(client, async (tables, mode) => {
            if (tables.length === 0) return;
            waitedOn = { tables, mode };
            // statement_timeout bounds the statement as a whole: with several tables lock_timeout would be per table.
            await client.query(`SET LOCAL statement_timeout = ${lockTimeoutMs}`);
            locking = true;
            await client.query(`LOCK TABLE ${tables.join(', ')} IN ${mode} MODE`);
            locking = false;
            waitedOn = null; // held now: a later lock timeout is on the state schema (a sync process using it)
            await client.query('SET LOCAL statement_timeout TO DEFAULT');
          });
        });
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== '55P03' && !(code === '57014' && locking)) throw err;
        const pause = Math.round(Math.min(5_000, 100 * 2 ** Math.min(attempt - 1, 6)) * (0.5 + Math.random() / 2));
        const elapsed = Date.now() - started;
        if (elapsed + pause > lockRetryMs) throw await tableLockedError(config, pool, side, action, waitedOn, attempt, elapsed, err);
        log?.warn({ event: CAPTURE_LOG.lockRetry, side, action, attempt, pauseMs: pause, tables: (waitedOn as { tables: readonly string[] } | null)?.tables, lockTimeoutMs }, `capture ${action}: a synced table on ${side} is locked by another transaction; retrying`);
        await new Promise((res) => setTimeout(res, pause));
      }
    }
  };
}

/** SYNC_TABLE_LOCKED naming the sessions that hold a lock conflicting with the one install/uninstall needed. */
async function tableLockedError(config: SyncConfig, pool: Pool, side: Side, action: 'install' | 'uninstall',
  waitedOn: { tables: readonly string[]; mode: TableLock } | null, attempts: number, elapsedMs: number, cause: unknown): Promise<StranglerError> {
  // Without a table lock being waited for, the wait was on the state schema (a sync process still using it).
  const target = waitedOn ?? { tables: null, mode: 'ACCESS EXCLUSIVE' as TableLock };
  const r = await pool.query<{ pid: number | null; app: string | null; state: string | null; xact_start: string | null; query: string | null; rel: string; mode: string }>(
    `SELECT l.pid, a.application_name AS app, a.state, a.xact_start::text AS xact_start, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 160) AS query,
            l.relation::regclass::text AS rel, l.mode
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.pid IS DISTINCT FROM pg_backend_pid() AND l.mode = ANY($2::text[])
        AND (CASE WHEN $1::text[] IS NULL THEN l.relation IN (SELECT oid FROM pg_class WHERE relnamespace = to_regnamespace($3))
                  ELSE l.relation = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) t) END)
      ORDER BY a.xact_start NULLS LAST, l.pid`,
    [target.tables, CONFLICTS[target.mode], config.stateSchema]).catch(() => ({ rows: [] }));
  const byPid = new Map<string, { pid: number | null; app: string | null; state: string | null; xact_start: string | null; query: string | null; locks: string[] }>();
  for (const row of r.rows) {
    const key = String(row.pid);
    const entry = byPid.get(key) ?? { ...row, locks: [] };
    entry.locks.push(`${row.mode} on ${row.rel}`);
    byPid.set(key, entry);
  }
  const holders = [...byPid.values()];
  const who = holders.length === 0
    ? 'no session holds a conflicting lock any more (it ended after the last attempt): run the command again'
    : holders.slice(0, 5).map((h) => `PID ${h.pid ?? '? (a prepared transaction)'} (application "${h.app ?? ''}", ${h.state ?? 'unknown state'}`
      + `${h.xact_start ? `, transaction started ${h.xact_start}` : ''}${h.query ? `, last query "${h.query}"` : ''}) holding ${h.locks.join(', ')}`).join('; ')
      + (holders.length > 5 ? `; and ${holders.length - 5} more` : '');
  const what = target.tables ? `${target.mode} lock on ${target.tables.join(', ')}` : `lock on the ${config.stateSchema} schema`;
  const kept = action === 'uninstall' && config.capture.mode === 'logical'
    ? 'Nothing else was removed (the replication slot was dropped already; run uninstall again to finish)'
    : 'Nothing was changed';
  const pid = holders[0]?.pid;
  return new StranglerError('SYNC_TABLE_LOCKED',
    `capture ${action} on the ${side} database could not get the ${what} in ${attempts} attempts over ${elapsedMs} ms `
    + `(each waited at most sync.capture.lockTimeoutMs = ${config.capture.lockTimeoutMs} ms, so application queries were held up no longer): ${who}. `
    + `${kept}. Let that transaction finish${pid ? ` (or end it: SELECT pg_terminate_backend(${pid}))` : ''}, or run it when the table is quiet `
    + '(raise sync.capture.lockRetryMs to keep trying longer), then run the command again',
    { cause, details: { side, action, blockers: holders.map((h) => ({ pid: h.pid, applicationName: h.app, state: h.state, xactStart: h.xact_start, query: h.query, locks: h.locks })) } });
}

interface TriggerSpec { name: string; fn: string; create: (table: string) => string; tgtype: number }

/** The capture row trigger (trigger mode: AFTER INSERT OR UPDATE OR DELETE, FOR EACH ROW = tgtype 29) and the TRUNCATE guard (BEFORE TRUNCATE = 34). */
function triggerSpecs(config: SyncConfig, t: CompiledTable): { capture: TriggerSpec; truncate: TriggerSpec } {
  const s = q(config.stateSchema);
  const capture = `${s}.${q(functionName(t))}()`;
  const guard = `${s}.refuse_truncate()`;
  return {
    capture: { name: triggerName, fn: capture, tgtype: 29, create: (table) => `CREATE TRIGGER ${triggerName} AFTER INSERT OR UPDATE OR DELETE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${capture}` },
    truncate: { name: truncateTriggerName, fn: guard, tgtype: 34, create: (table) => `CREATE TRIGGER ${truncateTriggerName} BEFORE TRUNCATE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION ${guard}` },
  };
}

type TriggerState = 'ok' | 'missing' | 'other' | 'not-always';

/**
 * Whether `table` has trigger `spec` as installed ('ok'), none of that name ('missing'), another one ('other'), or
 * this one not enabled ALWAYS ('not-always': disabled by hand, e.g. for a bulk load, or installed by an earlier
 * version, which fired in origin mode only, so a session with session_replication_role = replica wrote uncaptured).
 */
async function triggerState(client: PoolClient, table: string, spec: TriggerSpec): Promise<TriggerState> {
  const r = await client.query<{ same: boolean; enabled: string }>(
    `SELECT tgfoid = coalesce(to_regprocedure($3), 0) AND tgtype = $4 AS same, tgenabled::text AS enabled FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2`,
    [table, spec.name, spec.fn, spec.tgtype]);
  const row = r.rows[0];
  if (row === undefined) return 'missing';
  if (!row.same) return 'other';
  return row.enabled === 'A' ? 'ok' : 'not-always';
}

/** The lock a trigger in `state` needs to become `spec` (null: none), and the SQL that does it. */
function triggerFix(table: string, spec: TriggerSpec, state: TriggerState): { lock: TableLock; sql: string } | null {
  // ALWAYS: a capture trigger fires whatever the session's session_replication_role (sync's own writes are skipped
  // by the strangler.origin setting, not by the role). ENABLE TRIGGER takes the same lock as CREATE TRIGGER.
  const always = `ALTER TABLE ${table} ENABLE ALWAYS TRIGGER ${spec.name}`;
  if (state === 'ok') return null;
  if (state === 'not-always') return { lock: 'SHARE ROW EXCLUSIVE', sql: always };
  if (state === 'missing') return { lock: 'SHARE ROW EXCLUSIVE', sql: `${spec.create(table)}; ${always}` };
  return { lock: 'ACCESS EXCLUSIVE', sql: `DROP TRIGGER ${spec.name} ON ${table}; ${spec.create(table)}; ${always}` };
}

/**
 * Tables of `side` whose capture is off, each with why: in trigger mode its capture trigger missing or disabled
 * (ALTER TABLE … DISABLE TRIGGER, as bulk loads and some fixture loaders do), so its writes are not captured; in
 * logical mode its replica identity no longer FULL, so its updates and deletes are logged without old rows (the
 * relay stops at the first, SYNC_DECODE_FAILED). Capture install puts either right. Read by sync status.
 */
export async function captureOff(pool: Pool, config: SyncConfig, side: Side): Promise<{ table: string; logical: string; why: string }[]> {
  const schema = config.databases[side].schema;
  const tables = config.tables.map((t) => ({ logical: t.name, table: `${q(schema)}.${q(t[side].table)}` }));
  const r = await pool.query<{ n: number; found: boolean; enabled: string | null; ident: string | null }>(
    `SELECT u.n, c.oid IS NOT NULL AS found, tg.tgenabled::text AS enabled, c.relreplident::text AS ident
       FROM unnest($1::text[]) WITH ORDINALITY AS u(tbl, n)
       LEFT JOIN pg_class c ON c.oid = to_regclass(u.tbl)
       LEFT JOIN pg_trigger tg ON tg.tgrelid = c.oid AND tg.tgname = $2 ORDER BY u.n`, [tables.map((t) => t.table), triggerName]);
  const off: { table: string; logical: string; why: string }[] = [];
  for (const row of r.rows) {
    const t = tables[row.n - 1];
    if (!t || !row.found) continue; // a table that is gone fails sync loudly elsewhere
    if (config.capture.mode === 'logical') {
      if (row.ident !== 'f') off.push({ ...t, why: `its replica identity is ${IDENTITY_NAMES[row.ident ?? ''] ?? row.ident}, not FULL (changed after install), so its updates and deletes are logged without the old row and the relay stops at the first one (SYNC_DECODE_FAILED)` });
    } else if (row.enabled === null) {
      off.push({ ...t, why: `its capture trigger ${triggerName} is missing (dropped), so its writes are not captured` });
    } else if (row.enabled === 'D' || row.enabled === 'R') {
      off.push({ ...t, why: `its capture trigger ${triggerName} is ${row.enabled === 'D' ? 'disabled (ALTER TABLE … DISABLE TRIGGER, e.g. for a bulk load)' : 'enabled for replica sessions only'}, so its writes are not captured` });
    }
  }
  return off;
}

/** The strongest of `locks` (one LOCK statement per transaction keeps the total wait within one lock timeout). */
function strongest(locks: readonly TableLock[]): TableLock {
  return locks.includes('ACCESS EXCLUSIVE') ? 'ACCESS EXCLUSIVE' : 'SHARE ROW EXCLUSIVE';
}

/** `gap`: logical capture replaced a lost slot (install --accept-gap); changes in between were not captured. */
export interface InstallResult { side: Side; tables: string[]; gap?: { slot: string; decodedLsn: string } }
/**
 * `acceptGap` (logical mode): create a new slot over state whose slot was lost, recording the gap (see installLogical).
 * `log`: where lock retries are reported (CAPTURE_LOG.lockRetry).
 */
export interface InstallOptions { acceptGap?: boolean; log?: Logger }

/**
 * Installs the state schema and capture triggers on `side`'s database, in one transaction. The mappings are
 * validated against both real schemas first: a bad config installs nothing. Only what is missing is changed: a
 * trigger already in place is kept (its function is replaced), so a rerun takes no lock on the application's tables.
 * A table lock that another transaction holds is waited for at most capture.lockTimeoutMs per attempt (lockedDdl).
 */
export async function installCapture(config: SyncConfig, pools: Pools, side: Side, compiled?: readonly CompiledTable[], options: InstallOptions = {}): Promise<InstallResult> {
  const tables = compiled ?? await compileFromDatabases(config, pools);
  await assertSeparateDatabases(config, pools, side);
  const ddl = lockedDdl(config, pools[side], side, 'install', options.log);
  if (config.capture.mode === 'logical') {
    // No triggers: a logical replication slot plus the decoder step in the relay (logical.ts). Switching from
    // trigger mode removes the capture triggers in the same transaction, after the slot was created: a transaction
    // committed in between is in the changelog (trigger) and in the slot, so the decoder skips up to here.
    const { gap } = await installLogical(pools[side], config, side, tables, ddl, async (client, lock) => {
      const fixes: { table: string; lock: TableLock; sql: string | null }[] = [];
      let had = 0;
      for (const t of tables) {
        const table = t.qualified(side);
        const specs = triggerSpecs(config, t);
        if (await triggerState(client, table, specs.capture) !== 'missing') {
          had++;
          fixes.push({ table, lock: 'ACCESS EXCLUSIVE', sql: `DROP TRIGGER ${triggerName} ON ${table}` });
        }
        const guard = triggerFix(table, specs.truncate, await triggerState(client, table, specs.truncate));
        if (guard) fixes.push({ table, ...guard });
        // REPLICA IDENTITY FULL is set by installLogical, in this transaction.
        const ident = await client.query<{ full: boolean }>(`SELECT relreplident = 'f' AS full FROM pg_class WHERE oid = $1::regclass`, [table]);
        if (!ident.rows[0]?.full) fixes.push({ table, lock: 'ACCESS EXCLUSIVE', sql: null });
      }
      await lock([...new Set(fixes.map((f) => f.table))], strongest(fixes.map((f) => f.lock)));
      await installState(client, config.stateSchema);
      await client.query(truncateGuardSql(config));
      for (const f of fixes) if (f.sql) await client.query(f.sql);
      if (had === 0) return null;
      // The lock waited for every transaction that wrote a synced table under its trigger (they hold their table
      // locks until they end), and later writers wait for this one: the WAL position now is past the commit of every
      // transaction the triggers captured, and before the commit of every write they did not.
      return (await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]?.lsn ?? null;
    }, options);
    // What this repaired (a new slot; replica identity FULL again, the undecodable changes skipped) no longer stops the
    // relay: status stops reporting it (what install cannot fix stays until a relay gets past it).
    await clearWorkerError(pools[side], config.stateSchema, 'relay', side, ['SYNC_SLOT_LOST', 'SYNC_DECODE_FAILED']);
    return gap ? { side, tables: tables.map((t) => t.name), gap } : { side, tables: tables.map((t) => t.name) };
  }
  await ddl(async (client, lock) => {
    // A logical slot from an earlier install holds changes only the decoder can read: switching to triggers here
    // would drop them (and a forgotten slot holds WAL forever). The operator drains and uninstalls first.
    const slot = (await recordedSlot(client, config))?.slot;
    if (slot !== undefined) {
      throw new StranglerError('SYNC_UNSUPPORTED', `capture on the ${side} database is installed in logical mode (replication slot "${slot}"); switching to capture.mode "trigger" in place would lose the changes still in the slot. Stop writes to the captured tables, let the ${side} relay drain (sync status shows 0 behind), run \`strangler sync capture uninstall\` with the logical config, then install again in trigger mode`);
    }
    const fixes: { table: string; lock: TableLock; sql: string }[] = [];
    for (const t of tables) {
      const table = t.qualified(side);
      for (const spec of Object.values(triggerSpecs(config, t))) {
        const fix = triggerFix(table, spec, await triggerState(client, table, spec));
        if (fix) fixes.push({ table, ...fix });
      }
    }
    // Table locks first: the rest of the transaction then waits for nothing the application holds.
    await lock([...new Set(fixes.map((f) => f.table))], strongest(fixes.map((f) => f.lock)));
    await installState(client, config.stateSchema);
    await client.query(captureFunctionsSql(config, side, tables));
    for (const f of fixes) await client.query(f.sql);
  });
  return { side, tables: tables.map((t) => t.name) };
}

/**
 * Throws SYNC_UNSUPPORTED when both sides' URLs reach one database. Sync keeps its state schema (changelog, versions,
 * the per-table capture functions, the relay lock) once per database and side: the second side's install would
 * replace the first side's capture functions (every application write to the first side's tables then fails), both
 * sides' changes would share one changelog, and the two relays one lock. Probed with a transaction-scoped advisory
 * lock (advisory locks are per database), so host aliases and proxies do not fool it; no privilege is needed.
 */
async function assertSeparateDatabases(config: SyncConfig, pools: Pools, side: Side): Promise<void> {
  const other: Side = side === 'legacy' ? 'service' : 'legacy';
  const key = BigInt.asIntN(64, BigInt(`0x${randomBytes(8).toString('hex')}`)).toString();
  let same = pools[other] === pools[side];
  if (!same) {
    same = await inTransaction(pools[side], async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [key]);
      const r = await pools[other].query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock($1::bigint) AS ok', [key]);
      return r.rows[0]?.ok === false;
    });
  }
  if (!same) return;
  const db = (await pools[side].query<{ db: string }>('SELECT current_database() AS db')).rows[0]?.db;
  throw new StranglerError('SYNC_UNSUPPORTED', `sync.databases.legacy.url and sync.databases.service.url reach the same database ("${db}"): sync keeps its state schema `
    + `"${config.stateSchema}" (changelog, versions, capture functions, relay lock) once per side's database, so installing capture for both sides there would make them `
    + `overwrite each other (the second install's capture functions break every write to the first side's tables). Nothing was installed on the ${side} database. `
    + 'Give the service its own database (it may be on the same server), copy its tables there, and point sync.databases.service.url at it');
}

/**
 * Removes the triggers, the capture functions and the state schema from `side`'s database; in logical mode the slot
 * first (while the state still names it, so a failed drop leaves everything for a rerun), then sync's origins.
 * `slotWaitMs`: how long to wait for a session still reading the slot (SYNC_SLOT_IN_USE after that). Table locks are
 * waited for as by install (SYNC_TABLE_LOCKED when they stay taken; a rerun finishes).
 */
export async function uninstallCapture(config: SyncConfig, pools: Pools, side: Side, options: { slotWaitMs?: number; log?: Logger } = {}): Promise<void> {
  const pool = pools[side];
  // A slot left behind would hold WAL on the server forever. Without logical state (an earlier uninstall that lost
  // its connection after the schema was gone) the slot of this database, schema and side is dropped all the same.
  const slot = (await recordedSlot(pool, config))?.slot ?? await slotNameFor(pool, config, side);
  await dropSlot(pool, slot, side, options.slotWaitMs);
  await lockedDdl(config, pool, side, 'uninstall', options.log)(async (client, lock) => {
    const fixes = await identityRestores(client, config);
    for (const t of config.tables) {
      const table = `${q(config.databases[side].schema)}.${q(t[side].table)}`;
      const present = await client.query<{ tgname: string }>(
        'SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = ANY($2::text[]) ORDER BY tgname', [table, [triggerName, truncateTriggerName]]);
      for (const { tgname } of present.rows) fixes.push({ table, sql: `DROP TRIGGER ${q(tgname)} ON ${table}` });
    }
    await lock([...new Set(fixes.map((f) => f.table))], 'ACCESS EXCLUSIVE');
    for (const f of fixes) await client.query(f.sql);
    await client.query(`DROP SCHEMA IF EXISTS ${q(config.stateSchema)} CASCADE`);
  });
  // Sync's replication origins are named after the slot, so a rerun after a failed drop still finds them.
  await dropOrigins(pool, slot);
}

/** Whether capture is installed on `side`: the trigger on every configured table (trigger mode), the slot (logical mode). */
export async function captureInstalled(config: SyncConfig, pool: Pool, side: Side): Promise<boolean> {
  if (config.capture.mode === 'logical') return (await stateInstalled(pool, config.stateSchema)) && slotExists(pool, config, side);
  const r = await pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE tg.tgname = $1 AND n.nspname = $2 AND c.relname = ANY($3::text[])`,
    [triggerName, config.databases[side].schema, config.tables.map((t) => t[side].table)]);
  return Number(r.rows[0]?.n ?? 0) === config.tables.length;
}
