/** Connection pools to the two databases. Every session runs in UTC so timestamps print identically on both sides. */
import pg from 'pg';
import type { Pool } from 'pg';
import type { Side, SyncConfig } from './config-schema.ts';
import { isStranglerError } from '../common/errors.ts';

export type Pools = Record<Side, Pool>;

/** `allowExitOnIdle`: for a pool nobody ends explicitly (it must not keep the process alive). */
export function openPool(url: string, max = 4, allowExitOnIdle = false): Pool {
  const pool = new pg.Pool({ connectionString: url, max, allowExitOnIdle, options: '-c TimeZone=UTC -c extra_float_digits=1' });
  // An idle client losing its server (PostgreSQL restart) must not crash the process; the next query reconnects.
  pool.on('error', () => {});
  // A checked-out client whose server goes away between two queries emits 'error'; the next query fails and the
  // caller retries on a fresh connection, so the event itself must not crash the process.
  pool.on('connect', (client) => { client.on('error', () => {}); });
  return pool;
}

export function openPools(config: SyncConfig): Pools {
  return {
    legacy: openPool(config.databases.legacy.url, config.databases.legacy.poolSize),
    service: openPool(config.databases.service.url, config.databases.service.poolSize),
  };
}

export async function closePools(pools: Pools): Promise<void> {
  await Promise.all([pools.legacy.end(), pools.service.end()]);
}

/** SQLSTATEs after which the same work can simply be retried (deadlock, serialization, lock timeout, lost connection). */
export function isTransientDbError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return err instanceof Error && /Connection terminated|ECONNREFUSED|ECONNRESET|not queryable/i.test(err.message);
  return code === '40P01' || code === '40001' || code === '55P03' || code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === 'ECONNREFUSED' || code === 'ECONNRESET';
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
