/**
 * Test fixture for sync: one embedded PostgreSQL with a legacy and a service database holding differently shaped
 * copies of a test schema (every column type the issue names), the sync config mapping them, and an in-memory
 * stand-in for Kafka (partitions, offsets, replays) so the database side is tested without a broker.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Pool } from 'pg';
import { startPostgres, type RunningPostgres } from '../../../devstack/postgres.ts';
import { parseSyncConfig } from '../../../migration-scripts/config.ts';
import type { SyncConfig, Side } from '../../../migration-scripts/config-schema.ts';
import { openPools, closePools, type Pools } from '../../../migration-scripts/db.ts';
import type { OutgoingMessage, EventSink } from '../../../legacy-adapter/capture/relay.ts';
import type { ConsumedEvent } from '../../../migration-scripts/event.ts';

export const LEGACY_DDL = `
CREATE TABLE items (
  id bigint PRIMARY KEY, name text NOT NULL, price_cents integer, body text, data jsonb, happened_at timestamptz,
  first_name text, last_name text, amount numeric(20,6), flag boolean, legacy_only text DEFAULT 'keep');
CREATE TABLE people (email text PRIMARY KEY, street text, city text, zip text, updated timestamp);
CREATE TABLE notes (id integer PRIMARY KEY, body text, status text NOT NULL DEFAULT 'open');`;

export const SERVICE_DDL = `
CREATE TABLE catalog_items (
  item_id bigint PRIMARY KEY, title text NOT NULL, price numeric(12,2), body text, data jsonb, happened_at timestamptz,
  full_name text, amount numeric(20,6), flag boolean, service_only text DEFAULT 'svc');
CREATE TABLE persons (email text PRIMARY KEY, address jsonb, updated timestamp);
CREATE TABLE note_parts (note_id bigint PRIMARY KEY, title text, rest text, state text NOT NULL CHECK (state IN ('OPEN', 'DONE')));`;

export function syncDoc(urls: { legacy: string; service: string }, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    sync: {
      databases: { legacy: { url: urls.legacy }, service: { url: urls.service } },
      tables: [
        {
          name: 'items',
          legacy: { table: 'items', key: ['id'] },
          service: { table: 'catalog_items', key: ['item_id'] },
          columns: [
            { legacy: 'id', service: 'item_id' },
            { legacy: 'name', service: 'title' },
            { legacy: 'price_cents', service: 'price', codec: 'cents-to-decimal' },
            { legacy: 'body', service: 'body' },
            { legacy: 'data', service: 'data' },
            { legacy: 'happened_at', service: 'happened_at' },
            { legacy: ['first_name', 'last_name'], service: 'full_name', combine: 'join', separator: ' ' },
            { legacy: 'amount', service: 'amount' },
            { legacy: 'flag', service: 'flag' },
          ],
        },
        {
          name: 'people',
          owner: 'service',
          legacy: { table: 'people', key: ['email'] },
          service: { table: 'persons', key: ['email'] },
          columns: [
            { legacy: 'email', service: 'email' },
            { legacy: ['street', 'city', 'zip'], service: 'address', combine: 'json' },
            { legacy: 'updated', service: 'updated' },
          ],
        },
        {
          name: 'notes',
          legacy: { table: 'notes', key: ['id'] },
          service: { table: 'note_parts', key: ['note_id'] },
          columns: [
            { legacy: 'id', service: 'note_id' },
            { legacy: 'body', service: ['title', 'rest'], combine: 'join', separator: '\n' },
            { legacy: 'status', service: 'state', codec: 'value-map', values: { open: 'OPEN', done: 'DONE' } },
          ],
        },
      ],
      ...overrides,
    },
  };
}

export interface SyncFixture {
  pg: RunningPostgres;
  dataDir: string;
  /** Makes a fresh pair of databases with the test schema; returns a config for them. */
  freshPair(name: string, overrides?: Record<string, unknown>): Promise<{ config: SyncConfig; pools: Pools; urls: { legacy: string; service: string } }>;
  stop(): Promise<void>;
}

