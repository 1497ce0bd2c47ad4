/**
 * Real parts that integration tests share, started once per `npm test` run and handed to test files through
 * environment variables. A test file run on its own (node --import tsx --test FILE) starts what it needs itself
 * through the same helpers (test/helpers/unleash.ts), so nothing depends on the runner.
 *
 * Started here: one embedded PostgreSQL (database `unleash` for Unleash; tests create their own databases on the
 * same server through STRANGLER_TEST_POSTGRES_URL) and one unleash-server with auth, tokens and a 0 % default
 * strategy. Tests isolate themselves by unique flag names, never by resetting Unleash.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres } from '../../devstack/postgres.ts';
import { startUnleash, type RunningUnleash } from '../../devstack/unleash/launcher.ts';
import { createLogger } from '../../common/logger.ts';

export interface SharedStack {
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** The environment variables through which test files find the shared Unleash (see test/helpers/unleash.ts). */
export const UNLEASH_ENV = {
  url: 'STRANGLER_TEST_UNLEASH_URL',
  adminToken: 'STRANGLER_TEST_UNLEASH_ADMIN_TOKEN',
  backendToken: 'STRANGLER_TEST_UNLEASH_BACKEND_TOKEN',
  environment: 'STRANGLER_TEST_UNLEASH_ENV',
  /** postgres:// URL of the `postgres` database on the shared server; tests create their own databases there. */
  postgresUrl: 'STRANGLER_TEST_POSTGRES_URL',
} as const;

export function unleashEnv(unleash: RunningUnleash, postgresUrl: string): Record<string, string> {
  return {
    [UNLEASH_ENV.url]: unleash.url,
    [UNLEASH_ENV.adminToken]: unleash.adminToken,
    [UNLEASH_ENV.backendToken]: unleash.backendToken,
    [UNLEASH_ENV.environment]: unleash.environment,
    [UNLEASH_ENV.postgresUrl]: postgresUrl,
  };
}

export async function startSharedStack(): Promise<SharedStack> {
  const started = performance.now();
  const dir = await mkdtemp(join(tmpdir(), 'strangler-test-stack-'));
  await chmod(dir, 0o755); // as root, PostgreSQL runs as the `postgres` user, which must reach its data folder
  const postgres = await startPostgres({ dataDir: join(dir, 'postgres'), databases: ['unleash'] });
  let unleash: RunningUnleash;
  try {
    // Its warnings, errors and an unexpected exit go to stderr: a shared server lost mid-run fails every later test
    // that needs it, and this is the only place that can say why.
    unleash = await startUnleash({ databaseUrl: postgres.url('unleash'), port: 0, log: createLogger({ level: 'warn', name: 'test-stack-unleash', destination: process.stderr }) });
  } catch (err) {
    await postgres.stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  console.error(`test stack: PostgreSQL + Unleash ${unleash.url} ready in ${Math.round(performance.now() - started)} ms`);
  return {
    env: unleashEnv(unleash, postgres.url('postgres')),
    stop: async () => {
      await unleash.stop();
      await postgres.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
