/**
 * The whole demo on one machine, for `npm start` and the end-to-end test:
 *
 *   embedded PostgreSQL (databases: legacy_shop, orders_service, unleash)
 *   unleash-server (auth on; admin token, backend token and a login kept in the data folder)
 *   dev Kafka broker
 *   demo monolith (legacy) and the extracted orders service, as child processes
 *   capture on both databases, a relay per side, an apply worker per direction, backfill of existing orders
 *   flags as code (strangler.orders at 0 %)
 *   the gateway: data plane, control plane, migration dashboard
 *
 * Everything persists in the data folder between runs unless `fresh` is set. A strangler config describing all of
 * it is written to <dataDir>/strangler.yaml so the CLI (flags shift/rollback, sync verify) works against the demo.
 */
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import type { Logger } from '../../common/logger.ts';
import { assertPortFree } from '../../common/net.ts';
import { startPostgres, type RunningPostgres } from '../postgres.ts';
import { startUnleash, type RunningUnleash } from '../unleash/launcher.ts';
import { startKafkaBroker, type KafkaBroker } from '../kafka/index.ts';
import { spawnDemoApp, type DemoProcess } from './monolith/spawn.ts';
import { loadConfigFile, type LoadedConfig } from '../../gateway/config/load.ts';
import { startGateway, type RunningGateway } from '../../gateway/server.ts';
import { trafficFromConfig } from '../../gateway/admin/traffic.ts';
import { createFlagsControl } from '../../flags/control.ts';
import { syncFlags } from '../../flags/sync.ts';
import { startSyncWorkers, type RunningSync } from './sync-workers.ts';

export interface DemoPorts {
  proxy: number;
  admin: number;
  unleash: number;
  kafka: number;
}

export interface DemoOptions {
  dataDir: string;
  ports: DemoPorts;
  fresh?: boolean;
  log: Logger;
  /** Called with each step's name as it completes, for a start-up progress line. */
  onStep?: (step: string, ms: number) => void;
  /**
   * Aborting it (Ctrl-C while starting) ends the start after the step under way: everything started so far is
   * stopped and startDemo rejects with the signal's reason.
   */
  signal?: AbortSignal;
}

export interface RunningDemo {
  readonly configFile: string;
  readonly config: LoadedConfig;
  readonly postgres: RunningPostgres;
  readonly unleash: RunningUnleash;
  readonly kafka: KafkaBroker;
  readonly monolith: DemoProcess;
  /** Replaced when the service is restarted (restartService). */
  service: DemoProcess;
  readonly sync: RunningSync;
  readonly gateway: RunningGateway;
  readonly adminToken: string;
  readonly startMs: number;
  /** Starts the orders service again (after a kill in the end-to-end story) on the same port. */
  restartService(): Promise<DemoProcess>;
  stop(): Promise<void>;
}

interface Secrets {
  adminToken: string;
  unleashAdminToken: string;
  unleashBackendToken: string;
  unleashUser: { username: string; password: string };
  sessionSecret: string;
  overrideSecret: string;
}

const PORT_HINTS: Record<keyof DemoPorts, string> = {
  proxy: 'the gateway data plane wants it; pass --proxy-port N or set STRANGLER_PROXY_PORT',
  admin: 'the control plane and dashboard want it; pass --admin-port N or set STRANGLER_ADMIN_PORT',
  unleash: 'Unleash wants it; pass --unleash-port N or set STRANGLER_UNLEASH_PORT',
  kafka: 'the dev Kafka broker wants it; pass --kafka-port N or set STRANGLER_KAFKA_PORT',
};

