/**
 * The `sync:` and `kafka:` sections of strangler's config file. The lead's top-level schema plugs these in as the
 * `sync` and `kafka` keys (gateway/config/schema.ts).
 * Units are in the names. Everything that has a sensible default has it here and nowhere else.
 */
import { z } from 'zod';
import { tlsClientSchema } from '../common/tls.ts';

const identifier = z.string().regex(/^[a-z_][a-z0-9_]*$/, 'a lower-case SQL identifier (letters, digits, "_")');
const side = z.enum(['legacy', 'service']);

export const kafkaConfigSchema = z.object({
  brokers: z.array(z.string().min(1)).min(1).describe('host:port of one or more brokers.'),
  clientId: z.string().min(1).default('strangler').describe('kafkajs clientId.'),
  connectionTimeoutMs: z.number().int().positive().default(3_000),
  requestTimeoutMs: z.number().int().positive().default(30_000),
  ssl: z.union([
    z.boolean(),
    tlsClientSchema,
  ]).default(false).describe('TLS to the brokers: false = plaintext, true = TLS verified against the system CAs, or an object with CA, client certificate and verification settings.'),
  sasl: z.object({
    mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).describe('SASL mechanism the cluster accepts. plain sends the password itself: use it only together with ssl.'),
    username: z.string().min(1),
    password: z.string().min(1).describe('Write it as "${KAFKA_PASSWORD}" so the file holds no secret; shown as [redacted] by GET /admin/config.'),
  }).strict().optional().describe('SASL authentication (Kafka\'s SASL_SSL with ssl, SASL_PLAINTEXT without); omitted = none.'),
}).strict();

/** What node-postgres takes as a connection string: a postgres:// (postgresql://) URL, or socket:/path?db=… . */
function isPostgresUrl(v: string): boolean {
  try {
    return ['postgres:', 'postgresql:', 'socket:'].includes(new URL(v).protocol);
  } catch {
    return false;
  }
}

export const databaseRefSchema = z.object({
  url: z.string().min(1).refine(isPostgresUrl, 'a postgres://user:password@host:5432/database URL')
    .describe('postgres:// URL; "${ENV}" references are expanded when the file is read.'),
  schema: identifier.default('public').describe('Schema holding the synced tables.'),
  poolSize: z.number().int().positive().default(4),
  connectTimeoutMs: z.number().int().positive().default(10_000).describe('How long opening a connection may take before it fails and is retried (a host that drops packets would otherwise hold it for minutes).'),
  queryTimeoutMs: z.number().int().nonnegative().default(60_000).describe('Client-side bound on one statement (0: none). A connection that hangs (network partition, failover to another host) fails after it and the work is retried on a new connection. Verify\'s table scans and logical decoding are not bounded by it.'),
}).strict();

/** Column codecs: how a value on the legacy side becomes the value on the service side, and back. */
export const CODECS = ['identity', 'cents-to-decimal', 'decimal-to-cents', 'text-to-int', 'int-to-text'] as const;

const oneToOne = z.object({
  legacy: identifier,
  service: identifier,
  codec: z.enum(CODECS).default('identity').describe('identity also covers casts between compatible types (int ↔ bigint, varchar ↔ text, json ↔ jsonb).'),
}).strict();

const valueMap = z.object({
  legacy: identifier,
  service: identifier,
  codec: z.literal('value-map'),
  values: z.record(z.string(), z.string()).refine((m) => Object.keys(m).length > 0 && new Set(Object.values(m)).size === Object.keys(m).length, 'a non-empty map whose service values are all different (it must be invertible)')
    .describe('legacy value → service value, e.g. { cancelled: CANCELED }; the reverse direction uses the inverse. Unmapped values pass unchanged (and are parked if the target rejects them).'),
}).strict();

const merged = z.object({
  legacy: z.array(identifier).min(2).describe('Several legacy columns ...'),
  service: identifier.describe('... held in one service column.'),
  combine: z.enum(['json', 'join']).describe('json: a jsonb object keyed by the legacy column names (lossless); join: text joined by `separator`, split back on its first occurrences.'),
  separator: z.string().min(1).default(' '),
}).strict();

const split = z.object({
  legacy: identifier.describe('One legacy column ...'),
  service: z.array(identifier).min(2).describe('... split over several service columns.'),
  combine: z.enum(['json', 'join']),
  separator: z.string().min(1).default(' '),
}).strict();

export const columnMappingSchema = z.union([oneToOne, valueMap, merged, split]);

export const tableMappingSchema = z.object({
  name: identifier.describe('Logical name: used in topic names, CLI --table, state tables.'),
  legacy: z.object({ table: identifier, key: z.array(identifier).min(1) }).strict(),
  service: z.object({ table: identifier, key: z.array(identifier).min(1) }).strict(),
  columns: z.array(columnMappingSchema).min(1).describe('Every synced column; key columns must be mapped one to one with the identity codec.'),
  route: z.string().optional().describe('Gateway route id whose writes land in this table; its owner comes from ownership.routes.'),
  owner: side.optional().describe('Side that owns writes for this table; overrides the route; default ownership.default.'),
}).strict();

