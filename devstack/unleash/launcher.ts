/**
 * A real unleash-server 7.5.1 for development and tests: embedded PostgreSQL (or a given database URL), auth type
 * open-source, an admin API token, a backend (SDK) token for one environment, an admin user for the dashboard, and
 * the environment's default strategy set to flexibleRollout 0 % so that `/on` on an empty flag never creates a 100 %
 * rollout (unleash.md §8.6, §9).
 *
 * The server runs in a child process (server-process.ts): unleash-server installs process-wide hooks and keeps
 * timers, so running it in its own process is the only way to stop it, or kill it, cleanly.
 *
 * Unleash inserts start-up tokens only when its api_tokens table is empty. With a persistent dataDir the secrets are
 * therefore kept in `<dataDir>/unleash-secrets.json` and reused; with a databaseUrl whose database already holds other
 * tokens, pass the existing secrets (adminToken/backendToken) or start fails with UNLEASH_UNAUTHORIZED.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { StranglerError, messageOf } from '../../common/errors.ts';
import { silentLogger, type Logger } from '../../common/logger.ts';
import { writeFileAtomic } from '../../common/files.ts';
import { startPostgres, type RunningPostgres } from '../postgres.ts';
import { UNLEASH_LOG } from './log-events.ts';
import type { ChildMessage, ChildStartOptions } from './server-process.ts';

export interface StartUnleashOptions {
  /** Folder for the embedded PostgreSQL cluster (`<dataDir>/postgres`) and the kept secrets. One of dataDir/databaseUrl. */
  dataDir?: string;
  /** An existing PostgreSQL database for Unleash instead of the embedded one. */
  databaseUrl?: string;
  /** HTTP port; 0 (default) lets the server bind a free port. */
  port?: number;
  host?: string;
  /** `*:*.<secret>`; generated (and kept in dataDir) when omitted. */
  adminToken?: string;
  /** `<project|*>:<environment>.<secret>`; generated for `environment` when omitted. */
  backendToken?: string;
  /** Unleash environment the backend token reads and that gets the 0 % default strategy. Default `development`. */
  environment?: string;
  /** Dashboard login; generated (and kept in dataDir) when omitted. */
  adminUser?: { username: string; password: string };
  /** Level of unleash-server's own log lines that are forwarded (at debug, warn at warn). Default `warn`. */
  serverLogLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** How long to wait for the server to be healthy. Default 120 s (the first start runs all migrations). */
  startTimeoutMs?: number;
  log?: Logger;
  /**
   * Aborted when the caller is being stopped while it starts (the demo's Ctrl-C): the server dying then is expected,
   * not an error. A Ctrl-C to the terminal's process group can reach the server in the instant between its fork and
   * its own process group.
   */
  signal?: AbortSignal;
}

export interface RunningUnleash {
  /** Base URL, e.g. http://127.0.0.1:4242 (no trailing slash). */
  readonly url: string;
  /** SDK URL, e.g. http://127.0.0.1:4242/api/ */
  readonly apiUrl: string;
  readonly adminToken: string;
  readonly backendToken: string;
  readonly environment: string;
  readonly adminUser: { readonly username: string; readonly password: string };
  /** Milliseconds from the call to healthy and configured. */
  readonly startMs: number;
  /** Database the server uses (embedded or given). */
  readonly databaseUrl: string;
  /** Stops the server (graceful, then SIGKILL after 10 s) and the embedded PostgreSQL it started. */
  stop(): Promise<void>;
}

interface Secrets {
  adminToken: string;
  backendToken: string;
  adminUser: { username: string; password: string };
}

