/**
 * The sync roles read the same strangler config file as the gateway (gateway/config/load.ts: one parser, one
 * `${ENV}` expansion, one validator); these helpers only insist that it has a `sync` section.
 */
import { ConfigError, loadConfigFile, validateConfig, type LoadedConfig } from '../gateway/config/load.ts';
import type { KafkaConfig, SyncConfig } from './config-schema.ts';

export interface LoadedSyncConfig { sync: SyncConfig; kafka: KafkaConfig | undefined; file: string }

function requireSync(config: LoadedConfig): LoadedSyncConfig {
  if (!config.sync) {
    throw new ConfigError(config.source, [{ path: 'sync', expected: 'a sync section', found: 'nothing (missing)', hint: 'the sync commands need sync.databases and sync.tables; see migration-scripts/README.md' }]);
  }
  return { sync: config.sync, kafka: config.kafka, file: config.source };
}

/** Validates an already-parsed document. */
export function parseSyncConfig(doc: unknown, file = '(inline)', env: NodeJS.ProcessEnv = process.env): LoadedSyncConfig {
  return requireSync(validateConfig(doc, file, env));
}

export function loadSyncConfig(file: string, env: NodeJS.ProcessEnv = process.env): LoadedSyncConfig {
  return requireSync(loadConfigFile(file, env));
}
