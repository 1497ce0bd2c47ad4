/** Log event names of apply, backfill, verify, repair and status (the `event` field of each line). */
export const SYNC_LOG = {
  applyStarted: 'sync.apply.started',
  applyBatch: 'sync.apply.batch',
  applyRetry: 'sync.apply.retry',
  applyStopped: 'sync.apply.consumer_stopped',
  applyRestart: 'sync.apply.consumer_restart',
  applyFailed: 'sync.apply.batch_failed',
  conflict: 'sync.apply.conflict',
  parked: 'sync.apply.parked',
  offsetsAhead: 'sync.apply.kafka_offset_ahead',
  backfillChunk: 'sync.backfill.chunk',
  backfillThrottled: 'sync.backfill.throttled',
  backfillDone: 'sync.backfill.done',
  verifyTable: 'sync.verify.table',
  repairKey: 'sync.repair.key',
  deadLetterRetried: 'sync.repair.dead_letter',
} as const;
