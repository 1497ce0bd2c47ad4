/**
 * Apply: writes a batch of change events into the target database in ONE transaction, with exactly-once effect.
 *
 *   BEGIN; SET LOCAL strangler.origin = 'sync'          -- layer 1 of loop prevention: capture ignores this tx
 *   lock applied(source, topic, partition) FOR UPDATE     -- serialises a revoked and a new owner of a partition
 *   per event, in order:
 *     source = target side                 → echo, ignored (layer 2)
 *     position ≤ stored position           → duplicate (replay, redelivery, relay republish), ignored
 *     key parked in dead_letters           → parked behind it (per-key order is kept, nothing is dropped)
 *     image lacks a mapped source column   → parked (the source's schema changed under sync: never write NULL for it)
 *     version[source] ≤ stored[source]     → stale or echo (layer 3), ignored; tombstones block resurrection
 *     version[target] ≥ stored[target]     → the source had seen our latest write: apply
 *     otherwise                            → conflict: both sides changed the key; resolved by the declared policy,
 *                                            recorded in `conflicts`, counted, logged. Never by arrival order.
 *   repair (force): written whatever the source's versions say, unless version[target] < stored[target] (the target
 *   changed the key since the source read it: that change is on its way to the source, so the key is skipped)
 *   write the final image per key (set-based; on an error, event by event with savepoints → dead letters)
 *   upsert row_version vectors, store positions and Kafka offsets, counters; COMMIT
 *
 * A crash anywhere before COMMIT leaves nothing; after COMMIT the stored position makes any redelivery a no-op.
 */
import type { Pool, PoolClient } from 'pg';
import type { Logger } from '../common/logger.ts';
import { silentLogger } from '../common/logger.ts';
import { StranglerError, messageOf } from '../common/errors.ts';
import type { Side, SyncConfig } from './config-schema.ts';
import { mappedColumns, otherSide } from './config-schema.ts';
import type { CompiledTable } from './mapping.ts';
import { q } from './mapping.ts';
import type { ChangeEventMeta, ConsumedEvent } from './event.ts';
import { isoToMicros, parseEventMeta, SYNC_MESSAGE_PREFIX } from './event.ts';
import { isDatabaseFault, isQueryTimeout, isTransientDbError, openPool } from './db.ts';
import { LogicalDecoder, SyncOrigins } from '../legacy-adapter/capture/logical.ts';
import { SYNC_LOG } from './log-events.ts';
import { chunkLockSql } from './source-read.ts';
import { clearWorkerError, recordWorkerError } from './state.ts';

export interface ApplyCounts { applied: number; duplicates: number; stale: number; echoes: number; conflicts: number; parked: number }

export interface ApplyResult extends ApplyCounts {
  /** Events in the batch. */
  events: number;
  /** now() minus the newest event's commit time, at commit (ms); null when no event had one applied. */
  lagMs: number | null;
  /** `force` only: keys not written because the target holds a change of its own the source has not seen yet. */
  targetNewer?: { table: string; key: string }[];
}

export interface ApplyOptions {
  /**
   * Repair: write the source image whatever the source's own version says (the versions become the component-wise
   * maximum), except over a target change the source has not seen (version[target] < stored[target]): such a key is
   * skipped and listed in `targetNewer`, since overwriting it would lose that change and the pair would diverge.
   */
  force?: boolean;
  /** Dead-letter ids being retried: un-parked in this transaction; if the retry parks again, nothing is kept. */
  unparkIds?: readonly string[];
}

interface Vec { legacy: number; service: number }
interface KeyState { vec: Vec; deleted: boolean; tsUs: number }
interface Parsed { ev: ConsumedEvent; m: ChangeEventMeta; table: CompiledTable; id: string }
type Winner = 'incoming' | 'local';
interface ConflictRecord { p: Parsed; winner: Winner; local: Vec; policy: string }
interface Unparsed { ev: ConsumedEvent; error: string; m?: ChangeEventMeta }
type ParseResult = Parsed | Unparsed;
interface DeadLetter { p: ParseResult; reason: string }
interface StoredPos { source: string; topic: string; partition: number; position: number; offset: string | null; dirty: boolean }
type StoredMap = Map<string, StoredPos>;
const cloneStored = (m: StoredMap): StoredMap => new Map([...m].map(([k, v]) => [k, { ...v }]));