export const syncConfigSchema = z.object({
  databases: z.object({ legacy: databaseRefSchema, service: databaseRefSchema }).strict(),
  stateSchema: identifier.default('strangler_sync').describe('Schema created on both databases for capture, offsets, versions, dead letters.'),
  capture: z.object({
    mode: z.enum(['trigger', 'logical']).default('trigger').describe('trigger: same-transaction change table via row triggers (no wal_level=logical). logical: opt-in, needs wal_level=logical; a test_decoding replication slot, decoded by the relay into the same change table, no row triggers.'),
    relayBatchSize: z.number().int().positive().default(2_000),
    relayPollMs: z.number().int().positive().default(20),
    lockTimeoutMs: z.number().int().positive().default(1_000).describe('capture install/uninstall: how long one attempt waits for a lock on a synced table (lock_timeout) before it gives up and retries; application queries on that table queue behind the waiting DDL for at most about this long per attempt.'),
    lockRetryMs: z.number().int().nonnegative().default(60_000).describe('capture install/uninstall: how long to keep retrying (backoff with jitter) while another transaction holds a synced table; then it fails with SYNC_TABLE_LOCKED naming that session, and nothing was changed. Logical mode: also the most install waits to create the replication slot (at least lockTimeoutMs) while transactions stay open; then SYNC_SLOT_BLOCKED names them.'),
  }).strict().default({ mode: 'trigger', relayBatchSize: 2_000, relayPollMs: 20, lockTimeoutMs: 1_000, lockRetryMs: 60_000 }),
  topics: z.object({
    pattern: z.string().includes('{table}').default('strangler.{side}.{table}').describe('Topic name; {side} is the source side, {table} the logical table name.'),
    partitions: z.number().int().positive().default(1),
  }).strict().default({ pattern: 'strangler.{side}.{table}', partitions: 1 }),
  conflicts: z.object({
    policy: z.enum(['owner-wins', 'latest-commit-wins']).default('owner-wins'),
  }).strict().default({ policy: 'owner-wins' }),
  ownership: z.object({
    default: side.default('legacy').describe('Owner of tables that name no owner and no owned route.'),
    routes: z.record(z.string(), side).default({}).describe('Gateway route id → side that owns its writes (the side that wins conflicts on the tables of that route).'),
  }).strict().default({ default: 'legacy', routes: {} }),
  apply: z.object({
    groupIdPrefix: z.string().min(1).default('strangler-sync'),
    maxBatchEvents: z.number().int().positive().default(5_000),
  }).strict().default({ groupIdPrefix: 'strangler-sync', maxBatchEvents: 5_000 }),
  backfill: z.object({
    chunkRows: z.number().int().positive().default(5_000),
    maxRowsPerSecond: z.number().int().positive().optional().describe('Throttle; unlimited when omitted.'),
    maxLagEvents: z.number().int().positive().default(50_000).describe('Pause while the live direction lags more than this.'),
  }).strict().default({ chunkRows: 5_000, maxLagEvents: 50_000 }),
  verify: z.object({
    chunkRows: z.number().int().positive().default(20_000),
    leafRows: z.number().int().positive().default(2_000),
    maxKeys: z.number().int().positive().optional().describe('Differing keys a verify result lists per table, 10000 when omitted (the true count is always reported; repair finds the rest itself).'),
  }).strict().default({ chunkRows: 20_000, leafRows: 2_000 }),
  tables: z.array(tableMappingSchema).min(1),
}).strict();

export type SyncConfig = z.infer<typeof syncConfigSchema>;
export type SyncConfigInput = z.input<typeof syncConfigSchema>;
/** The parsed kafka section. `ssl` may be left out by code that builds one by hand (benchmarks, tests): plaintext. */
export type KafkaConfig = Omit<z.infer<typeof kafkaConfigSchema>, 'ssl'> & { ssl?: z.infer<typeof kafkaConfigSchema>['ssl'] };
export type TableMappingConfig = z.infer<typeof tableMappingSchema>;
export type ColumnMappingConfig = z.infer<typeof columnMappingSchema>;
export type Side = z.infer<typeof side>;
export const SIDES: readonly Side[] = ['legacy', 'service'];
export function otherSide(s: Side): Side { return s === 'legacy' ? 'service' : 'legacy'; }

/** The columns of `side`'s table that a table mapping reads (its key columns are among them, mapped one to one). */
export function mappedColumns(t: TableMappingConfig, side: Side): string[] {
  return t.columns.flatMap((c) => c[side]);
}
