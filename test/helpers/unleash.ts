/**
 * The Unleash an integration test talks to: the shared one from `npm test` (environment variables set by
 * test/helpers/shared-stack.ts), or, when the file runs alone, a private PostgreSQL + Unleash started here.
 * Always pair it with `after(() => unleash.stop())`; stop() is a no-op for the shared instance.
 * Tests isolate themselves by unique flag names (`uniqueFlag()`), never by resetting Unleash.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { UNLEASH_ENV, startSharedStack } from './shared-stack.ts';

export interface TestUnleash {
  /** Base URL, e.g. http://127.0.0.1:PORT */
  url: string;
  /** SDK URL (url + /api/). */
  apiUrl: string;
  adminToken: string;
  backendToken: string;
  environment: string;
  /** postgres:// URL of the `postgres` database on the server under Unleash. */
  postgresUrl: string;
  stop(): Promise<void>;
}

function fromEnv(env: NodeJS.ProcessEnv): Omit<TestUnleash, 'stop'> | undefined {
  const url = env[UNLEASH_ENV.url];
  const adminToken = env[UNLEASH_ENV.adminToken];
  const backendToken = env[UNLEASH_ENV.backendToken];
  const environment = env[UNLEASH_ENV.environment];
  const postgresUrl = env[UNLEASH_ENV.postgresUrl];
  if (!url || !adminToken || !backendToken || !environment || !postgresUrl) return undefined;
  return { url, apiUrl: `${url}/api/`, adminToken, backendToken, environment, postgresUrl };
}

export async function useTestUnleash(): Promise<TestUnleash> {
  const shared = fromEnv(process.env);
  if (shared) return { ...shared, stop: async () => {} };
  const stack = await startSharedStack();
  const own = fromEnv(stack.env);
  if (!own) throw new Error('test/helpers/unleash: startSharedStack() did not provide the Unleash variables');
  return { ...own, stop: () => stack.stop() };
}

/** A flag name no other test (or earlier run against the same server) uses. */
export function uniqueFlag(prefix = 'test'): string {
  return `strangler.${prefix}.${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

/** Creates a fresh database on the test PostgreSQL server and returns its URL. */
export async function createTestDatabase(postgresUrl: string, prefix = 'test'): Promise<string> {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`.toLowerCase();
  const client = new pg.Client({ connectionString: postgresUrl });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
  const url = new URL(postgresUrl);
  url.pathname = `/${name}`;
  return url.toString();
}
