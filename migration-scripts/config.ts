/**
 * Reads the `sync:` and `kafka:` sections from strangler's config file (YAML or JSON), expanding `${ENV}` and
 * `${ENV:-default}` in strings, and validates them with the schemas in config-schema.ts.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { StranglerError } from '../common/errors.ts';
import { kafkaConfigSchema, syncConfigSchema, type KafkaConfig, type SyncConfig } from './config-schema.ts';

export interface LoadedSyncConfig { sync: SyncConfig; kafka: KafkaConfig | undefined; file: string }

function expand(value: unknown, path: string, env: NodeJS.ProcessEnv, problems: string[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback: string | undefined) => {
      const v = env[name] ?? fallback;
      if (v === undefined) { problems.push(`${path}: expected environment variable ${name} to be set, found unset`); return ''; }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expand(v, `${path}[${i}]`, env, problems));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expand(v, path ? `${path}.${k}` : k, env, problems)]));
  return value;
}

/** Validates an already-parsed document (`{ sync, kafka? }`). */
export function parseSyncConfig(doc: unknown, file = '(inline)', env: NodeJS.ProcessEnv = process.env): LoadedSyncConfig {
  const problems: string[] = [];
  const root = expand(doc, '', env, problems) as { sync?: unknown; kafka?: unknown } | null;
  if (!root || typeof root !== 'object' || root.sync === undefined) problems.push('sync: expected a sync section, found none');
  const sync = syncConfigSchema.safeParse(root?.sync);
  if (root?.sync !== undefined && !sync.success) for (const i of sync.error.issues) problems.push(`sync.${i.path.join('.')}: ${i.message}`);
  const kafka = root?.kafka === undefined ? undefined : kafkaConfigSchema.safeParse(root.kafka);
  if (kafka && !kafka.success) for (const i of kafka.error.issues) problems.push(`kafka.${i.path.join('.')}: ${i.message}`);
  if (problems.length > 0 || !sync.success) {
    throw new StranglerError('CONFIG_INVALID', `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${problems.map((p) => `  - ${p}`).join('\n')}`, { details: { file, problems } });
  }
  return { sync: sync.data, kafka: kafka?.success ? kafka.data : undefined, file };
}

export function loadSyncConfig(file: string, env: NodeJS.ProcessEnv = process.env): LoadedSyncConfig {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch (err) {
    throw new StranglerError('CONFIG_UNREADABLE', `${file}: cannot read the config file (${(err as Error).message})`, { cause: err });
  }
  let doc: unknown;
  try { doc = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text); } catch (err) {
    throw new StranglerError('CONFIG_UNREADABLE', `${file}: cannot parse (${(err as Error).message.split('\n')[0]})`, { cause: err });
  }
  return parseSyncConfig(doc, file, env);
}
