/**
 * Connects the control plane's shift/rollback/resume endpoints to flags/traffic.ts (the same code path as the
 * CLI), when the config names the Unleash Admin API.
 */
import type { Logger } from '../../common/logger.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { TrafficActions } from './app.ts';
import { createFlagsControl } from '../../flags/control.ts';
import { resumeRoute, rollbackRoute, shiftRoute } from '../../flags/traffic.ts';

export function trafficFromConfig(config: LoadedConfig, log: Logger): { traffic?: TrafficActions } {
  if (!(config.flags.adminUrl ?? config.flags.url) || !config.flags.adminToken) return {};
  const control = createFlagsControl(config, { log });
  return {
    traffic: {
      shift: (routeId, percent, change) => shiftRoute(control, routeId, percent, { actor: change.actor, ...(change.reason ? { reason: change.reason } : {}) }),
      rollback: (routeId, change) => rollbackRoute(control, routeId, { actor: change.actor, ...(change.reason ? { reason: change.reason } : {}) }),
      resume: (routeId, change) => resumeRoute(control, routeId, { actor: change.actor, ...(change.reason ? { reason: change.reason } : {}) }),
    },
  };
}