const keyId = (tbl: string, pk: string) => `${tbl}\u0000${pk}`;

export class Applier {
  readonly #pool: Pool;
  readonly #config: SyncConfig;
  readonly #target: Side;
  readonly #tables: Map<string, CompiledTable>;
  readonly #log: Logger;
  readonly #s: string;
  #decoder: LogicalDecoder | undefined;
  /** Logical capture: apply's transactions run under a sync replication origin, so the target's slot skips them in the server. */
  readonly #origins: SyncOrigins;
  /** Per logical table: the source columns the mapping reads from an image (the source is the other side; echoes are dropped first). */
  readonly #sourceColumns: ReadonlyMap<string, readonly string[]>;

  constructor(options: { pool: Pool; config: SyncConfig; target: Side; tables: readonly CompiledTable[]; log?: Logger }) {
    this.#pool = options.pool;
    this.#config = options.config;
    this.#target = options.target;
    this.#tables = new Map(options.tables.map((t) => [t.name, t]));
    this.#sourceColumns = new Map(options.tables.map((t) => [t.name, mappedColumns(t.config, otherSide(options.target))]));
    this.#log = options.log ?? silentLogger;
    this.#s = q(options.config.stateSchema);
    this.#origins = new SyncOrigins({ pool: options.pool, config: options.config, side: options.target, log: this.#log });
  }