async function secrets(dataDir: string): Promise<Secrets> {
  const file = join(dataDir, 'secrets.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Secrets;
  const hex = () => randomBytes(20).toString('hex');
  const s: Secrets = {
    adminToken: hex(),
    unleashAdminToken: `*:*.${hex()}`,
    unleashBackendToken: `*:development.${hex()}`,
    unleashUser: { username: 'admin', password: randomBytes(9).toString('base64url') },
    sessionSecret: hex(),
    overrideSecret: hex(),
  };
  await writeFile(file, JSON.stringify(s, null, 2), { mode: 0o600 });
  return s;
}

/** The demo's strangler config: what an operator would write for this deployment. */
function demoConfig(p: { monolithUrl: string; serviceUrl: string; unleash: RunningUnleash; kafka: string; legacyDb: string; serviceDb: string; ports: DemoPorts; s: Secrets; dataDir: string }): Record<string, unknown> {
  return {
    upstreams: [
      { id: 'monolith', url: p.monolithUrl, timeoutMs: 5000, healthPath: '/healthz' },
      { id: 'orders-service', url: p.serviceUrl, timeoutMs: 2000, connectTimeoutMs: 500, healthPath: '/healthz' },
    ],
    routes: [
      {
        id: 'orders',
        match: { pathPrefix: '/api/orders' },
        legacy: 'monolith',
        service: 'orders-service',
        flag: { name: 'strangler.orders', initialPercent: 0 },
        breaker: 'orders',
        guard: { enabled: true, windowMs: 60000, minRequests: 50, maxErrorRateIncrease: 0.05, maxP99Ratio: 3, action: 'rollback' },
      },
      { id: 'monolith', match: { pathPrefix: '/' }, legacy: 'monolith' },
    ],
    policies: {
      breakers: { orders: { timeoutMs: 2000, errorThresholdPercentage: 50, volumeThreshold: 10, resetTimeoutMs: 3000 } },
      fallbacks: { default: { maxReplayBodyBytes: 1048576, onBodyTooLarge: 'forward' } },
    },
    identity: { userKey: [{ header: 'x-user-id' }, { cookie: 'uid' }], sessionSecret: p.s.sessionSecret, override: { secret: p.s.overrideSecret } },
    flags: {
      url: p.unleash.apiUrl,
      token: p.unleash.backendToken,
      adminUrl: p.unleash.url,
      adminToken: p.unleash.adminToken,
      environment: p.unleash.environment,
      refreshIntervalMs: 1000,
      backupPath: join(p.dataDir, 'flags'),
      // shift/rollback from the CLI push a refresh here, so the change applies at once
      gateways: [{ url: `http://127.0.0.1:${p.ports.admin}`, token: p.s.adminToken }],
    },
    proxy: { bind: '127.0.0.1', port: p.ports.proxy },
    admin: { bind: '127.0.0.1', port: p.ports.admin, token: p.s.adminToken },
    controller: { databaseUrl: p.legacyDb },
    log: { level: 'warn' },
    kafka: { brokers: [p.kafka], clientId: 'strangler-demo' },
    sync: {
      databases: { legacy: { url: p.legacyDb }, service: { url: p.serviceDb } },
      ownership: { default: 'legacy' },
      tables: [
        {
          name: 'orders',
          legacy: { table: 'orders', key: ['id'] },
          service: { table: 'order_records', key: ['order_id'] },
          columns: [
            { legacy: 'id', service: 'order_id' },
            { legacy: 'customer_id', service: 'buyer_id' },
            { legacy: 'status', service: 'state', codec: 'value-map', values: { pending: 'PENDING', paid: 'PAID', shipped: 'SHIPPED', delivered: 'DELIVERED', cancelled: 'CANCELED' } },
            { legacy: 'total_cents', service: 'amount', codec: 'cents-to-decimal' },
            { legacy: 'currency', service: 'currency_code' },
            { legacy: 'items', service: 'line_items' },
            { legacy: 'notes', service: 'note' },
            { legacy: 'created_at', service: 'placed_at' },
            { legacy: 'updated_at', service: 'modified_at' },
          ],
        },
      ],
    },
  };
}

/**
 * Awaits two parts started side by side, each resolving to [part, stop]. Every part that started is registered in
 * `stops` before the first failure is rethrown, so the caller's cleanup stops it too.
 */
async function started2<A, B>(stops: (() => Promise<unknown>)[], parts: [Promise<readonly [A, () => Promise<unknown>]>, Promise<readonly [B, () => Promise<unknown>]>]): Promise<[A, B]> {
  const [a, b] = await Promise.allSettled(parts);
  for (const r of [a, b]) if (r.status === 'fulfilled') stops.push(r.value[1]);
  if (a.status === 'rejected') throw a.reason;
  if (b.status === 'rejected') throw b.reason;
  return [a.value[0], b.value[0]];
}

export async function startDemo(options: DemoOptions): Promise<RunningDemo> {
  const started = performance.now();
  let last = started;
  const step = (name: string) => {
    const now = performance.now();
    options.onStep?.(name, Math.round(now - last));
    last = now;
    options.signal?.throwIfAborted(); // inside the try below: what started so far is stopped
  };
  const dataDir = resolve(options.dataDir);
  if (options.fresh) await rm(dataDir, { recursive: true, force: true });
  await mkdir(dataDir, { recursive: true });
  await chmod(dataDir, 0o755); // as root, PostgreSQL runs as `postgres` and must reach its folder
  for (const [name, port] of Object.entries(options.ports) as [keyof DemoPorts, number][]) await assertPortFree('127.0.0.1', port, PORT_HINTS[name]);
  const s = await secrets(dataDir);

  const stops: (() => Promise<unknown>)[] = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => options.log.warn({ err: String(err) }, 'demo.stop_failed'));
  };
  try {
    const postgres = await startPostgres({ dataDir: join(dataDir, 'postgres'), databases: ['legacy_shop', 'orders_service', 'unleash'], log: options.log });
    stops.push(() => postgres.stop());
    step('postgres');

    // Started side by side; when one fails, the other is still stopped (stopAll) instead of left running.
    const [unleash, kafka] = await started2(stops, [
      startUnleash({ databaseUrl: postgres.url('unleash'), port: options.ports.unleash, adminToken: s.unleashAdminToken, backendToken: s.unleashBackendToken, adminUser: s.unleashUser, log: options.log, ...(options.signal ? { signal: options.signal } : {}) }).then((u) => [u, () => u.stop()] as const),
      startKafkaBroker({ host: '127.0.0.1', port: options.ports.kafka, dataDir: join(dataDir, 'kafka'), logger: options.log }).then((k) => [k, () => k.close()] as const),
    ]);
    step('unleash + kafka');

    const legacyDb = postgres.url('legacy_shop');
    const serviceDb = postgres.url('orders_service');
    let service!: DemoProcess; // replaced by restartService; stopAll stops the current one
    const [monolith, firstService] = await started2(stops, [
      spawnDemoApp('legacy', { databaseUrl: legacyDb, logLevel: 'warn' }).then((m) => [m, () => m.stop()] as const),
      spawnDemoApp('service', { databaseUrl: serviceDb, logLevel: 'warn' }).then((m) => [m, () => service.stop()] as const),
    ]);
    service = firstService;
    step('monolith + orders service');

    const configFile = join(dataDir, 'strangler.yaml');
    const raw = demoConfig({ monolithUrl: monolith.url, serviceUrl: service.url, unleash, kafka: kafka.address, legacyDb, serviceDb, ports: options.ports, s, dataDir });
    await writeFile(configFile, `# Written by \`strangler start\`; describes this demo deployment.\n${stringify(raw)}`, { mode: 0o600 });
    const config = loadConfigFile(configFile);

    await syncFlags(createFlagsControl(config, { log: options.log }), {});
    step('flags as code');

    const sync = await startSyncWorkers({ configFile, log: options.log, backfill: ['orders'] });
    stops.push(() => sync.stop());
    step('capture, relays, apply workers, backfill');

    const gateway = await startGateway(config, { log: options.log, watch: false, ...trafficFromConfig(config, options.log), sync: () => sync.status() });
    stops.push(() => gateway.close());
    step('gateway');

    const demo: RunningDemo = {
      configFile,
      config,
      postgres,
      unleash,
      kafka,
      monolith,
      service,
      sync,
      gateway,
      adminToken: s.adminToken,
      startMs: Math.round(performance.now() - started),
      restartService: async () => {
        service = await spawnDemoApp('service', { databaseUrl: serviceDb, logLevel: 'warn', port: new URL(firstService.url).port ? Number(new URL(firstService.url).port) : 0 });
        demo.service = service;
        return service;
      },
      stop: stopAll,
    };
    return demo;
  } catch (err) {
    await stopAll();
    throw err;
  }
}
