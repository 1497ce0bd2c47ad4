import type { Logger } from '../common/logger.ts';
import type { LoadedConfig } from '../gateway/config/load.ts';
import { usageError } from '../cli/command.ts';

export async function runControllerCommand(_config: LoadedConfig, _log: Logger): Promise<number> {
  throw usageError('flags', 'controller is not built yet');
}
