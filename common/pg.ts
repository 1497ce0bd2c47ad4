import type { Pool, PoolClient } from 'pg';

/**
 * Connections whose BEGIN or ROLLBACK got no answer (pg's client-side query_timeout: a stalled network or server).
 * The statement is still in flight on them: once the server answers, the connection sits inside a transaction nobody
 * commits, and every later statement on it (a pooled INSERT answered 201) runs inside it and is rolled back when the
 * connection closes. inTransaction discards them instead of returning them to the pool.
 */
const unsettled = new WeakSet<PoolClient>();

/** Runs `fn` in one transaction on `client` (a checked-out connection): COMMIT when it resolves, ROLLBACK when it throws. */
export async function transactionOn<T>(client: PoolClient, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  await client.query('BEGIN').catch((err: unknown) => {
    unsettled.add(client);
    throw err;
  });
  try {
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => unsettled.add(client));
    throw err;
  }
}

/** Runs `fn` in one transaction on a pooled connection: COMMIT when it resolves, ROLLBACK when it throws. */
export async function inTransaction<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    return await transactionOn(client, fn);
  } finally {
    client.release(unsettled.has(client));
  }
}

/** Runs idempotent DDL under a transaction-scoped advisory lock, so processes starting together migrate one at a time. */
export async function migrateOnce(pool: Pool, lockKey: number, ddl: string): Promise<void> {
  await inTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [lockKey]);
    await client.query(ddl);
  });
}
