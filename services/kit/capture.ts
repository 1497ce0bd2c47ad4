/**
 * Service-side change capture: the same implementation as the legacy adapter's (legacy-adapter/capture), bound to
 * the service's database. An extracted service calls these at deploy time (install) and runs the relay beside it.
 */
import type { Logger } from '../../common/logger.ts';
import type { KafkaConfig, SyncConfig } from '../../migration-scripts/config-schema.ts';
import type { Pools } from '../../migration-scripts/db.ts';
import { installCapture, uninstallCapture, startRelay, type RunningRelay } from '../../legacy-adapter/capture/index.ts';
import type { InstallOptions, InstallResult } from '../../legacy-adapter/capture/install.ts';
import type { CompiledTable } from '../../migration-scripts/mapping.ts';

/** installCapture on the service side; `options.acceptGap` is the runbook's `--accept-gap` after a lost slot. */
export const installServiceCapture = (config: SyncConfig, pools: Pools, compiled?: readonly CompiledTable[], options: InstallOptions = {}): Promise<InstallResult> =>
  installCapture(config, pools, 'service', compiled, options);
export const uninstallServiceCapture = (config: SyncConfig, pools: Pools, options: Parameters<typeof uninstallCapture>[3] = {}): Promise<void> =>
  uninstallCapture(config, pools, 'service', options);
export const startServiceRelay = (o: { config: SyncConfig; kafka: KafkaConfig; pools: Pools; log?: Logger }): Promise<RunningRelay> => startRelay({ ...o, side: 'service' });
