/**
 * Durable promotion state, one record per route, written only by compare-and-set on a version number so two
 * controllers can never both advance the same step: the loser's write affects no row and it does nothing.
 *
 * - PostgresStateStore: table strangler_controller_state, plus a session advisory lock that elects one active
 *   controller (the others stand by and take over when its connection ends).
 * - FileStateStore: one JSON file replaced by atomic rename; for a single controller (no cross-process lock).
 */
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { StranglerError, messageOf } from '../common/errors.ts';
import type { GuardOutcome, OpensSnapshot } from './guard.ts';
import { writeFileAtomic } from '../common/files.ts';

export type PlanState = 'waiting' | 'holding' | 'paused' | 'rolled-back' | 'completed' | 'monitoring';

export interface PlanRecord {
  routeId: string;
  flag: string;
  state: PlanState;
  /** Index into plan.steps of the current step; -1 = below the first step (or no plan). */
  stepIndex: number;
  /** Percentage the controller last decided on; null when it never set one. */
  targetPercent: number | null;
  /** false between deciding a step or a rollback (state written) and the Unleash write succeeding; retried on the next tick. */
  applied: boolean;
  /**
   * The live percentage when the step not yet applied was decided: the flag found at another percentage (neither
   * this nor the target) was shifted by an operator meanwhile, and the plan follows instead of retrying its step.
   * Absent in records written before it existed.
   */
  fromPercent?: number;
  /**
   * Why the plan is paused, set while state is 'paused': an operator moved the rollout outside the plan (shift by
   * hand, dashboard, Unleash UI, sync --fix) or the guard paused it. `lastChange` is the strategy title's note at the
   * pause: a newer "resume by …" note (`strangler flags resume`) hands the route back to the plan.
   */
  pause?: { reason: string; since: number; lastChange: string | null };
  /** Breaker-open counters last sampled per gateway (guard.ts OpensHistory): a restarted controller counts openings since its predecessor's last tick. */
  opens?: OpensSnapshot;
  /** Epoch ms since when the guard has passed without interruption at this step; null when not holding. */
  holdStartedAt: number | null;
  lastVerdict: GuardOutcome | null;
  lastReasons: string[];
  lastCheckedAt: number | null;
  updatedAt: number;
  /** Compare-and-set version: 0 = not stored yet. */
  version: number;
}

export interface StateStore {
  loadAll(): Promise<Record<string, PlanRecord>>;
  /** Stores `record` (version ignored) if the stored version still equals `expectedVersion`; undefined when another writer won. */
  compareAndSet(record: PlanRecord, expectedVersion: number): Promise<PlanRecord | undefined>;
  /** True when this controller may act (holds the leader lock); false = stand by. */
  acquireLeadership(): Promise<boolean>;
  close(): Promise<void>;
}

const LOCK_KEY = 'strangler-controller';

export class PostgresStateStore implements StateStore {
  #pool: pg.Pool;
  #lockClient: pg.PoolClient | undefined;
  #leader = false;
  #ready: Promise<void> | undefined;
  #useLock: boolean;

  constructor(databaseUrl: string, options: { leaderLock?: boolean } = {}) {
    this.#pool = new pg.Pool({ connectionString: databaseUrl, max: 3 });
    this.#pool.on('error', () => {});
    this.#useLock = options.leaderLock ?? true;
  }

