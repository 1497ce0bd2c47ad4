/** Public surface of the data sync (migration-scripts). */
export { syncConfigSchema, kafkaConfigSchema, type SyncConfig, type KafkaConfig, type Side } from './config-schema.ts';
export { loadSyncConfig, parseSyncConfig } from './config.ts';
export { openPools, closePools, type Pools } from './db.ts';
export { compileMappings, readSchema, topicFor, type CompiledTable } from './mapping.ts';
export { Applier, type ApplyResult } from './apply.ts';
export { ApplyWorker, KafkaSink, createKafka } from './kafka.ts';
export { runBackfill } from './backfill.ts';
export { verifyTables, formatVerify, type VerifyResult } from './verify.ts';
export { repairFromVerify, retryDeadLetters } from './repair.ts';
export { readSyncStatus, lagSummary, formatStatus, type SyncStatus } from './status.ts';
export { EVENT_FORMAT, type ChangeEventMeta } from './event.ts';
