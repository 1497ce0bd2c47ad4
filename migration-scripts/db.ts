/**
 * Connection pools to the two databases. Every session runs with the same output settings (SESSION_SETTINGS), so a
 * value prints as the same text on both sides whatever each server's or database's defaults are.
 */
import pg from 'pg';
import type { Pool, QueryConfig } from 'pg';
import type { Side, SyncConfig } from './config-schema.ts';
import { causeChain, isStranglerError, StranglerError } from '../common/errors.ts';
import { redactUrl } from '../gateway/config/load.ts';

export type Pools = Record<Side, Pool>;

/**
 * The settings that decide how values print as text (and how ambiguous text parses back), pinned on every sync
 * session: backfill's COPY, verify's canonical text, apply's casts and the relay's decoding read one side's text on
 * the other. A server or database default such as DateStyle 'SQL, DMY' would otherwise print 05/03/2024 for 5 March
 * and a session in 'ISO, MDY' would read it as 3 May. The capture trigger runs in the application's session, so its
 * function pins the same settings (captureFunctionSettings), keeping key texts and images independent of the writer.
 */
export const SESSION_SETTINGS: Readonly<Record<string, string>> = {
  TimeZone: 'UTC',
  DateStyle: 'ISO,YMD',
  IntervalStyle: 'postgres',
  bytea_output: 'hex',
  extra_float_digits: '1',
  lc_monetary: 'C',
};

/** The SET clauses of a function that must see the sync session settings whatever session calls it. */
export function captureFunctionSettings(): string {
  return Object.entries(SESSION_SETTINGS).map(([name, value]) => `SET ${name} = ${pg.escapeLiteral(value)}`).join(' ');
}

/** Connection timeouts of a pool (sync.databases.<side>.connectTimeoutMs, queryTimeoutMs; 0: no statement bound). */
export interface PoolTimeouts { connectTimeoutMs: number; queryTimeoutMs: number }
export const DEFAULT_POOL_TIMEOUTS: PoolTimeouts = { connectTimeoutMs: 10_000, queryTimeoutMs: 60_000 };

/** The error message of a statement that outlived queryTimeoutMs (node-postgres's words). */
const QUERY_TIMEOUT = /Query read timeout|timeout exceeded when trying to connect|Connection terminated due to connection timeout/i;
export const isQueryTimeout = (err: unknown): boolean => err instanceof Error && QUERY_TIMEOUT.test(err.message);

/**
 * A statement that may rightly run longer than the pool's queryTimeoutMs (a scan of a whole table, logical
 * decoding of a large transaction): bounded only by setTimeout's maximum (24 days).
 */
export function unbounded(text: string, values?: unknown[]): QueryConfig {
  const config: QueryConfig & { query_timeout: number } = { text, values, query_timeout: 2 ** 31 - 1 };
  return config;
}

/**
 * `allowExitOnIdle`: for a pool nobody ends explicitly (it must not keep the process alive). Connections are opened
 * with a timeout, keep TCP keepalive on, and bound each statement (`timeouts`), so a database behind a network
 * partition (packets dropped, nothing refused) fails the work, which is retried, instead of hanging it forever.
 */
export function openPool(url: string, max = 4, allowExitOnIdle = false, timeouts: PoolTimeouts = DEFAULT_POOL_TIMEOUTS): Pool {
  const { connectionString, options } = withSessionSettings(url);
  const pool = new pg.Pool({
    connectionString, max, allowExitOnIdle, options,
    connectionTimeoutMillis: timeouts.connectTimeoutMs, keepAlive: true, keepAliveInitialDelayMillis: 10_000,
    ...(timeouts.queryTimeoutMs > 0 ? { query_timeout: timeouts.queryTimeoutMs } : {}),
  });
  // An idle client losing its server (PostgreSQL restart) must not crash the process; the next query reconnects.
  pool.on('error', () => {});
  // A checked-out client whose server goes away between two queries emits 'error'; the next query fails and the
  // caller retries on a fresh connection, so the event itself must not crash the process.
  pool.on('connect', (client) => { client.on('error', () => {}); });
  return pool;
}

/**
 * The URL and startup options of a sync session. An `options` parameter in the URL would replace pg's `options`
 * setting as a whole, so it moves out of the URL and the pins follow it (the later `-c` of a setting wins).
 */
export function withSessionSettings(url: string): { connectionString: string; options: string } {
  const pins = Object.entries(SESSION_SETTINGS).map(([name, value]) => `-c ${name}=${value}`).join(' ');
  let parsed: URL;
  try { parsed = new URL(url); } catch { return { connectionString: url, options: pins }; }
  const own = parsed.searchParams.get('options');
  if (own === null) return { connectionString: url, options: pins };
  parsed.searchParams.delete('options');
  return { connectionString: parsed.toString(), options: `${own} ${pins}` };
}