  #init(): Promise<void> {
    this.#ready ??= this.#pool.query(`CREATE TABLE IF NOT EXISTS strangler_controller_state (
        route_id   text PRIMARY KEY,
        version    bigint NOT NULL,
        record     jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now())`).then(() => undefined, (err: unknown) => {
      this.#ready = undefined;
      throw new StranglerError('CONTROLLER_STATE_UNREADABLE', `controller state: cannot create table strangler_controller_state (${messageOf(err)})`, { cause: err });
    });
    return this.#ready;
  }

  async loadAll(): Promise<Record<string, PlanRecord>> {
    await this.#init();
    const { rows } = await this.#pool.query<{ route_id: string; version: string; record: PlanRecord }>('SELECT route_id, version, record FROM strangler_controller_state');
    return Object.fromEntries(rows.map((r) => [r.route_id, { ...r.record, version: Number(r.version) }]));
  }

  async compareAndSet(record: PlanRecord, expectedVersion: number): Promise<PlanRecord | undefined> {
    await this.#init();
    const next = { ...record, version: expectedVersion + 1 };
    const result = expectedVersion === 0
      ? await this.#pool.query('INSERT INTO strangler_controller_state (route_id, version, record) VALUES ($1, 1, $2) ON CONFLICT (route_id) DO NOTHING', [record.routeId, JSON.stringify(next)])
      : await this.#pool.query('UPDATE strangler_controller_state SET version = version + 1, record = $3, updated_at = now() WHERE route_id = $1 AND version = $2', [record.routeId, expectedVersion, JSON.stringify(next)]);
    return result.rowCount === 1 ? next : undefined;
  }

  async acquireLeadership(): Promise<boolean> {
    if (!this.#useLock) return true;
    if (this.#leader && this.#lockClient) return true;
    await this.#init();
    let client = this.#lockClient;
    if (!client) {
      const fresh = await this.#pool.connect();
      client = fresh;
      this.#lockClient = fresh;
      fresh.on('error', (err) => this.#dropLockSession(fresh, err)); // once per session: a standby asks every tick on it
    }
    let rows: { ok: boolean }[];
    try {
      ({ rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [LOCK_KEY]));
    } catch (err) {
      this.#dropLockSession(client, err); // the session died under the query; the next tick asks on a new one
      throw err;
    }
    this.#leader = rows[0]?.ok === true;
    return this.#leader;
  }

  /**
   * The lock session is gone (and the lock with it): stand by until a new session wins the lock. The dead client goes
   * back to the pool to be discarded, or each lost session (a PostgreSQL restart or failover) would keep one of the
   * pool's connections and the third would leave the controller waiting for a connection for ever.
   */
  #dropLockSession(client: pg.PoolClient, err: unknown): void {
    if (this.#lockClient !== client) return;
    this.#leader = false;
    this.#lockClient = undefined;
    client.release(err instanceof Error ? err : true);
  }

  async close(): Promise<void> {
    if (this.#lockClient) {
      if (this.#leader) await this.#lockClient.query('SELECT pg_advisory_unlock(hashtext($1))', [LOCK_KEY]).catch(() => {});
      this.#lockClient.release();
      this.#lockClient = undefined;
    }
    this.#leader = false;
    await this.#pool.end();
  }
}

export class FileStateStore implements StateStore {
  #file: string;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(file: string) {
    this.#file = file;
  }

  async #read(): Promise<Record<string, PlanRecord>> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new StranglerError('CONTROLLER_STATE_UNREADABLE', `controller state file ${this.#file}: ${messageOf(err)}`, { cause: err });
    }
    try {
      const parsed = JSON.parse(text) as { routes?: Record<string, PlanRecord> };
      return parsed.routes ?? {};
    } catch (err) {
      throw new StranglerError('CONTROLLER_STATE_UNREADABLE', `controller state file ${this.#file} is not valid JSON (${messageOf(err)}); fix or delete it`, { cause: err });
    }
  }

  loadAll(): Promise<Record<string, PlanRecord>> {
    return this.#read();
  }

  compareAndSet(record: PlanRecord, expectedVersion: number): Promise<PlanRecord | undefined> {
    // Serialised within the process; the file itself is replaced atomically (write temp, rename).
    const run = this.#queue.then(async () => {
      const all = await this.#read();
      if ((all[record.routeId]?.version ?? 0) !== expectedVersion) return undefined;
      const next = { ...record, version: expectedVersion + 1 };
      all[record.routeId] = next;
      await writeFileAtomic(this.#file, `${JSON.stringify({ version: 1, routes: all }, null, 2)}\n`);
      return next;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  async acquireLeadership(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {
    await this.#queue;
  }
}
