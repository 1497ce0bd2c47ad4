/**
 * GET /admin/sync: the data sync's lag per direction, parked events, backfill progress and last verify, read from
 * the sync state in both databases (the same reader as `strangler sync status`). Only when the config has a sync
 * section; the database pools open on the first request.
 */
import type { LoadedConfig } from '../config/load.ts';
import type { ControlPlane } from './app.ts';
import { closePools, openPools, type Pools } from '../../migration-scripts/db.ts';
import { readSyncStatus } from '../../migration-scripts/status.ts';
import { createStatusKafka } from '../../migration-scripts/kafka.ts';

export function syncFromConfig(config: LoadedConfig): Pick<ControlPlane, 'sync'> & { close?: () => Promise<void> } {
  const sync = config.sync;
  if (!sync) return {};
  let pools: Pools | undefined;
  const kafka = config.kafka ? createStatusKafka(config.kafka, 'gateway-status') : undefined;
  return {
    sync: () => readSyncStatus(sync, (pools ??= openPools(sync)), kafka),
    close: async () => {
      if (pools) await closePools(pools);
    },
  };
}
