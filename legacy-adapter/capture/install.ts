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
import type { Pool } from 'pg';
import type { Side, SyncConfig } from '../../migration-scripts/config-schema.ts';
import { compileMappings, lit, q, readSchema, type CompiledTable } from '../../migration-scripts/mapping.ts';
import { installState, stateInstalled } from '../../migration-scripts/state.ts';
import { dropOrigins, dropSlot, installLogical, recordedSlot, slotExists, slotNameFor, uninstallLogicalIn } from './logical.ts';
import { captureFunctionSettings, type Pools } from '../../migration-scripts/db.ts';
import { inTransaction } from '../../common/pg.ts';
import { StranglerError } from '../../common/errors.ts';

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
`, truncateGuardSql(config, side, tables)];
  for (const t of tables) {
    const key = (alias: string) => t.keyText(side, alias);
    const name = lit(t.name);
    parts.push(`
CREATE OR REPLACE FUNCTION ${s}.${q(functionName(t))}() RETURNS trigger LANGUAGE plpgsql ${captureFunctionSettings()} AS $fn$
DECLARE k text; ok text; img_new jsonb; img_old jsonb;
BEGIN
  IF current_setting('strangler.origin', true) = 'sync' THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    PERFORM ${s}.capture_write(${name}, ${key('NEW')}, 'c', NULL, to_jsonb(NEW));
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM ${s}.capture_write(${name}, ${key('OLD')}, 'd', to_jsonb(OLD), NULL);
  ELSE
    img_new := to_jsonb(NEW); img_old := to_jsonb(OLD);
    IF img_new = img_old THEN RETURN NULL; END IF;
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
END $fn$;
DROP TRIGGER IF EXISTS ${triggerName} ON ${t.qualified(side)};
CREATE TRIGGER ${triggerName} AFTER INSERT OR UPDATE OR DELETE ON ${t.qualified(side)} FOR EACH ROW EXECUTE FUNCTION ${s}.${q(functionName(t))}();`);
  }
  return parts.join('\n');
}

/**
 * TRUNCATE fires no row triggers and sync cannot replay it safely on the other side, so in both capture modes it is
 * refused on captured tables (one statement trigger each; sync's own transactions pass).
 */
function truncateGuardSql(config: SyncConfig, side: Side, tables: readonly CompiledTable[]): string {
  const s = q(config.stateSchema);
  return [`
CREATE OR REPLACE FUNCTION ${s}.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF current_setting('strangler.origin', true) = 'sync' THEN RETURN NULL; END IF;
  RAISE EXCEPTION 'strangler: TRUNCATE of % is not captured by sync; delete rows instead or uninstall capture first', TG_TABLE_NAME;
END $fn$;`, ...tables.map((t) => `
DROP TRIGGER IF EXISTS ${truncateTriggerName} ON ${t.qualified(side)};
CREATE TRIGGER ${truncateTriggerName} BEFORE TRUNCATE ON ${t.qualified(side)} FOR EACH STATEMENT EXECUTE FUNCTION ${s}.refuse_truncate();`)].join('\n');
}

/** `gap`: logical capture replaced a lost slot (install --accept-gap); changes in between were not captured. */
export interface InstallResult { side: Side; tables: string[]; gap?: { slot: string; decodedLsn: string } }
/** `acceptGap` (logical mode): create a new slot over state whose slot was lost, recording the gap (see installLogical). */
export interface InstallOptions { acceptGap?: boolean }

/**
 * Installs the state schema and capture triggers on `side`'s database, in one transaction. The mappings are
 * validated against both real schemas first: a bad config installs nothing.
 */
export async function installCapture(config: SyncConfig, pools: Pools, side: Side, compiled?: readonly CompiledTable[], options: InstallOptions = {}): Promise<InstallResult> {
  const tables = compiled ?? await compileFromDatabases(config, pools);
  if (config.capture.mode === 'logical') {
    // No triggers: a logical replication slot plus the decoder step in the relay (logical.ts). Switching from
    // trigger mode removes the capture triggers in the same transaction, after the slot was created: a transaction
    // committed in between is in the changelog (trigger) and in the slot, so the decoder skips up to here.
    const { gap } = await installLogical(pools[side], config, side, tables, async (client) => {
      await installState(client, config.stateSchema);
      const had = await client.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = $1 AND tgrelid = ANY($2::text[]::regclass[])`, [triggerName, tables.map((t) => t.qualified(side))]);
      for (const t of tables) await client.query(`DROP TRIGGER IF EXISTS ${triggerName} ON ${t.qualified(side)}`);
      await client.query(truncateGuardSql(config, side, tables));
      if ((had.rows[0]?.n ?? 0) === 0) return null;
      // DROP TRIGGER waited for every transaction that wrote a synced table under its trigger (they hold their table
      // locks until they end), and later writers wait for this one: the WAL position now is past the commit of every
      // transaction the triggers captured, and before the commit of every write they did not.
      return (await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]?.lsn ?? null;
    }, options);
    return gap ? { side, tables: tables.map((t) => t.name), gap } : { side, tables: tables.map((t) => t.name) };
  }
  await inTransaction(pools[side], async (client) => {
    // Serialise concurrent installs on one database.
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`strangler-install:${config.stateSchema}`]);
    // A logical slot from an earlier install holds changes only the decoder can read: switching to triggers here
    // would drop them (and a forgotten slot holds WAL forever). The operator drains and uninstalls first.
    const slot = (await recordedSlot(client, config))?.slot;
    if (slot !== undefined) {
      throw new StranglerError('SYNC_UNSUPPORTED', `capture on the ${side} database is installed in logical mode (replication slot "${slot}"); switching to capture.mode "trigger" in place would lose the changes still in the slot. Stop writes to the captured tables, let the ${side} relay drain (sync status shows 0 behind), run \`strangler sync capture uninstall\` with the logical config, then install again in trigger mode`);
    }
    await installState(client, config.stateSchema);
    await client.query(captureFunctionsSql(config, side, tables));
  });
  return { side, tables: tables.map((t) => t.name) };
}

/**
 * Removes the triggers, the capture functions and the state schema from `side`'s database; in logical mode the slot
 * first (while the state still names it, so a failed drop leaves everything for a rerun), then sync's origins.
 * `slotWaitMs`: how long to wait for a session still reading the slot (SYNC_SLOT_IN_USE after that).
 */
export async function uninstallCapture(config: SyncConfig, pools: Pools, side: Side, options: { slotWaitMs?: number } = {}): Promise<void> {
  const pool = pools[side];
  // A slot left behind would hold WAL on the server forever. Without logical state (an earlier uninstall that lost
  // its connection after the schema was gone) the slot of this database, schema and side is dropped all the same.
  const slot = (await recordedSlot(pool, config))?.slot ?? await slotNameFor(pool, config, side);
  await dropSlot(pool, slot, side, options.slotWaitMs);
  await inTransaction(pool, async (client) => {
    await uninstallLogicalIn(client, config);
    for (const t of config.tables) {
      const table = `${q(config.databases[side].schema)}.${q(t[side].table)}`;
      const exists = await client.query('SELECT to_regclass($1) IS NOT NULL AS ok', [table]);
      if (exists.rows[0]?.ok) {
        await client.query(`DROP TRIGGER IF EXISTS ${triggerName} ON ${table}; DROP TRIGGER IF EXISTS ${truncateTriggerName} ON ${table};`);
      }
    }
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
