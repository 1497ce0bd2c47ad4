/**
 * Connects the control plane's shift/rollback/resume endpoints to flags/traffic.ts (the same code path as the
 * CLI), when the config names the Unleash Admin API.
 */
import type { Logger } from '../../common/logger.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { TrafficActions } from './app.ts';
import { createFlagsControl } from '../../flags/control.ts';
import { trafficActions } from '../../flags/traffic.ts';

export function trafficFromConfig(config: LoadedConfig, log: Logger): { traffic?: TrafficActions } {
  if (!(config.flags.adminUrl ?? config.flags.url) || !config.flags.adminToken) return {};
  return { traffic: trafficActions(createFlagsControl(config, { log })) };
}
