/**
 * Runs a demo app as its own process, the form the demo and the end-to-end tests use (they kill -9 it mid-way):
 *
 *   node --import tsx services/example-orders/main.ts --port 0 --database-url postgres://…
 *
 * migrate → seed (unless --no-seed) → listen → print one JSON line `{"port":N}` on stdout. Logs go to stderr so
 * stdout carries only that line. SIGTERM/SIGINT close gracefully (drain, close the pool) and exit 0.
 */
import { parseArgs } from 'node:util';
import { createLogger } from '../../common/logger.ts';
import type { Logger } from '../../common/logger.ts';
import type { DemoApp, DemoAppOptions } from './http.ts';
import { ORDERS_LOG } from './log-events.ts';

export interface DemoProcessSpec {
  name: string;
  /** Lines describing options beyond the common ones. */
  extraHelp?: string;
  /** Builds the app; `seedOrders` is the parsed --seed-orders value when given. */
  create(options: DemoAppOptions & { seedOrders?: number }): DemoApp;
}

const COMMON_HELP = `Options:
  --port N              port to listen on (default 0: any free port; the bound port is printed as {"port":N})
  --host H              address to bind (default 127.0.0.1)
  --database-url URL    postgres:// URL of this app's own database (default: $DATABASE_URL)
  --no-seed             do not write seed data on start
  --query-timeout-ms N  bound on one database statement; longer answers 503 (default 5000; 0: unbounded)
  --log-level L         pino level for stderr logs (default: $STRANGLER_LOG_LEVEL or info)
  -h, --help            this text`;

export async function runDemoProcess(spec: DemoProcessSpec, argv: readonly string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        port: { type: 'string', default: '0' },
        host: { type: 'string', default: '127.0.0.1' },
        'database-url': { type: 'string' },
        'no-seed': { type: 'boolean', default: false },
        'seed-orders': { type: 'string' },
        'query-timeout-ms': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    return fail(spec.name, `${(err as Error).message}; run with --help`);
  }
  if (values.help) {
    process.stdout.write(`Usage: node --import tsx ${spec.name} [options]\n\n${COMMON_HELP}\n${spec.extraHelp ?? ''}`);
    return;
  }
  const databaseUrl = values['database-url'] ?? process.env.DATABASE_URL;
  if (!databaseUrl) return fail(spec.name, '--database-url (or $DATABASE_URL) is required');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return fail(spec.name, `--port must be an integer 0..65535, got ${JSON.stringify(values.port)}`);
  const seedOrders = values['seed-orders'] === undefined ? undefined : Number(values['seed-orders']);
  if (seedOrders !== undefined && (!Number.isInteger(seedOrders) || seedOrders < 0)) return fail(spec.name, `--seed-orders must be a non-negative integer`);

  const queryTimeoutMs = values['query-timeout-ms'] === undefined ? undefined : Number(values['query-timeout-ms']);
  if (queryTimeoutMs !== undefined && (!Number.isInteger(queryTimeoutMs) || queryTimeoutMs < 0)) return fail(spec.name, `--query-timeout-ms must be a non-negative integer, got ${JSON.stringify(values['query-timeout-ms'])}`);

  const log: Logger = createLogger({ name: spec.name, destination: process.stderr, ...(values['log-level'] ? { level: values['log-level'] } : {}) });
  const app = spec.create({ databaseUrl, log, ...(seedOrders !== undefined ? { seedOrders } : {}), ...(queryTimeoutMs !== undefined ? { queryTimeoutMs } : {}) });
  const shutdown = (signal: string) => {
    log.info({ signal }, ORDERS_LOG.signal);
    app.close().then(() => process.exit(0), (err: unknown) => {
      log.error({ err }, ORDERS_LOG.closed);
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  // Started by spawnDemoApp (npm start, tests) with an IPC channel: it closes when that parent dies, even by kill -9,
  // so the app does not outlive it holding its port and database connections.
  const orphaned = () => shutdown('parent exited');
  if (process.connected) process.once('disconnect', orphaned);
  try {
    await app.migrate();
    if (!values['no-seed']) await app.seed();
    const bound = await app.listen(port, values.host);
    process.stdout.write(`${JSON.stringify({ port: bound })}\n`);
  } catch (err) {
    log.error({ err }, `${spec.name}: failed to start`);
    await app.close().catch(() => {});
    // The channel's 'disconnect' listener would keep this failed process alive.
    process.off('disconnect', orphaned);
    if (process.connected) process.disconnect();
    return fail(spec.name, (err as Error).message);
  }
}

function fail(name: string, message: string): void {
  console.error(`${name}: ${message}`);
  process.exitCode = 1;
}
