/**
 * Real parts for the sync integration tests: embedded PostgreSQL (restartable on the same port and data), the dev
 * Kafka broker (restartable likewise), a config file for the pair, and relay/apply workers as child processes
 * (`strangler sync relay|apply`) that can be killed with SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgres, type RunningPostgres } from '../../../devstack/postgres.ts';
import { startKafkaBroker, type KafkaBroker } from '../../../devstack/kafka/index.ts';
import { LEGACY_DDL, LOGICAL_SERVER_FLAGS, SERVICE_DDL, syncDoc } from '../../unit/sync/fixture.ts';
import { parseSyncConfig, type LoadedSyncConfig } from '../../../migration-scripts/config.ts';
import { openPools, closePools, type Pools } from '../../../migration-scripts/db.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export { waitFor } from '../../helpers/wait.ts';

export class SyncStack {
  readonly dir = mkdtempSync(join(tmpdir(), 'strangler-sync-it-'));
  pg!: RunningPostgres;
  broker!: KafkaBroker;
  #pgPort = 0;
  #brokerPort = 0;
  readonly #pools: Pools[] = [];

  async start(): Promise<void> {
    chmodSync(this.dir, 0o755); // PostgreSQL runs as its own user when we are root
    this.pg = await startPostgres({ dataDir: join(this.dir, 'pg'), serverFlags: LOGICAL_SERVER_FLAGS });
    this.#pgPort = this.pg.port;
    this.broker = await startKafkaBroker({ host: '127.0.0.1', port: 0, dataDir: join(this.dir, 'kafka'), groupMinSessionTimeoutMs: 200, initialRebalanceDelayMs: 0 });
    this.#brokerPort = this.broker.port;
  }
  get brokerAddress(): string { return `127.0.0.1:${this.#brokerPort}`; }
  /**
   * `downMs`: how long the broker stays down (e.g. longer than the clients' retries); `coordinatorLoadMs`: how long
   * after it is back FindCoordinator answers COORDINATOR_NOT_AVAILABLE, as a restarted Kafka does while loading.
   */
  async restartBroker({ downMs = 0, coordinatorLoadMs = 0 } = {}): Promise<void> {
    await this.broker.close();
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    this.broker = await startKafkaBroker({ host: '127.0.0.1', port: this.#brokerPort, dataDir: join(this.dir, 'kafka'), groupMinSessionTimeoutMs: 200, initialRebalanceDelayMs: 0, coordinatorLoadMs });
  }
  /** `downMs`: how long the server stays down (the fault's duration, e.g. a failover longer than the retries). */
  async restartPostgres(downMs = 0): Promise<void> {
    await this.pg.stop();
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    this.pg = await startPostgres({ dataDir: join(this.dir, 'pg'), port: this.#pgPort, serverFlags: LOGICAL_SERVER_FLAGS });
  }
  /** A fresh legacy/service database pair with the test schema, its config (also written to a file) and pools. */
  async pair(name: string, overrides: Record<string, unknown> = {}): Promise<{ loaded: LoadedSyncConfig; file: string; pools: Pools }> {
    await this.pg.createDatabase(`${name}_legacy`);
    await this.pg.createDatabase(`${name}_service`);
    const doc = { ...syncDoc({ legacy: this.pg.url(`${name}_legacy`), service: this.pg.url(`${name}_service`) }, { topics: { pattern: `${name}.{side}.{table}`, partitions: 2 }, ...overrides }), kafka: { brokers: [this.brokerAddress], clientId: name } };
    const file = join(this.dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(doc, null, 2));
    const loaded = parseSyncConfig(doc, file);
    const pools = openPools(loaded.sync);
    this.#pools.push(pools);
    await pools.legacy.query(LEGACY_DDL);
    await pools.service.query(SERVICE_DDL);
    return { loaded, file, pools };
  }
  async stop(): Promise<void> {
    for (const p of this.#pools) await closePools(p).catch(() => {});
    await this.broker?.close().catch(() => {});
    await this.pg?.stop().catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A `strangler sync ...` child process; kill() is SIGKILL. */
export class Worker {
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  /** Set while kill() or stop() ends the process: any other exit is the worker's own. */
  #ending = false;
  stderr = '';
  /**
   * Exits the worker made by itself (not by kill() or stop()), with its code and the end of its output then: a worker
   * that gives up on a transient fault. A test that restarts workers must check this, or the restart hides it.
   */
  readonly selfExits: string[] = [];
  /** How the last run ended: its exit code, or the signal that ended it. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  constructor(readonly name: string, readonly args: string[], readonly env: Record<string, string> = {}) {}
  start(): void {
    this.#ending = false;
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cli/main.ts'), 'sync', ...this.args], {
      cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, STRANGLER_LOG_LEVEL: 'warn', STRANGLER_SYNC_SESSION_TIMEOUT_MS: '1000', ...this.env },
    });
    // The output of every run is kept in one buffer; a marker tells a failure report's runs apart.
    this.stderr = `${this.stderr}--- started at ${new Date().toISOString()} ---\n`.slice(-4000);
    const keep = (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-4000); };
    child.stderr?.on('data', keep);
    child.stdout?.on('data', keep);
    this.exit = undefined;
    this.#exited = new Promise((r) => child.once('exit', (code, signal) => {
      this.exit = { code, signal };
      if (!this.#ending) this.selfExits.push(`exit ${code ?? signal} at ${new Date().toISOString()}: ${this.stderr.slice(-1500)}`);
      r();
    }));
    this.#child = child;
  }
  async kill(): Promise<void> {
    const c = this.#child;
    this.#ending = true;
    if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await this.#exited;
  }
  async stop(): Promise<void> {
    const c = this.#child;
    this.#ending = true;
    if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    const timer = setTimeout(() => c?.kill('SIGKILL'), 5_000);
    await this.#exited;
    clearTimeout(timer);
  }
}

/**
 * A TCP proxy that can partition the network without refusing anything: while partitioned, bytes in both directions
 * are dropped and new connections are accepted but never reach the server, so a client sees a connection that hangs
 * (as behind a firewall or a NAT that lost its state, or after a failover to another host). Healing forwards new
 * connections again; connections from before the partition stay dead, as they would after a failover.
 */
export class PartitionProxy {
  readonly #server = createServer((client) => this.#accept(client));
  readonly #sockets = new Set<Socket>();
  #partitioned = false;
  #dead = new WeakSet<Socket>();
  port = 0;
  constructor(readonly targetPort: number) {}
  async start(): Promise<void> {
    await new Promise<void>((res) => this.#server.listen(0, '127.0.0.1', res));
    this.port = (this.#server.address() as AddressInfo).port;
  }
  #accept(client: Socket): void {
    this.#sockets.add(client);
    client.on('close', () => this.#sockets.delete(client));
    client.on('error', () => {});
    if (this.#partitioned) { this.#dead.add(client); client.on('data', () => {}); return; }
    const upstream = connect(this.targetPort, '127.0.0.1');
    this.#sockets.add(upstream);
    upstream.on('close', () => { this.#sockets.delete(upstream); client.destroy(); });
    upstream.on('error', () => {});
    client.on('close', () => upstream.destroy());
    client.on('data', (d) => { if (!this.#dead.has(client)) upstream.write(d); });
    upstream.on('data', (d) => { if (!this.#dead.has(client)) client.write(d); });
  }
  /** From now on nothing gets through, and nothing is refused or reset. */
  partition(): void {
    this.#partitioned = true;
    for (const s of this.#sockets) this.#dead.add(s);
  }
  heal(): void { this.#partitioned = false; }
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((res) => this.#server.close(() => res()));
  }
}