  get target(): Side { return this.#target; }

  /**
   * Records, in the target's state schema, the error apply into this side stops with (one retrying cannot fix):
   * `sync status` reports the direction broken with it until clearStop (the next batch applied).
   */
  recordStop(code: string, message: string): Promise<void> {
    return this.#origins.use((client) => recordWorkerError(client, this.#config.stateSchema, { worker: 'apply', source: otherSide(this.#target), code, message }));
  }

  /** Forgets the error recordStop recorded (apply got past it). */
  clearStop(): Promise<void> {
    return this.#origins.use((client) => clearWorkerError(client, this.#config.stateSchema, 'apply', otherSide(this.#target)));
  }

  /**
   * Logical capture only (a no-op with triggers): decodes every local transaction that committed on the target so
   * far, so the version vectors include local writes that a write of this transaction just overwrote. Runs on a
   * connection of its own and commits on its own (a rolled-back apply must not take the decoded changes with it).
   */
  async decodeLocalWrites(): Promise<void> {
    if (this.#config.capture.mode !== 'logical') return;
    if (!this.#decoder) {
      const url = this.#pool.options.connectionString;
      const pool = url ? openPool(url, 1, true) : this.#pool;
      this.#decoder = new LogicalDecoder({ config: this.#config, pool, side: this.#target, log: this.#log });
    }
    await this.#decoder.catchUp();
  }

  /** Applies a batch in one transaction; retries the whole transaction on transient errors (deadlock, lost connection). */
  applyBatch(events: readonly ConsumedEvent[], options: ApplyOptions = {}): Promise<ApplyResult> {
    return this.transaction((client) => this.applyIn(client, events, options));
  }

  /**
   * Runs `work` in one apply transaction: marked as sync's own (capture ignores it), committed at the end, and run
   * again from the start on a transient error. Backfill writes its bulk chunks through this, then `applyIn` on the
   * same client for the keys that need the per-event rules. `what` names the work in the error once retries are spent.
   */
  async transaction<T>(work: (client: PoolClient) => Promise<T>, what: { name: string; spent: string } = { name: 'apply', spent: 'nothing of this batch was written; it is tried again when apply restarts' }): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#transactionOnce(work);
      } catch (err) {
        if (!isTransientDbError(err) || attempt >= 8) {
          if (err instanceof StranglerError) throw err;
          // Said plainly when the retries are spent: the last error alone reads as if it were still being retried.
          const spent = isTransientDbError(err) ? ` after ${attempt} attempts (${what.spent})` : '';
          throw new StranglerError('SYNC_APPLY_FAILED', `${what.name} into ${this.#target} failed${spent}: ${messageOf(err)}`, { cause: err });
        }
        this.#log.warn({ event: SYNC_LOG.applyRetry, target: this.#target, attempt, err: messageOf(err) }, 'apply batch failed transiently; retrying');
        await new Promise((r) => setTimeout(r, Math.min(1_000, 20 * 2 ** attempt)));
      }
    }
  }

  /** Kafka offsets stored with the applied positions: the truth a consumer seeks to on assignment. */
  async storedOffsets(source: Side, topic: string): Promise<Map<number, string>> {
    const r = await this.#pool.query<{ partition: number; kafka_offset: string | null }>(
      `SELECT partition, kafka_offset::text FROM ${this.#s}.applied WHERE source = $1 AND topic = $2`, [source, topic]);
    return new Map(r.rows.filter((x) => x.kafka_offset !== null).map((x) => [x.partition, x.kafka_offset as string]));
  }

  #parse(ev: ConsumedEvent): ParseResult {
    let m: ChangeEventMeta;
    try { m = parseEventMeta(ev.value); } catch (err) { return { ev, error: `unreadable event: ${messageOf(err)}` }; }
    const table = this.#tables.get(m.logical);
    if (!table) return { ev, m, error: `no mapping for logical table "${m.logical}"` };
    return { ev, m, table, id: keyId(m.logical, m.key) };
  }

  async #transactionOnce<T>(work: (client: PoolClient) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    let broken = false;
    let origin: string | null = null;
    try {
      // Logical capture: under a sync origin the slot (peeked with only-local) never even formats this transaction
      // (trigger mode has no origins: nothing is set up).
      origin = await this.#origins.setup(client);
      await client.query("BEGIN; SET LOCAL strangler.origin = 'sync'");
      // Logical capture sees no session settings: mark the transaction in the WAL so the decoder drops it (the
      // guarantee when no origin could be set up: no grant, all busy).
      if (this.#config.capture.mode === 'logical') await client.query('SELECT pg_logical_emit_message(true, $1, $2)', [SYNC_MESSAGE_PREFIX, 'apply']);
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      broken = isTransientDbError(err);
      // A statement that timed out still occupies the connection (a partition): drop it rather than wait again.
      if (!isQueryTimeout(err)) await client.query('ROLLBACK').catch(() => { broken = true; });
      throw err;
    } finally {
      if (origin !== null && !broken && !(await this.#origins.reset(client))) broken = true;
      client.release(broken);
    }
  }

  /** Applies a batch inside a transaction opened by `transaction` (see the file comment for the rules). */
  async applyIn(client: PoolClient, events: readonly ConsumedEvent[], options: ApplyOptions = {}): Promise<ApplyResult> {
    const target = this.#target;
    const counts: ApplyCounts = { applied: 0, duplicates: 0, stale: 0, echoes: 0, conflicts: 0, parked: 0 };
    const parsed = events.map((ev) => this.#parse(ev));
    if (options.unparkIds?.length) {
      await client.query(`UPDATE ${this.#s}.dead_letters SET status = 'retried', resolved_at = now() WHERE id = ANY($1::bigint[])`, [options.unparkIds]);
    }

    // Positions: lock the (source, topic, partition) rows this batch touches.
    const stored: StoredMap = new Map();
    for (const p of parsed) {
      if (p.ev.topic === null || p.ev.partition === null) continue;
      const source = this.#sourceOf(p);
      const k = `${source}|${p.ev.topic}|${p.ev.partition}`;
      if (stored.has(k)) continue;
      await client.query(`INSERT INTO ${this.#s}.applied (source, topic, partition, position) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING`, [source, p.ev.topic, p.ev.partition]);
      const r = await client.query<{ position: string; kafka_offset: string | null }>(
        `SELECT position::text, kafka_offset::text FROM ${this.#s}.applied WHERE source = $1 AND topic = $2 AND partition = $3 FOR UPDATE`, [source, p.ev.topic, p.ev.partition]);
      stored.set(k, { source, topic: p.ev.topic, partition: p.ev.partition, position: Number(r.rows[0]?.position ?? 0), offset: r.rows[0]?.kafka_offset ?? null, dirty: false });
    }
    this.#checkContiguous(parsed, stored);

    // Current versions and parked keys of every key in the batch.
    const ok = parsed.filter((p): p is Parsed => 'table' in p);
    const tbls = ok.map((p) => p.m.logical);
    const pks = ok.map((p) => p.m.key);
    const loaded = new Map<string, KeyState>();
    const parkedKeys = new Set<string>();
    if (ok.length > 0) {
      const rv = await client.query<{ tbl: string; pk: string; lv: string; sv: string; deleted: boolean; ts_us: string }>(
        `SELECT r.tbl, r.pk, r.legacy_version AS lv, r.service_version AS sv, r.deleted, (extract(epoch FROM r.ts) * 1000000)::bigint AS ts_us
           FROM ${this.#s}.row_version r JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS k(tbl, pk)) k USING (tbl, pk)`, [tbls, pks]);
      for (const r of rv.rows) loaded.set(keyId(r.tbl, r.pk), { vec: { legacy: Number(r.lv), service: Number(r.sv) }, deleted: r.deleted, tsUs: Number(r.ts_us) });
      const dl = await client.query<{ tbl: string; pk: string }>(
        `SELECT DISTINCT d.tbl, d.pk FROM ${this.#s}.dead_letters d JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS k(tbl, pk)) k USING (tbl, pk) WHERE d.status = 'parked'`, [tbls, pks]);
      for (const r of dl.rows) parkedKeys.add(keyId(r.tbl, r.pk));
    }

    // Decide, first optimistically with set-based writes; if a write fails, decide again writing event by event.
    await client.query('SAVEPOINT fast');
    let positions = cloneStored(stored);
    let outcome = this.#decide(parsed, positions, loaded, parkedKeys, options);
    try {
      await this.#writeFinal(client, outcome.finalWrites);
      await client.query('RELEASE SAVEPOINT fast');
    } catch (err) {
      // Only an error about the rows goes event by event (and may park them); one about the database fails the batch.
      if (isTransientDbError(err) || isDatabaseFault(err)) throw err;
      await client.query('ROLLBACK TO SAVEPOINT fast');
      positions = cloneStored(stored);
      outcome = await this.#decideSlow(client, parsed, positions, loaded, parkedKeys, options);
    }
    Object.assign(counts, outcome.counts);
    if (options.unparkIds?.length && counts.parked > 0) {
      throw new StranglerError('SYNC_APPLY_FAILED', `dead letter retry failed again: ${outcome.deadLetters[0]?.reason ?? 'parked'}`);
    }

    // Optimistic check: a local write that committed after the versions were read (its transaction held the row,
    // so the writes above waited for it) changed a vector we decided on. Lock the vectors, compare, and if any moved
    // retry the whole batch (transient, SQLSTATE 40001) so the decision sees the local write. Lock order is the
    // application's: business row (above), then row_version (here and in the capture trigger). With logical capture
    // a local write has no vector until decoded: decode first.
    const touched = [...outcome.states.keys()];
    if (touched.length > 0) {
      await this.decodeLocalWrites();
      const split0 = touched.map((id) => id.split('\u0000') as [string, string]);
      const now = await client.query<{ tbl: string; pk: string; lv: string; sv: string; deleted: boolean }>(
        `SELECT r.tbl, r.pk, r.legacy_version AS lv, r.service_version AS sv, r.deleted FROM ${this.#s}.row_version r
           JOIN unnest($1::text[], $2::text[]) AS k(tbl, pk) ON r.tbl = k.tbl AND r.pk = k.pk FOR UPDATE OF r`,
        [split0.map((x) => x[0]), split0.map((x) => x[1])]);
      for (const r of now.rows) {
        const was = loaded.get(keyId(r.tbl, r.pk));
        if (!was || was.vec.legacy !== Number(r.lv) || was.vec.service !== Number(r.sv) || was.deleted !== r.deleted) {
          throw Object.assign(new Error(`concurrent local write to ${r.tbl} ${r.pk} while applying (the batch is run again so the decision sees it)`), { code: '40001' });
        }
      }
    }
    // Version vectors (zero vectors of never-changed rows are not stored: absence means the same).
    const vk = [...outcome.states.entries()].filter(([, st]) => st.vec.legacy !== 0 || st.vec.service !== 0 || st.deleted);
    if (vk.length > 0) {
      const split = vk.map(([id]) => id.split('\u0000') as [string, string]);
      await client.query(
        `INSERT INTO ${this.#s}.row_version AS r (tbl, pk, legacy_version, service_version, deleted, ts)
         SELECT tbl, pk, lv, sv, del, timestamptz 'epoch' + us * interval '1 microsecond'
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bool[], $6::bigint[]) AS x(tbl, pk, lv, sv, del, us)
         ON CONFLICT (tbl, pk) DO UPDATE SET legacy_version = EXCLUDED.legacy_version, service_version = EXCLUDED.service_version,
           deleted = EXCLUDED.deleted, ts = EXCLUDED.ts`,
        [split.map((s) => s[0]), split.map((s) => s[1]), vk.map(([, s]) => s.vec.legacy), vk.map(([, s]) => s.vec.service), vk.map(([, s]) => s.deleted), vk.map(([, s]) => s.tsUs)]);
    }
    for (const c of outcome.conflicts) {
      await client.query(
        `INSERT INTO ${this.#s}.conflicts (tbl, pk, source, policy, winner, incoming_version, local_version, event) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)`,
        [c.p.m.logical, c.p.m.key, c.p.m.source, c.policy, c.winner === 'incoming' ? c.p.m.source : target, JSON.stringify(c.p.m.version), JSON.stringify(c.local), c.p.ev.value]);
      this.#log.warn({ event: SYNC_LOG.conflict, table: c.p.m.logical, key: c.p.m.key, source: c.p.m.source, target, policy: c.policy, winner: c.winner === 'incoming' ? c.p.m.source : target, incoming: c.p.m.version, local: c.local }, 'sync conflict resolved by policy');
    }
    for (const d of outcome.deadLetters) {
      const m = 'm' in d.p ? d.p.m : undefined;
      await client.query(
        `INSERT INTO ${this.#s}.dead_letters (source, topic, partition, kafka_offset, position, tbl, pk, event, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)`,
        [m?.source ?? 'unknown', d.p.ev.topic, d.p.ev.partition, d.p.ev.offset, m?.position ?? null, m?.logical ?? '?', m?.key ?? '?', safeJson(d.p.ev.value), d.reason]);
      this.#log.error({ event: SYNC_LOG.parked, table: m?.logical, key: m?.key, reason: d.reason }, 'event parked in dead_letters');
    }
    for (const s of positions.values()) {
      if (!s.dirty) continue;
      await client.query(`UPDATE ${this.#s}.applied SET position = $4, kafka_offset = $5, updated_at = now() WHERE source = $1 AND topic = $2 AND partition = $3`,
        [s.source, s.topic, s.partition, s.position, s.offset]);
    }

    const newest = outcome.newestTs;
    const lag = await client.query<{ lag_ms: string | null }>(
      `INSERT INTO ${this.#s}.apply_stats AS a (source, applied, duplicates, stale, echoes, conflicts, parked, last_event_ts, last_applied_at, last_lag_ms)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz, clock_timestamp(), (extract(epoch FROM clock_timestamp() - $8::timestamptz) * 1000)::bigint)
       ON CONFLICT (source) DO UPDATE SET applied = a.applied + EXCLUDED.applied, duplicates = a.duplicates + EXCLUDED.duplicates,
         stale = a.stale + EXCLUDED.stale, echoes = a.echoes + EXCLUDED.echoes, conflicts = a.conflicts + EXCLUDED.conflicts,
         parked = a.parked + EXCLUDED.parked, last_event_ts = coalesce(EXCLUDED.last_event_ts, a.last_event_ts),
         last_applied_at = EXCLUDED.last_applied_at, last_lag_ms = coalesce(EXCLUDED.last_lag_ms, a.last_lag_ms)
       RETURNING ((extract(epoch FROM clock_timestamp() - $8::timestamptz) * 1000)::bigint)::text AS lag_ms`,
      [otherSide(target), counts.applied, counts.duplicates, counts.stale, counts.echoes, counts.conflicts, counts.parked, newest]);
    const lagMs = lag.rows[0]?.lag_ms;
    const result: ApplyResult = { ...counts, events: events.length, lagMs: lagMs === null || lagMs === undefined ? null : Number(lagMs) };
    if (options.force) result.targetNewer = outcome.targetNewer.map((p) => ({ table: p.m.logical, key: p.m.key }));
    return result;
  }

  /**
   * The per-event rules (see the file comment). Pure: works on copies of the loaded state; `write` is called for
   * each event that must be written (the slow path writes immediately and may refuse, which parks the key).
   */
  #decide(parsed: readonly ParseResult[], storedIn: StoredMap, loaded: Map<string, KeyState>, parkedIn: Set<string>, options: ApplyOptions) {
    const target = this.#target;
    const counts: ApplyCounts = { applied: 0, duplicates: 0, stale: 0, echoes: 0, conflicts: 0, parked: 0 };
    const states = new Map<string, KeyState>();
    const finalWrites = new Map<string, Parsed>();
    const conflicts: ConflictRecord[] = [];
    const deadLetters: DeadLetter[] = [];
    const targetNewer: Parsed[] = [];
    const parked = new Set(parkedIn);
    let newestTs: string | null = null;
    const policy = this.#config.conflicts.policy;

    for (const p of parsed) {
      if (!('table' in p)) {
        // Unreadable or unmapped: park it under its key (or '?') so nothing is dropped.
        deadLetters.push({ p, reason: p.error });
        counts.parked += 1;
        this.#advance(storedIn, p.ev, p.m);
        continue;
      }
      const { m } = p;
      if (m.source === target) { counts.echoes += 1; this.#advance(storedIn, p.ev, m); continue; }
      const posKey = p.ev.topic === null ? null : `${m.source}|${p.ev.topic}|${p.ev.partition}`;
      const pos = posKey ? storedIn.get(posKey) : undefined;
      if (pos && m.position !== null && m.position <= pos.position) { counts.duplicates += 1; this.#advance(storedIn, p.ev, m); continue; }
      this.#advance(storedIn, p.ev, m);
      if (parked.has(p.id)) { deadLetters.push({ p, reason: 'waiting behind an earlier parked event for the same key' }); counts.parked += 1; continue; }
      const absent = m.op === 'd' ? null : this.#missingSourceColumn(p);
      if (absent !== null) { deadLetters.push({ p, reason: absent }); counts.parked += 1; parked.add(p.id); continue; }
      const cur = states.get(p.id) ?? loaded.get(p.id);
      const src = m.source;
      const evSrc = m.version[src];
      const evTgt = m.version[target];
      const evTs = isoToMicros(m.commitTs);
      let apply: boolean;
      let next: KeyState;
      if (options.force) {
        // The target changed the key after the source's image was read (in flight, parked, or a conflict still to
        // resolve): forcing would overwrite or delete that change here while it still gets applied on the source.
        if (cur && cur.vec[target] > evTgt) { targetNewer.push(p); continue; }
        apply = true;
        next = { vec: { legacy: Math.max(m.version.legacy, cur?.vec.legacy ?? 0), service: Math.max(m.version.service, cur?.vec.service ?? 0) }, deleted: m.op === 'd', tsUs: evTs };
      } else if (!cur) {
        apply = true;
        next = { vec: { ...m.version }, deleted: m.op === 'd', tsUs: evTs };
      } else if (evSrc <= cur.vec[src]) {
        counts.stale += 1;
        continue;
      } else if (evTgt >= cur.vec[target]) {
        apply = true;
        next = { vec: { [src]: evSrc, [target]: Math.max(evTgt, cur.vec[target]) } as unknown as Vec, deleted: m.op === 'd', tsUs: evTs };
      } else {
        // Both sides changed this key since the source last saw ours.
        const owner = p.table.owner;
        let winner: Winner;
        if (policy === 'owner-wins') winner = owner === src ? 'incoming' : 'local';
        else winner = evTs > cur.tsUs || (evTs === cur.tsUs && src === 'legacy') ? 'incoming' : 'local';
        conflicts.push({ p, winner, local: { ...cur.vec }, policy });
        counts.conflicts += 1;
        const vec = { [src]: evSrc, [target]: cur.vec[target] } as unknown as Vec;
        if (winner === 'incoming') { apply = true; next = { vec, deleted: m.op === 'd', tsUs: evTs }; } else { apply = false; next = { vec, deleted: cur.deleted, tsUs: cur.tsUs }; }
      }
      states.set(p.id, next);
      if (apply) {
        counts.applied += 1;
        finalWrites.set(p.id, p);
        if (newestTs === null || isoToMicros(m.commitTs) > isoToMicros(newestTs)) newestTs = m.commitTs;
      }
    }
    return { counts, states, finalWrites, conflicts, deadLetters, newestTs, parked, targetNewer };
  }

  /**
   * Null when the event's image holds every source column the mapping reads; otherwise the reason to park it. A
   * missing column means the source's schema changed under sync (a column renamed or dropped): `s->>'col'` would
   * silently write NULL on the target.
   */
  #missingSourceColumn(p: Parsed): string | null {
    const source = p.m.source;
    const cols = this.#sourceColumns.get(p.table.name) ?? [];
    const after = (p.m as ChangeEventMeta & { after?: Record<string, unknown> | null }).after;
    const missing = cols.filter((c) => !after || !Object.hasOwn(after, c));
    if (missing.length === 0) return null;
    const src = `${source} table ${p.table.config[source].table}`;
    return `the ${src} image has no column ${missing.map((c) => `"${c}"`).join(', ')} mapped by sync.tables "${p.table.name}" `
      + `(renamed or dropped while sync runs?); parked instead of writing NULL into ${this.#target} ${p.table.config[this.#target].table}. `
      + 'DDL procedure: stop writes and the sync workers, change both schemas and sync.tables[].columns, restart, '
      + 'then `strangler sync repair --dead-letters` and `strangler sync verify`';
  }

  /** The side an event comes from: its own word, else (unreadable) the side whose topics this applier consumes. */
  #sourceOf(p: ParseResult): Side {
    return 'm' in p && p.m ? p.m.source : otherSide(this.#target);
  }

  /**
   * The Kafka offsets of a partition's events must follow the stored offset without a hole: a topic apply creates is
   * neither compacted nor transactional, so a hole means events deleted before apply read them (retention, a records
   * deletion) and a consumer reset past them (kafkajs resets an out-of-range offset to the earliest one without a
   * word). Stop loudly (SYNC_EVENTS_LOST, not retried) instead of applying what follows as if nothing was missing.
   * An offset below the stored one is a topic deleted and recreated: its new events have new positions and apply.
   */
  #checkContiguous(parsed: readonly ParseResult[], stored: StoredMap): void {
    const last = new Map<string, bigint>();
    for (const s of stored.values()) if (s.offset !== null) last.set(`${s.topic}|${s.partition}`, BigInt(s.offset));
    for (const p of parsed) {
      const { topic, partition, offset } = p.ev;
      if (topic === null || partition === null || offset === null) continue;
      const k = `${topic}|${partition}`;
      const prev = last.get(k);
      const off = BigInt(offset);
      if (prev !== undefined && off > prev + 1n) {
        const source = this.#sourceOf(p);
        throw new StranglerError('SYNC_EVENTS_LOST',
          `apply into ${this.#target}: Kafka topic ${topic} partition ${partition} has no events at offsets ${prev + 1n}..${off - 1n} any more (retention or a records deletion removed them before apply read them; ${this.#target} applied up to offset ${prev}, the next event there is at ${off}); `
          + `those changes were never applied and apply stopped instead of skipping them. To go on: accept the gap with UPDATE ${this.#config.stateSchema}.applied SET kafka_offset = ${off - 1n} WHERE source = '${source}' AND topic = '${topic}' AND partition = ${partition} `
          + `on the ${this.#target} database, start apply again, and once \`strangler sync status\` shows lag 0 run \`strangler sync verify\` and \`strangler sync repair --from ${source}\`; `
          + 'raise the topic\'s retention.ms above the longest apply outage you must survive',
          { details: { topic, partition, nextOffset: (prev + 1n).toString() } });
      }
      last.set(k, off);
    }
  }

  #advance(stored: StoredMap, ev: ConsumedEvent, m: ChangeEventMeta | undefined): void {
    if (ev.topic === null) return;
    const s = stored.get(`${m?.source ?? otherSide(this.#target)}|${ev.topic}|${ev.partition}`);
    if (!s) return;
    const fresh = m !== undefined && m.position !== null && m.position > s.position;
    if (fresh) s.position = m.position as number;
    // The offset of the last event applied; a new event at a lower offset (a recreated topic) moves it back down, or a
    // restart would seek past the new topic's events up to the old offset. Repeats never move it back.
    if (ev.offset !== null && (s.offset === null || fresh || BigInt(ev.offset) > BigInt(s.offset))) s.offset = ev.offset;
    s.dirty = true;
  }

  /** Slow path: the same decisions, each write in its own savepoint; a failing write parks its event and key. */
  async #decideSlow(client: PoolClient, parsed: readonly ParseResult[], storedIn: StoredMap, loaded: Map<string, KeyState>, parkedIn: Set<string>, options: ApplyOptions) {
    // Run the decision event by event: a prefix decision, then write, then continue with the updated state.
    const effective = new Map(loaded);
    const parked = new Set(parkedIn);
    const total = { counts: { applied: 0, duplicates: 0, stale: 0, echoes: 0, conflicts: 0, parked: 0 } as ApplyCounts, states: new Map<string, KeyState>(), finalWrites: new Map<string, Parsed>(), conflicts: [] as ConflictRecord[], deadLetters: [] as DeadLetter[], newestTs: null as string | null, parked, targetNewer: [] as Parsed[] };
    for (const p of parsed) {
      const one = this.#decide([p], storedIn, effective, parked, options);
      for (const k of Object.keys(one.counts) as (keyof ApplyCounts)[]) total.counts[k] += one.counts[k];
      total.conflicts.push(...one.conflicts);
      total.deadLetters.push(...one.deadLetters);
      total.targetNewer.push(...one.targetNewer);
      for (const w of one.finalWrites.values()) {
        try {
          await client.query('SAVEPOINT one');
          await this.#writeFinal(client, new Map([[w.id, w]]));
          await client.query('RELEASE SAVEPOINT one');
        } catch (err) {
          if (isTransientDbError(err) || isDatabaseFault(err)) throw err;
          await client.query('ROLLBACK TO SAVEPOINT one');
          total.counts.applied -= 1;
          total.counts.parked += 1;
          total.deadLetters.push({ p: w, reason: messageOf(err) });
          parked.add(w.id);
          one.states.delete(w.id);
          continue;
        }
        if (total.newestTs === null || isoToMicros(w.m.commitTs) > isoToMicros(total.newestTs)) total.newestTs = w.m.commitTs;
      }
      for (const [id, st] of one.states) { effective.set(id, st); total.states.set(id, st); }
    }
    return total;
  }

  /** Writes the final image of each key: upserts of mapped columns, deletes by key. */
  async #writeFinal(client: PoolClient, writes: Map<string, Parsed>): Promise<void> {
    const byTable = new Map<CompiledTable, { upserts: string[]; deletes: string[] }>();
    for (const p of writes.values()) {
      let b = byTable.get(p.table);
      if (!b) { b = { upserts: [], deletes: [] }; byTable.set(p.table, b); }
      if (p.m.op === 'd') b.deletes.push(p.m.key); else b.upserts.push(p.ev.value);
    }
    const target = this.#target;
    for (const [t, b] of byTable) {
      const key = t.key(target);
      const keyCols = key.map((k) => t.table(target).columns.get(k));
      if (b.deletes.length > 0) {
        // Rows an open backfill chunk inserted are invisible to this DELETE: wait for the chunk (see chunkLockSql).
        await client.query(chunkLockSql(this.#config, t, 'shared'));
        const keyExprs = keyCols.map((c, i) => `((k.t::jsonb)->>${i})::${c?.type ?? 'text'}`);
        await client.query(`DELETE FROM ${t.qualified(target)} WHERE (${key.map(q).join(', ')}) IN (SELECT ${keyExprs.join(', ')} FROM unnest($1::text[]) AS k(t))`, [b.deletes]);
      }
      if (b.upserts.length > 0) {
        const exprs = t.writeExprs(target);
        const cols = exprs.map((e) => q(e.column));
        const nonKey = exprs.filter((e) => !key.includes(e.column));
        const onConflict = nonKey.length === 0 ? 'DO NOTHING' : `DO UPDATE SET ${nonKey.map((e) => `${q(e.column)} = EXCLUDED.${q(e.column)}`).join(', ')}`;
        await client.query(
          `INSERT INTO ${t.qualified(target)} (${cols.join(', ')})
           SELECT ${exprs.map((e) => e.expr).join(', ')} FROM jsonb_array_elements($1::jsonb) AS ev, LATERAL (SELECT ev->'after' AS s OFFSET 0) img
           ON CONFLICT (${key.map(q).join(', ')}) ${onConflict}`,
          [`[${b.upserts.join(',')}]`]);
      }
    }
  }
}

function safeJson(text: string): string {
  try { JSON.parse(text); return text; } catch { return JSON.stringify({ unreadable: text }); }
}