const CHILD = fileURLToPath(new URL('./server-process.ts', import.meta.url));
const ADMIN_TOKEN = /^\*:\*\.[A-Za-z0-9_-]+$/;
const BACKEND_TOKEN = /^([A-Za-z0-9_.-]+|\*):([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+$/;

function secret(): string {
  return randomBytes(24).toString('hex');
}

/** The environment a backend token reads: the part between ':' and '.'. */
export function tokenEnvironment(token: string): string | undefined {
  return BACKEND_TOKEN.exec(token)?.[2];
}

async function loadSecrets(file: string | undefined): Promise<Partial<Secrets>> {
  if (!file || !existsSync(file)) return {};
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Partial<Secrets>;
  } catch (err) {
    throw new StranglerError('CONFIG_UNREADABLE', `${file}: kept Unleash secrets are not valid JSON (${messageOf(err)}); delete the file only together with the database`, { cause: err });
  }
}

/** Mode 0600, through a temporary file no one can plant a symlink for (writeFileAtomic). */
async function saveSecrets(file: string, secrets: Secrets): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
}

function resolveSecrets(options: StartUnleashOptions, kept: Partial<Secrets>): Secrets {
  const environment = options.environment ?? (options.backendToken ? tokenEnvironment(options.backendToken) : undefined) ?? 'development';
  const adminToken = options.adminToken ?? kept.adminToken ?? `*:*.${secret()}`;
  let backendToken = options.backendToken ?? kept.backendToken;
  if (!backendToken || tokenEnvironment(backendToken) !== environment) backendToken = `*:${environment}.${secret()}`;
  if (!ADMIN_TOKEN.test(adminToken)) throw new StranglerError('CLI_USAGE', 'startUnleash: adminToken must look like "*:*.<secret>" (an all-projects, all-environments admin token)');
  if (tokenEnvironment(backendToken) !== environment) {
    throw new StranglerError('CLI_USAGE', `startUnleash: backendToken must look like "<project|*>:${environment}.<secret>" (its environment decides what the SDK reads)`);
  }
  const adminUser = options.adminUser ?? kept.adminUser ?? { username: 'admin', password: secret().slice(0, 20) };
  return { adminToken, backendToken, adminUser };
}

/** Starts PostgreSQL (unless databaseUrl is given) and unleash-server; resolves once /health answers and the tokens work. */
export async function startUnleash(options: StartUnleashOptions): Promise<RunningUnleash> {
  const started = performance.now();
  const log = options.log ?? silentLogger;
  if (!options.dataDir && !options.databaseUrl) throw new StranglerError('CLI_USAGE', 'startUnleash: give dataDir (embedded PostgreSQL) or databaseUrl');
  const host = options.host ?? '127.0.0.1';
  const secretsFile = options.dataDir ? join(options.dataDir, 'unleash-secrets.json') : undefined;
  if (options.dataDir) await mkdir(options.dataDir, { recursive: true });
  const secrets = resolveSecrets(options, await loadSecrets(secretsFile));
  const environment = tokenEnvironment(secrets.backendToken) ?? 'development';
  if (secretsFile) await saveSecrets(secretsFile, secrets);

  let postgres: RunningPostgres | undefined;
  let child: ChildProcess | undefined;
  /** Set once stop() (or a failed start) is ending the server: any exit before that is unexpected and logged as an error. */
  let stopping = false;
  const stopAll = async () => {
    stopping = true;
    if (child) await stopChild(child, log);
    child = undefined;
    if (postgres) await postgres.stop();
    postgres = undefined;
  };

  try {
    let databaseUrl = options.databaseUrl;
    if (!databaseUrl) {
      postgres = await startPostgres({ dataDir: join(options.dataDir!, 'postgres'), databases: ['unleash'], log });
      databaseUrl = postgres.url('unleash');
      log.debug({ port: postgres.port, ms: Math.round(performance.now() - started) }, UNLEASH_LOG.postgresStarted);
    }
    log.info({ environment, port: options.port ?? 0 }, UNLEASH_LOG.starting);
    // Its own process group (detached): a terminal's Ctrl-C signals the whole foreground group, and the server died of
    // it before we stopped it, logged as an unexpected exit. We stop it in our order; if we die, the lost IPC channel does.
    child = fork(CHILD, [], { execArgv: ['--no-deprecation', '--import', 'tsx'], stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: { ...process.env, NODE_ENV: 'production' }, detached: true });
    forwardOutput(child, log, () => stopping, () => options.signal?.aborted === true);
    const port = await waitListening(child, {
      databaseUrl,
      host,
      port: options.port ?? 0,
      adminToken: secrets.adminToken,
      backendToken: secrets.backendToken,
      adminUser: secrets.adminUser,
      logLevel: options.serverLogLevel ?? 'warn',
    }, options.startTimeoutMs ?? 120_000);
    const url = `http://${host}:${port}`;
    await waitHealthy(url, options.startTimeoutMs ?? 120_000);
    await checkTokens(url, secrets, environment);
    await setSafeDefaultStrategy(url, secrets.adminToken, environment);
    const startMs = Math.round(performance.now() - started);
    log.info({ url, environment, startMs }, UNLEASH_LOG.ready);
    const stop = async () => {
      log.info({ url }, UNLEASH_LOG.stopping);
      await stopAll();
      log.info({ url }, UNLEASH_LOG.stopped);
    };
    return {
      url,
      apiUrl: `${url}/api/`,
      adminToken: secrets.adminToken,
      backendToken: secrets.backendToken,
      environment,
      adminUser: secrets.adminUser,
      startMs,
      databaseUrl,
      stop,
    };
  } catch (err) {
    await stopAll().catch(() => {});
    throw err;
  }
}

