/**
 * The relay: publishes one database's captured changes to Kafka.
 *
 *   changelog (pos NULL) ──assign──► changelog (pos = next positions, in seq order) ──publish──► Kafka ──ack──► delete
 *
 * Why this cannot skip a change although sequence values are not commit order: there is no "seq > cursor" read.
 * Every cycle assigns positions to all *visible* (committed) rows that have none, whatever their seq; a slow
 * transaction with a low seq that commits later is simply picked up by a later cycle. Uncommitted rows are
 * invisible, so nothing uncommitted is ever published.
 *
 * Order: within a cycle rows are numbered by seq. Two changes of one key are serialised by the row lock, so the
 * later one has the higher seq and becomes visible only after the earlier one: per key, positions follow commit
 * order. (Reading below pg_snapshot_xmin instead would keep completeness but can publish a key's later change
 * before its earlier one when a third transaction holds the horizon back; the queue form avoids both problems.)
 *
 * Resume: positions are stored before publishing and rows are deleted only after Kafka acknowledged them, so a
 * restart republishes exactly the unacknowledged suffix with the same positions; apply drops those duplicates.
 * One relay per database: a session advisory lock, released by PostgreSQL when the process dies.
 */
import type { Pool, PoolClient } from 'pg';
import { isStranglerError, StranglerError } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import { silentLogger } from '../../common/logger.ts';
import type { Side, SyncConfig } from '../../migration-scripts/config-schema.ts';
import { q, topicFor } from '../../migration-scripts/mapping.ts';
import { changelogEventSql } from '../../migration-scripts/event.ts';
import { isTransientDbError } from '../../migration-scripts/db.ts';
import { clearWorkerError, recordWorkerError } from '../../migration-scripts/state.ts';
import { CAPTURE_LOG } from './log-events.ts';
import { LogicalDecoder, SyncOrigins } from './logical.ts';

/** `table`: the logical table (named in errors; the topic names it too). */
export interface OutgoingMessage { topic: string; key: string; value: string; position: number; table?: string }

/** Where the relay publishes; resolves only when every message is durably acknowledged. */
export interface EventSink {
  publish(messages: readonly OutgoingMessage[]): Promise<void>;
}

export interface RelayOptions {
  config: SyncConfig;
  pool: Pool;
  side: Side;
  sink: EventSink;
  log?: Logger;
  batchSize?: number;
}

/** Errors on a change the relay cannot get past, or a capture that is gone: the relay stops with them (see #loop). */
const FATAL_CODES: ReadonlySet<string> = new Set(['SYNC_EVENT_TOO_LARGE', 'SYNC_SCHEMA_CHANGED', 'SYNC_SLOT_LOST', 'SYNC_DECODE_FAILED']);

export class ChangeRelay {
  readonly #config: SyncConfig;
  readonly #pool: Pool;
  readonly #side: Side;
  readonly #sink: EventSink;
  readonly #log: Logger;
  readonly #batchSize: number;
  readonly #tablesJson: string;
  /** capture.mode logical: moves committed changes from the slot into the changelog before assign(). */
  readonly #decoder: LogicalDecoder | undefined;
  /** The relay's own writes (positions, deletes) run under a sync origin (capture.mode logical), so the slot skips them. */
  readonly #origins: SyncOrigins;
  #lockClient: PoolClient | undefined;
  #lockLost = false;
  #stopped = false;
  #running: Promise<void> | undefined;
  /**
   * Whether worker_errors may hold an error this side's relay stopped with (see #loop): unknown until the first cycle
   * that succeeds, which deletes it (one statement per process); true again after this relay recorded one.
   */
  #errorRecorded: boolean | undefined;