/** Marks the server's WAL insert position now; the returned function says how many bytes of WAL were written since. */
export async function walMark(pool: Pool): Promise<() => Promise<number>> {
  const from = (await pool.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0]?.l as string;
  return async () => Number((await pool.query<{ d: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::text AS d', [from])).rows[0]?.d);
}

/** Bytes of WAL written by `polls` relay polls, each of which must find nothing to publish. */
export async function idlePollsWal(pool: Pool, relay: { step(): Promise<number> }, polls = 40): Promise<number> {
  const grown = await walMark(pool);
  for (let i = 0; i < polls; i++) assert.equal(await relay.step(), 0);
  return grown();
}

/** Every row_version vector of a database, in key order. */
export async function rowVersions(pool: Pool): Promise<unknown[]> {
  return (await pool.query('SELECT tbl, pk, legacy_version, service_version, deleted FROM strangler_sync.row_version ORDER BY tbl, pk')).rows;
}

/** The replication slot logical capture recorded on a database (undefined before install). */
export async function captureSlot(pool: Pool): Promise<string | undefined> {
  return (await pool.query<{ slot: string }>('SELECT slot FROM strangler_sync.logical_capture')).rows[0]?.slot;
}

/** PostgreSQL flags for a server that runs capture.mode logical as well as trigger (trigger mode does not mind them). */
export const LOGICAL_SERVER_FLAGS: readonly string[] = ['-c', 'wal_level=logical', '-c', 'max_replication_slots=20', '-c', 'max_wal_senders=20'];

/** `serverFlags`: extra PostgreSQL flags, e.g. LOGICAL_SERVER_FLAGS for capture.mode logical (the bench runs both modes). */
export async function startSyncFixture(options: { serverFlags?: readonly string[] } = {}): Promise<SyncFixture> {
  const dataDir = mkdtempSync(join(tmpdir(), 'strangler-sync-'));
  const pg = await startPostgres({ dataDir, serverFlags: options.serverFlags });
  const opened: Pools[] = [];
  return {
    pg,
    dataDir,
    async freshPair(name, overrides = {}) {
      const urls = { legacy: pg.url(`${name}_legacy`), service: pg.url(`${name}_service`) };
      await pg.createDatabase(`${name}_legacy`);
      await pg.createDatabase(`${name}_service`);
      const config = parseSyncConfig(syncDoc(urls, overrides)).sync;
      const pools = openPools(config);
      opened.push(pools);
      await pools.legacy.query(LEGACY_DDL);
      await pools.service.query(SERVICE_DDL);
      return { config, pools, urls };
    },
    async stop() {
      for (const p of opened) await closePools(p).catch(() => {});
      await pg.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function hash(key: string): number {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (Math.imul(h, 31) + key.charCodeAt(i)) | 0;
  return Math.abs(h);
}

/** An in-memory log with topics, keyed partitions and offsets: the Kafka stand-in for database-side tests. */
export class MemoryBus implements EventSink {
  readonly topics = new Map<string, { key: string; value: string }[][]>();
  constructor(readonly partitions = 2) {}
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    for (const m of messages) {
      let t = this.topics.get(m.topic);
      if (!t) { t = Array.from({ length: this.partitions }, () => []); this.topics.set(m.topic, t); }
      (t[hash(m.key) % this.partitions] as { key: string; value: string }[]).push({ key: m.key, value: m.value });
    }
  }
  /** Messages of every topic whose name starts with `prefix`, from per-partition offsets, as consumed events. */
  read(prefix: string, from: Map<string, number>, max = 500): ConsumedEvent[][] {
    const batches: ConsumedEvent[][] = [];
    for (const [topic, parts] of this.topics) {
      if (!topic.startsWith(prefix)) continue;
      parts.forEach((msgs, partition) => {
        const start = from.get(`${topic}/${partition}`) ?? 0;
        const slice = msgs.slice(start, start + max);
        if (slice.length > 0) batches.push(slice.map((m, i) => ({ topic, partition, offset: String(start + i), value: m.value })));
      });
    }
    return batches;
  }
  size(): number {
    let n = 0;
    for (const parts of this.topics.values()) for (const p of parts) n += p.length;
    return n;
  }
}

/** A consumer over the memory bus: applies every batch for the topics of `source` and remembers offsets (like Kafka commits). */
export class MemoryConsumer {
  readonly offsets = new Map<string, number>();
  constructor(readonly bus: MemoryBus, readonly source: Side, readonly apply: (batch: ConsumedEvent[]) => Promise<unknown>) {}
  async drain(max = 500): Promise<number> {
    let total = 0;
    for (;;) {
      const batches = this.bus.read(`strangler.${this.source}.`, this.offsets, max);
      if (batches.length === 0) return total;
      for (const b of batches) {
        await this.apply(b);
        const last = b[b.length - 1] as ConsumedEvent;
        this.offsets.set(`${last.topic}/${last.partition}`, Number(last.offset) + 1);
        total += b.length;
      }
    }
  }
}