/** How many of the server's last stderr lines an unexpected exit carries: enough for a Node fatal-error stack trace. */
const STDERR_TAIL_LINES = 30;

/**
 * Forwards the server's output and reports its exit: at debug when `stopping()`, else at error, since flags and the
 * dashboard stop working while the process that started it runs on. Unleash's own log lines arrive on stdout as JSON
 * (warn and above forwarded at warn). Anything on stderr is not Unleash's logger: it is what node prints when the
 * process dies (an uncaught exception's stack trace) or other unexpected output, so it is forwarded at warn, and the
 * exit error carries its last lines as `stderr`: the reason the server died, in the one line an operator reads.
 */
export function forwardOutput(child: Pick<ChildProcess, 'stdout' | 'stderr' | 'once' | 'pid'>, log: Logger, stopping: () => boolean, interrupted: () => boolean = () => false): void {
  const stderrTail: string[] = [];
  const closed: Promise<void>[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    const fromStderr = stream === child.stderr;
    const lines = createInterface({ input: stream });
    closed.push(once(lines, 'close').then(() => undefined));
    lines.on('line', (line) => {
      let parsed: { level?: string; category?: string; msg?: string } | undefined;
      try {
        parsed = JSON.parse(line) as { level?: string; category?: string; msg?: string };
      } catch {
        parsed = undefined;
      }
      if (fromStderr) {
        stderrTail.push(line);
        if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
      }
      const level = fromStderr || parsed?.level === 'warn' || parsed?.level === 'error' || parsed?.level === 'fatal' ? 'warn' : 'debug';
      log[level]({ unleash: parsed?.msg ?? line, category: parsed?.category }, UNLEASH_LOG.childOutput);
    });
  }
  child.once('exit', (code, signal) => {
    if (stopping()) {
      log.debug({ code, signal }, UNLEASH_LOG.childExited);
      return;
    }
    // 'exit' can come before the last output is read: wait for the pipes to close (bounded) so the reason is in the line.
    const pipesClosed = Promise.all(closed);
    void Promise.race([pipesClosed, delay(1_000, undefined, { ref: false })]).then(() => {
      // Asked when the line is written, not at the exit: the caller's own signal handler may run just after the exit.
      if (interrupted()) return log.debug({ code, signal }, UNLEASH_LOG.childExited);
      log.error({ code, signal, serverPid: child.pid, ...(stderrTail.length > 0 ? { stderr: stderrTail.join('\n') } : {}) }, UNLEASH_LOG.childExitedUnexpectedly);
    });
  });
}