  constructor(options: RelayOptions) {
    this.#config = options.config;
    this.#pool = options.pool;
    this.#side = options.side;
    this.#sink = options.sink;
    this.#log = options.log ?? silentLogger;
    this.#batchSize = options.batchSize ?? options.config.capture.relayBatchSize;
    this.#origins = new SyncOrigins({ config: options.config, pool: options.pool, side: options.side, log: this.#log });
    this.#decoder = options.config.capture.mode === 'logical'
      ? new LogicalDecoder({ config: options.config, pool: options.pool, side: options.side, batchSize: this.#batchSize, origins: this.#origins })
      : undefined;
    this.#tablesJson = JSON.stringify(Object.fromEntries(options.config.tables.map((t) => [t.name, t[options.side].table])));
  }

  get #s(): string { return q(this.#config.stateSchema); }

  /**
   * Takes the per-database relay lock, waiting up to `waitMs` for a previous holder's session to end (a killed
   * relay's session closes with its socket); throws SYNC_RELAY_BUSY when another relay keeps holding it.
   */
  async lock(waitMs = 30_000): Promise<void> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      let client: PoolClient;
      try {
        client = await this.#pool.connect();
      } catch (err) {
        // A relay being stopped gives up at once: waiting out the deadline for a database that is down (it may have
        // been stopped first, as a terminal's Ctrl-C does to npm start's PostgreSQL) only delays the shutdown.
        if (!isTransientDbError(err) || Date.now() > deadline || this.#stopped) throw err;
        await new Promise((res) => setTimeout(res, 200));
        continue;
      }
      client.on('error', () => { this.#lockLost = true; });
      const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [`strangler-relay:${this.#config.stateSchema}`]).catch(() => ({ rows: [{ ok: false }] }));
      if (r.rows[0]?.ok) {
        this.#lockClient = client;
        this.#lockLost = false;
        return;
      }
      client.release(true);
      if (Date.now() > deadline) {
        throw new StranglerError('SYNC_RELAY_BUSY', `another relay is running for the ${this.#side} database (advisory lock strangler-relay:${this.#config.stateSchema})`);
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  /** After the lock session died (database restart), drop it and take the lock again before publishing more. */
  async #relock(): Promise<void> {
    this.#lockClient?.release(true);
    this.#lockClient = undefined;
    await this.lock();
  }

  /** Gives positions to committed, unpositioned changes, in seq order. Returns how many. */
  async assign(): Promise<number> {
    // An idle poll only reads: locking relay_state would give every poll a transaction id, a commit record and a WAL
    // flush (50 per second at relayPollMs 20 on a quiet database). A change that commits after this look waits one poll.
    const any = await this.#pool.query(`SELECT 1 FROM ${this.#s}.changelog WHERE pos IS NULL LIMIT 1`);
    if (any.rows.length === 0) return 0;
    return this.#origins.transaction(async (client) => {
      const base = await client.query<{ last_pos: string }>(`SELECT last_pos FROM ${this.#s}.relay_state WHERE id = 1 FOR UPDATE`);
      const last = base.rows[0]?.last_pos;
      if (last === undefined) throw new StranglerError('SYNC_NOT_INSTALLED', `${this.#side} database has no ${this.#config.stateSchema}.relay_state row; run strangler sync capture install`);
      const r = await client.query<{ n: string; max: string | null }>(
        `WITH next AS (SELECT seq, $1::bigint + row_number() OVER (ORDER BY seq) AS p
                         FROM (SELECT seq FROM ${this.#s}.changelog WHERE pos IS NULL ORDER BY seq LIMIT $2) x),
              upd AS (UPDATE ${this.#s}.changelog c SET pos = next.p FROM next WHERE c.seq = next.seq RETURNING next.p)
         SELECT count(*) AS n, max(p)::text AS max FROM upd`, [last, this.#batchSize]);
      const n = Number(r.rows[0]?.n ?? 0);
      if (n > 0) await client.query(`UPDATE ${this.#s}.relay_state SET last_pos = $1, updated_at = now() WHERE id = 1`, [r.rows[0]?.max]);
        return n;
    });
  }

  /** The positioned, unacknowledged changes, in position order. */
  async pending(limit = this.#batchSize): Promise<OutgoingMessage[]> {
    const r = await this.#pool.query<{ pos: string; tbl: string; pk: string; value: string }>(
      `SELECT c.pos, c.tbl, c.pk, ${changelogEventSql(this.#side, '$2')} AS value
         FROM ${this.#s}.changelog c WHERE c.pos IS NOT NULL ORDER BY c.pos LIMIT $1`, [limit, this.#tablesJson]);
    return r.rows.map((row) => ({ topic: topicFor(this.#config, this.#side, row.tbl), key: row.pk, value: row.value, position: Number(row.pos), table: row.tbl }));
  }

  /** Forgets everything up to `position` (acknowledged by Kafka). */
  async ack(position: number, count: number): Promise<void> {
    await this.#origins.use((client) => client.query(
      `WITH d AS (DELETE FROM ${this.#s}.changelog WHERE pos IS NOT NULL AND pos <= $1)
       UPDATE ${this.#s}.relay_state SET acked_pos = GREATEST(acked_pos, $1), published = published + $2, updated_at = now() WHERE id = 1`,
      [position, count]));
  }

  /** One cycle: publish what is pending (left over from a crash first), then newly committed changes. Returns the number published. */
  async step(): Promise<number> {
    let batch = await this.pending();
    if (batch.length === 0) {
      if (this.#decoder) await this.#decoder.step();
      if ((await this.assign()) === 0) { await this.#passed(); return 0; }
      batch = await this.pending();
    }
    if (batch.length === 0) { await this.#passed(); return 0; }
    await this.#sink.publish(batch);
    const last = batch[batch.length - 1] as OutgoingMessage;
    await this.ack(last.position, batch.length);
    this.#log.debug({ event: CAPTURE_LOG.published, side: this.#side, count: batch.length, position: last.position }, 'published changes');
    await this.#passed();
    return batch.length;
  }

  /**
   * A cycle went through: nothing stops the relay now, so an error a relay of this side stopped with before (recorded
   * by #loop, reported by status as the direction broken) is over. Failing to say so is retried at the next cycle.
   */
  async #passed(): Promise<void> {
    if (this.#errorRecorded === false) return;
    try {
      await this.#origins.use((client) => clearWorkerError(client, this.#config.stateSchema, 'relay', this.#side));
      this.#errorRecorded = false;
    } catch (err) {
      this.#log.warn({ event: CAPTURE_LOG.relayRetry, side: this.#side, err }, 'relay: clearing the recorded stop error failed; tried again after the next cycle');
    }
  }

  /** Runs until stop(): publishes continuously, polling every relayPollMs when idle. */
  async run(): Promise<void> {
    if (!this.#lockClient) await this.lock();
    this.#running = this.#loop();
    await this.#running;
  }

  async #loop(): Promise<void> {
    this.#log.info({ event: CAPTURE_LOG.relayStarted, side: this.#side }, 'relay started');
    let failures = 0;
    while (!this.#stopped) {
      try {
        if (this.#lockLost || !this.#lockClient) await this.#relock();
        const n = await this.step();
        failures = 0;
        if (n === 0) await new Promise((r) => setTimeout(r, this.#config.capture.relayPollMs));
      } catch (err) {
        // A cycle cut short by shutdown (npm start's Ctrl-C stops PostgreSQL too) is no failure worth a warning.
        if (this.#stopped) break;
        // A change Kafka refuses as too large, or one that no longer fits its table (a DDL while it was in the slot),
        // stays first in line: retrying cannot help and every later change waits behind it. Stop with the error that
        // says what to do (as Debezium fails its connector); a supervisor's restart meets the same clear error.
        // So does a lost replication slot (SYNC_SLOT_LOST): it does not come back, and retrying would hide that changes
        // are no longer captured; and a change logical decoding can never read (SYNC_DECODE_FAILED: replica identity
        // no longer FULL, a decode function failing on it). Transient database failures are retried below.
        // Recorded in the state schema, so `sync status` (and the dashboard) report the direction broken and why,
        // not only a growing lag, while a supervisor restarts the relay into the same error.
        if (isStranglerError(err) && FATAL_CODES.has(err.code)) {
          this.#log.error({ event: CAPTURE_LOG.relayFailed, side: this.#side, code: err.code, err }, err.message);
          await this.#origins.use((client) => recordWorkerError(client, this.#config.stateSchema, { worker: 'relay', source: this.#side, code: err.code, message: err.message }))
            .then(() => { this.#errorRecorded = true; })
            .catch((recordErr: unknown) => this.#log.warn({ event: CAPTURE_LOG.relayFailed, side: this.#side, err: recordErr }, 'relay: recording the error it stops with failed; status shows only the lag'));
          throw err;
        }
        failures += 1;
        this.#log.warn({ event: CAPTURE_LOG.relayRetry, side: this.#side, err, failures }, 'relay cycle failed; retrying from the stored position');
        await new Promise((r) => setTimeout(r, Math.min(2_000, 50 * 2 ** Math.min(failures, 6))));
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running?.catch(() => {}); // a loop that ended with an error already reported it through run()
    this.#log.info({ event: CAPTURE_LOG.relayStopped, side: this.#side }, 'relay stopped');
    // Taken before the first await: a second stop() meanwhile (a signal twice) must not release it again.
    const client = this.#lockClient;
    this.#lockClient = undefined;
    if (client) {
      await client.query('SELECT pg_advisory_unlock_all()').catch(() => {});
      client.release();
    }
  }
}
