/**
 * Starts a demo app (the legacy monolith or the extracted orders service) as a child process and waits for its
 * `{"port":N}` line: what `npm start` and the end-to-end tests use, since they stop it with SIGTERM or kill -9
 * mid-run and start it again on the same database.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Entry scripts, relative to the repository root. */
export const DEMO_APP_SCRIPTS = {
  legacy: 'devstack/demo/monolith/main.ts',
  service: 'services/example-orders/main.ts',
} as const;
export type DemoAppKind = keyof typeof DEMO_APP_SCRIPTS;

export interface SpawnDemoOptions {
  databaseUrl: string;
  /** 0 (default): any free port, read back from the child. */
  port?: number;
  host?: string;
  /** Monolith only: historical orders on a fresh database. */
  seedOrders?: number;
  noSeed?: boolean;
  /** Child's pino level (stderr). */
  logLevel?: string;
  /** Receives the child's stderr (its logs); default: dropped. */
  onStderr?: (chunk: string) => void;
  /** Give up waiting for the port line after this long (default 30 s). */
  startTimeoutMs?: number;
}

export interface DemoProcess {
  readonly kind: DemoAppKind;
  readonly child: ChildProcess;
  readonly port: number;
  readonly url: string;
  /** Resolves when the child has exited (immediately if it already has). */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (graceful: drain, close the pool, exit 0), then SIGKILL if it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** kill -9: what a crash looks like. */
  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function spawnDemoApp(kind: DemoAppKind, options: SpawnDemoOptions): Promise<DemoProcess> {
  const args = ['--import', 'tsx', join(root, DEMO_APP_SCRIPTS[kind]), '--port', String(options.port ?? 0), '--database-url', options.databaseUrl];
  if (options.host) args.push('--host', options.host);
  if (options.seedOrders !== undefined) args.push('--seed-orders', String(options.seedOrders));
  if (options.noSeed) args.push('--no-seed');
  if (options.logLevel) args.push('--log-level', options.logLevel);
  // The IPC channel carries nothing; the child exits when it closes, so it never outlives this process.
  const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  let stderrTail = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-4000);
    options.onStderr?.(chunk);
  });

  const exited = (): Promise<{ code: number | null; signal: NodeJS.Signals | null }> => {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
    return once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  };

  const lines = createInterface({ input: child.stdout! });
  let timer: NodeJS.Timeout | undefined;
  try {
    const port = await new Promise<number>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${DEMO_APP_SCRIPTS[kind]} printed no port within ${options.startTimeoutMs ?? 30_000} ms:\n${stderrTail}`)), options.startTimeoutMs ?? 30_000);
      child.once('exit', (code, signal) => reject(new Error(`${DEMO_APP_SCRIPTS[kind]} exited (${code ?? signal}) before printing its port:\n${stderrTail}`)));
      child.once('error', reject);
      lines.once('line', (line) => {
        try {
          const parsed = JSON.parse(line) as { port?: unknown };
          if (typeof parsed.port === 'number') resolve(parsed.port);
          else reject(new Error(`unexpected first stdout line from ${DEMO_APP_SCRIPTS[kind]}: ${line}`));
        } catch {
          reject(new Error(`unexpected first stdout line from ${DEMO_APP_SCRIPTS[kind]}: ${line}`));
        }
      });
    });
    const host = options.host && options.host !== '0.0.0.0' ? options.host : '127.0.0.1';
    return {
      kind,
      child,
      port,
      url: `http://${host}:${port}`,
      exited,
      async stop(graceMs = 10_000) {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
          const result = await exited();
          clearTimeout(killer);
          return result;
        }
        return exited();
      },
      async kill() {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        return exited();
      },
    };
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited();
    throw err;
  } finally {
    clearTimeout(timer);
    lines.close();
    child.stdout!.resume(); // nothing more is expected on stdout; keep the pipe drained anyway
  }
}