/** Sends the server its start options; resolves with its port once it listens. Exported for tests. */
export async function waitListening(child: ChildProcess, options: ChildStartOptions, timeoutMs: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => done(new StranglerError('UNLEASH_UNREACHABLE', `unleash-server did not start listening within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (message: ChildMessage) => {
      if (message.type === 'listening') done(undefined, message.port);
      else done(new StranglerError('UNLEASH_BAD_RESPONSE', `unleash-server failed to start: ${message.message}`));
    };
    const onExit = (code: number | null, signal: string | null) =>
      done(new StranglerError('UNLEASH_UNREACHABLE', `unleash-server process exited before listening (code ${code}, signal ${signal}); run with STRANGLER_LOG_LEVEL=debug to see its output`));
    function done(err: Error | undefined, port?: number) {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(port!);
    }
    child.on('message', onMessage);
    child.once('exit', onExit);
    // With a callback, a server already gone (EPIPE, a closed channel) is this start's error, not an uncaught 'error' event.
    child.send({ type: 'start', options }, (err) => {
      if (err) done(new StranglerError('UNLEASH_UNREACHABLE', `could not send unleash-server its start options (${err.message}): the process is gone; run with STRANGLER_LOG_LEVEL=debug to see its output`));
    });
  });
}

async function waitHealthy(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = messageOf(err);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new StranglerError('UNLEASH_UNREACHABLE', `GET ${url}/health did not answer 200 within ${timeoutMs} ms (last: ${last})`);
}

async function checkTokens(url: string, secrets: Secrets, environment: string): Promise<void> {
  const admin = await fetch(`${url}/api/admin/projects/default/features`, { headers: { Authorization: secrets.adminToken } });
  if (admin.status === 401 || admin.status === 403) {
    throw new StranglerError('UNLEASH_UNAUTHORIZED', 'GET /api/admin/projects/default/features refused the admin token: the database already held API tokens, so Unleash skipped the start-up tokens. Pass the existing adminToken/backendToken or use a fresh database.');
  }
  if (!admin.ok) throw new StranglerError('UNLEASH_BAD_RESPONSE', `GET /api/admin/projects/default/features answered HTTP ${admin.status}`);
  const client = await fetch(`${url}/api/client/features`, { headers: { Authorization: secrets.backendToken } });
  if (client.status === 401 || client.status === 403) {
    throw new StranglerError('UNLEASH_UNAUTHORIZED', 'GET /api/client/features refused the backend token: the database already held API tokens, so Unleash skipped the start-up tokens. Pass the existing backendToken or use a fresh database.');
  }
  const body = (await client.json()) as { query?: { environment?: string } };
  if (body.query?.environment !== environment) {
    throw new StranglerError('UNLEASH_BAD_RESPONSE', `GET /api/client/features with the backend token reads environment "${body.query?.environment}", expected "${environment}"`);
  }
}

/** POST …/environments/<env>/default-strategy: flexibleRollout 0 %, so `/on` on an empty flag stays at 0 % (unleash.md §8.6). */
async function setSafeDefaultStrategy(url: string, adminToken: string, environment: string): Promise<void> {
  const path = `/api/admin/projects/default/environments/${encodeURIComponent(environment)}/default-strategy`;
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { Authorization: adminToken, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'flexibleRollout', constraints: [], parameters: { rollout: '0', stickiness: 'default', groupId: '' } }),
  });
  if (res.status === 404) throw new StranglerError('UNLEASH_NOT_FOUND', `POST ${path}: environment "${environment}" does not exist in project default`);
  if (!res.ok) throw new StranglerError('UNLEASH_BAD_RESPONSE', `POST ${path} answered HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
}

async function stopChild(child: ChildProcess, log: Logger): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  if (child.connected) child.send({ type: 'stop' }, (err) => err && child.kill('SIGTERM'));
  else child.kill('SIGTERM');
  const timer = setTimeout(() => {
    log.warn({ serverPid: child.pid }, UNLEASH_LOG.killed);
    child.kill('SIGKILL');
  }, 10_000);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}