export function openPools(config: SyncConfig): Pools {
  return {
    legacy: openPool(config.databases.legacy.url, config.databases.legacy.poolSize, false, config.databases.legacy),
    service: openPool(config.databases.service.url, config.databases.service.poolSize, false, config.databases.service),
  };
}

export async function closePools(pools: Pools): Promise<void> {
  await Promise.all([pools.legacy.end(), pools.service.end()]);
}

/** SQLSTATEs after which the same work can simply be retried (deadlock, serialization, lock timeout, lost connection). */
export function isTransientDbError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return err instanceof Error && (/Connection terminated|ECONNREFUSED|ECONNRESET|not queryable/i.test(err.message) || isQueryTimeout(err));
  return code === '40P01' || code === '40001' || code === '55P03' || code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === 'ECONNREFUSED' || code === 'ECONNRESET';
}

/**
 * SQLSTATEs about the database, not about the row being written: insufficient resources (class 53: disk full, out of
 * memory, too many connections), a statement cancelled (57014: statement_timeout, an operator's cancel), a system
 * error (class 58: I/O), a read-only transaction (25006: writes reaching a standby after a failover). Apply retries
 * the batch for these (and stops while they last) instead of parking every event as if the row were at fault.
 */
export function isDatabaseFault(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('53') || code.startsWith('58') || code === '57014' || code === '25006');
}

/**
 * Errors about reaching or entering a database (not about a statement): connection refused, host unknown or silent,
 * TLS refused, authentication failed (class 28), database missing (3D000), server starting or shutting down. A
 * kafkajs error is about Kafka ("Connection error: read ECONNRESET" while a broker restarts), unless it wraps an
 * error of another client (a database's, thrown by apply inside kafkajs's consumer): that one is judged instead.
 */
function isConnectionError(thrown: unknown): boolean {
  const err = [...causeChain(thrown)].find((e) => !String(e.name).startsWith('KafkaJS'));
  if (err === undefined || isStranglerError(err)) return false;
  const code = err.code;
  if (typeof code === 'string' && (code.startsWith('28') || code.startsWith('08') || ['3D000', '57P03', 'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET'].includes(code))) return true;
  return err instanceof Error && /timeout exceeded when trying to connect|Connection terminated|does not support SSL|SSL/i.test(err.message);
}

/**
 * `err` as SYNC_DATABASE_UNAVAILABLE naming the database(s) it is about, when it is a connection error: each side is
 * tried once more (a fresh connection, 3 s) so the message says which one fails and how, by config field and URL
 * (password left out). Any other error is returned as it is.
 */
export async function namingDatabase(config: SyncConfig, err: unknown): Promise<unknown> {
  if (!isConnectionError(err)) return err;
  const sides = ['legacy', 'service'] as const;
  const probes = await Promise.all(sides.map(async (side) => {
    const pool = openPool(config.databases[side].url, 1, true, { connectTimeoutMs: 3_000, queryTimeoutMs: 3_000 });
    try {
      await pool.query('SELECT 1');
      return null;
    } catch (probeErr) {
      const code = (probeErr as { code?: unknown }).code;
      return `sync.databases.${side}.url (${redactUrl(config.databases[side].url)}): ${typeof code === 'string' ? `${code}: ` : ''}${(probeErr as Error).message}`;
    } finally {
      await pool.end().catch(() => {});
    }
  }));
  const failing = probes.filter((p): p is string => p !== null);
  const about = failing.length > 0 ? failing.join('; ') : `one of the databases (both answer now): ${(err as Error).message}`;
  return new StranglerError('SYNC_DATABASE_UNAVAILABLE', `cannot use ${about}. Check the URL, the password, that the database exists and that the server accepts connections from here`, { cause: err });
}

/** Retries `fn` on transient failures (database or broker restarting) until `timeoutMs` has passed. */
export async function retryTransient<T>(what: string, fn: () => Promise<T>, timeoutMs = 120_000, onRetry?: (err: unknown, attempt: number) => void): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      // Our own errors say whether they are retriable (a TLS certificate failure is not), whatever their message holds.
      // (kafkajs marks the end of its own retries retriable: false too; those stay retried here, by the rules below.)
      if (isStranglerError(err) && !err.retriable) throw err;
      const retriable = isTransientDbError(err) || (err as { retriable?: boolean } | null)?.retriable === true || /ECONNREFUSED|ECONNRESET|shutting down|starting up|KafkaJS|Connection|timeout/i.test(String((err as Error)?.message ?? err));
      if (!retriable || Date.now() > deadline) throw err;
      onRetry?.(err, attempt);
      await new Promise((r) => setTimeout(r, Math.min(2_000, 50 * 2 ** Math.min(attempt, 6))));
    }
  }
}
