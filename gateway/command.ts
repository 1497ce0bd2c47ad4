import cluster from 'node:cluster';
import type { Command } from '../cli/command.ts';
import { intOption, parseCommandArgs, usageError } from '../cli/command.ts';
import { flushLogger } from '../common/logger.ts';
import { loadConfigFile } from './config/load.ts';
import { gatewayLogger, startGateway } from './server.ts';
import { runPrimary, runWorker } from './cluster.ts';
import { logEvent } from './observability/log-events.ts';
import { trafficFromConfig } from './admin/traffic.ts';
import { controllerStateFromConfig } from './admin/controller-state.ts';
import { syncFromConfig } from './admin/sync.ts';

const HELP = `Usage: strangler gateway --config FILE [options]

Runs the gateway: the data plane (reverse proxy) and the control plane (admin API, dashboard, metrics).

Options:
  -c, --config FILE     strangler config (YAML or JSON); reloaded on change and on SIGHUP
      --workers N       data-plane processes (node:cluster); default proxy.workers from the config
      --port N          data-plane port (overrides proxy.port; 0 = any free port)
      --admin-port N    control-plane port (overrides admin.port; 0 = any free port)
  -h, --help            this help

Signals: SIGHUP reloads the config (a bad file keeps the last good one; see GET /admin/config);
SIGTERM/SIGINT drain in-flight requests (bounded by proxy.drainTimeoutMs) and exit 0.
When admin.token is not set and the control plane binds a loopback address, a token is generated for this run
and printed to stderr.`;

export const gatewayCommand: Command = {
  name: 'gateway',
  summary: 'Run the gateway (data plane + control plane) from a config file',
  help: HELP,
  async run(argv) {
    if (cluster.isWorker && process.env.STRANGLER_GATEWAY_WORKER === '1') {
      const file = process.env.STRANGLER_GATEWAY_CONFIG as string;
      const port = process.env.STRANGLER_GATEWAY_PORT;
      // A worker of the first start reads the file itself (one that cannot must report it and exit: the IPC channel
      // keeps it alive); a replacement asks the primary for its last good config instead.
      await runWorker(file, port === undefined ? undefined : Number(port), { fromPrimary: process.env.STRANGLER_GATEWAY_CONFIG_FROM_PRIMARY === '1' });
      return new Promise<number>(() => {}); // runs until the primary tells it to drain
    }
    const { values } = parseCommandArgs('gateway', argv, {
      config: { type: 'string', short: 'c' },
      workers: { type: 'string' },
      port: { type: 'string' },
      'admin-port': { type: 'string' },
    });
    if (!values.config) throw usageError('gateway', '--config FILE is required');
    const config = loadConfigFile(values.config);
    const workers = intOption('gateway', '--workers', values.workers) ?? config.proxy.workers;
    const log = gatewayLogger(config, 'gateway', workers <= 1);
    const port = intOption('gateway', '--port', values.port, { max: 65_535 });
    const adminPort = intOption('gateway', '--admin-port', values['admin-port'], { max: 65_535 });
    const printToken = (token: string) => process.stderr.write(`strangler gateway: admin.token is not set; this run's control-plane token is ${token}\n`);

    let stop: () => Promise<void>;
    if (workers > 1) {
      const primary = await runPrimary(values.config, workers, log, { ...(port === undefined ? {} : { port }), ...(adminPort === undefined ? {} : { port: port ?? config.proxy.port, adminPort }) });
      if (!config.admin.token) printToken(primary.admin.token);
      logEvent(log, 'gateway.started', { proxy: `http://127.0.0.1:${primary.proxyPort}`, admin: `http://127.0.0.1:${primary.admin.port}`, workers });
      stop = primary.stop;
    } else {
      const controller = controllerStateFromConfig(config);
      const sync = syncFromConfig(config);
      const gw = await startGateway(config, {
        log,
        ...(port === undefined ? {} : { port }),
        ...(adminPort === undefined ? {} : { adminPort }),
        ...trafficFromConfig(config, log),
        ...(controller.controllerState ? { controllerState: controller.controllerState } : {}),
        ...(sync.sync ? { sync: sync.sync } : {}),
      });
      if (gw.adminTokenGenerated) printToken(gw.adminToken);
      process.on('SIGHUP', () => gw.runtime.reloadFromFile());
      stop = async () => {
        await gw.close();
        await controller.close?.();
        await sync.close?.();
      };
    }
    return new Promise<number>((resolve) => {
      const shutdown = () => {
        process.off('SIGTERM', shutdown);
        process.off('SIGINT', shutdown);
        void stop()
          .then(() => 0, () => 1)
          .then(async (code) => {
            await flushLogger(log);
            resolve(code);
          });
      };
      process.on('SIGTERM', shutdown);
      process.on('SIGINT', shutdown);
    });
  },
};
