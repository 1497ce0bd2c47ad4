/**
 * `strangler flags controller --config FILE`: runs the promotion controller until SIGINT/SIGTERM.
 * State lives in controller.databaseUrl (PostgreSQL: several controllers may run, one is active) or in
 * controller.stateFile (one controller only).
 */
import type { Logger } from '../common/logger.ts';
import { StranglerError } from '../common/errors.ts';
import type { LoadedConfig } from '../gateway/config/load.ts';
import { createFlagsControl } from './control.ts';
import { PromotionController } from './controller.ts';
import { FileStateStore, PostgresStateStore, type StateStore } from './controller-state.ts';

export function stateStoreFor(config: LoadedConfig): StateStore {
  if (config.controller.databaseUrl) return new PostgresStateStore(config.controller.databaseUrl);
  if (config.controller.stateFile) return new FileStateStore(config.controller.stateFile);
  throw new StranglerError('FLAGS_NOT_CONFIGURED', `${config.source}: controller.databaseUrl or controller.stateFile must be set for the controller's state`);
}

export async function runControllerCommand(config: LoadedConfig, log: Logger): Promise<number> {
  const control = createFlagsControl(config, { log });
  const controller = new PromotionController({ control, store: stateStoreFor(config) });
  const routes = controller.routes().map((r) => r.routeId);
  if (routes.length === 0) log.warn({ config: config.source }, 'flags: no route has a guard or a plan; the controller has nothing to do');
  if (control.gateways.length === 0) log.warn({ config: config.source }, 'flags: flags.gateways is empty; the guard has no stats and never passes');
  process.stdout.write(`controller: watching ${routes.join(', ') || '(no routes)'} every ${config.controller.intervalMs} ms via ${control.gateways.length} gateway(s); state in ${config.controller.databaseUrl ? 'PostgreSQL' : config.controller.stateFile}\n`);
  controller.start(config.controller.intervalMs);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await controller.stop();
  return 0;
}
