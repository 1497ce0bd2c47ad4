import type { Command } from '../../cli/command.ts';
import { intOption, logLevelOption, parseCommandArgs } from '../../cli/command.ts';
import { createLogger } from '../../common/logger.ts';
import { startDemo, type DemoPorts, type RunningDemo } from './stack.ts';

const HELP = `Usage: strangler start [options]        (npm start)

Runs the whole demo on embedded defaults: PostgreSQL, a real Unleash server with its UI, the dev Kafka broker,
the demo monolith, the extracted orders service, two-way data sync, and the gateway with its dashboard.
The orders routes start at 0 %. Ctrl-C stops everything; data stays in the data folder between runs.

Options (each also settable through the environment variable shown):
      --data-dir DIR      where everything persists (STRANGLER_DATA_DIR, default .data/demo)
      --fresh             wipe the data folder first
      --proxy-port N      gateway data plane (STRANGLER_PROXY_PORT, default 8080)
      --admin-port N      control plane and dashboard (STRANGLER_ADMIN_PORT, default 9901)
      --unleash-port N    Unleash UI and API (STRANGLER_UNLEASH_PORT, default 4242)
      --kafka-port N      dev Kafka broker (STRANGLER_KAFKA_PORT, default 9092)
      --log-level LEVEL   pino level for this process (default warn)`;

/** A port from its flag, else its environment variable, else the default. */
function port(name: string, flag: string | undefined, envName: string, fallback: number): number {
  return intOption('start', `--${name} (or ${envName})`, flag ?? process.env[envName], { max: 65_535 }) ?? fallback;
}

export const demoCommand: Command = {
  name: 'start',
  summary: 'Run the whole demo on embedded defaults',
  help: HELP,
  async run(argv) {
    const { values } = parseCommandArgs('start', argv, {
      'data-dir': { type: 'string' },
      fresh: { type: 'boolean' },
      'proxy-port': { type: 'string' },
      'admin-port': { type: 'string' },
      'unleash-port': { type: 'string' },
      'kafka-port': { type: 'string' },
      'log-level': { type: 'string' },
    });
    const ports: DemoPorts = {
      proxy: port('proxy-port', values['proxy-port'], 'STRANGLER_PROXY_PORT', 8080),
      admin: port('admin-port', values['admin-port'], 'STRANGLER_ADMIN_PORT', 9901),
      unleash: port('unleash-port', values['unleash-port'], 'STRANGLER_UNLEASH_PORT', 4242),
      kafka: port('kafka-port', values['kafka-port'], 'STRANGLER_KAFKA_PORT', 9092),
    };
    const log = createLogger({ level: logLevelOption('start', values['log-level']) ?? 'warn', name: 'demo', destination: process.stderr });
    // Signals and the parent watch (below) are in place from the start: a Ctrl-C or a stopped npm while Unleash is
    // still booting used to end this process at once (no stop: PostgreSQL outlived it) or not at all (the demo came
    // up orphaned, with every child, and stayed up). Now the start ends after the step under way and stops what it
    // started; a second Ctrl-C exits at once (exit hooks still signal PostgreSQL; the other children follow their
    // closed IPC channel).
    const parent = process.ppid;
    const starting = new AbortController();
    let shutdown: ((orphaned?: boolean) => void) | undefined;
    const stopStarting = (orphaned: boolean) => {
      if (starting.signal.aborted) process.exit(130);
      if (!orphaned) process.stdout.write('\nstrangler: stopping once the step under way ends (Ctrl-C again to exit at once)…\n');
      starting.abort(new Error('stopped while starting'));
    };
    const onSignal = () => (shutdown ? shutdown() : stopStarting(false));
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    // `npm start` runs us under `sh -c`: a SIGTERM to npm (a process manager, `timeout`, `kill <npm pid>`) ends npm
    // and that shell but never reaches us, and we would keep running with every child. So stop when re-parented.
    const parentWatch = setInterval(() => {
      if (process.ppid === parent) return;
      if (shutdown) shutdown(true);
      else if (!starting.signal.aborted) stopStarting(true);
    }, 250);
    parentWatch.unref();
    const stopWatching = () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      clearInterval(parentWatch);
    };
    process.stdout.write('strangler: starting the demo…\n');
    let demo: RunningDemo;
    try {
      demo = await startDemo({
        dataDir: values['data-dir'] ?? process.env.STRANGLER_DATA_DIR ?? '.data/demo',
        ports,
        fresh: values.fresh === true,
        log,
        onStep: (step, ms) => process.stdout.write(`  ✓ ${step} (${ms} ms)\n`),
        signal: starting.signal,
      });
    } catch (err) {
      stopWatching();
      if (!starting.signal.aborted) throw err;
      return 130; // stopped by request before the demo was up; what had started is stopped
    }
    const gw = demo.gateway;
    const cfg = demo.configFile;
    process.stdout.write(`
strangler demo is up in ${(demo.startMs / 1000).toFixed(1)} s

  gateway (data plane)   ${gw.proxyUrl}
  migration dashboard    ${gw.adminUrl}/dashboard      token: ${demo.adminToken}
  admin API / metrics    ${gw.adminUrl}/admin/routes   ${gw.adminUrl}/metrics
  Unleash UI             ${demo.unleash.url}           login: ${demo.unleash.adminUser.username} / ${demo.unleash.adminUser.password}
  Unleash tokens         admin ${demo.unleash.adminToken}
                         backend ${demo.unleash.backendToken}
  dev Kafka broker       ${demo.kafka.address}
  monolith               ${demo.monolith.url}   (pid ${demo.monolith.child.pid})
  orders service         ${demo.service.url}   (pid ${demo.service.child.pid})
  config for the CLI     ${cfg}

Try this:
  curl -s '${gw.proxyUrl}/api/orders?customerId=1' -H 'x-user-id: alice' -D - -o /dev/null | grep x-strangler
  npx strangler flags shift orders 25 --reason "first canary" --config ${cfg}
  npx strangler flags status --config ${cfg}
  npx strangler flags rollback orders --reason "trying the kill switch" --config ${cfg}
  npx strangler sync verify --config ${cfg}

Ctrl-C stops everything.
`);
    return new Promise<number>((resolve) => {
      shutdown = (orphaned = false) => {
        stopWatching();
        // With the parent gone, nobody reads our stdout any more (writing could fail with EPIPE).
        if (!orphaned) process.stdout.write('\nstrangler: stopping…\n');
        void demo.stop().then(() => resolve(0), () => resolve(1));
      };
      // Stopped (or orphaned) during the last step, once the gateway was already up: stop now.
      if (starting.signal.aborted) shutdown(process.ppid !== parent);
    });
  },
};
