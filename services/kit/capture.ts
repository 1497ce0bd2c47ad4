/**
 * Service-side change capture: the same implementation as the legacy adapter's (legacy-adapter/capture), bound to
 * the service's database. An extracted service calls these at deploy time (install) and runs the relay beside it.
 */
import type { Logger } from '../../common/logger.ts';
import type { KafkaConfig, SyncConfig } from '../../migration-scripts/config-schema.ts';
import type { Pools } from '../../migration-scripts/db.ts';
import { installCapture, uninstallCapture, startRelay, type RunningRelay } from '../../legacy-adapter/capture/index.ts';
import type { InstallResult } from '../../legacy-adapter/capture/install.ts';

export const installServiceCapture = (config: SyncConfig, pools: Pools): Promise<InstallResult> => installCapture(config, pools, 'service');
export const uninstallServiceCapture = (config: SyncConfig, pools: Pools): Promise<void> => uninstallCapture(config, pools, 'service');
export const startServiceRelay = (o: { config: SyncConfig; kafka: KafkaConfig; pools: Pools; log?: Logger }): Promise<RunningRelay> => startRelay({ ...o, side: 'service' });
